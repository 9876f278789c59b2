"""Crowded label images you can generate: touching convex blobs, like nuclei in a dense culture.

CVPPP plants have 11-20 large leaves; microscopy often has hundreds of small touching objects,
where guides and clustering fail in other ways (more pairs to separate, tiny objects whose
embeddings are single guide values). :func:`touching_blobs` makes such label images from a seed,
so benchmarks and tests can measure on them without any download.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import find_objects
from scipy.ndimage import label as ndimage_label

__all__ = ["touching_blobs"]


def touching_blobs(
    seed: int,
    size: tuple[int, int] = (256, 256),
    *,
    count: tuple[int, int] = (50, 300),
    area: tuple[float, float] = (10.0, 3000.0),
    max_aspect: float = 2.0,
) -> np.ndarray:
    """A label image of touching convex blobs (deterministic in ``seed``).

    Each blob is an ellipse (area log-uniform in ``area``, aspect ratio up to ``max_aspect``,
    random orientation) around a uniformly drawn centre, cut by the centre's Voronoi cell: a
    pixel belongs to its nearest centre when that centre's ellipse covers it. An ellipse
    intersected with a Voronoi cell is convex, and overlapping ellipses meet along the cells'
    straight edges, so neighbours touch. Blobs cut below ``area[0]`` pixels are removed (background).

    Args:
      seed: the random seed.
      size: ``(H, W)`` of the image.
      count: ``(low, high)`` range of the number of centres drawn (inclusive).
      area: ``(low, high)`` ellipse areas in pixels; also the smallest blob kept.
      max_aspect: the largest ratio of an ellipse's axes.

    Returns:
      ``(H, W)`` int32, 0 = background, blobs numbered 1..K in no particular order.
    """
    height, width = size
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be two positive numbers, got {size!r}")
    if not 0 < count[0] <= count[1] or not 0 < area[0] <= area[1] or max_aspect < 1:
        raise ValueError(f"need 0 < count[0] <= count[1], 0 < area[0] <= area[1] and "
                         f"max_aspect >= 1, got count={count}, area={area}, "
                         f"max_aspect={max_aspect}")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(count[0], count[1] + 1))
    centres = rng.uniform((0, 0), (height, width), (n, 2))
    areas = np.exp(rng.uniform(np.log(area[0]), np.log(area[1]), n))
    aspect = rng.uniform(1.0, max_aspect, n)
    angle = rng.uniform(0.0, np.pi, n)
    semi_major = np.sqrt(areas * aspect / np.pi)
    semi_minor = semi_major / aspect

    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    nearest = np.zeros((height, width), np.int32)
    best = np.full((height, width), np.inf, np.float32)
    for i in range(n):  # the Voronoi cells, one centre at a time: O(H W) memory
        dist = (rows - centres[i, 0]) ** 2 + (cols - centres[i, 1]) ** 2
        closer = dist < best
        best = np.where(closer, dist, best)
        nearest = np.where(closer, i, nearest)
    dy, dx = rows - centres[nearest, 0], cols - centres[nearest, 1]
    cos, sin = np.cos(angle[nearest]), np.sin(angle[nearest])
    along, across = dx * cos + dy * sin, -dx * sin + dy * cos
    inside = (along / semi_major[nearest]) ** 2 + (across / semi_minor[nearest]) ** 2 <= 1.0
    labels = np.where(inside, nearest + 1, 0).astype(np.int32)
    # A pixelised thin corner can come off its blob: keep each blob's largest 8-connected part.
    for i, box in enumerate(find_objects(labels), start=1):
        if box is not None:
            parts, k = ndimage_label(labels[box] == i, structure=np.ones((3, 3), bool))
            if k > 1:
                largest = 1 + np.argmax(np.bincount(parts.ravel())[1:])
                labels[box][(parts > 0) & (parts != largest)] = 0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= area[0]
    keep[0] = False
    new_ids = np.zeros(n + 1, np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
    return new_ids[labels]
