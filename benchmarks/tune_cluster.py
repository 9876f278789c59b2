"""Where the defaults of ``cluster.mean_shift`` come from: SBD over a grid of ``min_size`` and
``max_gap``, on real plants and on crowded blobs, at two noise levels.

Plants: CVPPP A1 training-split images at full resolution, true foreground, shipped guides.
Crowded: ``touching_blobs`` images of seeds 20000+ (neither the guides' training seeds nor the
test seeds of ``bench_crowded.py``) with their shipped guides. The benchmarks then report on
images the defaults were not chosen on.
Ground-truth embeddings plus Gaussian noise are clustered once per image and noise level
(``cluster.cluster_labels``); every grid cell then only re-runs ``split_components``. The last
columns are the mean and the worst of the four (data, noise) means; the default maximises the
mean.

    .venv/bin/python benchmarks/tune_cluster.py [--plants 16] [--blobs 8]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from harmonic_jax import cluster, embedding, guides, metrics
from harmonic_jax.data import load_cvppp, load_split
from harmonic_jax.data.synthetic import touching_blobs

ROOT = Path(__file__).resolve().parents[1]


def _cases(labels_list, params, frame, noise):
    """(labels, clusters) for every image and noise level."""
    out = {sigma: [] for sigma in noise}
    for index, labels in enumerate(tqdm(labels_list, desc="mean-shift", leave=False)):
        target = np.asarray(embedding.target_embedding(
            guides.sine(params, *labels.shape, frame=frame), labels))
        for sigma in noise:
            rng = np.random.default_rng(index)
            noisy = target + rng.normal(0, sigma, target.shape).astype(np.float32)
            out[sigma].append((labels, cluster.cluster_labels(noisy, mask=labels > 0)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared/data/cvppp_a1"))
    parser.add_argument("--split", default=str(ROOT.parent / "shared/data/cvppp_a1_split.json"))
    parser.add_argument("--plants", type=int, default=16)
    parser.add_argument("--blobs", type=int, default=8)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.15])
    parser.add_argument("--min-size", type=int, nargs="+", default=[4, 6, 8, 12])
    parser.add_argument("--max-gap", type=float, nargs="+", default=[0, 8, 16, 32, 48, 64])
    args = parser.parse_args()

    names = load_split(args.split)["train"][: args.plants]
    plants = [s.labels for s in load_cvppp(args.data, names)]
    plant_params, plant_meta = guides.load_guides(ROOT / "configs/guides/cvppp_a1.json")
    blob_params, blob_meta = guides.load_guides(ROOT / "configs/guides/crowded_blobs.json")
    blobs = [touching_blobs(20_000 + seed, tuple(blob_meta["frame"]))
             for seed in range(args.blobs)]
    data = {
        "plants": _cases(plants, plant_params, tuple(plant_meta["frame"]),
                         args.noise),
        "blobs": _cases(blobs, blob_params, tuple(blob_meta["frame"]), args.noise),
    }
    columns = [(name, sigma) for name in data for sigma in args.noise]
    print(f"{'min_size':>8} {'max_gap':>7}  " + "  ".join(
        f"{name + ' ' + str(sigma):>12}" for name, sigma in columns)
        + f"  {'mean':>6} {'worst':>6}")
    results = []
    for min_size, max_gap in itertools.product(args.min_size, args.max_gap):
        means = [np.mean([metrics.sbd(cluster.split_components(c, min_size=min_size,
                                                               max_gap=max_gap), labels)
                          for labels, c in data[name][sigma]]) for name, sigma in columns]
        results.append((np.mean(means), min(means), min_size, max_gap))
        print(f"{min_size:8d} {max_gap:7g}  " + "  ".join(f"{m:12.4f}" for m in means)
              + f"  {np.mean(means):6.4f} {min(means):6.4f}", flush=True)
    best = max(results)
    print(f"best mean SBD {best[0]:.4f} (worst {best[1]:.4f}) at min_size={best[2]}, "
          f"max_gap={best[3]:g}; library defaults: min_size={cluster.MIN_SIZE}, "
          f"max_gap={cluster.MAX_GAP:g}")


if __name__ == "__main__":
    main()
