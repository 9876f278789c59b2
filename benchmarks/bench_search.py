"""Guide search on the CVPPP A1 training split: what the paper's search and ours reach.

Rows: the random initialisation, the PyTorch original's published guides (converted), eq. 4 as in
the paper (L1, margin 0.5, stopped at zero hinge) and the library's default (L2, the metric of
mean-shift, hinge at ``headroom`` x 0.5). Columns: steps and seconds of the search, and over all
training pairs the fractions closer than the bandwidth 0.5 in L1 and L2, the closest pair and
the 1st percentile in L2.

    .venv/bin/python benchmarks/bench_search.py [--steps 2000] [--headroom 4]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
from common import load_note

from harmonic_jax import guides, search
from harmonic_jax.data import load_cvppp, load_split

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/cvppp_a1"))
    parser.add_argument("--split", default=str(ROOT.parent / "shared/data/cvppp_a1_split.json"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--headroom", type=float, nargs="+", default=[4.0])
    parser.add_argument("--frame", type=int, nargs=2, default=[448, 448])
    args = parser.parse_args()
    load = os.getloadavg()

    start = time.perf_counter()
    labels = [s.labels for s in load_cvppp(args.data, load_split(args.split)["train"])]
    padded = search.pad_labels(labels)
    print(f"{len(labels)} training plants read in {time.perf_counter() - start:.1f} s")
    frame = tuple(args.frame)
    key = jax.random.PRNGKey(0)
    rows = [("random init", guides.init_sine(jax.random.split(key)[1], 12), 0, 0.0),
            ("original, published", guides.from_original(guides.ORIGINAL_CVPPP, *frame), 0, 0.0)]
    runs = [("eq. 4: L1, stop at zero", dict(norm=1, headroom=1.0))]
    runs += [(f"ours: L2, headroom {h:g}", dict(norm=2, headroom=h)) for h in args.headroom]
    for name, kwargs in runs:
        result = search.fit_guides(labels, n=12, margin=0.5, steps=args.steps, key=key,
                                   frame=frame, progress=False, **kwargs)
        rows.append((name, result.params, len(result.losses), result.seconds))
    print(f"{'guides':26} {'steps':>6} {'seconds':>8} {'L1 < 0.5':>9} {'L2 < 0.5':>9} "
          f"{'min L2':>7} {'1% L2':>7}")
    for name, params, steps, seconds in rows:
        stats = search.separation_stats(params, padded, frame=frame)
        print(f"{name:26} {steps:6d} {seconds:8.1f} {stats['l1_collision_rate']:9.4%} "
              f"{stats['l2_collision_rate']:9.4%} {stats['min_l2']:7.4f} {stats['p01_l2']:7.4f}",
              flush=True)
    print(load_note(load))


if __name__ == "__main__":
    main()
