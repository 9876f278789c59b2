"""How far a tile seam reaches into the shipped network's output: the largest difference between
tiled and one-pass embeddings of held-out plants (at the network's scale) by tile overlap, with
tiles of 160 pixels so that every plant is cut by several seams.

    .venv/bin/python benchmarks/tile_borders.py [--images 4]
"""

from __future__ import annotations

import argparse

import numpy as np

from harmonic_jax import evaluation, predict, pretrained
from harmonic_jax.data import load_cvppp, load_split
from harmonic_jax.model import receptive_radius


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    model, variables, guide_params, config = pretrained.load("cvppp_a1")
    names = load_split("../shared/data/cvppp_a1_split.json")["test"][:args.images]
    images = [evaluation._resize_image(s.image.astype(np.float32), config.resize)
              for s in load_cvppp("../shared/data/cvppp_a1", names)]
    whole = [np.asarray(predict.predict(model, variables, guide_params, x)[0]) for x in images]
    radius = receptive_radius(model)
    print(f"receptive radius {radius} px (the default overlap, rounded up to a multiple of 8)")
    print(f"{'overlap':>7} {'tiles':>5} {'max |diff|':>11} {'mean |diff|':>12}")
    for overlap in (0, 8, 16, 24, 32, 48, radius):
        diffs = []
        for x, ref in zip(images, whole):
            emb = predict.predict_embeddings(model, variables, guide_params,
                                             predict.Prepared(x, ()), tile=160,
                                             overlap=overlap)[0]
            diffs.append(np.abs(emb - ref))
        tiles = len(predict.tile_plan(images[0].shape[:2], model, tile=160, overlap=overlap)[1])
        print(f"{overlap:7d} {tiles:5d} {max(d.max() for d in diffs):11.2e} "
              f"{np.mean([d.mean() for d in diffs]):12.2e}")


if __name__ == "__main__":
    main()
