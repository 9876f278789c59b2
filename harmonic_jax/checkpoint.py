"""Checkpoints that survive a killed run and never restore silently wrong weights.

Two orbax ``CheckpointManager``s under a run's folder: ``checkpoints/`` keeps the last ``k``
states, ``best/`` the one with the best validation SBD. Every checkpoint stores, beside the state,
a SHA-256 of the state's bytes; a restore recomputes it, and a checkpoint that fails to load or
to match falls back to the previous one, with a warning.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpointer", "state_digest"]


class CheckpointError(RuntimeError):
    """No checkpoint of a run could be restored intact."""


def state_digest(state) -> str:
    """SHA-256 over the bytes, shapes and dtypes of every leaf of a pytree."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(state):
        arr = np.asarray(jax.random.key_data(leaf) if jax.dtypes.issubdtype(
            getattr(leaf, "dtype", None), jax.dtypes.prng_key) else leaf)
        digest.update(f"{arr.dtype}{arr.shape}".encode())
        digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def _manager(path: Path, **options) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        path.resolve(),
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False, create=True,
                                             **options),
    )


class Checkpointer:
    """The last ``keep_last`` states and the best one of a run folder."""

    def __init__(self, workdir: str | Path, keep_last: int = 3):
        workdir = Path(workdir)
        self.last = _manager(workdir / "checkpoints", max_to_keep=keep_last)
        self.best = _manager(workdir / "best", max_to_keep=1, best_fn=lambda m: m["sbd"],
                             best_mode="max")

    def save(self, state, *, best_metrics: dict | None = None) -> None:
        """Saves ``state`` at its step (and as the best when ``best_metrics`` is given)."""
        step = int(state.step)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  meta=ocp.args.JsonSave({"step": step,
                                                          "sha256": state_digest(state)}))
        if best_metrics is None:
            if step not in self.last.all_steps():
                self.last.save(step, args=args)
        else:
            self.best.save(step, args=args, metrics=best_metrics, force=True)

    def restore(self, abstract_state, *, best: bool = False):
        """The newest intact state (or the best), or ``None`` when there is no checkpoint.

        Args:
          abstract_state: a state of the right structure (e.g. a fresh one, or
            ``jax.eval_shape`` of it); orbax needs it to rebuild optax states.

        Raises:
          CheckpointError: checkpoints exist but none loads intact.
        """
        manager = self.best if best else self.last
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            return None
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        problems = []
        for step in steps:
            try:
                restored = manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
                state, meta = restored["state"], restored["meta"]
                if state_digest(state) != meta["sha256"]:
                    raise ValueError("contents do not match the checksum saved with them")
            except Exception as err:  # noqa: BLE001 - any failure means: not this one
                problems.append(f"step {step}: {type(err).__name__}: {err}"[:300])
                warnings.warn(f"checkpoint {manager.directory}/{step} is unusable ({problems[-1]});"
                              " trying an older one", stacklevel=2)
                continue
            return state
        raise CheckpointError(f"no intact checkpoint in {manager.directory}:\n" +
                              "\n".join(problems))

    def close(self) -> None:
        self.last.close()
        self.best.close()
