"""Metrics at scale: SBD, matching and COCO AP of a 2048² image with 500 instances, in their own
process for its peak memory. The dense mask-stack formulation they replaced (float32 ``(K, H*W)``
masks and a matrix product) is not run at this size: its masks alone take the memory printed.

    .venv/bin/python benchmarks/bench_metrics.py [--size 2048] [--instances 500]
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


def _images(size: int, instances: int) -> tuple[np.ndarray, np.ndarray]:
    """A grid of ``instances`` square cells as truth, and the same shifted by 3 pixels with a
    tenth of the cells split in two, as a prediction."""
    side = int(np.ceil(np.sqrt(instances)))
    cell = size // side
    yy, xx = np.mgrid[:size, :size]
    gt = (np.minimum(yy // cell, side - 1) * side + np.minimum(xx // cell, side - 1) + 1)
    gt[gt > instances] = 0
    pred = np.roll(gt, 3, axis=(0, 1))
    split = (pred > 0) & (pred % 10 == 0) & (xx % cell > cell // 2)
    pred = np.where(split, pred + instances, pred)
    return pred.astype(np.int32), gt.astype(np.int32)


def _worker(kind: str, size: int, instances: int) -> dict:
    from harmonic_jax import metrics

    pred, gt = _images(size, instances)
    start = time.perf_counter()
    out = dict(sbd=metrics.sbd(pred, gt), f1=metrics.matching(pred, gt)["f1"])
    out["sbd_f1_s"] = time.perf_counter() - start
    out["AP50"] = metrics.coco_ap([pred], [gt])["AP50"]
    out["masks"] = len(np.unique(pred)) + len(np.unique(gt)) - 2
    out.update(seconds=time.perf_counter() - start,
               peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.size, args.instances)))
        return
    from common import load_note

    before = os.getloadavg()
    out = subprocess.run([sys.executable, __file__, "--worker", "ours", "--size",
                          str(args.size), "--instances", str(args.instances)],
                         check=True, capture_output=True, text=True)
    ours = json.loads(out.stdout.strip().splitlines()[-1])
    dense_gib = ours["masks"] * args.size**2 * 4 / 2**30
    print(f"{args.size}² image, {args.instances} true and {ours['masks'] - args.instances} "
          "predicted instances")
    print(f"  contingency table: SBD + matching {ours['sbd_f1_s']:.2f} s, with COCO AP "
          f"{ours['seconds']:.2f} s, peak RSS {ours['peak_mib']:.0f} MiB (goal: seconds, < 1 GiB)")
    print(f"  (the dense float32 mask stacks it replaced: {dense_gib:.1f} GiB for the masks alone)")
    print(f"  SBD {ours['sbd']:.4f}, F1 {ours['f1']:.3f}, AP50 {ours['AP50']:.3f}")
    print(load_note(before))


if __name__ == "__main__":
    main()
