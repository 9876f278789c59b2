"""Compilations for a folder of mixed sizes through the ``harmonic-jax predict`` pipeline
(``evaluation.segment_image`` with the shipped model): 4 held-out plants resampled to 12 sizes
from 128 x 96 to 2000 x 1500; prints each image's tile shape and the count of compiled programs.

    .venv/bin/python benchmarks/count_compilations.py
"""
import time

import numpy as np
from PIL import Image

from harmonic_jax import evaluation, predict, pretrained
from harmonic_jax.data import load_cvppp, load_split

names = load_split("../shared/data/cvppp_a1_split.json")["test"][:4]
plants = [s.image for s in load_cvppp("../shared/data/cvppp_a1", names)]
sizes = [(530, 500), (500, 530), (300, 420), (265, 250), (700, 900), (1200, 1000), (128, 96),
         (640, 480), (1024, 1024), (333, 777), (2000, 1500), (450, 450)]
model, variables, guide_params, config = pretrained.load("cvppp_a1")
predict._apply.clear_cache()
shapes = set()
t = time.perf_counter()
for k, (h, w) in enumerate(sizes):
    img = np.asarray(Image.fromarray(plants[k % 4]).resize((w, h), Image.BILINEAR))
    seg = evaluation.segment_image(model, variables, guide_params, config, img)
    small = (round(h * config.resize), round(w * config.resize))
    shapes.add(predict.tile_plan(small, model)[0])
    shape, tiles = predict.tile_plan(small, model)
    print(f"{h}x{w}: model input {small}, tile shape {shape}, {len(tiles)} tiles, "
          f"{len(seg.scores['predicted fg'])} instances, {seg.seconds:.2f} s")
print(f"{len(sizes)} images of {len(set(sizes))} sizes: {predict._apply._cache_size()} compilations "
      f"(tile shapes {sorted(shapes)}), {time.perf_counter() - t:.1f} s in all")
