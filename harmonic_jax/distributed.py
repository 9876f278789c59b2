"""Training past one machine: the data-parallel step over the devices of several processes.

The train step is the same ``jax.jit`` over a ``('data',)`` mesh as on one machine
(:func:`harmonic_jax.train.make_train_step`); with :func:`jax.distributed.initialize` the mesh
spans every process's devices (:func:`harmonic_jax.train.data_mesh`), each process feeds its own
rows of the global batch (:func:`process_rows`, :func:`harmonic_jax.train.shard_batch`) and the
state is replicated on all of them (:func:`replicate`). XLA's gradient and BatchNorm reductions
then run across processes (Gloo on CPUs, NCCL on GPUs), so N processes compute what one process
with all the devices computes for the same global batch. Checkpoints are written once (orbax:
the primary process writes the replicated state) and restore on any process count.

On a GPU cluster, one command per host (the coordinator is host 0; any free port)::

    HARMONIC_COORDINATOR=host0:1234 HARMONIC_NUM_PROCESSES=2 HARMONIC_PROCESS_ID=0 \\
        harmonic-jax train --distributed --config configs/cvppp_a1.py      # on host0
    HARMONIC_COORDINATOR=host0:1234 HARMONIC_NUM_PROCESSES=2 HARMONIC_PROCESS_ID=1 \\
        harmonic-jax train --distributed --config configs/cvppp_a1.py      # on host1

Under SLURM (``srun`` sets the process count and ids), one line does it:
``srun --nodes=2 --ntasks-per-node=1 --gpus-per-task=8 harmonic-jax train --distributed
--config configs/cvppp_a1.py``. The run folder must be on a file system all hosts share.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["barrier", "initialize", "is_primary", "process_rows", "replicate"]

_ENV = ("HARMONIC_COORDINATOR", "HARMONIC_NUM_PROCESSES", "HARMONIC_PROCESS_ID")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Joins this process to a multi-process run (before any other JAX call).

    Arguments left ``None`` are read from ``HARMONIC_COORDINATOR``, ``HARMONIC_NUM_PROCESSES``
    and ``HARMONIC_PROCESS_ID``; when those are unset too, JAX detects a cluster itself (SLURM,
    Open MPI, Kubernetes) or raises.

    Args:
      coordinator_address: ``host:port`` of process 0, reachable from every process.
      num_processes: how many processes take part.
      process_id: this process's index, ``0 .. num_processes - 1``.

    Returns:
      ``True`` once joined.

    Raises:
      ValueError: an id outside ``0 .. num_processes - 1``, or a malformed variable.
    """
    coordinator_address = coordinator_address or os.environ.get(_ENV[0])
    try:
        if num_processes is None and os.environ.get(_ENV[1]):
            num_processes = int(os.environ[_ENV[1]])
        if process_id is None and os.environ.get(_ENV[2]):
            process_id = int(os.environ[_ENV[2]])
    except ValueError as err:
        raise ValueError(f"{_ENV[1]} and {_ENV[2]} must be integers: {err}") from None
    if num_processes is not None and process_id is not None and not (
            0 <= process_id < num_processes):
        raise ValueError(f"process_id {process_id} is outside 0..{num_processes - 1}")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True


def barrier(name: str, timeout_s: float = 7200.0) -> None:
    """Waits until every process has reached the barrier ``name`` (nothing in one process).

    Unlike a collective (``multihost_utils.sync_global_devices``, which gives up after a few
    minutes), it waits up to ``timeout_s``: long enough for process 0 to prepare a run folder
    (a guide search takes minutes) while the others wait to read it.
    """
    import orbax.checkpoint as ocp

    ocp.multihost.get_barrier_sync_fn()(key=name, timeout_ms=int(timeout_s * 1000))


def is_primary() -> bool:
    """Whether this process writes logs and shows progress (process 0)."""
    return jax.process_index() == 0


def process_rows(indices: np.ndarray) -> np.ndarray:
    """This process's share of a global batch: ``indices`` cut into ``process_count`` equal,
    consecutive parts, the ``process_index``-th of which is returned (the order in which
    :func:`jax.make_array_from_process_local_data` lays the parts along the mesh).

    Args:
      indices: ``(B,)`` the global batch's rows, the same on every process.

    Raises:
      ValueError: ``B`` is not divisible by the process count.
    """
    indices = np.asarray(indices)
    count = jax.process_count()
    if len(indices) % count:
        raise ValueError(f"a global batch of {len(indices)} does not split over {count} "
                         "processes; use a multiple")
    return indices.reshape(count, -1)[jax.process_index()]


def replicate(tree, mesh: Mesh):
    """A pytree (the same values on every process) as arrays replicated over all of ``mesh``.

    Leaves that already carry that sharding are returned as they are.
    """
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype,
                                                                 jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(leaf))
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(replicate(data, mesh), impl=impl)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)
