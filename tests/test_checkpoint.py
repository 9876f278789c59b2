import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from harmonic_jax import guides, train
from harmonic_jax.checkpoint import Checkpointer, CheckpointError, state_digest
from harmonic_jax.config import load_config
from harmonic_jax.fit import build_model, make_optimizer
from harmonic_jax.model import compact_unet

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _base_state():
    model = compact_unet(widths=(4, 8), sinconv_kernel=3, frame=(16, 16))
    return train.create_state(model, optax.adam(1e-3), guides.init_sine(jax.random.PRNGKey(0), 12),
                              key=jax.random.PRNGKey(1), image_shape=(16, 16, 3))


def _state(step):
    state = _base_state()
    return state.replace(step=state.step + step,
                         params=jax.tree.map(lambda p: p + step, state.params))


def _data_files(folder: Path):
    return [p for p in folder.rglob("*") if p.is_file() and p.parent.name == "d"]


def test_restore_round_trip_and_corruption_fallback(tmp_path):
    checkpointer = Checkpointer(tmp_path, keep_last=3)
    request_close = checkpointer.close
    assert checkpointer.restore(_state(0)) is None
    for step in (1, 2):
        checkpointer.save(_state(step))
    restored = checkpointer.restore(_state(0))
    assert int(restored.step) == 2 and state_digest(restored) == state_digest(_state(2))
    assert type(restored.opt_state[0]).__name__ == "ScaleByAdamState"
    # Flip bytes in the newest checkpoint: it is refused and the previous one comes back.
    for path in _data_files(tmp_path / "checkpoints" / "2"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checkpoints/2 is unusable"):
        restored = checkpointer.restore(_state(0))
    assert int(restored.step) == 1 and state_digest(restored) == state_digest(_state(1))
    # Truncate the last good one too: a clear error, never silently wrong weights.
    for path in _data_files(tmp_path / "checkpoints" / "1"):
        path.write_bytes(path.read_bytes()[:10])
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no intact checkpoint"):
        checkpointer.restore(_state(0))
    request_close()


TINY = ["steps=40", "checkpoint_every=8", "val_subset=", "resize=0.25", "crop=64,64",
        "widths=8,16", "sinconv_kernel=3", "data_parallel=false", "log_every=4"]


def _command(workdir):
    return [sys.executable, "-m", "harmonic_jax.cli", "train", "--config", "configs/tiny.py",
            "--set", *TINY, f"workdir={workdir}"]


def _final_params(workdir):
    config = load_config(ROOT / "configs/tiny.py", [*TINY, f"workdir={workdir}"])
    model = build_model(config, (112, 112))
    fresh = train.create_state(model, make_optimizer(config, config.steps),
                               guides.load_guides(ROOT / config.guides)[0],
                               key=jax.random.PRNGKey(0), image_shape=(64, 64, 3))
    checkpointer = Checkpointer(workdir)
    state = checkpointer.restore(fresh)
    checkpointer.close()
    return int(state.step), state


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(straight), cwd=ROOT, env=env, check=True, capture_output=True)

    process = subprocess.Popen(_command(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "8").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    interrupted_at, _ = _final_params(killed)
    assert 8 <= interrupted_at < 40

    subprocess.run(_command(killed), cwd=ROOT, env=env, check=True, capture_output=True)
    step_a, a = _final_params(straight)
    step_b, b = _final_params(killed)
    assert step_a == step_b == 40
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    # The log shows the resumed run picked up where the killed one stopped.
    logged = [line for line in (killed / "metrics.jsonl").read_text().splitlines() if line]
    assert logged
