"""CVPPP Leaf Segmentation Challenge (A1-A5) in the official layout.

A folder such as ``CVPPP2017_LSC_training/training/A1/`` holds, per plant, ``plantNNN_rgb.png``
(RGB or RGBA), ``plantNNN_label.png`` (palette PNG: 0 = background, 1..K = leaves) and
``plantNNN_fg.png`` (binary foreground).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["Sample", "load_cvppp", "load_split", "resize_sample"]

_LAYOUT = "plantNNN_rgb.png, plantNNN_label.png and plantNNN_fg.png per plant"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One annotated image.

    Attributes:
      name: identifier, e.g. ``"plant001"``.
      image: ``(H, W, C)`` uint8 (or uint16) image.
      labels: ``(H, W)`` int32 instance ids, 0 = background.
      fg: ``(H, W)`` bool foreground mask.
      masks: ``(K, H, W)`` bool, one mask per instance, where instances overlap; else ``None``.
      ignore: ``(H, W)`` bool pixels without a single right label (overlaps); else ``None``.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    fg: np.ndarray
    masks: np.ndarray | None = None
    ignore: np.ndarray | None = None


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.array(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing (expected layout: {_LAYOUT})") from None
    except OSError as err:
        raise ValueError(f"{path} is not a readable image: {err}") from None


def load_cvppp(folder: str | Path, names: Sequence[str] | None = None) -> list[Sample]:
    """Reads CVPPP plants from an official A1-A5 folder.

    Args:
      folder: the folder holding ``plantNNN_*.png``.
      names: plants to read (e.g. from :func:`load_split`); all plants when ``None``.

    Returns:
      One :class:`Sample` per plant, RGB image (alpha dropped), in the order of ``names`` (sorted
      when ``None``).

    Raises:
      FileNotFoundError: the folder or one of a plant's files is missing.
      ValueError: an image and its labels differ in size, or a file is not an image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CVPPP folder {folder} does not exist (expected: {_LAYOUT})")
    if names is None:
        names = sorted(p.name[: -len("_rgb.png")] for p in folder.glob("plant*_rgb.png"))
        if not names:
            raise FileNotFoundError(f"no plant*_rgb.png in {folder} (expected: {_LAYOUT})")
    samples = []
    for name in names:
        image = _read_png(folder / f"{name}_rgb.png")[..., :3]
        labels = _read_png(folder / f"{name}_label.png")
        fg = _read_png(folder / f"{name}_fg.png")
        if labels.ndim != 2:
            raise ValueError(f"{folder / f'{name}_label.png'}: expected a palette (indexed) PNG")
        if image.shape[:2] != labels.shape or fg.shape[:2] != labels.shape:
            raise ValueError(
                f"{folder}/{name}: image {image.shape[:2]}, labels {labels.shape} and "
                f"foreground {fg.shape[:2]} differ in size"
            )
        fg = fg[..., 0] if fg.ndim == 3 else fg
        samples.append(Sample(name, image, labels.astype(np.int32), fg > 0))
    return samples


def load_split(path: str | Path) -> dict[str, list[str]]:
    """Reads a ``{"train": [...], "test": [...]}`` split file such as ``cvppp_a1_split.json``."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"split file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"split file {path} is not valid JSON: {err}") from None
    if not isinstance(split, dict) or not all(
        isinstance(v, list) and all(isinstance(n, str) and re.fullmatch(r"[\w.-]+", n) for n in v)
        for v in split.values()
    ):
        raise ValueError(f"split file {path} must map split names to lists of sample names")
    return split


def resize_sample(sample: Sample, factor: float) -> Sample:
    """Resamples a sample by ``factor`` (bilinear image, nearest-neighbour labels and mask)."""
    height, width = sample.labels.shape
    size = (max(round(width * factor), 1), max(round(height * factor), 1))
    labels = np.array(Image.fromarray(sample.labels.astype(np.int32)).resize(size, Image.NEAREST))
    def nearest(mask):
        return np.array(Image.fromarray(mask).resize(size, Image.NEAREST)).astype(bool)

    channels = [np.array(Image.fromarray(c).resize(size, Image.BILINEAR))
                for c in np.moveaxis(sample.image, -1, 0)]
    return Sample(
        sample.name, np.stack(channels, axis=-1), labels.astype(np.int32), nearest(sample.fg),
        masks=None if sample.masks is None else np.stack([nearest(m) for m in sample.masks]),
        ignore=None if sample.ignore is None else nearest(sample.ignore),
    )
