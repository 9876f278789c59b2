"""Shared test set-up: 8 CPU devices, strict dtype promotion, real CVPPP images."""

import os

# Must happen before JAX initialises its backends.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CVPPP = DATA / "cvppp_a1"
SPLIT = DATA / "cvppp_a1_split.json"


def pytest_report_header(config):
    return f"jax {jax.__version__}, devices: {jax.device_count()}, data: {CVPPP}"


@pytest.fixture(scope="session")
def cvppp_dir() -> Path:
    if not CVPPP.is_dir():
        pytest.fail(f"the real CVPPP A1 data is expected at {CVPPP} (see ../shared/data/README.md)")
    return CVPPP


@pytest.fixture(scope="session")
def cvppp_samples(cvppp_dir):
    """Four real CVPPP A1 plants of the training split, read once per session."""
    from harmonic_jax.data import load_cvppp, load_split

    names = load_split(SPLIT)["train"][:4]
    return load_cvppp(cvppp_dir, names)


@pytest.fixture(scope="session")
def cvppp_train_labels(cvppp_dir):
    """Label images of the whole CVPPP A1 training split."""
    from harmonic_jax.data import load_cvppp, load_split

    return [s.labels for s in load_cvppp(cvppp_dir, load_split(SPLIT)["train"])]


@pytest.fixture(scope="session")
def cvppp_guides():
    """The fitted CVPPP guide parameters shipped in configs/."""
    from harmonic_jax.guides import load_guides

    return load_guides(Path(__file__).resolve().parents[1] / "configs/guides/cvppp_a1.json")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cvppp_dir):
    """configs/tiny.py trained once per session (about a minute): ``(run folder, fit result)``."""
    from harmonic_jax.config import load_config
    from harmonic_jax.fit import fit

    workdir = tmp_path_factory.mktemp("tiny") / "run"
    config = load_config(Path(__file__).resolve().parents[1] / "configs/tiny.py",
                         [f"workdir={workdir}", "data_parallel=false"])
    return workdir, fit(config, progress=False)


@pytest.fixture(scope="session")
def eight_device_run(tmp_path_factory):
    """tests/distributed_worker.py's run in this process over its 8 CPU devices, once per
    session: ``(final state, parameters after the first step)``."""
    from tests import distributed_worker

    return distributed_worker.run(tmp_path_factory.mktemp("eight_devices"))


TWO_PROCESSES = pytest.StashKey[tuple]()


def pytest_collection_finish(session):
    """Starts the two worker processes of tests/test_distributed.py as soon as it is collected,
    so that they run beside the tests before it (compilation mostly leaves a core free)."""
    if any(item.nodeid.startswith("tests/test_distributed.py") for item in session.items):
        from tests import distributed_worker

        out = Path(tempfile.mkdtemp(prefix="harmonic_two_processes_"))
        session.config.stash[TWO_PROCESSES] = (out, distributed_worker.launch(out))


def pytest_sessionfinish(session):
    out, procs = session.config.stash.get(TWO_PROCESSES, (None, []))
    for proc in procs:
        proc.kill()
        proc.wait()
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def two_processes(request):
    """The output folder of the two worker processes (2 x 4 CPU devices) started at collection."""
    out, procs = request.config.stash[TWO_PROCESSES]
    for i, proc in enumerate(procs):
        code = proc.wait(timeout=900)
        log = (out / f"worker{i}.log").read_text()
        assert code == 0, f"worker process {i} exited with {code}:\n{log[-3000:]}"
    return out
