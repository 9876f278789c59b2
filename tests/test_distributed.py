"""Training past one machine: 2 processes x 4 CPU devices (jax.distributed on the loopback
address) compute what 1 process with 8 devices computes, and their checkpoint restores in a
process of another count. The two processes start when this file is collected (conftest.py's
``two_processes``), beside the tests that run before it."""

import jax
import numpy as np
import pytest

from harmonic_jax import distributed
from harmonic_jax.checkpoint import Checkpointer
from tests import distributed_worker


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
