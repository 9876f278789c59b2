# Two commands on a fresh machine: `make demo` and `make test`. Each makes .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,parity]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/harmonic-jax demo

test: $(STAMP)
	$(BIN)/python -m pytest tests

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_cluster.py --images 3 --timeout 60
	$(BIN)/python benchmarks/bench_crowded.py --guides configs/guides/crowded_blobs.json
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_metrics.py

lint: $(STAMP)
	$(BIN)/ruff check harmonic_jax tests benchmarks configs

clean:
	rm -rf $(VENV) demo_out bench_out predictions evaluation .pytest_cache
