"""Inference settings for a trained network, measured on training images (never the held-out
ones): SBD over a grid of ``min_size`` x ``max_gap``, clustering inside the predicted foreground.

A network's errors are spatially coherent (a strip along a leaf's edge, a wrong patch where two
leaves meet), so the fragments it leaves are larger than those of noisy ground-truth embeddings
that ``cluster.mean_shift``'s defaults were measured on. Run this on a model before shipping it
and put the winner in its config:

    .venv/bin/python benchmarks/tune_inference.py runs/cvppp_a1_cpu --images 24
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from harmonic_jax import cluster, metrics, predict, pretrained
from harmonic_jax.data import READERS, load_split, resize_sample
from harmonic_jax.fit import load_run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run folder or a shipped model's name")
    parser.add_argument("--images", type=int, default=24, help="training images to score")
    parser.add_argument("--min-size", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--max-gap", type=float, nargs="+", default=[0, 12, 24, 48])
    args = parser.parse_args(argv)
    try:
        model, variables, guide_params, config = load_run(args.model, best=False)  # newest
    except FileNotFoundError:
        model, variables, guide_params, config = pretrained.load(args.model)
    names = load_split(config.split)[config.train_subset][: args.images]
    samples = [resize_sample(s, config.resize) if config.resize != 1.0 else s
               for s in READERS[config.dataset](config.data, names)]
    grid = list(itertools.product(args.min_size, args.max_gap))
    scores = {g: [] for g in grid}
    for sample in samples:
        emb, prob = predict.predict(model, variables, guide_params, sample.image)
        emb, fg = np.asarray(emb), np.asarray(prob) > 0.5
        clusters = cluster.cluster_labels(emb, bandwidth=config.bandwidth, mask=fg)
        for min_size, max_gap in grid:
            pred = cluster.split_components(clusters, min_size=min_size, max_gap=max_gap)
            scores[(min_size, max_gap)].append(metrics.sbd(pred, sample.labels))
    print(f"SBD on {len(samples)} training images ({config.train_subset}), predicted foreground")
    print("min_size \\ max_gap | " + " | ".join(f"{g:g}" for g in args.max_gap))
    for min_size in args.min_size:
        print(f"{min_size} | " + " | ".join(f"{np.mean(scores[(min_size, g)]):.3f}"
                                           for g in args.max_gap))
    best = max(grid, key=lambda g: np.mean(scores[g]))
    print(f"best: min_size={best[0]} max_gap={best[1]:g} (SBD {np.mean(scores[best]):.3f})")


if __name__ == "__main__":
    main()
