"""Files in and out: images to read, label images and overlays to write (host side, no JAX)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage.segmentation import find_boundaries

__all__ = ["IMAGE_SUFFIXES", "find_images", "overlay", "read_image", "resize_labels",
           "write_labels"]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def read_image(path: str | Path, *, convert: bool = False) -> np.ndarray:
    """An image file as a numpy array (TIFF through tifffile, the rest through Pillow).

    Args:
      path: the file.
      convert: for pictures (not label images): palette images become RGB(A), grey+alpha becomes
        grey, CMYK and other colour spaces become RGB. Off, palette images give their indices
        (what label images store).

    Raises:
      FileNotFoundError: the file does not exist.
      ValueError: the file is not a readable image (the reader's message is kept).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(path)
        with Image.open(path) as im:
            if convert and im.mode not in ("1", "L", "RGB", "RGBA", "I", "I;16", "F"):
                has_alpha = im.mode in ("PA", "RGBa", "La") or "transparency" in im.info
                im = im.convert("L" if im.mode == "LA" else "RGBA" if has_alpha else "RGB")
            return np.array(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing") from None
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path} has more pixels than Pillow opens by default ({err}); save it "
                         "as TIFF, or raise PIL.Image.MAX_IMAGE_PIXELS") from None
    except Exception as err:  # noqa: BLE001 - report which file is broken
        raise ValueError(f"{path} is not a readable image: {err}") from None


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``paths``: files as given, folders by their images (sorted,
    by suffix: :data:`IMAGE_SUFFIXES`; not recursive).

    Raises:
      FileNotFoundError: a path does not exist, a folder holds no image, or nothing was given.
    """
    found: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            images = sorted(p for p in entry.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder "
                                        f"{entry}")
            found += images
        elif entry.is_file():
            found.append(entry)
        else:
            raise FileNotFoundError(f"{entry} does not exist")
    if not found:
        raise FileNotFoundError("no image files or folders given")
    return found


def write_labels(path: str | Path, labels: np.ndarray) -> Path:
    """Writes an ``(H, W)`` label image losslessly: 16-bit PNG, or TIFF (16-bit, 32-bit past
    65,535 instances). The suffix of ``path`` chooses.

    Raises:
      ValueError: another suffix, negative ids, or more than 65,535 ids for a PNG.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"labels must be an (H, W) image of ids >= 0, got {labels.dtype} "
                         f"{labels.shape}")
    big = int(labels.max()) > np.iinfo(np.uint16).max
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".png":
        if big:
            raise ValueError(f"{path}: {labels.max()} instances do not fit a 16-bit PNG; use .tif")
        Image.fromarray(labels.astype(np.uint16)).save(path)
    elif suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, labels.astype(np.uint32 if big else np.uint16),
                         compression="zlib")
    else:
        raise ValueError(f"{path}: label images are written as .png or .tif")
    return path


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of ``(h, w)`` labels to ``shape`` ``(H, W)`` (int32)."""
    labels = np.asarray(labels, np.int32)
    if labels.shape == tuple(shape):
        return labels
    out = Image.fromarray(labels).resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(out, np.int32)


def overlay(image: np.ndarray, labels: np.ndarray, *, alpha: float = 0.4,
            seed: int = 0) -> np.ndarray:
    """Instances coloured over an image, with their outlines drawn in white.

    Args:
      image: ``(H, W)`` or ``(H, W, C)`` on the 0-255 scale (as :func:`~harmonic_jax.predict.
        prepare_image` returns), C in 1-4.
      labels: ``(H, W)`` int, 0 = background.
      alpha: opacity of the instance colours.

    Returns:
      ``(H, W, 3)`` uint8.
    """
    from harmonic_jax.viz import colorize_labels

    rgb = np.asarray(image, np.float32)
    rgb = rgb[..., None] if rgb.ndim == 2 else rgb
    rgb = np.repeat(rgb[..., :1], 3, -1) if rgb.shape[-1] < 3 else rgb[..., :3]
    labels = np.asarray(labels)
    colours = colorize_labels(labels, seed=seed).astype(np.float32)
    inside = (labels > 0)[..., None]
    out = np.where(inside, (1 - alpha) * rgb + alpha * colours, rgb)
    out[find_boundaries(labels, mode="inner")] = 255
    return np.clip(out, 0, 255).astype(np.uint8)
