"""Scores a trained run on its held-out images and ships it as a pretrained model.

Each held-out image goes through :func:`harmonic_jax.evaluation.segment_image`, the pipeline of
``harmonic-jax predict`` (network at the run's resolution, labels back at the image's own):
instances come from mean-shift inside the predicted foreground (what a user gets) and inside the
true one (the paper's protocol), beside the trivial baseline, connected components of the same
foregrounds. Reported: SBD, |DiC|, matching F1 at IoU 0.5 and COCO AP50 (embedding instances
scored by their mean foreground probability), at the images' own resolution. The table goes to
``benchmarks/results/pretrained_<name>.md`` and, with the per-image scores, into the model's
manifest; the run's newest checkpoint is written to ``harmonic_jax/pretrained/<name>/`` (see
``harmonic_jax.pretrained.export_run``).

    .venv/bin/python benchmarks/export_pretrained.py runs/cvppp_a1_cpu --name cvppp_a1 \\
        --min-size 80 --max-gap 48
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from harmonic_jax import cluster, evaluation, metrics, pretrained
from harmonic_jax.checkpoint import Checkpointer
from harmonic_jax.data import READERS, load_split
from harmonic_jax.fit import _resume_log, config_summary, load_run

ROWS = ("embedding, predicted fg", "embedding, true fg", "components, predicted fg",
        "components, true fg")


def held_out_scores(model, variables, guide_params, config) -> dict:
    """Per-image and mean scores of the four segmentations of ``ROWS`` on the held-out split."""
    if not model.fg_head:
        raise ValueError("the model has no foreground head: its predicted-foreground rows "
                         "cannot be scored")
    names = load_split(config.split)[config.val_subset]
    samples = READERS[config.dataset](config.data, names)
    # The clustering's min_size is in pixels at the network's scale; components are found at
    # the images' own.
    min_size = round((config.min_size or cluster.MIN_SIZE) / config.resize**2)
    per_image, preds, scores = ({row: [] for row in ROWS} for _ in range(3))
    for sample in tqdm(samples, desc="held-out"):
        seg = evaluation.segment_image(model, variables, guide_params, config, sample.image,
                                       masks={"true fg": sample.fg})
        out = {ROWS[0]: (seg.labels["predicted fg"], seg.scores["predicted fg"]),
               ROWS[1]: (seg.labels["true fg"], seg.scores["true fg"]),
               ROWS[2]: (evaluation.components(seg.foreground, min_size), None),
               ROWS[3]: (evaluation.components(sample.fg, min_size), None)}
        for row, (labels, confidence) in out.items():
            count = len(np.unique(labels[labels > 0]))
            preds[row].append(labels)
            scores[row].append(np.ones(count) if confidence is None else confidence)
            per_image[row].append({
                "image": sample.name, "sbd": metrics.sbd(labels, sample.labels),
                "abs_dic": abs(metrics.dic(labels, sample.labels)),
                "f1": metrics.matching(labels, sample.labels)["f1"], "seconds": seg.seconds})
    table = {}
    gts = [s.labels for s in samples]
    for row in ROWS:
        ap = metrics.coco_ap(preds[row], gts, scores=scores[row])
        table[row] = {k: float(np.mean([r[k] for r in per_image[row]]))
                      for k in ("sbd", "abs_dic", "f1")}
        table[row]["sbd_std"] = float(np.std([r["sbd"] for r in per_image[row]]))
        table[row]["ap50"] = ap["AP50"]
    return {"images": len(samples), "table": table, "per_image": per_image}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder of harmonic_jax.fit")
    parser.add_argument("--name", default="cvppp_a1")
    parser.add_argument("--min-size", type=int, help="inference min_size to ship (measured)")
    parser.add_argument("--max-gap", type=float, help="inference max_gap to ship (measured)")
    parser.add_argument("--note", default="", help="how the run was trained, if not one command")
    args = parser.parse_args(argv)
    model, variables, guide_params, config = load_run(args.run, best=False)
    updates = {k: v for k, v in (("min_size", args.min_size), ("max_gap", args.max_gap))
               if v is not None}
    config = dataclasses.replace(config, **updates)
    result = held_out_scores(model, variables, guide_params, config)
    checkpointer = Checkpointer(args.run)
    newest = checkpointer.last.latest_step()
    checkpointer.close()
    _resume_log(Path(args.run, "metrics.jsonl"), newest)  # the log up to the exported step
    log = [json.loads(x) for x in Path(args.run, "metrics.jsonl").read_text().splitlines() if x]
    steps = max(x["step"] for x in log)
    seconds = max(x.get("seconds", 0.0) for x in log)
    train_command = json.loads(Path(args.run, "config.json").read_text()).get("name")
    argv = sys.argv[1:] if argv is None else list(argv)
    settings = ("measured on training images by `benchmarks/tune_inference.py`" if updates
                else "the run's")
    lines = [f"# Pretrained `{args.name}`: held-out scores\n\n",
             f"`harmonic_jax.pretrained.load(\"{args.name}\")`: `configs/{train_command}.py`, "
             f"{steps} steps, {seconds / 60:.0f} min of training on {os.cpu_count()} CPU cores; "
             f"the newest checkpoint (not chosen by held-out scores). "
             + (f"{args.note} " if args.note else "") + "Scored on the "
             f"{result['images']} held-out images of `{config.split}` at their own resolution "
             f"(the network runs at {config.resize}x), with min_size={config.min_size}, "
             f"max_gap={config.max_gap} "
             f"({settings}). Connected components drop or absorb parts under min_size as the "
             f"embedding's clustering does; components are scored 1.0 each for AP. Command: `"
             + shlex.join([".venv/bin/python", "benchmarks/export_pretrained.py", *argv])
             + "`.\n\n| segmentation | SBD (mean ± std) | \\|DiC\\| | F1 @0.5 | AP50 |\n"
             "|---|---|---|---|---|\n"]
    for row, v in result["table"].items():
        lines.append(f"| {row} | {v['sbd']:.3f} ± {v['sbd_std']:.3f} | {v['abs_dic']:.2f} | "
                     f"{v['f1']:.3f} | {v['ap50']:.3f} |\n")
    lines.append("\nPaper (CVPPP A1 hidden test set, full resolution, 500 epochs on a V100, true "
                 "foreground): SBD 0.899, |DiC| 3.0.\n")
    text = "".join(lines)
    out = Path(f"benchmarks/results/pretrained_{args.name}.md")
    out.write_text(text)
    print(text)
    dest = pretrained.export_run(
        args.run, Path("harmonic_jax/pretrained") / args.name, config_updates=updates,
        steps=steps, train_seconds=seconds, machine=f"{platform.node()}, {os.cpu_count()} CPU cores",
        train_command=f"harmonic-jax train --config configs/{train_command}.py",
        train_settings=config_summary(config),
        export_command=shlex.join(["benchmarks/export_pretrained.py", *argv]), note=args.note,
        held_out=result["table"], held_out_per_image=result["per_image"])
    print(f"wrote {dest} ({(dest / 'variables.msgpack').stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
