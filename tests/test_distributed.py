"""Training past one machine: 2 processes x 4 CPU devices (jax.distributed on the loopback
address) compute what 1 process with 8 devices computes, and their checkpoint restores in a
process of another count."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from harmonic_jax import distributed
from harmonic_jax.checkpoint import Checkpointer
from tests import distributed_worker

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Runs the worker as 2 processes of 4 devices; their output folder."""
    out = tmp_path_factory.mktemp("two_processes")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-m", "tests.distributed_worker", str(i), "2",
                               str(port), str(out)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=300)[0])
    finally:
        for proc in procs:
            proc.kill()
    for i, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"process {i} failed:\n{log[-3000:]}"
    return out


def test_two_processes_equal_one_process_with_eight_devices(two_processes, eight_device_run):
    assert jax.device_count() == 8 and jax.process_count() == 1
    state, _ = eight_device_run  # the same code in this process
    theirs = np.load(two_processes / "params.npz")
    ours = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(state.params)[0]}
    assert set(theirs.files) == set(ours)
    scale = max(float(np.abs(v).max()) for v in ours.values())
    worst = max(float(np.abs(ours[k] - theirs[k]).max()) for k in ours) / scale
    print(f"2 processes x 4 devices vs 1 x 8 after {distributed_worker.STEPS} steps: "
          f"max |diff| / max |param| = {worst:.2e}")
    assert worst <= 1e-5
    moved = max(float(np.abs(ours[k] - v).max()) for k, v in zip(
        ours, jax.tree.leaves(distributed_worker.setup()[2].params)))
    assert moved > 1e-3  # the steps changed the parameters


def test_checkpoint_of_two_processes_restores_in_one(two_processes):
    _, _, fresh = distributed_worker.setup()
    checkpointer = Checkpointer(two_processes / "checkpoint")
    restored = checkpointer.restore(fresh)  # the digest saved with it is checked
    checkpointer.close()
    assert int(restored.step) == distributed_worker.STEPS
    theirs = np.load(two_processes / "params.npz")
    for path, value in jax.tree_util.tree_flatten_with_path(restored.params)[0]:
        np.testing.assert_array_equal(value, theirs[jax.tree_util.keystr(path)])


def test_process_rows_and_bad_ids():
    np.testing.assert_array_equal(distributed.process_rows(np.arange(6)), np.arange(6))
    distributed.barrier("alone")  # one process: returns at once
    with pytest.raises(ValueError, match="outside 0..1"):
        distributed.initialize("127.0.0.1:1", 2, 2)
