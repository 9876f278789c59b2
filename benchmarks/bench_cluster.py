"""Mean-shift speed and quality: ours against the PyTorch original's clustering.

The original clusters with sklearn ``MeanShift(bandwidth=0.5, bin_seeding=True)`` over every pixel
of a 448 x 448 image and then drops small labels. Both run here on the ground-truth harmonic
embeddings of real CVPPP A1 plants (centre 448 x 448 crops, shipped guides) with Gaussian noise
added. Ours clusters the foreground pixels; the original's labels are restricted to the same
foreground afterwards (generous to it: it has no foreground handling of its own) and drops
labels under ``--orig-min-size`` pixels; ours runs with the library's defaults
(``cluster.mean_shift(emb, mask=fg)``) unless ``--min-size`` / ``--max-gap`` are given.
Goal: >= 20x faster, SBD no worse on each image. The original
runs in a child process stopped after ``--timeout`` seconds (its bin seeding makes it very slow on
noisy embeddings); a stopped case is reported as a lower bound on the ratio.

    .venv/bin/python benchmarks/bench_cluster.py [--images 4] [--noise 0.05 0.15]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from common import load_note, speedup_note, timed_original

from harmonic_jax import cluster, embedding, guides, metrics
from harmonic_jax.data import load_cvppp, load_split

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/cvppp_a1"))
    parser.add_argument("--split", default=str(ROOT.parent / "shared/data/cvppp_a1_split.json"))
    parser.add_argument("--guides", default=str(ROOT / "configs/guides/cvppp_a1.json"))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.15])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--bandwidth", type=float, default=0.5)
    parser.add_argument("--min-size", type=int, default=cluster.MIN_SIZE,
                        help="ours: fragments under this many pixels are absorbed")
    parser.add_argument("--max-gap", type=float, default=cluster.MAX_GAP,
                        help="ours: parts of one cluster closer than this stay one instance")
    parser.add_argument("--orig-min-size", type=int, default=20,
                        help="the original's area filter")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds the original may take per case before it is stopped")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    load = os.getloadavg()
    params, meta = guides.load_guides(args.guides)
    samples = load_cvppp(args.data, load_split(args.split)["test"][: args.images])
    rows = []
    header = f"{'image':10} {'noise':>5} {'ours s':>8} {'orig s':>8} {'ratio':>7} " \
             f"{'SBD ours':>8} {'SBD orig':>8} {'K ours':>6} {'K orig':>6} {'K true':>6}"
    print(header)
    for sample in samples:
        h, w = sample.labels.shape
        top, left = (h - args.size) // 2, (w - args.size) // 2
        labels = sample.labels[top:top + args.size, left:left + args.size]
        fg = labels > 0
        maps = guides.sine(params, args.size, args.size, frame=tuple(meta["frame"]))
        target = np.asarray(embedding.target_embedding(maps, labels))
        for sigma in args.noise:
            noisy = target + np.random.default_rng(0).normal(0, sigma, target.shape).astype(
                np.float32)
            start = time.perf_counter()
            ours = cluster.mean_shift(noisy, bandwidth=args.bandwidth, mask=fg,
                                      min_size=args.min_size, max_gap=args.max_gap)
            t_ours = time.perf_counter() - start
            t_orig, orig = timed_original(noisy, fg, args.bandwidth, args.orig_min_size,
                                          args.timeout)
            done = t_orig is not None
            row = dict(image=sample.name, noise=sigma, seconds_ours=t_ours,
                       seconds_orig=t_orig if done else args.timeout,
                       ratio=(t_orig if done else args.timeout) / t_ours, finished=done,
                       sbd_ours=metrics.sbd(ours, labels),
                       sbd_orig=metrics.sbd(orig, labels) if done else None,
                       k_ours=int(ours.max()), k_orig=int(len(np.unique(orig)) - 1) if done else None,
                       k_true=int(len(np.unique(labels)) - 1))
            rows.append(row)
            at_least = "" if done else ">"
            print(f"{row['image']:10} {sigma:5.2f} {t_ours:8.3f} "
                  f"{at_least + format(row['seconds_orig'], '.2f'):>8} "
                  f"{at_least + format(row['ratio'], '.0f'):>6}x {row['sbd_ours']:8.4f} "
                  f"{format(row['sbd_orig'], '.4f') if done else 'timeout':>8} "
                  f"{row['k_ours']:6d} {row['k_orig'] if done else '-':>6} {row['k_true']:6d}",
                  flush=True)
    ratios = np.array([r["ratio"] for r in rows])
    compared = [r for r in rows if r["finished"]]
    worse = [r for r in compared if r["sbd_ours"] < r["sbd_orig"]]
    print("\n" + speedup_note(ratios, "the original"))
    print(f"SBD worse than the original on {len(worse)} of {len(compared)} cases it finished; "
          f"mean SBD ours {np.mean([r['sbd_ours'] for r in rows]):.4f}")
    print(load_note(load))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
