"""``make demo``: the shipped network segments the held-out CVPPP A1 plants, with a table and
pictures.

1. The pretrained ``cvppp_a1`` model (or a run folder) segments the 32 held-out plants; the table
   gives SBD, |DiC|, F1 and COCO AP inside its own predicted foreground and inside the true one
   (the paper's protocol), beside connected components of the same foreground and the paper;
   ``demo_out/`` gets an overlay per plant and a montage (input | prediction | truth).
2. With ``--study``: the method's core without a network. Guide search (eq. 4) on the training
   split beside the shipped and the original's guides, and ground-truth embeddings with Gaussian
   noise standing in for a network's error, clustered by mean-shift.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from harmonic_jax import cluster, embedding, evaluation, guides, io, metrics, pretrained, search, viz
from harmonic_jax.data import load_cvppp, load_split

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


def segment_held_out(data, names, out: Path, *, run_dir=None, montage_rows: int = 4) -> dict:
    """1. The trained network (the shipped ``cvppp_a1`` model, or ``run_dir``) on held-out
    plants: per-image rows, a summary per foreground, overlays and a montage under ``out``."""
    source = run_dir or "cvppp_a1"
    model, variables, guide_params, config = pretrained.load(source)
    if not model.fg_head:
        raise ValueError(f"{source} has no foreground head: the demo segments with the network's "
                         "own foreground (train with fg_head=true)")
    print(f"== 1. The pretrained network ({source}: widths {tuple(config.widths)}, trained at "
          f"{config.resize}x) segments {len(names)} held-out CVPPP A1 plants ==")
    samples = load_cvppp(data, names)
    rows, preds, kept = [], {}, []
    min_size = round((config.min_size or cluster.MIN_SIZE) / config.resize**2)
    for sample in tqdm(samples, desc="segment", unit="plant"):
        seg = evaluation.segment_image(model, variables, guide_params, config, sample.image,
                                       masks={"true fg": sample.fg})
        seg.labels["components of predicted fg"] = evaluation.components(seg.foreground, min_size)
        seg.scores["components of predicted fg"] = None
        for kind, labels in seg.labels.items():
            rows.append(dict(image=sample.name, foreground=kind, seconds=seg.seconds,
                             **evaluation.score(labels, sample.labels)))
            preds.setdefault(kind, ([], []))[0].append(labels)
            preds[kind][1].append(seg.scores[kind])
        predicted = seg.labels[evaluation.PREDICTED]
        Image.fromarray(io.overlay(sample.image, predicted)).save(
            out / "overlays" / f"{sample.name}.png")
        if len(kept) < montage_rows:
            kept.append((sample, predicted, rows[-3]["sbd"]))
    gts = [s.labels for s in samples]
    totals = []
    for kind, (labels, scores) in preds.items():
        sel = [r for r in rows if r["foreground"] == kind]
        scores = None if scores[0] is None else scores
        totals.append(dict(foreground=kind, **evaluation.summarize(sel, labels, gts, scores)))
    totals.append(dict(foreground="paper (hidden test set, 500 epochs on a V100)", images=33,
                       sbd=0.899, abs_dic=3.0))
    print(evaluation.format_table(totals, ["foreground", "images", "sbd", "sbd_std", "abs_dic",
                                           "f1", "AP", "AP50", "AP75"]))
    seconds = [r["seconds"] for r in rows if r["foreground"] == evaluation.PREDICTED]
    print(f"(at the plants' own resolution, {np.mean(seconds):.2f} s a plant for network and "
          f"clustering; AP ranks instances by mean foreground probability)")
    evaluation.write_csv(out / "per_image.csv", rows)
    def crop(sample, pred):  # the plant and a margin: pots and trays are most of the image
        rows, cols = np.nonzero(sample.fg | (pred > 0))
        pad = 24
        return (slice(max(rows.min() - pad, 0), rows.max() + pad),
                slice(max(cols.min() - pad, 0), cols.max() + pad))

    def count(labels):
        return len(np.unique(labels[labels > 0]))

    viz.save_grid(out / "montage.png",
                  [[x[box] for x in (s.image, io.overlay(s.image, p), io.overlay(s.image, s.labels))]
                   for s, p, _ in kept for box in [crop(s, p)]],
                  [[s.name, f"prediction: {count(p)} leaves, SBD {sbd:.3f}",
                    f"truth: {count(s.labels)} leaves"] for s, p, sbd in kept])
    print(f"overlays/, montage.png and per_image.csv in {out}/")
    return dict(rows=rows, summary=totals)


def run(
    *,
    data: str | Path,
    split: str | Path,
    guides_path: str | Path,
    out: str | Path = "demo_out",
    n_images: int | None = None,
    study: bool = False,
    noise: tuple[float, ...] = (0.05, 0.15),
    bandwidth: float = 0.5,
    search_steps: int = 200,
    run_dir: str | Path | None = None,
) -> dict:
    """Runs the demo; prints tables, writes pictures and ``summary.json`` under ``out``.

    Args:
      n_images: held-out plants to segment (``None``: all 32).
      study: also run part 2 (guide search and noisy ground-truth embeddings).
    """
    out = Path(out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    names = load_split(split)
    held_out = names["test"][:n_images] if n_images else names["test"]
    summary = dict(network=segment_held_out(data, held_out, out, run_dir=run_dir))
    if study:
        summary.update(_study(data, names, guides_path, out, n_images or 4, noise, bandwidth,
                              search_steps))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _study(data, names, guides_path, out: Path, n_images: int, noise, bandwidth: float,
           search_steps: int) -> dict:
    """2. Guide search and mean-shift on noisy ground-truth embeddings."""
    params, meta = guides.load_guides(guides_path)
    frame, margin = tuple(meta["frame"]), float(meta["margin"])

    print(f"\n== 2a. Guide search (eq. 4 in mean-shift's L2) on {len(names['train'])} CVPPP A1 "
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
    print(evaluation.format_table(guide_rows, ["guides", "pairs", "l1_collisions", "min_l1",
                                               "l2_below_bandwidth", "min_l2", "p01_l2"]))
    print(f"(l1_collisions: pairs closer than eps = {margin} in L1, what eq. 4 penalises; "
          f"l2_below_bandwidth: pairs mean-shift with bandwidth {bandwidth} may merge; "
          f"p01_l2: 1st percentile of the L2 distances)\n")

    print(f"== 2b. Mean-shift on noisy ground-truth embeddings of {n_images} held-out plants ==")
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
        viz.save_panel(out / "study" / f"{sample.name}.png", tiles, titles)
    print(evaluation.format_table(rows, ["image", "noise", "leaves", "found", "sbd", "abs_dic",
                                         "f1", "seconds"]))
    for sigma in noise:
        sel = [r for r in rows if r["noise"] == sigma]
        print(f"noise {sigma}: mean SBD {np.mean([r['sbd'] for r in sel]):.4f}, mean |DiC| "
              f"{np.mean([r['abs_dic'] for r in sel]):.2f}")
    return dict(guides=guide_rows, clustering=rows, live_search=dict(
        steps=len(fit.losses), seconds=fit.seconds, collision_rate=fit.collision_rate))
