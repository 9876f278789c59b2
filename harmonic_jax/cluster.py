"""Instances from predicted embeddings: flat-kernel mean-shift on the host (numpy, never jit).

The clustering is scikit-learn's ``MeanShift(bandwidth, bin_seeding=True)``: seeds on a grid of
cell ``bandwidth``, each seed moved to the mean of the points within ``bandwidth`` (L2) until it
moves less than ``1e-3 * bandwidth``, modes closer than ``bandwidth`` to a denser mode dropped,
every point given to its nearest mode. It is vectorised over all seeds at once (a seed that lands
on another's position follows the same path, so the two are merged), and for more than
``max_samples`` pixels the modes are found on a fixed random subsample before every pixel joins
its nearest mode.

Harmonic embeddings are periodic, so two far-apart objects can share one embedding: every
cluster is finally split into its connected components.
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike
from skimage.measure import label as connected_components
from skimage.segmentation import relabel_sequential

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


def _nearest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    c_sq = np.sum(centers * centers, axis=1)
    out = np.empty(len(points), np.int32)
    step = 65536
    for lo in range(0, len(points), step):
        out[lo:lo + step] = np.argmin(_sq_dist(points[lo:lo + step], centers, c_sq), axis=1)
    return out


def split_components(labels: np.ndarray, *, min_size: int = 0) -> np.ndarray:
    """Splits each label into 4-connected components, drops those under ``min_size`` pixels.

    Args:
      labels: ``(H, W)`` int, 0 = background.
      min_size: smallest component kept, in pixels.

    Returns:
      ``(H, W)`` int32, components numbered 1..K in raster order of their first pixel.
    """
    parts = connected_components(labels, background=0, connectivity=1)
    if min_size > 1 and parts.max() > 0:
        sizes = np.bincount(parts.ravel())
        small = sizes < min_size
        small[0] = False
        parts[small[parts]] = 0
    return relabel_sequential(parts)[0].astype(np.int32)


def mean_shift(
    embeddings: ArrayLike,
    *,
    bandwidth: float = 0.5,
    mask: ArrayLike | None = None,
    min_size: int = 0,
    max_samples: int = 4096,
    seed: int = 0,
) -> np.ndarray:
    """Instance labels from per-pixel embeddings.

    Args:
      embeddings: ``(H, W, N)`` float predicted embeddings.
      bandwidth: mean-shift kernel radius (L2), > 0; the paper uses the margin, 0.5.
      mask: ``(H, W)`` bool foreground; pixels outside are background. ``None``: all pixels.
      min_size: connected components smaller than this many pixels become background (0).
      max_samples: modes are searched on at most this many pixels (a fixed random subsample);
        every pixel in ``mask`` is then assigned to its nearest mode. Exact sklearn clustering
        when the mask holds no more pixels than this.
      seed: seed of the subsample.

    Returns:
      ``(H, W)`` int32: 0 = background or unassigned, 1..K instances (connected). An empty mask
      gives all zeros.
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
    sample = points
    if len(points) > max_samples:
        rng = np.random.default_rng(seed)
        sample = points[np.sort(rng.choice(len(points), max_samples, replace=False))]
    centers = mean_shift_modes(sample, float(bandwidth))
    out[mask] = _nearest(points, centers) + 1
    return split_components(out, min_size=min_size)
