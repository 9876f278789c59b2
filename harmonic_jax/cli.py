"""The ``harmonic-jax`` command: a thin shell over the library."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

__all__ = ["main"]

_DATA = "../shared/data/cvppp_a1"
_SPLIT = "../shared/data/cvppp_a1_split.json"


def _fit_guides(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from harmonic_jax import guides, search
    from harmonic_jax.data import READERS, load_split

    if args.dataset not in READERS:
        raise ValueError(f"unknown dataset {args.dataset!r}; readers: {sorted(READERS)}")
    names = load_split(args.split)[args.subset] if args.split else None
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

    config = load_config(args.config, args.set)
    print(f"training {config.name}: {config_summary(config)}")
    result = fit(config)
    val = result["val"]
    print(f"{config.name}: step {result['step']} in {result['seconds']:.0f} s"
          + (f", validation SBD {val['sbd']:.4f}, |DiC| {val['abs_dic']:.2f}" if val else "")
          + f"; run folder {result['workdir']}")


def _demo(args: argparse.Namespace) -> None:
    from harmonic_jax import demo

    demo.run(data=args.data, split=args.split, guides_path=args.guides, out=args.out,
             n_images=args.images, run_dir=args.run)


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
    train.set_defaults(func=_train)

    demo = sub.add_parser("demo", help="the main job end to end on real data")
    demo.add_argument("--data", default=_DATA)
    demo.add_argument("--split", default=_SPLIT)
    demo.add_argument("--guides", default="configs/guides/cvppp_a1.json")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument("--images", type=int, default=4)
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
