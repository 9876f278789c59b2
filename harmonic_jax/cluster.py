"""Instances from predicted embeddings: flat-kernel mean-shift on the host (numpy, never jit).

The clustering is scikit-learn's ``MeanShift(bandwidth, bin_seeding=True)``: seeds on a grid of
cell ``bandwidth``, each seed moved to the mean of the points within ``bandwidth`` (L2) until it
moves less than ``1e-3 * bandwidth``, modes closer than ``bandwidth`` to a denser mode dropped,
every point given to its nearest mode. It is vectorised over all seeds at once (a seed that lands
on another's position follows the same path, so the two are merged), and for more than
``max_samples`` pixels the modes are found on a fixed random subsample before every pixel joins
its nearest mode.

Harmonic embeddings are periodic, so two far-apart objects can share one embedding: every
cluster is finally split into its spatially separate parts, small fragments join the instance
they touch most, and parts of one cluster that an occluder cut apart are joined again
(:func:`split_components`).
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike
from scipy.ndimage import distance_transform_edt, find_objects
from scipy.ndimage import label as ndimage_label

__all__ = ["MAX_GAP", "MIN_SIZE", "cluster_labels", "mean_shift", "mean_shift_modes",
           "split_components"]

_CHUNK = 1024
#: Defaults of :func:`mean_shift`, measured on CVPPP plants and crowded blobs (see its docstring).
MIN_SIZE = 8
MAX_GAP = 48.0
#: Modes found on ``max_samples`` pixels are refined on up to this many times more pixels.
_REFINE = 16


def _sq_dist(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    d2 = np.sum(a * a, axis=1)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


def _bin_seeds(points: np.ndarray, bandwidth: float) -> np.ndarray:
    bins = np.unique(np.round(points / bandwidth), axis=0)
    if len(bins) == len(points):  # as sklearn: binning gains nothing, seed at every point
        return points.copy()
    return (bins * bandwidth).astype(points.dtype)


def mean_shift_modes(
    points: np.ndarray, bandwidth: float, *, max_iter: int = 300,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Modes of flat-kernel mean-shift with bin seeding (sklearn's algorithm, vectorised).

    Args:
      points: ``(P, N)`` float points.
      bandwidth: kernel radius (L2), > 0.
      max_iter: iteration cap per seed.
      seeds: ``(S, N)`` starting points; default: sklearn's bin seeding.

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
    active = _bin_seeds(points, bandwidth) if seeds is None else np.asarray(seeds, points.dtype)
    done_centers, done_counts = [], []
    for iteration in range(max_iter + 1):
        # Seeds within a stopping distance of each other follow the same path: keep one.
        _, first = np.unique(np.round(active / stop), axis=0, return_index=True)
        active = active[np.sort(first)]
        new = np.empty_like(active)
        counts = np.empty(len(active), np.int64)
        chunk = max(1, min(_CHUNK, 2**24 // len(points)))  # <= 16M kernel entries at once
        for lo in range(0, len(active), chunk):
            seeds = active[lo:lo + chunk]
            threshold = 0.5 * (np.sum(seeds**2, axis=1, keepdims=True) - radius2)
            within = (seeds @ augmented[:, :-1].T + augmented[:, -1]) >= threshold
            within = within.astype(points.dtype)
            counts[lo:lo + chunk] = within.sum(axis=1)
            new[lo:lo + chunk] = (within @ points) / np.maximum(counts[lo:lo + chunk], 1)[:, None]
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
        chunk = points[lo:lo + step]
        partial = c_sq[None, :] - 2.0 * (chunk @ centers.T)  # |p - c|^2 - |p|^2
        index[lo:lo + step] = np.argmin(partial, axis=1)
        best = partial[np.arange(len(chunk)), index[lo:lo + step]]
        dist2[lo:lo + step] = np.maximum(best + np.sum(chunk * chunk, axis=1), 0.0)
    return index, dist2


def _regroup(labels: np.ndarray, *, radius: float) -> np.ndarray:
    """Per label: parts = 8-connected components of the label grown by ``radius``, restricted to
    the label's pixels. Returns ids 1..K."""
    out = np.zeros(labels.shape, np.int32)
    pad = int(np.ceil(radius)) + 1
    next_id = 1
    for index, box in enumerate(find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
        mask = labels[box] == index
        parts, count = ndimage_label(mask, structure=np.ones((3, 3), bool))
        if radius > 0 and count > 1:  # only labels in several parts need the distance map
            grown = distance_transform_edt(~mask) <= radius
            parts, count = ndimage_label(grown, structure=np.ones((3, 3), bool))
            parts = np.where(mask, parts, 0)
        out[box][mask] = parts[mask] + (next_id - 1)
        next_id += count
    return out


def _contacts(parts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of different parts that touch (8-neighbourhood) and their number of touching pixel
    pairs, each pair listed in both directions."""
    pairs = []
    for a, b in ((parts[:, :-1], parts[:, 1:]), (parts[:-1], parts[1:]),
                 (parts[:-1, :-1], parts[1:, 1:]), (parts[:-1, 1:], parts[1:, :-1])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs += [np.stack([a[touch], b[touch]], 1), np.stack([b[touch], a[touch]], 1)]
    pairs = np.concatenate(pairs).astype(np.int64)
    if len(pairs) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    return unique[:, 0], unique[:, 1], counts


def _absorb_fragments(parts: np.ndarray, min_size: int) -> np.ndarray:
    """Merges every part under ``min_size`` pixels into the neighbour it touches most.

    A fragment only merges into a larger neighbour (ties: the higher id), so merges form no
    cycles; chains of fragments resolve over a few rounds. Fragments touching no other part are
    left as they are. Returns the relabelled parts (ids not renumbered).
    """
    if min_size <= 1 or parts.max() == 0:
        return parts
    first, second, counts = _contacts(parts)
    root = np.arange(parts.max() + 1)
    sizes = np.bincount(parts.ravel(), minlength=len(root))
    for _ in range(64):
        a, b = root[first], root[second]
        size = np.bincount(root, weights=sizes, minlength=len(root))
        ok = (a != b) & (size[a] < min_size) & ((size[b] > size[a]) | ((size[b] == size[a])
                                                                     & (b > a)))
        if not ok.any():
            break
        a, b, c = a[ok], b[ok], counts[ok]
        # Sum the contacts per (fragment, neighbour), then take each fragment's best neighbour.
        pair, inverse = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True)
        total = np.bincount(inverse.ravel(), weights=c)
        order = np.lexsort((-size[pair[:, 1]], -total, pair[:, 0]))
        pair = pair[order]
        best = np.concatenate([[True], pair[1:, 0] != pair[:-1, 0]])
        root[pair[best, 0]] = pair[best, 1]
        while not np.array_equal(root, root[root]):
            root = root[root]
    return root[parts]


def split_components(
    labels: np.ndarray,
    *,
    min_size: int = MIN_SIZE,
    max_gap: float = MAX_GAP,
) -> np.ndarray:
    """Turns cluster labels into instances: spatially separate parts, fragments absorbed.

    1. Each label is cut into its 8-connected parts (harmonic embeddings are periodic, so one
       cluster can hold far-apart twins).
    2. Parts under ``min_size`` pixels (noise where the embedding strayed into a neighbour's
       cluster) merge into the neighbouring part they share the longest border with, whatever
       its label; those that touch no other part are dropped (background).
    3. Parts of one label closer than ``max_gap`` pixels are joined again, so an object cut in two
       by an occluder (a leaf under another leaf) stays whole, while far-apart twins stay apart.
       Ownership comes from the parts as they are after step 2, so neither an absorbed stray
       pixel nor a dropped speck ever joins two clusters or two twins.

    Args:
      labels: ``(H, W)`` int, 0 = background.
      min_size: smallest instance kept, in pixels; smaller fragments are absorbed or dropped.
        Defaults as :func:`mean_shift` (measured there).
      max_gap: largest gap, in pixels, bridged between parts of one label (0: none).

    Returns:
      ``(H, W)`` int32, instances numbered 1..K.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.size == 0:
        return np.zeros(labels.shape, np.int32)
    parts = _regroup(labels, radius=0.0)
    if parts.max() == 0:
        return parts
    owner = np.zeros(parts.max() + 1, np.int64)
    owner[parts[labels > 0]] = labels[labels > 0]
    parts = _absorb_fragments(parts, min_size)
    sizes = np.bincount(parts.ravel())
    small = sizes < max(min_size, 1)
    small[0] = False
    parts = np.where(small[parts], 0, parts)  # fragments that touch nothing
    if max_gap > 0:
        parts = _regroup(owner[parts], radius=max_gap / 2.0)
    ids = np.unique(parts)
    return np.searchsorted(ids[ids > 0], parts, side="left").astype(np.int32) + (parts > 0)


def cluster_labels(
    embeddings: ArrayLike,
    *,
    bandwidth: float = 0.5,
    mask: ArrayLike | None = None,
    max_samples: int = 4096,
    seed: int = 0,
) -> np.ndarray:
    """Mean-shift clusters of per-pixel embeddings, before any spatial split.

    Args: as :func:`mean_shift`.

    Returns:
      ``(H, W)`` int32: 0 outside ``mask``, else ``1 +`` the index of the pixel's mode.
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

    def subsample(x, size):
        return x if len(x) <= size else x[np.sort(rng.choice(len(x), size, replace=False))]

    # Modes on a subsample, then refined on (up to _REFINE x more) pixels: seeded with the
    # subsample's modes, mean-shift on the larger set moves them to its own density peaks. The
    # subsample alone holds a handful of noisy points of a small object, whose kernel means stop
    # at spurious local modes; refined, they converge (crowded blobs, noise 0.15: SBD 0.83-0.92
    # without refinement, 0.99-1.00 with it, see benchmarks/bench_crowded.py).
    dense_index = (np.arange(len(points)) if len(points) <= _REFINE * max_samples else
                   np.sort(rng.choice(len(points), _REFINE * max_samples, replace=False)))
    dense = points if len(dense_index) == len(points) else points[dense_index]

    def modes(x):
        """Modes of a subsample of ``x`` (a subset of ``dense``), refined on ``dense``."""
        found = mean_shift_modes(subsample(x, max_samples), float(bandwidth))
        if len(dense) <= max_samples or len(found) == 0:  # exact: the search saw every pixel
            return found
        refined = mean_shift_modes(dense, float(bandwidth), seeds=found)
        return refined if len(refined) else found

    centers = modes(dense)
    nearest, dist2 = _nearest(points, centers)
    if len(points) > max_samples:
        # A small object can have too few pixels in the subsample to hold its own mode; its
        # pixels then lie far from every mode found: outside the kernel, and farther than twice
        # the median pixel-to-mode distance (the noise; measured on crowded blobs: a fixed 2
        # bandwidths misses small objects at low noise, a fixed 1 costs 2-3x time at high
        # noise). Look for modes among those pixels too; keep those not within a bandwidth of
        # a known mode.
        spread = float(np.median(dist2))
        far = dist2 > max(bandwidth**2, 4.0 * spread)
        orphans = far[dense_index]  # aligned with ``dense``
        extra = modes(dense[orphans]) if orphans.any() else []
        if len(extra):
            extra = extra[_nearest(extra, centers)[1] > bandwidth**2]
        if len(extra):
            near_extra, dist2_extra = _nearest(points, extra)
            closer = dist2_extra < dist2
            nearest = np.where(closer, near_extra + len(centers), nearest)
    out[mask] = nearest + 1
    return out


def mean_shift(
    embeddings: ArrayLike,
    *,
    bandwidth: float = 0.5,
    mask: ArrayLike | None = None,
    min_size: int = MIN_SIZE,
    max_gap: float = MAX_GAP,
    max_samples: int = 4096,
    seed: int = 0,
    largest_is_background: bool = False,
) -> np.ndarray:
    """Instance labels from per-pixel embeddings: :func:`cluster_labels`, then
    :func:`split_components`.

    Args:
      embeddings: ``(H, W, N)`` float predicted embeddings.
      bandwidth: mean-shift kernel radius (L2), > 0; the paper uses the margin, 0.5.
      mask: ``(H, W)`` bool foreground; pixels outside are background. ``None``: all pixels.
      min_size: fragments under this many pixels merge into the instance they touch most (or are
        dropped when they touch none). The default 8 is the best measured by
        ``benchmarks/tune_cluster.py`` (16 CVPPP training plants at full resolution and 8 crowded
        blob images, ground-truth embeddings plus noise 0.05 and 0.15; mean SBD of the four):
        4 and 6 keep noise fragments of crowded scenes as instances (blobs at 0.15: SBD 0.975,
        0.988), 12 absorbs true blobs of 10-12 px (0.970); 8 gives 0.990. Keep it below the
        smallest object you expect, in pixels.
      max_gap: parts of one cluster closer than this (pixels) stay one instance. The default 48
        (same measurement, ``min_size=8``) rejoins CVPPP leaves cut by an occluding leaf at
        full resolution (plants at 0.05 / 0.15: SBD 0.934 / 0.937 with 0, 0.990 / 0.996 with
        32, 0.993 / 1.000 with 48 and 64) and costs crowded blobs little (0.979 against 0.984
        with 0 at noise 0.05): the searched guides rarely give two objects within 48 px the
        same embedding. Mean SBD: 0.961 (0), 0.981 (16), 0.989 (32), 0.991 (48), 0.990 (64).
        Scale it with the image: 24 at half resolution.
      max_samples: modes are searched on at most this many pixels (a fixed random subsample),
        then refined by mean-shift on up to 16 times as many, and every pixel in ``mask`` is
        assigned to its nearest mode. Exact sklearn clustering when the mask holds no more
        pixels than this.
      seed: seed of the subsample.
      largest_is_background: the cluster holding the most pixels is background (for networks
        whose background regresses one embedding of its own, without a foreground output).

    Returns:
      ``(H, W)`` int32: 0 = background (or a dropped fragment), 1..K instances. An empty mask
      gives all zeros.
    """
    clusters = cluster_labels(embeddings, bandwidth=bandwidth, mask=mask,
                              max_samples=max_samples, seed=seed)
    if largest_is_background and clusters.any():
        sizes = np.bincount(clusters.ravel())
        sizes[0] = 0
        clusters = np.where(clusters == np.argmax(sizes), 0, clusters)
    return split_components(clusters, min_size=min_size, max_gap=max_gap)
