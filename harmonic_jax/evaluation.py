"""A trained network on whole images: segment at the model's scale, map back, score.

What ``harmonic-jax predict`` and ``evaluate``, ``make demo``, training's validation and the
benchmarks share: :func:`segment_image` (one image, any size and type, labels at its own size)
and :func:`evaluate_samples` (annotated images: per-image rows and a summary per foreground).
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jax.typing import ArrayLike
from PIL import Image
from scipy import ndimage

from harmonic_jax import cluster, metrics
from harmonic_jax.config import TrainConfig
from harmonic_jax.io import resize_labels
from harmonic_jax.predict import (
    Prepared,
    input_channels,
    instance_scores,
    predict_embeddings,
    prepare_image,
)

__all__ = ["Segmentation", "components", "evaluate_samples", "format_table", "score",
           "segment_image", "summarize", "write_csv"]

PREDICTED = "predicted fg"


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """What :func:`segment_image` found in one image.

    Attributes:
      labels: per foreground (``"predicted fg"`` and any mask given), ``(H, W)`` int32 instance
        ids at the input's size, 0 = background.
      scores: per foreground, ``(K,)`` float32 confidence of each instance (its mean foreground
        probability; 1.0 without a foreground head), in sorted-id order.
      image: the network's input at the input's size, ``(H, W, C)`` float32 0-255 (for overlays).
      foreground: ``(H, W)`` bool, the predicted foreground (``None`` without a head).
      notes: what :func:`~harmonic_jax.predict.prepare_image` changed.
      seconds: wall time of the network and the clustering.
    """

    labels: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    image: np.ndarray
    foreground: np.ndarray | None
    notes: tuple[str, ...]
    seconds: float


def _resize_image(image: np.ndarray, factor: float) -> np.ndarray:
    """Bilinear resampling of a ``(H, W, C)`` float32 image by ``factor`` (training resamples
    its uint8 images the same way, rounding to whole grey levels)."""
    if factor == 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(round(width * factor), 1), max(round(height * factor), 1))
    return np.stack([np.asarray(Image.fromarray(c).resize(size, Image.BILINEAR))
                     for c in np.moveaxis(image, -1, 0)], axis=-1)


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return resize_labels(np.asarray(mask, np.int32), shape) > 0


def segment_image(model, variables, guide_params, config: TrainConfig, image: ArrayLike, *,
                  masks: dict[str, ArrayLike] | None = None, scale: float | None = None,
                  tile: int | None = None, cluster_kwargs: dict | None = None) -> Segmentation:
    """Segments one image with a trained network, at the network's scale, labels at the image's.

    The image is prepared (:func:`~harmonic_jax.predict.prepare_image`), resampled by ``scale``
    (default ``config.resize``, the resolution the network was trained at), run through
    :func:`~harmonic_jax.predict.predict_embeddings` (tiled, never resized further), clustered by
    mean-shift inside each foreground, and the labels are resampled back (nearest neighbour).

    Args:
      model, variables, guide_params, config: a trained network, as
        :func:`harmonic_jax.pretrained.load` returns.
      image: ``(H, W)`` or ``(H, W, C)``, any dtype :func:`prepare_image` takes.
      masks: extra foregrounds to cluster inside, by name (e.g. ``{"true fg": sample.fg}``),
        ``(H, W)`` bool at the image's size.
      scale: resampling factor before the network; ``None``: ``config.resize``.
      tile: tile side of :func:`predict_embeddings`.
      cluster_kwargs: :func:`~harmonic_jax.cluster.mean_shift` settings; ``None``:
        ``config.cluster_kwargs()`` (the settings measured for the network).

    Returns:
      :class:`Segmentation`; its ``"predicted fg"`` entry is missing for a network without a
      foreground head unless ``config.background_instance`` (then the largest cluster is the
      background).

    Raises:
      ValueError: a bad image (see :func:`prepare_image`), a mask of another size, or a network
        without foreground output given no mask.
    """
    start = time.perf_counter()
    prepared = prepare_image(image, input_channels(variables))
    shape = prepared.image.shape[:2]
    factor = config.resize if scale is None else float(scale)
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    small = _resize_image(prepared.image, factor)
    out = predict_embeddings(model, variables, guide_params, Prepared(small, prepared.notes),
                             tile=tile)
    emb, prob = out if model.fg_head else (out, None)
    kwargs = config.cluster_kwargs() if cluster_kwargs is None else dict(cluster_kwargs)
    foregrounds: dict[str, np.ndarray | None] = {}
    if prob is not None:
        foregrounds[PREDICTED] = prob > 0.5
    elif config.background_instance:
        foregrounds[PREDICTED] = None
    for name, mask in (masks or {}).items():
        mask = np.asarray(mask, bool)
        if mask.shape != shape:
            raise ValueError(f"mask {name!r} has shape {mask.shape}, the image {shape}")
        foregrounds[name] = _resize_mask(mask, small.shape[:2])
    if not foregrounds:
        raise ValueError("the model has no foreground output and no mask was given")
    labels, scores = {}, {}
    for name, mask in foregrounds.items():
        found = cluster.mean_shift(emb, mask=mask, largest_is_background=mask is None, **kwargs)
        table = np.ones(int(found.max()) + 1, np.float32)
        if prob is not None and found.max() > 0:
            table[np.unique(found[found > 0])] = instance_scores(found, prob)
        labels[name] = resize_labels(found, shape)
        ids = np.unique(labels[name][labels[name] > 0])  # a speck can vanish when upsampled
        scores[name] = table[ids]
    fg = None if prob is None else _resize_mask(prob > 0.5, shape)
    return Segmentation(labels, scores, prepared.image, fg, prepared.notes,
                        time.perf_counter() - start)


def components(mask: np.ndarray, min_size: int | None = None) -> np.ndarray:
    """The trivial baseline: 8-connected components of a foreground, parts under ``min_size``
    absorbed by a touching component or dropped, as the embedding's clustering treats its
    fragments (:func:`~harmonic_jax.cluster.split_components`).

    Returns:
      ``(H, W)`` int32 labels, 0 = background.
    """
    parts = ndimage.label(np.asarray(mask, bool), structure=np.ones((3, 3), bool))[0]
    return cluster.split_components(parts.astype(np.int32),
                                    min_size=cluster.MIN_SIZE if min_size is None else min_size,
                                    max_gap=0)


def score(pred: np.ndarray, gt: np.ndarray) -> dict:
    """One image's scores: ``sbd``, ``dic``, ``abs_dic``, ``f1`` (IoU 0.5), ``precision``,
    ``recall``, ``tp``, ``fp``, ``fn``, ``found`` and ``instances``."""
    match = metrics.matching(pred, gt)
    dic = metrics.dic(pred, gt)
    return dict(sbd=metrics.sbd(pred, gt), dic=dic, abs_dic=abs(dic), f1=match["f1"],
                precision=match["precision"], recall=match["recall"], tp=match["tp"],
                fp=match["fp"], fn=match["fn"], found=len(np.unique(pred[pred > 0])),
                instances=len(np.unique(gt[gt > 0])))


def summarize(rows: Sequence[dict], preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
              scores: Sequence[np.ndarray] | None = None) -> dict:
    """Totals over images: mean (and std) SBD and |DiC|, F1 of the summed matches, and COCO
    ``AP``, ``AP50``, ``AP75`` (instances ranked by ``scores``)."""
    sbd = np.asarray([r["sbd"] for r in rows])
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    ap = metrics.coco_ap(preds, gts, scores=scores)
    return dict(images=len(rows), sbd=float(sbd.mean()), sbd_std=float(sbd.std()),
                abs_dic=float(np.mean([r["abs_dic"] for r in rows])),
                abs_dic_std=float(np.std([r["abs_dic"] for r in rows])),
                f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
                AP=ap["AP"], AP50=ap["AP50"], AP75=ap["AP75"])


def evaluate_samples(model, variables, guide_params, config: TrainConfig, samples, *,
                     true_fg: bool = True, scale: float | None = None, tile: int | None = None,
                     cluster_kwargs: dict | None = None, ap: bool = True,
                     progress: bool = False) -> tuple[list[dict], dict]:
    """Segments annotated samples and scores them at their own resolution.

    Args:
      model, variables, guide_params, config: a trained network.
      samples: :class:`~harmonic_jax.data.Sample` objects (their ``labels`` are the truth).
      true_fg: also cluster inside each sample's true foreground (the paper's protocol).
      scale, tile, cluster_kwargs: as for :func:`segment_image`.
      ap: compute COCO AP in the summary (pycocotools; a few seconds on large sets).
      progress: show a progress bar.

    Returns:
      ``(rows, summary)``: a row per image and foreground (``image``, ``foreground``,
      ``seconds`` and :func:`score`'s fields); per foreground, :func:`summarize`'s totals.
    """
    rows, kept = [], {}
    if progress:
        from tqdm.auto import tqdm

        samples = tqdm(samples, desc="segment")
    for sample in samples:
        masks = {"true fg": sample.fg} if true_fg else None
        seg = segment_image(model, variables, guide_params, config, sample.image, masks=masks,
                            scale=scale, tile=tile, cluster_kwargs=cluster_kwargs)
        for kind, labels in seg.labels.items():
            rows.append(dict(image=sample.name, foreground=kind, seconds=seg.seconds,
                             **score(labels, sample.labels)))
            preds, gts, confidence = kept.setdefault(kind, ([], [], []))
            preds.append(labels)
            # Overlapping instances (BBBC010) are scored as masks for AP, as in the paper.
            gts.append(sample.labels if sample.masks is None else sample.masks)
            confidence.append(seg.scores[kind])
    summary = {}
    for kind, (preds, gts, confidence) in kept.items():
        sel = [r for r in rows if r["foreground"] == kind]
        if ap:
            summary[kind] = summarize(sel, preds, gts, confidence)
        else:
            sbd = [r["sbd"] for r in sel]
            summary[kind] = dict(images=len(sel), sbd=float(np.mean(sbd)),
                                 sbd_std=float(np.std(sbd)),
                                 abs_dic=float(np.mean([r["abs_dic"] for r in sel])))
    return rows, summary


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Rows as an aligned text table (floats to 4 digits)."""
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Writes dict rows as CSV (columns: the union of the keys, in first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
