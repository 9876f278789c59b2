"""Instance-segmentation metrics: the paper's SBD and |DiC|, COCO AP, and IoU matching.

Label images use 0 for background and positive ids for instances. Where instances overlap
(BBBC010 worms), pass a ``(K, H, W)`` stack of boolean masks instead; :func:`coco_ap` and
:func:`matching` accept both forms.

Two label images are compared through their contingency table (one ``bincount`` over the pixel
pairs), never through per-instance mask stacks: a 2048² image with 500 instances is scored in
about a second and well under 1 GB (benchmarks/bench_metrics.py).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from jax.typing import ArrayLike
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = [
    "best_dice",
    "coco_ap",
    "contingency",
    "dic",
    "instance_masks",
    "iou_matrix",
    "matching",
    "sbd",
]


def _label_image(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) label image, got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} has negative ids; 0 is background")
    return arr


def instance_masks(x: ArrayLike, name: str = "labels") -> np.ndarray:
    """``(K, H, W)`` bool masks from a label image (sorted ids) or a stack of masks."""
    arr = np.asarray(x)
    if arr.ndim == 3:
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name}: a (K, H, W) stack must hold binary masks")
        return arr.astype(bool)
    arr = _label_image(arr, name)
    ids = np.unique(arr[arr > 0])
    return arr[None] == ids[:, None, None]


def contingency(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts shared by every instance of ``a`` and every instance of ``b``.

    Two label images give their contingency table from one ``bincount`` over the pixel pairs
    (memory ``O(H W + K_a K_b)``); a mask stack on either side falls back to a matrix product of
    the flattened masks.

    Args:
      a, b: ``(H, W)`` label images or ``(K, H, W)`` mask stacks of the same image size.

    Returns:
      ``(intersections (A, B), areas_a (A,), areas_b (B,))`` as float64, instances in the order
      of :func:`instance_masks` (sorted ids).
    """
    arr_a, arr_b = np.asarray(a), np.asarray(b)
    if arr_a.ndim == 2 and arr_b.ndim == 2:
        arr_a, arr_b = _label_image(arr_a, "a"), _label_image(arr_b, "b")
        if arr_a.shape != arr_b.shape:
            raise ValueError(f"image sizes differ: {arr_a.shape} and {arr_b.shape}")
        ids_a, inv_a = np.unique(arr_a, return_inverse=True)
        ids_b, inv_b = np.unique(arr_b, return_inverse=True)
        table = np.bincount(inv_a.ravel().astype(np.int64) * len(ids_b) + inv_b.ravel(),
                            minlength=len(ids_a) * len(ids_b)).reshape(len(ids_a), len(ids_b))
        table = table.astype(np.float64)
        rows, cols = ids_a > 0, ids_b > 0
        return table[np.ix_(rows, cols)], table[rows].sum(axis=1), table[:, cols].sum(axis=0)
    ma, mb = instance_masks(arr_a, "a"), instance_masks(arr_b, "b")
    if ma.shape[1:] != mb.shape[1:]:
        raise ValueError(f"image sizes differ: {ma.shape[1:]} and {mb.shape[1:]}")
    pixels = int(np.prod(ma.shape[1:]))
    p = ma.reshape(len(ma), pixels).astype(np.float32)
    g = mb.reshape(len(mb), pixels).astype(np.float32)
    return (p @ g.T).astype(np.float64), p.sum(axis=1, dtype=np.float64), \
        g.sum(axis=1, dtype=np.float64)


def best_dice(a: ArrayLike, b: ArrayLike) -> float:
    """Mean over the instances of ``a`` of their best Dice with an instance of ``b``.

    .. math:: BD(A, B) = \\frac{1}{M} \\sum_i \\max_j \\frac{2 |A_i \\cap B_j|}{|A_i| + |B_j|}

    Returns:
      A float in [0, 1]; 0.0 when ``a`` has instances and ``b`` none, 1.0 when ``a`` has none.
    """
    inter, area_a, area_b = contingency(a, b)
    if len(area_a) == 0:
        return 1.0
    if len(area_b) == 0:
        return 0.0
    dice = 2.0 * inter / (area_a[:, None] + area_b[None, :])
    return float(dice.max(axis=1).mean())


def sbd(pred: ArrayLike, gt: ArrayLike) -> float:
    """Symmetric best Dice, the CVPPP challenge's score: ``min(BD(pred, gt), BD(gt, pred))``.

    Args:
      pred, gt: ``(H, W)`` integer label images (0 = background) of the same shape.

    Returns:
      A float in [0, 1]; 1.0 when both are empty, 0.0 when exactly one is.
    """
    pred, gt = _label_image(pred, "pred"), _label_image(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} does not match gt shape {gt.shape}")
    return min(best_dice(pred, gt), best_dice(gt, pred))


def dic(pred: ArrayLike, gt: ArrayLike) -> int:
    """Difference in count: instances in ``pred`` minus instances in ``gt`` (|DiC| = abs)."""
    pred, gt = _label_image(pred, "pred"), _label_image(gt, "gt")
    return int(np.unique(pred[pred > 0]).size) - int(np.unique(gt[gt > 0]).size)


def iou_matrix(pred: ArrayLike, gt: ArrayLike) -> np.ndarray:
    """``(P, G)`` float IoU between every predicted and every ground-truth instance."""
    inter, area_p, area_g = contingency(pred, gt)
    union = area_p[:, None] + area_g[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def matching(pred: ArrayLike, gt: ArrayLike, *, iou: float = 0.5) -> dict:
    """One-to-one matching of instances at an IoU threshold (as StarDist and Cellpose report).

    Pairs are matched by maximum total IoU (Hungarian algorithm) among pairs with IoU >= ``iou``.

    Returns:
      ``tp``, ``fp``, ``fn`` (ints), ``precision``, ``recall``, ``f1`` and ``mean_matched_iou``
      (floats; precision, recall and f1 are 1.0 when there is nothing to find and nothing found,
      ``mean_matched_iou`` is 0.0 without matches).
    """
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    scores = iou_matrix(pred, gt)
    n_pred, n_gt = scores.shape
    matched = np.zeros(0)
    if n_pred and n_gt:
        eligible = np.where(scores >= iou, scores, 0.0)
        rows, cols = linear_sum_assignment(eligible, maximize=True)
        matched = scores[rows, cols][eligible[rows, cols] > 0]
    tp = int(matched.size)
    fp, fn = n_pred - tp, n_gt - tp
    precision = tp / n_pred if n_pred else 1.0 if not n_gt else 0.0
    recall = tp / n_gt if n_gt else 1.0 if not n_pred else 0.0
    f1 = 2 * tp / (n_pred + n_gt) if n_pred + n_gt else 1.0
    return dict(
        tp=tp, fp=fp, fn=fn, precision=float(precision), recall=float(recall), f1=float(f1),
        mean_matched_iou=float(matched.mean()) if tp else 0.0,
    )


def _encode(x: ArrayLike, name: str) -> list[dict]:
    """COCO RLEs of each instance (sorted ids), one full-size mask at a time: a label image is
    never expanded into a ``(K, H, W)`` stack."""
    arr = np.asarray(x)
    if arr.ndim == 3:
        masks = instance_masks(arr, name)
        return [mask_utils.encode(np.asfortranarray(m[:, :, None].astype(np.uint8)))[0]
                for m in masks]
    arr = _label_image(arr, name)
    buffer = np.zeros((*arr.shape, 1), np.uint8, order="F")
    rles = []
    for index, box in enumerate(ndimage.find_objects(arr)):
        if box is None:
            continue
        buffer[box + (0,)] = arr[box] == index + 1
        rles.append(mask_utils.encode(buffer)[0])
        buffer[box + (0,)] = 0
    return rles


def coco_ap(
    preds: Sequence[ArrayLike],
    gts: Sequence[ArrayLike],
    *,
    scores: Sequence[ArrayLike] | None = None,
) -> dict:
    """COCO mask AP through pycocotools (the paper's C. elegans protocol).

    Args:
      preds: per image, an ``(H, W)`` label image or a ``(K, H, W)`` mask stack.
      gts: per image, the ground truth in the same forms.
      scores: per image, ``(K,)`` confidence of each predicted instance (in the order of
        :func:`instance_masks`); all 1.0 when omitted.

    Returns:
      ``AP``, ``AP50``, ``AP75``, ``APS``, ``APM``, ``APL`` as floats in [0, 1]; a size range with no
      ground truth gives -1.0 as in pycocotools. Unlike COCO's 100, every prediction is scored
      (an image of 500 nuclei would otherwise cap recall at 0.2).
    """
    if len(preds) != len(gts):
        raise ValueError(f"preds has {len(preds)} images but gts has {len(gts)}")
    images, annotations, detections = [], [], []
    for i, (pred, gt) in enumerate(zip(preds, gts)):
        rle_p, rle_g = _encode(pred, f"preds[{i}]"), _encode(gt, f"gts[{i}]")
        size_p, size_g = np.asarray(pred).shape[-2:], np.asarray(gt).shape[-2:]
        if size_p != size_g:
            raise ValueError(f"preds[{i}] size {size_p} does not match gts[{i}] size {size_g}")
        images.append(dict(id=i + 1, height=int(size_g[0]), width=int(size_g[1])))
        image_scores = np.ones(len(rle_p)) if scores is None else np.asarray(scores[i], float)
        if image_scores.shape != (len(rle_p),):
            raise ValueError(f"scores[{i}] must have shape ({len(rle_p)},), one per instance")
        for rle in rle_g:  # one at a time: pycocotools' list form overflows past 255 instances
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=1, segmentation=rle,
                area=float(mask_utils.area(rle)),
                bbox=[float(v) for v in mask_utils.toBbox(rle)], iscrowd=0,
            ))
        for rle, score in zip(rle_p, image_scores):
            detections.append(dict(image_id=i + 1, category_id=1, segmentation=rle,
                                   score=float(score)))
    keys = ("AP", "AP50", "AP75", "APS", "APM", "APL")
    if not detections:  # recall 0 where there is something to find, -1 where there is not
        areas = np.asarray([a["area"] for a in annotations])
        ranges = [(0, np.inf), (0, 32**2), (32**2, 96**2), (96**2, np.inf)]  # COCO's
        found = [bool(((areas >= lo) & (areas < hi)).any()) for lo, hi in ranges]
        return dict(zip(keys, [0.0 if found[0] else -1.0] * 3
                        + [0.0 if f else -1.0 for f in found[1:]]))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt_coco = COCO()
        gt_coco.dataset = dict(images=images, annotations=annotations,
                               categories=[dict(id=1, name="instance")])
        gt_coco.createIndex()
        dt_coco = gt_coco.loadRes(detections)
        evaluator = COCOeval(gt_coco, dt_coco, iouType="segm")
        # COCO keeps 100 detections per image; biological images hold more instances.
        most = max(np.bincount([d["image_id"] for d in detections]).max(), 100)
        evaluator.params.maxDets = [1, 10, int(most)]
        evaluator.evaluate()
        evaluator.accumulate()
    # COCOeval.summarize() computes its first line (AP) at maxDets=100 only: average the
    # precision table at our largest maxDets ourselves. precision: (IoU, recall, class, area, dets).
    precision = evaluator.eval["precision"][:, :, 0, :, -1]
    thresholds = evaluator.params.iouThrs

    def mean(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    at = {t: int(np.argmin(np.abs(thresholds - t))) for t in (0.5, 0.75)}
    return dict(AP=mean(precision[..., 0]), AP50=mean(precision[at[0.5], :, 0]),
                AP75=mean(precision[at[0.75], :, 0]), APS=mean(precision[..., 1]),
                APM=mean(precision[..., 2]), APL=mean(precision[..., 3]))
