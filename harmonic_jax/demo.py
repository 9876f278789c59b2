"""``make demo``: the method's core on real CVPPP A1 images, with a table and pictures.

1. Guide search (eq. 4) on the training split, next to the shipped and the original's guides.
2. Ground-truth harmonic embeddings of held-out plants, with Gaussian noise standing in for a
   network's error, clustered by mean-shift and scored with SBD, |DiC| and F1 at IoU 0.5.
3. The trained network of a run folder (``harmonic-jax train``), if there is one, on the same
   held-out plants.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from harmonic_jax import cluster, embedding, guides, metrics, predict, pretrained, search, viz
from harmonic_jax.data import load_cvppp, load_split, resize_sample
from harmonic_jax.fit import load_run

__all__ = ["run"]


def _guide_table(sets: dict, labels: np.ndarray, frame, margin: float, bandwidth: float) -> list:
    rows = []
    for name, params in sets.items():
        l1 = search.pair_distances(params, labels, frame=frame, norm=1)
        l2 = search.pair_distances(params, labels, frame=frame, norm=2)
        rows.append(dict(guides=name, pairs=len(l1), l1_collisions=float(np.mean(l1 < margin)),
                         min_l1=float(l1.min()), l2_below_bandwidth=float(np.mean(l2 < bandwidth)),
                         min_l2=float(l2.min()), p01_l2=float(np.percentile(l2, 1))))
    return rows


def _print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(fmt(r[c])) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(fmt(r[c]).ljust(w) for c, w in zip(columns, widths)))


def _network_section(run_dir, data, names, out: Path) -> list[dict]:
    """3. The trained network (the shipped ``cvppp_a1`` model, or ``run_dir``) on held-out
    plants, segmenting inside its own predicted foreground and, as the paper does, the true one."""
    source = run_dir or "the shipped pretrained model cvppp_a1"
    print(f"\n== 3. The trained network ({source}) on {len(names)} held-out plants ==")
    try:
        model, variables, guide_params, config = (load_run(run_dir) if run_dir else
                                                   pretrained.load("cvppp_a1"))
    except (FileNotFoundError, ValueError) as err:
        print(f"no trained network ({err}). Train one (about an hour on 2 CPU cores):\n"
              "    .venv/bin/harmonic-jax train --config configs/cvppp_a1_cpu.py")
        return []
    rows = []
    for sample in load_cvppp(data, names):
        if config.resize != 1.0:
            sample = resize_sample(sample, config.resize)
        start = time.perf_counter()
        pred, emb = predict.segment(model, variables, guide_params, sample.image,
                                    fg_mask=None if model.fg_head else sample.fg,
                                    return_embedding=True, **config.cluster_kwargs())
        seconds = time.perf_counter() - start
        truth_fg = cluster.mean_shift(emb, mask=sample.fg, **config.cluster_kwargs())
        for kind, labels in (("predicted fg", pred), ("true fg", truth_fg)):
            rows.append(dict(image=sample.name, foreground=kind, leaves=int(sample.labels.max()),
                             found=int(labels.max()), sbd=metrics.sbd(labels, sample.labels),
                             abs_dic=abs(metrics.dic(labels, sample.labels)),
                             f1=metrics.matching(labels, sample.labels)["f1"], seconds=seconds))
        viz.save_panel(out / f"{sample.name}_network.png",
                       [sample.image, viz.colorize_labels(sample.labels),
                        viz.embedding_rgb(np.where((pred > 0)[..., None], emb, 0.0)),
                        viz.colorize_labels(pred)],
                       ["image", "truth", "predicted embedding ch 0-2",
                        f"network + mean-shift, SBD {rows[-2]['sbd']:.3f}"])
    _print_table(rows, ["image", "foreground", "leaves", "found", "sbd", "abs_dic", "f1",
                        "seconds"])
    for kind in ("predicted fg", "true fg"):
        sel = [r for r in rows if r["foreground"] == kind]
        print(f"{kind}: mean SBD {np.mean([r['sbd'] for r in sel]):.4f}, mean |DiC| "
              f"{np.mean([r['abs_dic'] for r in sel]):.2f}")
    print(f"(images at {config.resize}x resolution)")
    return rows


def run(
    *,
    data: str | Path,
    split: str | Path,
    guides_path: str | Path,
    out: str | Path = "demo_out",
    n_images: int = 4,
    noise: tuple[float, ...] = (0.05, 0.15),
    bandwidth: float = 0.5,
    search_steps: int = 200,
    run_dir: str | Path | None = None,
) -> dict:
    """Runs the demo; prints tables, writes pictures and ``summary.json`` under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = load_split(split)
    params, meta = guides.load_guides(guides_path)
    frame, margin = tuple(meta["frame"]), float(meta["margin"])

    print(f"== 1. Guide search (eq. 4 in mean-shift's L2) on {len(names['train'])} CVPPP A1 "
          f"training plants ==")
    train = search.pad_labels([s.labels for s in load_cvppp(data, names["train"])])
    fit = search.fit_guides(list(train), n=params.shape[0], margin=margin, frame=frame,
                            steps=search_steps, key=jax.random.PRNGKey(0), progress=True)
    print(f"live search: {len(fit.losses)} steps, {fit.seconds:.1f} s, closest pair L2 "
          f"{fit.min_distance:.3f} (the shipped file ran {meta.get('steps')} steps: "
          f"{meta.get('command')})")
    sets = {
        f"shipped ({Path(guides_path).name})": params,
        f"live search ({len(fit.losses)} steps)": fit.params,
        "original, published": guides.from_original(guides.ORIGINAL_CVPPP, *frame),
    }
    guide_rows = _guide_table(sets, train, frame, margin, bandwidth)
    _print_table(guide_rows, ["guides", "pairs", "l1_collisions", "min_l1",
                              "l2_below_bandwidth", "min_l2", "p01_l2"])
    print(f"(l1_collisions: pairs closer than eps = {margin} in L1, what eq. 4 penalises; "
          f"l2_below_bandwidth: pairs mean-shift with bandwidth {bandwidth} may merge; "
          f"p01_l2: 1st percentile of the L2 distances)\n")

    print(f"== 2. Mean-shift on noisy ground-truth embeddings of {n_images} held-out plants ==")
    test = load_cvppp(data, names["test"][:n_images])
    rows = []
    for sample in tqdm(test, desc="cluster"):
        maps = guides.sine(params, *sample.labels.shape, frame=frame)
        target = np.asarray(embedding.target_embedding(maps, sample.labels))
        tiles, titles = [sample.image, viz.colorize_labels(sample.labels)], ["image", "truth"]
        for sigma in noise:
            rng = np.random.default_rng(0)
            noisy = target + rng.normal(0, sigma, target.shape).astype(np.float32)
            start = time.perf_counter()
            pred = cluster.mean_shift(noisy, bandwidth=bandwidth, mask=sample.fg)
            seconds = time.perf_counter() - start
            match = metrics.matching(pred, sample.labels)
            rows.append(dict(image=sample.name, noise=sigma, leaves=int(sample.labels.max()),
                             found=int(pred.max()), sbd=metrics.sbd(pred, sample.labels),
                             abs_dic=abs(metrics.dic(pred, sample.labels)), f1=match["f1"],
                             seconds=seconds))
            tiles += [viz.embedding_rgb(np.where(sample.fg[..., None], noisy, 0.0)),
                      viz.colorize_labels(pred)]
            titles += [f"embedding ch 0-2, noise {sigma}", f"mean-shift, SBD {rows[-1]['sbd']:.3f}"]
        viz.save_panel(out / f"{sample.name}.png", tiles, titles)
    _print_table(rows, ["image", "noise", "leaves", "found", "sbd", "abs_dic", "f1", "seconds"])
    for sigma in noise:
        sel = [r for r in rows if r["noise"] == sigma]
        print(f"noise {sigma}: mean SBD {np.mean([r['sbd'] for r in sel]):.4f}, mean |DiC| "
              f"{np.mean([r['abs_dic'] for r in sel]):.2f}")
    network_rows = _network_section(run_dir, data, names["test"][:n_images], out)
    summary = dict(guides=guide_rows, clustering=rows, network=network_rows, live_search=dict(
        steps=len(fit.losses), seconds=fit.seconds, collision_rate=fit.collision_rate))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\npictures and summary.json in {out}/")
    return summary
