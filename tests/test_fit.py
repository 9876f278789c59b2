import json
from pathlib import Path

import numpy as np
import pytest

from harmonic_jax import cli
from harmonic_jax.config import TrainConfig, apply_overrides, load_config
from harmonic_jax.data import load_cvppp, load_split, resize_sample
from harmonic_jax.fit import batch_indices, evaluate, fit, load_run

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_training_overfits_two_real_plants(tmp_path, cvppp_dir):
    config = load_config(ROOT / "configs/tiny.py",
                         [f"workdir={tmp_path / 'run'}", "data_parallel=false"])
    result = fit(config, progress=False)
    assert result["step"] == config.steps
    assert result["val"]["sbd"] >= 0.8, result["val"]
    lines = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < 0.5 * losses[0]
    assert json.loads((tmp_path / "run/config.json").read_text())["name"] == "tiny"
    assert (tmp_path / "run/guides.json").exists() and (tmp_path / "run/best").is_dir()
    # The best checkpoint reloads for inference and scores what the run reported.
    model, variables, guide_params, loaded = load_run(tmp_path / "run")
    samples = [resize_sample(s, loaded.resize) for s in load_cvppp(
        cvppp_dir, load_split(loaded.split)["train"][:2])]
    again = evaluate(model, variables, guide_params, samples, loaded)
    assert again["sbd"] == pytest.approx(result["val"]["sbd"], abs=1e-6)


def test_data_order_is_a_function_of_the_step():
    seen = np.concatenate([batch_indices(3, s, 10, 4) for s in range(2)])
    assert len(set(seen)) == 8  # one epoch: no repeats
    np.testing.assert_array_equal(batch_indices(3, 5, 10, 4), batch_indices(3, 5, 10, 4))
    assert len(batch_indices(0, 0, 2, 4)) == 4  # fewer images than the batch


def test_config_overrides_and_errors(tmp_path):
    config = apply_overrides(TrainConfig(), ["crop=256,192", "lr=1e-4", "fg_head=true",
                                             "steps=none", "val_limit=3"])
    assert config.crop == (256, 192) and config.lr == 1e-4 and config.fg_head
    assert config.steps is None and config.val_limit == 3
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides(config, ["nonsense=1"])
    with pytest.raises(ValueError, match="must be true or false"):
        apply_overrides(config, ["flip=maybe"])
    for name in ("cvppp_a1", "cvppp_a1_cpu", "tiny", "bbbc010", "hela", "ecoli"):
        assert isinstance(load_config(ROOT / f"configs/{name}.py"), TrainConfig)
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["train", "--config", str(tmp_path / "missing.py")])
