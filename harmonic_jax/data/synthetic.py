"""Crowded label images you can generate: touching convex blobs, like nuclei in a dense culture.

CVPPP plants have 11-20 large leaves; microscopy often has hundreds of small touching objects,
where guides and clustering fail in other ways (more pairs to separate, tiny objects whose
embeddings are single guide values). :func:`touching_blobs` makes such label images from a seed,
so benchmarks and tests can measure on them without any download; :func:`render_blobs` turns one
into a microscopy-like image (textured nuclei with dim rims on a noisy background) and
:func:`write_blob_folder` writes a dataset in the generic ``images/`` + ``labels/`` layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_edt, find_objects, gaussian_filter
from scipy.ndimage import label as ndimage_label

__all__ = ["render_blobs", "touching_blobs", "write_blob_folder"]


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


def render_blobs(labels: np.ndarray, seed: int, *, noise: float = 12.0) -> np.ndarray:
    """A grey-level image of a label image, like stained nuclei (deterministic in ``seed``).

    Each object gets its own brightness (uniform in [110, 230]) times a profile that dims
    towards its border (1 at 4 px or more inside, 0.55 on the border), so that touching objects
    are told apart by a dim seam as in real nuclei; a smooth texture (Gaussian noise blurred
    over 2 px, 15% of the brightness) and white noise of standard deviation ``noise`` grey levels
    are added on a background of level 20.

    Args:
      labels: ``(H, W)`` int label image (0 = background).
      seed: seed of the brightness, texture and noise.

    Returns:
      ``(H, W, 3)`` uint8 (three equal channels).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(110.0, 230.0, int(labels.max()) + 1)
    brightness[0] = 20.0
    # Distance to the nearest pixel of another label (object borders and seams).
    edge = np.zeros(labels.shape, bool)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[1:] != labels[:-1]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    depth = distance_transform_edt(~edge)
    profile = np.where(labels > 0, 0.55 + 0.45 * np.clip(depth / 4.0, 0.0, 1.0), 1.0)
    texture = 1.0 + 0.15 * gaussian_filter(rng.normal(size=labels.shape), 2.0) * 4.0
    image = brightness[labels] * profile * np.where(labels > 0, texture, 1.0)
    image = image + rng.normal(0.0, noise, labels.shape)
    grey = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def write_blob_folder(folder: str | Path, n: int, *, seed: int = 0,
                      size: tuple[int, int] = (256, 256)) -> Path:
    """Writes ``n`` rendered crowded-blob images in the ``images/`` + ``labels/`` layout that
    :func:`~harmonic_jax.data.readers.load_folder` reads (PNG; 16-bit labels).

    Image ``i`` is ``render_blobs(touching_blobs(seed + i, size), seed + i)``; names ``blobs0000``...

    Returns:
      ``folder``.
    """
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        labels = touching_blobs(seed + i, size)
        Image.fromarray(render_blobs(labels, seed + i)).save(folder / "images" / f"blobs{i:04d}.png")
        Image.fromarray(labels.astype(np.uint16)).save(folder / "labels" / f"blobs{i:04d}.png")
    return folder
