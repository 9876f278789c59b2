"""Crowded scenes: guides and mean-shift on touching convex blobs (like a dense nuclei culture).

Label images of 50-300 touching convex blobs (256 x 256, ellipse areas 10-3000 px, fixed seeds;
``harmonic_jax.data.synthetic.touching_blobs``). Guides are fitted on ``--train`` images with the
library's defaults (or read from ``--guides``); on ``--test`` other images the script reports the
guides' separation (L1 / L2 collision rates at the bandwidth, closest pair, 1st percentile) and
clusters ground-truth embeddings plus Gaussian noise with

- ours: ``cluster.mean_shift(emb, mask=fg)`` with the library defaults;
- sklearn: ``MeanShift(0.5, bin_seeding=True)`` on the same foreground pixels, labels under
  ``--orig-min-size`` px dropped (the original's inference; a child process stopped after
  ``--timeout`` s, so a ratio against a stopped run is a lower bound);
- sklearn + split: sklearn's clusters through our ``split_components`` with the same defaults
  (isolates the mode finding: ours against sklearn's).

Goals: SBD >= 0.97 at noise 0.05 and >= 0.93 at 0.15, never worse than sklearn on the same
embeddings, >= 20x faster than sklearn on every image.

    .venv/bin/python benchmarks/bench_crowded.py [--train 16] [--test 16] [--timeout 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import jax
import numpy as np
from common import load_note, speedup_note, timed_original

from harmonic_jax import cluster, embedding, guides, metrics, search
from harmonic_jax.data.synthetic import touching_blobs

SIZE = (256, 256)


def _scores(pred, labels) -> dict:
    return dict(sbd=metrics.sbd(pred, labels), abs_dic=abs(metrics.dic(pred, labels)),
                f1=metrics.matching(pred, labels)["f1"], k=int(len(np.unique(pred)) - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=16, help="images to fit guides on")
    parser.add_argument("--test", type=int, default=16, help="other images to evaluate on")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.15])
    parser.add_argument("--guides", help="a guide file for 256 x 256 frames (default: fit them)")
    parser.add_argument("--steps", type=int, default=2000, help="guide search steps")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds sklearn may take per case before it is stopped")
    parser.add_argument("--orig-min-size", type=int, default=cluster.MIN_SIZE)
    parser.add_argument("--save-guides", help="write the fitted guides here (JSON)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    load = os.getloadavg()

    train = [touching_blobs(seed, SIZE) for seed in range(args.train)]
    test = [touching_blobs(10_000 + seed, SIZE) for seed in range(args.test)]
    counts = [t.max() for t in train + test]
    print(f"{len(train)} training and {len(test)} test images, {np.mean(counts):.0f} blobs per "
          f"image on average ({min(counts)}-{max(counts)})")
    if args.guides:
        params, meta = guides.load_guides(args.guides)
        frame = tuple(meta["frame"])
    else:
        fit = search.fit_guides(train, frame=SIZE, steps=args.steps, key=jax.random.PRNGKey(0))
        params, frame = fit.params, fit.frame
        print(f"guide search: {len(fit.losses)} steps in {fit.seconds:.0f} s")
        if args.save_guides:
            stats = search.separation_stats(params, search.pad_labels(train), frame=frame)
            guides.save_guides(
                args.save_guides, params, family="sine", frame=list(frame), margin=fit.margin,
                norm=fit.norm, headroom=fit.headroom, n_images=len(train),
                steps=len(fit.losses), seconds=round(fit.seconds, 2), loss=fit.loss,
                collision_rate=fit.collision_rate, **stats,
                data=f"touching_blobs seeds 0-{len(train) - 1}, {SIZE[0]} x {SIZE[1]}",
                command="python benchmarks/bench_crowded.py " + shlex.join(sys.argv[1:]))
    for name, images in (("train", train), ("test", test)) if test else (("train", train),):
        stats = search.separation_stats(params, search.pad_labels(images), frame=frame)
        print(f"{name:5}: {stats['pairs']} pairs, closer than 0.5: L1 "
              f"{stats['l1_collision_rate']:.4%}, L2 {stats['l2_collision_rate']:.4%}; closest "
              f"L2 {stats['min_l2']:.4f}, 1st percentile L2 {stats['p01_l2']:.4f}")

    rows = []
    if test:
        print(f"\n{'image':>5} {'noise':>5} {'K':>4} {'ours s':>7} {'skl s':>7} {'ratio':>6}  "
              f"{'SBD ours':>8} {'sklearn':>8} {'skl+split':>9}  {'|DiC| ours':>10} "
              f"{'sklearn':>8}  {'F1 ours':>7} {'sklearn':>8}")
    for index, labels in enumerate(test):
        fg = labels > 0
        target = np.asarray(embedding.target_embedding(
            guides.sine(params, *SIZE, frame=frame), labels))
        for sigma in args.noise:
            rng = np.random.default_rng(index)
            noisy = target + rng.normal(0, sigma, target.shape).astype(np.float32)
            start = time.perf_counter()
            ours = cluster.mean_shift(noisy, mask=fg)
            t_ours = time.perf_counter() - start
            t_skl, skl = timed_original(noisy, fg, 0.5, args.orig_min_size, args.timeout,
                                        every_pixel=False)
            done = t_skl is not None
            row = dict(image=index, noise=sigma, k_true=int(labels.max()), seconds_ours=t_ours,
                       seconds_sklearn=t_skl if done else args.timeout, finished=done,
                       ours=_scores(ours, labels))
            row["ratio"] = row["seconds_sklearn"] / t_ours
            if done:
                row["sklearn"] = _scores(skl, labels)
                split = cluster.split_components(skl, min_size=cluster.MIN_SIZE,
                                                 max_gap=cluster.MAX_GAP)
                row["sklearn_split"] = _scores(split, labels)
            rows.append(row)
            more = "" if done else ">"

            def fmt(key, field, width, digits=4, row=row):
                return f"{row[key][field]:{width}.{digits}f}" if key in row else \
                    f"{'timeout':>{width}}"

            print(f"{index:5d} {sigma:5.2f} {labels.max():4d} {t_ours:7.3f} "
                  f"{more + format(row['seconds_sklearn'], '.1f'):>7} "
                  f"{more + format(row['ratio'], '.0f'):>5}x  {fmt('ours', 'sbd', 8)} "
                  f"{fmt('sklearn', 'sbd', 8)} {fmt('sklearn_split', 'sbd', 9)}  "
                  f"{fmt('ours', 'abs_dic', 10, 1)} {fmt('sklearn', 'abs_dic', 8, 1)}  "
                  f"{fmt('ours', 'f1', 7, 3)} {fmt('sklearn', 'f1', 8, 3)}", flush=True)

    if not rows:
        return
    print()
    goals = {0.05: 0.97, 0.15: 0.93}  # the issue's goals per noise level
    for sigma in args.noise:
        goal = goals.get(sigma)
        sel = [r for r in rows if r["noise"] == sigma]
        done = [r for r in sel if r["finished"]]
        mean = {k: np.mean([r["ours"][k] for r in sel]) for k in ("sbd", "abs_dic", "f1")}
        line = (f"noise {sigma}: ours mean SBD {mean['sbd']:.4f}, |DiC| {mean['abs_dic']:.2f}, "
                f"F1 {mean['f1']:.3f}" + (f" (goal SBD >= {goal})" if goal else ""))
        if done:
            skl = {k: np.mean([r["sklearn"][k] for r in done]) for k in ("sbd", "abs_dic")}
            split = np.mean([r["sklearn_split"]["sbd"] for r in done])
            worse = sum(r["ours"]["sbd"] < r["sklearn"]["sbd"] for r in done)
            worse_split = sum(r["ours"]["sbd"] < r["sklearn_split"]["sbd"] for r in done)
            line += (f"; sklearn finished {len(done)}/{len(sel)}: mean SBD {skl['sbd']:.4f}, "
                     f"|DiC| {skl['abs_dic']:.2f}, with our split {split:.4f}; ours worse than "
                     f"sklearn on {worse}, than sklearn + our split on {worse_split}")
        print(line)
    print(speedup_note([r["ratio"] for r in rows], "sklearn"))
    print(load_note(load))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
