"""Guide search on the CVPPP A1 training split: steps and seconds to the final collision rate.

For each margin: the collision rate of the random initialisation, of the PyTorch original's
published guides (converted), and of our search after it stops (zero training loss, the paper's
criterion, or ``--steps``). ``eps = 0.5`` is the paper's L1 margin; ``0.5 * sqrt(12)`` is the
smallest L1 margin that also guarantees an L2 distance of 0.5, the mean-shift bandwidth.

    .venv/bin/python benchmarks/bench_search.py [--steps 2000] [--margins 0.5 1.7320508]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

from harmonic_jax import guides, search
from harmonic_jax.data import load_cvppp, load_split

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/cvppp_a1"))
    parser.add_argument("--split", default=str(ROOT.parent / "shared/data/cvppp_a1_split.json"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--margins", type=float, nargs="+", default=[0.5, 0.5 * np.sqrt(12)])
    parser.add_argument("--frame", type=int, nargs=2, default=[448, 448])
    args = parser.parse_args()

    start = time.perf_counter()
    labels = [s.labels for s in load_cvppp(args.data, load_split(args.split)["train"])]
    padded = search.pad_labels(labels)
    print(f"{len(labels)} training plants read in {time.perf_counter() - start:.1f} s")
    frame = tuple(args.frame)
    key = jax.random.PRNGKey(0)
    init = guides.init_sine(jax.random.split(key)[1], 12)  # what fit_guides starts from
    original = guides.from_original(guides.ORIGINAL_CVPPP, *frame)
    print(f"{'margin':>7} {'init':>8} {'original':>8} {'ours':>8} {'steps':>6} {'seconds':>8} "
          f"{'ms/step':>8}  (collision rates: pairs closer than the margin in L1)")
    for margin in args.margins:
        result = search.fit_guides(labels, n=12, margin=margin, steps=args.steps, key=key,
                                   frame=frame, progress=False)
        rate = {name: search.collision_rate(p, padded, margin=margin, frame=frame)
                for name, p in (("init", init), ("original", original))}
        steps = len(result.losses)
        per_step = 1e3 * result.seconds / steps if steps else float("nan")
        print(f"{margin:7.4f} {rate['init']:8.4%} {rate['original']:8.4%} "
              f"{result.collision_rate:8.4%} {steps:6d} {result.seconds:8.1f} {per_step:8.1f}",
              flush=True)


if __name__ == "__main__":
    main()
