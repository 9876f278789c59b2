"""``embedding.relabel`` (repeated minima up to ``_SCAN_UP_TO`` instances) against the sort it
replaced (``jnp.unique``), on 4 crops of 256 x 256 with 60 ids, for several bounds ``M``.

    .venv/bin/python benchmarks/bench_relabel.py
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import load_note  # noqa: E402

from harmonic_jax import embedding  # noqa: E402


def _sorted(labels, m):  # the formulation before: the M + 1 smallest ids by a sort
    keyed = jnp.where(labels > 0, labels, embedding._BIG)
    return jnp.unique(keyed, size=m + 1, fill_value=embedding._BIG)


def _ms(fn, x, repeats=10):
    jax.block_until_ready(fn(x))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(x))
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    before = os.getloadavg()
    rng = np.random.default_rng(0)
    labels = jnp.asarray(rng.integers(0, 60, (4, 256, 256)).astype(np.int32))
    print(f"relabel of 4 crops of 256 x 256 (repeated minima up to M = {embedding._SCAN_UP_TO})")
    print(f"{'M':>4} {'relabel ms':>10} {'sort ms':>8} {'sort / relabel':>14}")
    for m in (32, 64, 128, 296):
        ours = _ms(jax.jit(jax.vmap(lambda x, m=m: embedding.relabel(x, m))), labels)
        ref = _ms(jax.jit(jax.vmap(lambda x, m=m: _sorted(x, m))), labels)
        print(f"{m:4d} {ours:10.1f} {ref:8.1f} {ref / ours:13.1f}x", flush=True)
    print(load_note(before))


if __name__ == "__main__":
    main()
