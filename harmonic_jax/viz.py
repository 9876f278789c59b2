"""Pictures for people: coloured label images, embeddings as RGB, side-by-side panels (PIL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["colorize_labels", "embedding_rgb", "panel", "save_grid", "save_panel"]


def colorize_labels(labels: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """``(H, W)`` int labels -> ``(H, W, 3)`` uint8, background black, each id a fixed colour."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    palette = rng.integers(60, 256, size=(int(labels.max()) + 1, 3), dtype=np.uint8)
    palette[0] = 0
    return palette[labels]


def embedding_rgb(embedding: np.ndarray, channels: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Three embedding channels in [-1, 1] shown as ``(H, W, 3)`` uint8."""
    rgb = np.clip((np.asarray(embedding)[..., list(channels)] + 1.0) * 127.5, 0, 255)
    return rgb.astype(np.uint8)


def panel(tiles: Sequence[np.ndarray], titles: Sequence[str]) -> Image.Image:
    """Images side by side with a title over each (grey tiles shown as grey)."""
    tiles = [np.repeat(t[..., None], 3, -1) if t.ndim == 2 else t[..., :3] for t in tiles]
    height = max(t.shape[0] for t in tiles)
    width = sum(t.shape[1] for t in tiles) + 4 * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, height + 18), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for tile, title in zip(tiles, titles):
        canvas.paste(Image.fromarray(tile.astype(np.uint8)), (x, 18))
        draw.text((x + 2, 3), title, fill="black")
        x += tile.shape[1] + 4
    return canvas


def save_panel(path: str | Path, tiles: Sequence[np.ndarray], titles: Sequence[str]) -> Path:
    """Saves images side by side with a title over each; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    panel(tiles, titles).save(path)
    return path


def save_grid(path: str | Path, rows: Sequence[Sequence[np.ndarray]],
              titles: Sequence[Sequence[str]]) -> Path:
    """Saves rows of titled images (a montage), one :func:`panel` per row; returns the path."""
    panels = [panel(tiles, names) for tiles, names in zip(rows, titles)]
    canvas = Image.new("RGB", (max(p.width for p in panels),
                               sum(p.height for p in panels) + 4 * (len(panels) - 1)), "white")
    y = 0
    for p in panels:
        canvas.paste(p, (0, y))
        y += p.height + 4
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
