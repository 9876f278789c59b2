"""Crowded data, trained end to end: does the embedding beat connected components?

Writes rendered touching-blob images (``harmonic_jax.data.synthetic.write_blob_folder``: 50 to
300 textured nuclei per 256 x 256 image, touching along dim seams) in the generic folder layout,
trains ``configs/folder_cpu.py`` on them exactly as a user would (split, guides and
``max_instances`` derived by the run), and scores the held-out images four ways:

- embedding + mean-shift inside the **predicted** foreground (what a user gets);
- connected components of that same predicted foreground (the trivial baseline);
- embedding inside the true foreground, and connected components of the true foreground.

    .venv/bin/python benchmarks/bench_crowded_training.py --images 64 --steps 600

The table goes to ``benchmarks/results/crowded_training.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import label as ndimage_label

from harmonic_jax import cluster, metrics, predict
from harmonic_jax.config import load_config
from harmonic_jax.data import load_folder, load_split, resize_sample
from harmonic_jax.data.synthetic import write_blob_folder
from harmonic_jax.fit import fit, load_run

OUT = Path("benchmarks/results/crowded_training.md")


def connected_components(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a foreground mask, as instance labels."""
    return ndimage_label(mask, structure=np.ones((3, 3), bool))[0].astype(np.int32)


def score(run: Path) -> dict:
    model, variables, guide_params, config = load_run(run)
    if not model.fg_head:
        raise ValueError("the crowded benchmark compares with the model's own foreground: train "
                         "with fg_head=true")
    names = load_split(config.split)["test"]
    rows = {k: {"sbd": [], "abs_dic": []} for k in
            ("embedding, predicted fg", "components, predicted fg", "embedding, true fg",
             "components, true fg")}
    for sample in load_folder(config.data, names):
        sample = sample if config.resize == 1.0 else resize_sample(sample, config.resize)
        emb, prob = predict.predict(model, variables, guide_params, sample.image)
        emb, fg = np.asarray(emb), np.asarray(prob) > 0.5
        preds = {"embedding, predicted fg": cluster.mean_shift(emb, mask=fg,
                                                               **config.cluster_kwargs()),
                 "components, predicted fg": connected_components(fg),
                 "embedding, true fg": cluster.mean_shift(emb, mask=sample.fg,
                                                          **config.cluster_kwargs()),
                 "components, true fg": connected_components(sample.fg)}
        for key, pred in preds.items():
            rows[key]["sbd"].append(metrics.sbd(pred, sample.labels))
            rows[key]["abs_dic"].append(abs(metrics.dic(pred, sample.labels)))
    return {k: {m: float(np.mean(v)) for m, v in r.items()} | {"images": len(names)}
            for k, r in rows.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/crowded_blobs_data")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--workdir", default="runs/crowded_blobs")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if not Path(args.data, "images").is_dir():
        write_blob_folder(args.data, args.images, seed=1000)
    config = load_config("configs/folder_cpu.py", [f"data={args.data}", f"workdir={args.workdir}",
                                                   f"steps={args.steps}",
                                                   f"eval_every={args.steps}", *args.set])
    start = time.perf_counter()
    result = fit(config)
    seconds = time.perf_counter() - start
    table = score(Path(args.workdir))
    lines = ["# Crowded blobs, trained end to end (CPU)\n\n",
             f"`.venv/bin/python benchmarks/bench_crowded_training.py --images {args.images} "
             f"--steps {args.steps}" + (f" --set {' '.join(args.set)}" if args.set else "") +
             f"`: {args.images} rendered touching-blob images (256 x 256, 50-300 objects), "
             f"`configs/folder_cpu.py` trained {result['step']} steps in {seconds:.0f} s "
             f"(load average {os.getloadavg()[1]:.1f}); held-out images: "
             f"{next(iter(table.values()))['images']}; the library's clustering defaults.\n\n",
             "| segmentation | SBD | \\|DiC\\| |\n|---|---|---|\n"]
    lines += [f"| {k} | {v['sbd']:.3f} | {v['abs_dic']:.1f} |\n" for k, v in table.items()]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(lines))
    print("".join(lines))
    print(json.dumps(table))


if __name__ == "__main__":
    main()
