"""One process of the data-parallel run of tests/test_distributed.py.

``python -m tests.distributed_worker PROCESS_ID NUM_PROCESSES PORT OUT`` joins a run of
``NUM_PROCESSES`` processes of 4 CPU devices each on the loopback address, trains 3 steps, saves
a checkpoint (once, collectively) and, on process 0, the parameters as ``OUT/params.npz``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

STEPS = 3
GLOBAL_BATCH = 8
ROOT = Path(__file__).resolve().parents[1]


def launch(out: Path, timeout_s: int = 600) -> list:
    """Starts the 2 worker processes (loopback, a free port) writing to ``out``; their
    ``subprocess.Popen`` objects (stdout and stderr in ``out/worker<i>.log``)."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)  # each worker sets its own 4 devices
    procs = []
    for i in range(2):
        log = open(out / f"worker{i}.log", "w")  # noqa: SIM115 - the process holds it
        procs.append(subprocess.Popen(
            ["timeout", str(timeout_s), sys.executable, "-m", "tests.distributed_worker", str(i),
             "2", str(port), str(out)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def batch():
    """The global batch, the same on every process: 40 x 40 images of blocky instances."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 6, (GLOBAL_BATCH, 5, 5)), np.ones((1, 8, 8), np.int64))
    return dict(image=rng.integers(0, 255, (GLOBAL_BATCH, 40, 40, 3)).astype(np.uint8),
                labels=labels.astype(np.int32),
                size=np.full((GLOBAL_BATCH, 2), 40, np.int32))


def setup():
    """The model, optimiser and a fresh state (host values, the same on every process)."""
    import jax
    import optax

    from harmonic_jax import guides, train
    from harmonic_jax.model import compact_unet

    model = compact_unet(widths=(8, 16, 16), sinconv_kernel=3, frame=(32, 32))
    optimizer = optax.sgd(0.05, momentum=0.9)
    state = train.create_state(model, optimizer, guides.init_sine(jax.random.PRNGKey(0), 12),
                               key=jax.random.PRNGKey(1), image_shape=(32, 32, 3))
    return model, optimizer, state


def run(out: Path):
    """Trains ``STEPS`` steps over all devices of all processes and saves a checkpoint in
    ``out/checkpoint``; returns the final state and the parameters after the first step."""
    import jax
    import numpy as np

    from harmonic_jax import distributed, train
    from harmonic_jax.checkpoint import Checkpointer

    model, optimizer, state = setup()
    mesh = train.data_mesh()
    state = distributed.replicate(state, mesh)
    step = train.make_train_step(model, optimizer, crop=(32, 32), mesh=mesh)
    data = batch()
    first = None
    for _ in range(STEPS):
        rows = distributed.process_rows(range(GLOBAL_BATCH))
        state, _ = step(state, train.shard_batch({k: v[rows] for k, v in data.items()}, mesh))
        first = jax.tree.map(np.asarray, state.params) if first is None else first
    checkpointer = Checkpointer(out / "checkpoint")
    checkpointer.save(state)
    checkpointer.close()
    return state, first


def main(process_id: int, num_processes: int, port: int, out: Path) -> None:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np

    jax.config.update("jax_numpy_dtype_promotion", "strict")
    from harmonic_jax import distributed

    distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
    assert jax.device_count() == 4 * num_processes and jax.local_device_count() == 4
    state, _ = run(out)
    if distributed.is_primary():
        leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
        np.savez(out / "params.npz", **{jax.tree_util.keystr(k): np.asarray(v)
                                        for k, v in leaves})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
