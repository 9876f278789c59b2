"""Readers for the other datasets of the paper, in their official layouts, and a generic one.

Every reader returns :class:`~harmonic_jax.data.cvppp.Sample` objects with ``uint8`` images:
16-bit microscopy is scaled per image from its 0.5th-99.5th percentile range to 0-255.

Overlapping instances (BBBC010 worms): ``Sample.masks`` holds one binary mask per worm (for COCO
evaluation), ``Sample.labels`` gives each pixel covered by exactly one worm that worm's id, and
pixels covered by two or more worms are 0 in ``labels``, ``True`` in ``Sample.ignore`` and in
``Sample.fg``: they are left out of the embedding loss, which has no single right target there
(a foreground head, trained on ``labels > 0``, sees them as background).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harmonic_jax.data.cvppp import Sample
from harmonic_jax.io import read_image as _read

__all__ = ["load_bbbc010", "load_folder", "load_hela", "to_uint8"]

_BBBC010 = ("BBBC010_v2_images/*_<well>_w1_*.tif and *_w2_*.tif, and "
            "BBBC010_v1_foreground_eachworm/<well>_<n>_ground_truth.png")
_HELA = "<seq>/tNNN.tif and <seq>_GT/SEG/man_segNNN.tif (e.g. 01/t013.tif, 01_GT/SEG/man_seg013.tif)"
_FOLDER = "images/<name>.(png|tif|tiff|jpg) and labels/<name>.(png|tif|tiff)"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit images pass through; others are scaled per image from percentiles 0.5-99.5."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    lo, hi = np.percentile(image, (0.5, 99.5))
    scaled = (image.astype(np.float64) - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def _require_dir(path: Path, layout: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"folder {path} does not exist (expected layout: {layout})")
    return path


def _with_channels(image: np.ndarray) -> np.ndarray:
    return image[..., None] if image.ndim == 2 else image


def load_bbbc010(folder: str | Path, names: Sequence[str] | None = None) -> list[Sample]:
    """BBBC010 C. elegans (live/dead assay): two channels per well, one mask per worm.

    Args:
      folder: the folder holding ``BBBC010_v2_images/`` and ``BBBC010_v1_foreground_eachworm/``.
      names: well ids such as ``"A01"``; every well with images when ``None``.
    """
    folder = Path(folder)
    images_dir = _require_dir(folder / "BBBC010_v2_images", _BBBC010)
    masks_dir = _require_dir(folder / "BBBC010_v1_foreground_eachworm", _BBBC010)
    channels: dict[str, dict[str, Path]] = {}
    for path in images_dir.glob("*.tif"):
        match = re.search(r"_([A-P]\d{2})_(w[12])_", path.name)
        if match:
            channels.setdefault(match.group(1), {})[match.group(2)] = path
    if not channels:
        raise FileNotFoundError(f"no *_<well>_w1_*.tif images in {images_dir} "
                                f"(expected: {_BBBC010})")
    samples = []
    for well in sorted(channels) if names is None else names:
        paths = channels.get(well, {})
        if set(paths) != {"w1", "w2"}:
            raise FileNotFoundError(f"{images_dir}: well {well} needs a _w1_ and a _w2_ image")
        image = np.stack([to_uint8(_read(paths[c])) for c in ("w1", "w2")], axis=-1)
        worm_files = sorted(masks_dir.glob(f"{well}_*_ground_truth.png"))
        masks = np.stack([_read(p) > 0 for p in worm_files]) if worm_files else np.zeros(
            (0, *image.shape[:2]), bool)
        if masks.ndim == 4:
            masks = masks[..., 0]
        if masks.shape[1:] != image.shape[:2]:
            raise ValueError(f"{masks_dir}/{well}_*: masks {masks.shape[1:]} and image "
                             f"{image.shape[:2]} differ in size")
        cover = masks.sum(axis=0)
        labels = np.where(cover == 1, np.argmax(masks, axis=0) + 1, 0).astype(np.int32)
        samples.append(Sample(well, image, labels, cover > 0, masks=masks, ignore=cover > 1))
    return samples


def load_hela(folder: str | Path, names: Sequence[str] | None = None) -> list[Sample]:
    """ISBI cell tracking DIC-C2DH-HeLa: the annotated frames of each sequence.

    Args:
      folder: the dataset folder holding ``01/``, ``01_GT/SEG/``, ``02/``...
      names: ``"<seq>/tNNN"`` ids; every annotated frame when ``None``.
    """
    folder = _require_dir(Path(folder), _HELA)
    if names is None:
        names = [f"{seg.parent.parent.name[:-3]}/t{seg.stem[len('man_seg'):]}"
                 for seg in sorted(folder.glob("*_GT/SEG/man_seg*.tif"))]
        if not names:
            raise FileNotFoundError(f"no <seq>_GT/SEG/man_seg*.tif in {folder} (expected: {_HELA})")
    samples = []
    for name in names:
        seq, frame = name.split("/")
        image = _with_channels(to_uint8(_read(folder / seq / f"{frame}.tif")))
        labels = _read(folder / f"{seq}_GT" / "SEG" / f"man_seg{frame[1:]}.tif").astype(np.int32)
        if labels.shape != image.shape[:2]:
            raise ValueError(f"{folder}/{name}: image {image.shape[:2]} and labels {labels.shape} "
                             "differ in size")
        samples.append(Sample(name, image, labels, labels > 0))
    return samples


def load_folder(folder: str | Path, names: Sequence[str] | None = None) -> list[Sample]:
    """A generic paired folder (E. coli or your own data): ``images/`` and ``labels/``.

    Labels are integer instance images (0 = background) with the image's stem.
    """
    folder = Path(folder)
    images_dir = _require_dir(folder / "images", _FOLDER)
    labels_dir = _require_dir(folder / "labels", _FOLDER)
    images = {p.stem: p for p in images_dir.iterdir()
              if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg")}
    if not images:
        raise FileNotFoundError(f"no images in {images_dir} (expected: {_FOLDER})")
    samples = []
    for name in sorted(images) if names is None else names:
        if name not in images:
            raise FileNotFoundError(f"{images_dir} has no image named {name!r}")
        candidates = [labels_dir / f"{name}{ext}" for ext in (".png", ".tif", ".tiff")]
        label_path = next((p for p in candidates if p.exists()), None)
        if label_path is None:
            raise FileNotFoundError(f"{labels_dir} has no labels for {name!r} (expected: {_FOLDER})")
        image = _with_channels(to_uint8(_read(images[name])))[..., :3]
        labels = _read(label_path)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{label_path}: expected an integer (H, W) label image")
        if labels.shape != image.shape[:2]:
            raise ValueError(f"{folder}/{name}: image {image.shape[:2]} and labels {labels.shape} "
                             "differ in size")
        samples.append(Sample(name, image, labels.astype(np.int32), labels > 0))
    return samples
