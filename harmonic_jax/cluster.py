"""Instances from predicted embeddings: flat-kernel mean-shift on the host (numpy, never jit).

The clustering is scikit-learn's ``MeanShift(bandwidth, bin_seeding=True)``: seeds on a grid of
cell ``bandwidth``, each seed moved to the mean of the points within ``bandwidth`` (L2) until it
moves less than ``1e-3 * bandwidth``, modes closer than ``bandwidth`` to a denser mode dropped,
every point given to its nearest mode. It is vectorised over all seeds at once (a seed that lands
on another's position follows the same path, so the two are merged), and for more than
``max_samples`` pixels the modes are found on a fixed random subsample before every pixel joins
its nearest mode.

Harmonic embeddings are periodic, so two far-apart objects can share one embedding: every
cluster is finally split into its spatially separate parts (:func:`split_components`).
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike
from scipy.ndimage import distance_transform_edt, find_objects
from scipy.ndimage import label as ndimage_label

__all__ = ["mean_shift", "mean_shift_modes", "split_components"]

_CHUNK = 1024


def _sq_dist(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    d2 = np.sum(a * a, axis=1)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


def _bin_seeds(points: np.ndarray, bandwidth: float) -> np.ndarray:
    bins = np.unique(np.round(points / bandwidth), axis=0)
    if len(bins) == len(points):  # as sklearn: binning gains nothing, seed at every point
        return points.copy()
    return (bins * bandwidth).astype(points.dtype)


def mean_shift_modes(
    points: np.ndarray, bandwidth: float, *, max_iter: int = 300
) -> np.ndarray:
    """Modes of flat-kernel mean-shift with bin seeding (sklearn's algorithm, vectorised).

    Args:
      points: ``(P, N)`` float points.
      bandwidth: kernel radius (L2), > 0.
      max_iter: iteration cap per seed.

    Returns:
      ``(K, N)`` modes, densest first (``K = 0`` for no points).
    """
    points = np.asarray(points)
    if len(points) == 0:
        return np.zeros((0, points.shape[1]), points.dtype)
    radius2 = bandwidth * bandwidth
    stop = 1e-3 * bandwidth
    # |s - p|^2 <= r^2  <=>  s.p - |p|^2 / 2 >= (|s|^2 - r^2) / 2: one matmul and one comparison.
    augmented = np.concatenate([points, -0.5 * np.sum(points**2, axis=1, keepdims=True)], axis=1)
    active = _bin_seeds(points, bandwidth)
    done_centers, done_counts = [], []
    for iteration in range(max_iter + 1):
        # Seeds within a stopping distance of each other follow the same path: keep one.
        _, first = np.unique(np.round(active / stop), axis=0, return_index=True)
        active = active[np.sort(first)]
        new = np.empty_like(active)
        counts = np.empty(len(active), np.int64)
        for lo in range(0, len(active), _CHUNK):
            seeds = active[lo:lo + _CHUNK]
            threshold = 0.5 * (np.sum(seeds**2, axis=1, keepdims=True) - radius2)
            within = (seeds @ augmented[:, :-1].T + augmented[:, -1]) >= threshold
            within = within.astype(points.dtype)
            counts[lo:lo + _CHUNK] = within.sum(axis=1)
            new[lo:lo + _CHUNK] = (within @ points) / np.maximum(counts[lo:lo + _CHUNK], 1)[:, None]
        empty = counts == 0
        moved = np.linalg.norm(new - active, axis=1)
        finished = ~empty & ((moved <= stop) | (iteration == max_iter))
        done_centers.append(new[finished])
        done_counts.append(counts[finished])
        active = new[~empty & ~finished]
        if len(active) == 0:
            break
    centers = np.concatenate(done_centers)
    counts = np.concatenate(done_counts)
    if len(centers) == 0:
        return centers
    centers, first = np.unique(centers, axis=0, return_index=True)
    counts = counts[first]
    # Densest first; ties broken by the centre coordinates, descending (as sklearn).
    order = np.lexsort(tuple(centers[:, ::-1].T) + (counts,))[::-1]
    centers = centers[order]
    c_sq = np.sum(centers * centers, axis=1)
    near = _sq_dist(centers, centers, c_sq) <= radius2
    keep = np.ones(len(centers), bool)
    for i in range(len(centers)):
        if keep[i]:
            keep[near[i]] = False
            keep[i] = True
    return centers[keep]


def _nearest(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centre of every point."""
    c_sq = np.sum(centers * centers, axis=1)
    index = np.empty(len(points), np.int32)
    dist2 = np.empty(len(points), points.dtype)
    step = 65536
    for lo in range(0, len(points), step):
        d2 = _sq_dist(points[lo:lo + step], centers, c_sq)
        index[lo:lo + step] = np.argmin(d2, axis=1)
        dist2[lo:lo + step] = d2[np.arange(len(d2)), index[lo:lo + step]]
    return index, dist2


def _regroup(labels: np.ndarray, *, min_size: int, radius: float) -> np.ndarray:
    """Per label: parts = 8-connected components of the label grown by ``radius``, restricted to
    the label's pixels; parts under ``min_size`` pixels dropped. Returns ids 1..K."""
    out = np.zeros(labels.shape, np.int32)
    pad = int(np.ceil(radius)) + 1
    next_id = 1
    for index, box in enumerate(find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
        mask = labels[box] == index
        grown = mask if radius <= 0 else distance_transform_edt(~mask) <= radius
        parts, count = ndimage_label(grown, structure=np.ones((3, 3), bool))
        parts = np.where(mask, parts, 0)
        keep = np.bincount(parts.ravel(), minlength=count + 1) >= max(min_size, 1)
        keep[0] = False
        new_ids = np.zeros(count + 1, np.int32)
        new_ids[keep] = np.arange(next_id, next_id + keep.sum())
        next_id += int(keep.sum())
        out[box][mask] = new_ids[parts[mask]]
    return out


def _fill_from_nearest(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gives unlabelled pixels inside ``mask`` the label of the nearest labelled pixel."""
    holes = mask & (labels == 0)
    if not holes.any() or not labels.any():
        return labels
    _, (rows, cols) = distance_transform_edt(labels == 0, return_indices=True)
    out = labels.copy()
    out[holes] = labels[rows[holes], cols[holes]]
    return out


def split_components(
    labels: np.ndarray,
    *,
    min_size: int = 0,
    max_gap: float = 0.0,
    fill_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Splits each label into its spatially separate parts.

    1. Each label is cut into 8-connected components; components under ``min_size`` pixels are
       dropped (with ``fill_mask``, their pixels inside the mask join the nearest kept component).
    2. Components of one label closer than ``max_gap`` pixels are joined again, so an object cut
       in two by an occluder (a leaf under another leaf) stays whole, while far-apart twins
       (periodic embeddings) stay apart.

    Args:
      labels: ``(H, W)`` int, 0 = background.
      min_size: smallest component kept, in pixels.
      max_gap: largest gap, in pixels, bridged between components of one label (0: none).
      fill_mask: ``(H, W)`` bool; pixels of dropped components inside it are reassigned.

    Returns:
      ``(H, W)`` int32, parts numbered 1..K.
    """
    labels = np.asarray(labels)
    parts = _regroup(labels, min_size=min_size, radius=0.0)
    if fill_mask is not None:
        parts = _fill_from_nearest(parts, fill_mask)
    if max_gap <= 0 or parts.max() == 0:
        return parts
    owner = np.zeros(parts.max() + 1, labels.dtype)
    owner[parts[labels > 0]] = labels[labels > 0]
    # Filled pixels carry their new part's owner, so regrouping by owner keeps them.
    return _regroup(np.where(parts > 0, owner[parts], 0), min_size=0, radius=max_gap / 2.0)


def mean_shift(
    embeddings: ArrayLike,
    *,
    bandwidth: float = 0.5,
    mask: ArrayLike | None = None,
    min_size: int = 0,
    max_gap: float = 0.0,
    fill: bool = True,
    max_samples: int = 4096,
    seed: int = 0,
) -> np.ndarray:
    """Instance labels from per-pixel embeddings.

    Args:
      embeddings: ``(H, W, N)`` float predicted embeddings.
      bandwidth: mean-shift kernel radius (L2), > 0; the paper uses the margin, 0.5.
      mask: ``(H, W)`` bool foreground; pixels outside are background. ``None``: all pixels.
      min_size: parts smaller than this many pixels are dropped as instances.
      max_gap: parts of one cluster closer than this (pixels) stay one instance; 0 splits every
        cluster into its 8-connected components. See :func:`split_components`.
      fill: pixels of dropped parts inside ``mask`` join the nearest kept instance (otherwise
        they become background).
      max_samples: modes are searched on at most this many pixels (a fixed random subsample);
        every pixel in ``mask`` is then assigned to its nearest mode. Exact sklearn clustering
        when the mask holds no more pixels than this.
      seed: seed of the subsample.

    Returns:
      ``(H, W)`` int32: 0 = background (or, with ``fill=False``, dropped), 1..K instances. An
      empty mask gives all zeros.
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 3:
        raise ValueError(f"embeddings must be (H, W, N), got shape {emb.shape}")
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"embeddings must be floating point, got dtype {emb.dtype}")
    if not np.isfinite(bandwidth) or bandwidth <= 0:
        raise ValueError(f"bandwidth must be a positive number, got {bandwidth!r}")
    if mask is None:
        mask = np.ones(emb.shape[:2], bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != emb.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match embeddings {emb.shape[:2]}")
        mask = mask.astype(bool)
    points = emb[mask].astype(np.float32)
    if not np.all(np.isfinite(points)):
        raise ValueError("embeddings contain NaN or infinite values inside the mask")
    out = np.zeros(emb.shape[:2], np.int32)
    if len(points) == 0:
        return out
    rng = np.random.default_rng(seed)

    def subsample(x):
        return x if len(x) <= max_samples else x[np.sort(rng.choice(len(x), max_samples,
                                                                  replace=False))]

    centers = mean_shift_modes(subsample(points), float(bandwidth))
    nearest, dist2 = _nearest(points, centers)
    if len(points) > max_samples:
        # A small object can have too few pixels in the subsample to hold its own mode; its
        # pixels then lie far from every mode found (beyond two bandwidths: farther than noise
        # around a mode usually reaches). Look for modes among those pixels too.
        orphans = points[dist2 > (2 * bandwidth) ** 2]
        extra = mean_shift_modes(subsample(orphans), float(bandwidth)) if len(orphans) else []
        if len(extra):
            far = _nearest(extra, centers)[1] > bandwidth**2
            centers = np.concatenate([centers, extra[far]])
            nearest, _ = _nearest(points, centers)
    out[mask] = nearest + 1
    return split_components(out, min_size=min_size, max_gap=max_gap,
                            fill_mask=mask if fill else None)
