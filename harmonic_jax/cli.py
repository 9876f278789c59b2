"""The ``harmonic-jax`` command: a thin shell over the library."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

__all__ = ["main"]

_DATA = "../shared/data/cvppp_a1"
_SPLIT = "../shared/data/cvppp_a1_split.json"


def _subset(split: str, subset: str) -> list[str]:
    from harmonic_jax.data import load_split

    names = load_split(split)
    if subset not in names:
        raise ValueError(f"{split} has no subset {subset!r}; it has {sorted(names)}")
    return names[subset]


def _fit_guides(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from harmonic_jax import guides, search
    from harmonic_jax.data import READERS

    if args.dataset not in READERS:
        raise ValueError(f"unknown dataset {args.dataset!r}; readers: {sorted(READERS)}")
    names = _subset(args.split, args.subset) if args.split else None
    labels = [s.labels for s in READERS[args.dataset](args.data, names)]
    result = search.fit_guides(
        labels, n=args.n, margin=args.margin, norm=args.norm, headroom=args.headroom,
        family=args.family, steps=args.steps, pairs_per_step=args.pairs_per_step,
        images_per_step=args.images_per_step, lr=args.lr, key=jax.random.PRNGKey(args.seed),
        frame=tuple(args.frame) if args.frame else None,
    )
    stats = search.separation_stats(result.params, search.pad_labels(labels),
                                    margin=args.margin, family=args.family, frame=result.frame)
    skipped = f" ({result.skipped} with fewer than two instances skipped)" if result.skipped else ""
    print(f"{len(labels)} images{skipped}, {len(result.losses)} steps in {result.seconds:.1f} s: "
          f"loss {result.loss:.4g} (L{args.norm} hinge at {args.headroom} x {args.margin}); "
          f"pairs closer than {args.margin}: L1 {stats['l1_collision_rate']:.4%}, "
          f"L2 {stats['l2_collision_rate']:.4%}; closest pair L2 {stats['min_l2']:.4f} "
          f"(1st percentile {stats['p01_l2']:.4f})")
    if args.out:
        guides.save_guides(
            args.out, result.params, family=args.family, frame=list(result.frame),
            margin=args.margin, norm=args.norm, headroom=args.headroom, n_images=len(labels),
            steps=len(result.losses), seconds=round(result.seconds, 2), loss=result.loss,
            collision_rate=result.collision_rate, **stats,
            command="harmonic-jax " + shlex.join(args.argv),
            data=f"{Path(args.data).name} {args.subset}" if args.split else Path(args.data).name,
        )
        print(f"saved {args.out}")
    np.set_printoptions(precision=3, suppress=True)
    print(np.asarray(result.params))


def _train(args: argparse.Namespace) -> None:
    from harmonic_jax.config import load_config
    from harmonic_jax.fit import config_summary, fit

    if args.distributed:  # before any other JAX call
        from harmonic_jax import distributed

        distributed.initialize()
    import jax

    config = load_config(args.config, args.set)
    if jax.process_index() == 0:
        print(f"training {config.name}: {config_summary(config)}")
    result = fit(config)
    val = result["val"]
    if jax.process_index():
        return
    print(f"{config.name}: step {result['step']} in {result['seconds']:.0f} s"
          + (f", validation SBD {val['sbd']:.4f}, |DiC| {val['abs_dic']:.2f}" if val else "")
          + f"; run folder {result['workdir']}")


def _load_model(spec: str):
    if spec.startswith("original:"):  # a checkpoint of the PyTorch original
        from harmonic_jax import port

        model, variables, guide_params, config = port.load_original(spec[len("original:"):])
        print(f"model {spec}: the PyTorch original's UNet (guides and upsampling as its own), "
              f"for images of {config.crop[0]}x{config.crop[1]} (--scale 1)")
        return model, variables, guide_params, config
    from harmonic_jax import pretrained

    model, variables, guide_params, config = pretrained.load(spec)
    print(f"model {spec}: widths {tuple(config.widths)}, upsample {model.upsample}, works at "
          f"{config.resize}x the resolution of {config.dataset} (--scale), clustering "
          f"{config.cluster_kwargs()}")
    return model, variables, guide_params, config


def _predict(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from harmonic_jax import evaluation, io

    files = io.find_images(args.inputs)
    model, variables, guide_params, config = _load_model(args.model)
    if not model.fg_head and not config.background_instance:
        raise ValueError(f"model {args.model} has no foreground output (trained with "
                         "fg_head=false): it segments only inside masks you give "
                         "(evaluation.segment_image(..., masks=...))")
    if args.scale is not None and not (math.isfinite(args.scale) and args.scale > 0):
        raise ValueError(f"--scale must be > 0, got {args.scale}")
    from harmonic_jax.predict import tile_plan

    tile_plan((1, 1), model, tile=args.tile)  # a bad --tile fails here, not on every image
    from PIL import Image

    out = Path(args.out)
    rows, failed, used = [], 0, set()
    try:
        for path in tqdm(files, desc="predict", unit="image"):
            stem = path.stem
            while stem in used:  # two inputs of the same name (from different folders)
                stem += "_"
            used.add(stem)
            try:
                seg = evaluation.segment_image(model, variables, guide_params, config,
                                               io.read_image(path, convert=True),
                                               scale=args.scale, tile=args.tile)
                labels = seg.labels[evaluation.PREDICTED]
                io.write_labels(out / "labels" / f"{stem}.{args.format}", labels)
                if not args.no_overlay:
                    (out / "overlays").mkdir(parents=True, exist_ok=True)
                    Image.fromarray(io.overlay(seg.image, labels)).save(
                        out / "overlays" / f"{stem}.png")
            except (ValueError, OSError, MemoryError) as err:  # this image only
                failed += 1
                tqdm.write(f"{path}: skipped: {err}")
                rows.append(dict(image=str(path), error=str(err)))
                continue
            rows.append(dict(image=str(path), labels=f"labels/{stem}.{args.format}",
                             height=labels.shape[0], width=labels.shape[1],
                             instances=int(len(seg.scores[evaluation.PREDICTED])),
                             seconds=round(seg.seconds, 3), notes="; ".join(seg.notes)))
    finally:  # what was done is recorded even when the run stops
        evaluation.write_csv(out / "instances.csv", rows)
    print(f"{len(files) - failed} of {len(files)} images segmented; labels"
          + ("" if args.no_overlay else ", overlays") + f" and instances.csv in {out}/")
    if failed:
        sys.exit(f"harmonic-jax predict: {failed} images were skipped (see instances.csv)")


def _evaluate(args: argparse.Namespace) -> None:
    from harmonic_jax import evaluation
    from harmonic_jax.data import READERS

    if args.dataset not in READERS:
        raise ValueError(f"unknown dataset {args.dataset!r}; readers: {sorted(READERS)}")
    names = _subset(args.split, args.subset) if args.split else None
    samples = READERS[args.dataset](args.data, names)
    if not samples:
        raise ValueError(f"no annotated images in {args.data}")
    model, variables, guide_params, config = _load_model(args.model)
    rows, summary = evaluation.evaluate_samples(
        model, variables, guide_params, config, samples, true_fg=not args.no_true_fg,
        scale=args.scale, tile=args.tile, progress=True)
    print(evaluation.format_table(rows, ["image", "foreground", "instances", "found", "sbd",
                                         "abs_dic", "f1", "seconds"]))
    totals = [dict(foreground=k, **v) for k, v in summary.items()]
    print("\n" + evaluation.format_table(totals, ["foreground", "images", "sbd", "sbd_std",
                                                   "abs_dic", "f1", "AP", "AP50", "AP75"]))
    out = Path(args.out)
    evaluation.write_csv(out / "per_image.csv", rows)
    evaluation.write_csv(out / "summary.csv", totals)
    print(f"(labels at the images' own resolution; per_image.csv and summary.csv in {out}/)")


def _demo(args: argparse.Namespace) -> None:
    from harmonic_jax import demo

    demo.run(data=args.data, split=args.split, guides_path=args.guides, out=args.out,
             n_images=args.images, run_dir=args.run, study=args.study)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harmonic-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit-guides", help="guide search (eq. 4) on a dataset's label images")
    fit.add_argument("--dataset", default="cvppp", help="reader: cvppp, bbbc010, hela, folder")
    fit.add_argument("--data", default=_DATA, help="the dataset's folder (official layout)")
    fit.add_argument("--split", default=_SPLIT, help="split JSON ('' for every plant)")
    fit.add_argument("--subset", default="train")
    fit.add_argument("--n", type=int, default=12)
    fit.add_argument("--margin", type=float, default=0.5,
                     help="separation needed: mean-shift's bandwidth (the paper's epsilon)")
    fit.add_argument("--norm", type=int, default=2, choices=(1, 2),
                     help="2: L2, mean-shift's metric (default); 1: eq. 4's L1")
    fit.add_argument("--headroom", type=float, default=4.0,
                     help="the hinge acts at headroom x margin (1 with --norm 1: eq. 4 exactly)")
    fit.add_argument("--family", default="sine")
    fit.add_argument("--frame", type=int, nargs=2, metavar=("H", "W"))
    fit.add_argument("--steps", type=int, default=2000)
    fit.add_argument("--pairs-per-step", type=int, default=512)
    fit.add_argument("--images-per-step", type=int, default=8)
    fit.add_argument("--lr", type=float, default=0.05)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", help="write the parameters here (JSON)")
    fit.set_defaults(func=_fit_guides)

    train = sub.add_parser("train", help="train the network (resumes a killed run)")
    train.add_argument("--config", required=True, help="configs/<name>.py")
    train.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="override config fields, e.g. steps=100 workdir=runs/x")
    train.add_argument("--distributed", action="store_true",
                       help="join a multi-process run (HARMONIC_COORDINATOR, "
                            "HARMONIC_NUM_PROCESSES, HARMONIC_PROCESS_ID, or SLURM): "
                            "see harmonic_jax.distributed")
    train.set_defaults(func=_train)

    pred = sub.add_parser("predict", help="segment images or folders of images")
    pred.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    pred.add_argument("--model", default="cvppp_a1",
                      help="a shipped model name, a model folder, a training run folder, or "
                           "original:FILE, a state dict of the PyTorch original")
    pred.add_argument("--out", default="predictions", help="folder for labels/ and overlays/")
    pred.add_argument("--format", default="png", choices=("png", "tif"),
                      help="label images: 16-bit PNG or TIFF")
    pred.add_argument("--scale", type=float, default=None,
                      help="resample by this before the network (default: the model's training "
                           "resize); labels come back at the input's size")
    pred.add_argument("--tile", type=int, default=None,
                      help="tile side for large images (default: predict.default_tile)")
    pred.add_argument("--no-overlay", action="store_true")
    pred.set_defaults(func=_predict)

    ev = sub.add_parser("evaluate", help="segment an annotated dataset and score it")
    ev.add_argument("--model", default="cvppp_a1")
    ev.add_argument("--data", default=_DATA, help="the dataset's folder")
    ev.add_argument("--dataset", default="cvppp", help="reader: cvppp, bbbc010, hela, folder")
    ev.add_argument("--split", default=_SPLIT, help="split JSON ('' for every image)")
    ev.add_argument("--subset", default="test")
    ev.add_argument("--out", default="evaluation", help="folder for the CSV files")
    ev.add_argument("--scale", type=float, default=None)
    ev.add_argument("--tile", type=int, default=None)
    ev.add_argument("--no-true-fg", action="store_true",
                    help="skip the rows clustered inside the true foreground")
    ev.set_defaults(func=_evaluate)

    demo = sub.add_parser("demo", help="the main job end to end on real data")
    demo.add_argument("--data", default=_DATA)
    demo.add_argument("--split", default=_SPLIT)
    demo.add_argument("--guides", default="configs/guides/cvppp_a1.json")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument("--images", type=int, default=None,
                      help="held-out plants to segment (default: all 32)")
    demo.add_argument("--study", action="store_true",
                      help="also the guide search and noisy ground-truth embedding study")
    demo.add_argument("--run", default=None,
                      help="a trained run folder (default: the shipped cvppp_a1 model)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        args.func(args)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"harmonic-jax {args.command}: error: {err}")


if __name__ == "__main__":
    main()
