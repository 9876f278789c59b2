"""Inference speed and memory: our pipeline against the PyTorch original's, same machine.

1. End to end per CVPPP A1 plant (530 x 500, after warm-up): ours is what ``harmonic-jax
   predict`` does with the shipped model (resample to its 0.5 scale, tiled network, mean-shift on
   the host, labels back at full size). The original's pipeline is a PyTorch forward pass of the
   default architecture (ours, 28.8 M parameters) at 448 x 448, then sklearn
   ``MeanShift(bandwidth=0.5, bin_seeding=True)`` over every pixel of the 448 x 448 embedding (our
   shipped model's embedding, resized), as the original does.
2. The forward pass alone, default architecture at 448 x 448, batch 1: JAX (jitted, tiled path)
   against PyTorch (eval mode, no_grad), same threads.
3. Peak memory (RSS) of ``predict_embeddings`` with the shipped model on 1024² and 4096² images,
   each in its own process, and seconds (after compiling) for a 2048² image by tile size.

    .venv/bin/python benchmarks/bench_predict.py [--images 8] [--timeout 300]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = "../shared/data/cvppp_a1"
SPLIT = "../shared/data/cvppp_a1_split.json"


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_worker(size: int, tile: int) -> dict:
    from harmonic_jax import predict, pretrained

    model, variables, guide_params, _ = pretrained.load("cvppp_a1")
    warm = np.zeros((min(size, tile), min(size, tile), 3), np.uint8)
    predict.predict_embeddings(model, variables, guide_params, warm, tile=tile)  # compiles
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3)).astype(np.uint8)
    start = time.perf_counter()
    predict.predict_embeddings(model, variables, guide_params, image, tile=tile)
    seconds = time.perf_counter() - start
    tiles = len(predict.tile_plan((size, size), model, tile=tile)[1])
    return dict(size=size, tile=tile, tiles=tiles, seconds=seconds, peak_mib=_peak_mib())


def _torch_forward(size: int, repeats: int) -> tuple[float, object]:
    """Seconds per forward pass of the original's architecture in PyTorch, and the network."""
    import torch
    from bench_train import torch_unet

    torch.set_num_threads(os.cpu_count())
    net = torch_unet().eval()
    x = torch.zeros((1, 3, size, size))
    with torch.no_grad():
        net(x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
    return (time.perf_counter() - start) / repeats, net


def _jax_forward(size: int, repeats: int) -> tuple[float, float]:
    """Seconds per forward pass of the default architecture: tiled (``predict_embeddings``:
    padded to its shape bucket, padding masked) and in one plain pass (``predict.predict``)."""
    import jax
    import jax.numpy as jnp

    from harmonic_jax import guides, predict
    from harmonic_jax.model import UNet

    params, meta = guides.load_guides("cvppp_a1")
    model = UNet(frame=tuple(meta["frame"]))
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                                           guide_params=params))()
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3)).astype(np.uint8)
    times = []
    for run in (predict.predict_embeddings, predict.predict):
        np.asarray(run(model, variables, params, image))
        start = time.perf_counter()
        for _ in range(repeats):
            np.asarray(run(model, variables, params, image))
        times.append((time.perf_counter() - start) / repeats)
    return tuple(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="held-out plants to time")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds allowed to sklearn's MeanShift per plant")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-worker", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        print(json.dumps(_memory_worker(*args.memory_worker)))
        return

    from common import load_note, timed_original
    from PIL import Image

    from harmonic_jax import evaluation, pretrained
    from harmonic_jax.data import load_cvppp, load_split
    from harmonic_jax.predict import Prepared, predict_embeddings

    def at_model_scale(image):
        return Prepared(evaluation._resize_image(image.astype(np.float32), config.resize), ())

    before = os.getloadavg()
    model, variables, guide_params, config = pretrained.load("cvppp_a1")
    samples = load_cvppp(DATA, load_split(SPLIT)["test"][:args.images])
    evaluation.segment_image(model, variables, guide_params, config, samples[0].image)  # warm-up
    ours, network = [], []
    for s in samples:
        seg = evaluation.segment_image(model, variables, guide_params, config, s.image)
        ours.append(seg.seconds)
        start = time.perf_counter()
        predict_embeddings(model, variables, guide_params, at_model_scale(s.image))
        network.append(time.perf_counter() - start)
    print(f"1. end to end per plant ({samples[0].image.shape[1]} x {samples[0].image.shape[0]}), "
          f"{len(samples)} held-out plants")
    print(f"   ours (shipped model at {config.resize}x, tiled network + mean-shift): "
          f"{np.mean(ours):.3f} s (network {np.mean(network):.3f} s)")

    torch_s, _ = _torch_forward(448, args.repeats)
    sk = []
    for s in samples[:3]:
        emb, _ = predict_embeddings(model, variables, guide_params, at_model_scale(s.image))
        emb448 = np.stack([np.asarray(Image.fromarray(c).resize((448, 448), Image.BILINEAR))
                           for c in np.moveaxis(emb, -1, 0)], -1)
        seconds, _ = timed_original(emb448, np.ones((448, 448), bool), 0.5, 0, args.timeout)
        sk.append(args.timeout if seconds is None else seconds)
        print(f"   sklearn MeanShift over the 448² pixels of {s.name}: "
              + (f"{seconds:.1f} s" if seconds is not None else f"> {args.timeout:.0f} s (stopped)"))
    original = torch_s + float(np.mean(sk))
    print(f"   original: PyTorch forward {torch_s:.3f} s + MeanShift {np.mean(sk):.1f} s = "
          f"{original:.1f} s")
    print(f"   end-to-end speed-up {original / np.mean(ours):.0f}x (goal >= 5x)")

    tiled_s, plain_s = _jax_forward(448, args.repeats)
    print(f"2. forward pass, default architecture, 448², batch 1: PyTorch {torch_s:.3f} s; JAX "
          f"tiled path {tiled_s:.3f} s ({torch_s / tiled_s:.2f}x, goal >= 1.5x), one plain pass "
          f"{plain_s:.3f} s ({torch_s / plain_s:.2f}x)")

    print("3. predict_embeddings with the shipped model, own process each:")
    print(f"   {'size':>6} {'tile':>5} {'tiles':>6} {'seconds':>8} {'peak MiB':>9}")
    rows = []
    for size, tile in ((1024, 512), (4096, 512), (2048, 256), (2048, 512), (2048, 1024)):
        out = subprocess.run([sys.executable, __file__, "--memory-worker", str(size), str(tile)],
                             check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"   {size:6d} {tile:5d} {row['tiles']:6d} {row['seconds']:8.2f} "
              f"{row['peak_mib']:9.0f}", flush=True)
    print(f"   peak memory 4096² / 1024²: {rows[1]['peak_mib'] / rows[0]['peak_mib']:.2f}x "
          "(goal < 2x)")
    print(load_note(before))


if __name__ == "__main__":
    main()
