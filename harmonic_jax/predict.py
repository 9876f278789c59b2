"""Inference: embeddings from the network (jitted, tiled), then instances by mean-shift on the host.

:func:`prepare_image` turns what a user has into the network's input; :func:`predict_embeddings`
runs an image of any size in tiles of a few fixed shapes, each at its own place in the guide frame;
:func:`segment` clusters the result.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from harmonic_jax import cluster
from harmonic_jax.guides import get_family
from harmonic_jax.model import UNet, receptive_radius

__all__ = [
    "Prepared",
    "default_tile",
    "exact_tiling",
    "instance_scores",
    "input_channels",
    "normalize_images",
    "predict",
    "predict_embeddings",
    "prepare_image",
    "segment",
    "tile_plan",
]

# Smallest default tile side; a network whose receptive radius is large gets tiles of 4 times
# its margin, so that at most ~75% of each tile's pixels are overlap (benchmarks/bench_predict.py
# times tile sizes).
TILE = 512


def normalize_images(images: ArrayLike) -> jax.Array:
    """0-255 images to the network's input range [-0.5, 0.5] (as in training)."""
    return jnp.asarray(images, jnp.float32) / 255.0 - 0.5


@dataclasses.dataclass(frozen=True)
class Prepared:
    """An image ready for the network: ``image`` ``(H, W, C)`` float32 on the 0-255 scale the
    network was trained on, and ``notes``, what :func:`prepare_image` changed (empty: nothing)."""

    image: np.ndarray
    notes: tuple[str, ...]


def _scale(image: np.ndarray, notes: list[str]) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32)
    if image.dtype == bool:
        notes.append("boolean image mapped to 0/255")
        return image.astype(np.float32) * 255
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"image dtype {image.dtype} is not a number type")
    values = image.astype(np.float64)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(values).all():
            raise ValueError(f"the image has {int((~np.isfinite(values)).sum())} NaN or infinite "
                             "pixels; fill or mask them first")
        lo, hi = values.min(), values.max()
        if lo >= 0 and hi <= 1:
            notes.append("float image in [0, 1] scaled by 255")
            return (values * 255).astype(np.float32)
        if lo >= 0 and hi <= 255:
            notes.append("float image taken as 0-255")
            return values.astype(np.float32)
    # uint16, other integers and out-of-range floats: as the training readers do (readers.to_uint8).
    lo, hi = np.percentile(values, (0.5, 99.5))
    notes.append(f"{image.dtype} image scaled from its 0.5-99.5 percentile range "
                 f"[{lo:.4g}, {hi:.4g}] to 0-255")
    return (np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.float32)


def _channels(image: np.ndarray, channels: int, notes: list[str]) -> np.ndarray:
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 4 and channels in (1, 3):
        notes.append("alpha channel dropped")
        image, have = image[..., :3], 3
        if channels == 3:
            return image
    if have == 1 and channels == 3:
        notes.append("grey image replicated to RGB")
        return np.repeat(image, 3, axis=-1)
    if have == 3 and channels == 1 and (image == image[..., :1]).all():
        notes.append("RGB image with equal channels taken as grey")
        return image[..., :1]
    raise ValueError(f"the model takes {channels}-channel images but this image has {have} "
                     "channels; convert it first")


def prepare_image(image: ArrayLike, channels: int) -> Prepared:
    """Turns a user's image into the network's input, and says what it changed.

    - Shapes: ``(H, W)`` (grey), ``(H, W, C)``, or channels-first ``(C, H, W)`` with ``C <= 4``
      (moved last).
    - Values: ``uint8`` as is; floats in [0, 1] times 255; floats in [0, 255] as is; ``uint16``,
      other integers and other floats scaled from their 0.5-99.5 percentile range to 0-255, as the
      training readers do (:func:`harmonic_jax.data.to_uint8`).
    - Channels: grey to an RGB model is replicated; RGBA loses its alpha; an RGB image whose
      channels are equal goes to a grey model as grey. Other mismatches raise.

    Args:
      image: the image, as read from a file.
      channels: the channel count the model was trained on (:func:`input_channels`).

    Returns:
      :class:`Prepared`: ``(H, W, channels)`` float32 on the 0-255 scale, and notes.

    Raises:
      ValueError: an empty image, a shape that is not an image, NaN or infinite pixels, a
        non-numeric dtype, or a channel count the model cannot take (both counts named).
    """
    arr = np.asarray(image)
    notes: list[str] = []
    if arr.size == 0:
        raise ValueError(f"the image is empty (shape {arr.shape})")
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.ndim == 3 and arr.shape[0] <= 4 < min(arr.shape[1:]) and arr.shape[2] > 4:
        notes.append(f"channels-first {arr.shape} moved last")
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim != 3 or arr.shape[-1] > 4:
        raise ValueError(f"expected an (H, W) or (H, W, C) image with C <= 4, got shape "
                         f"{np.asarray(image).shape}")
    arr = _scale(arr, notes)
    return Prepared(_channels(arr, channels, notes), tuple(notes))


def input_channels(variables) -> int:
    """The number of image channels a U-Net's ``variables`` were made for."""
    return int(variables["params"]["DoubleConv_0"]["Conv_0"]["kernel"].shape[2])


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, images, guide_params, offset, valid=None):
    return model.apply(variables, normalize_images(images), guide_params=guide_params,
                       offset=offset, valid=valid, train=False)


def _check_guides(model: UNet, variables, guide_params):
    """Guide parameters as float32 arrays, checked against the maps the network was trained on."""
    guide_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), guide_params)
    if not model.sinconv:
        return guide_params
    maps = get_family(model.family).maps(guide_params, 1, 1, stride=1, offset=(0, 0),
                                         frame=model.frame)
    sinconvs = sorted((k for k in variables["params"] if k.startswith("SinConv_")),
                      key=lambda k: int(k.rsplit("_", 1)[1]))
    if sinconvs:  # the last SinConv sees widths[0] features and the maps
        expected = variables["params"][sinconvs[-1]]["Conv_0"]["kernel"].shape[2] - \
            model.widths[0]
        if maps.shape[-1] != expected:
            raise ValueError(f"the network was trained with {expected} guide maps, but these "
                             f"guide parameters give {maps.shape[-1]}")
    return guide_params


def predict(model, variables, guide_params, images: ArrayLike, *, offset: ArrayLike | None = None):
    """Per-pixel embeddings of a batch in one pass (no tiling, one compilation per shape).

    Args:
      model: the :class:`~harmonic_jax.model.UNet`.
      variables: ``{"params": ..., "batch_stats": ...}``.
      guide_params: the guides the network was trained with.
      images: ``(B, H, W, C)`` or ``(H, W, C)`` 0-255 images.
      offset: ``(B, 2)`` position of each image in the guide frame (zeros: whole images).

    Returns:
      ``(B, H, W, N)`` float32 embeddings, or ``(embeddings, fg_prob (B, H, W))``; without a
      batch axis when ``images`` had none.
    """
    images = jnp.asarray(images)
    single = images.ndim == 3
    images = images[None] if single else images
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C) or (H, W, C), got shape {images.shape}")
    offset = jnp.zeros((images.shape[0], 2), jnp.float32) if offset is None else jnp.asarray(
        offset, jnp.float32)
    out = _apply(model, variables, images, _check_guides(model, variables, guide_params), offset)
    if model.fg_head:
        out = (out[0], jax.nn.sigmoid(out[1]))
    if single:
        out = jax.tree.map(lambda x: x[0], out)
    return out


def _axis_plan(size: int, tile: int, margin: int, multiple: int,
               buckets: bool = True) -> tuple[int, list]:
    """Tile length along one axis and ``(start, keep_from, keep_to)`` of each tile."""
    padded = -(-size // multiple) * multiple
    if padded <= tile:  # one tile, padded to the smallest bucket that holds it
        bucket = next(b for b in _buckets(tile, multiple) if b >= padded) if buckets else padded
        return bucket, [(0, 0, size)]
    step = tile - 2 * margin
    starts = list(range(0, padded - tile, step)) + [padded - tile]
    starts = sorted(set(starts))
    cuts = [0] + [(a + tile + b) // 2 for a, b in zip(starts, starts[1:])] + [size]
    return tile, [(s, cuts[i], cuts[i + 1]) for i, s in enumerate(starts)]


def _buckets(tile: int, multiple: int) -> list[int]:
    """Tile lengths for small images: the multiples of ``tile / 8`` (rounded up to a multiple of
    ``multiple``) up to ``tile``: at most 8 per axis."""
    step = -(-tile // 8 // multiple) * multiple
    return sorted({min(step * k, tile) for k in range(1, 9)} | {tile})


def exact_tiling(model: UNet) -> bool:
    """Whether tiles and padding leave ``model``'s output unchanged: half-pixel upsampling
    (shift-equivariant) and BatchNorm (per pixel at inference)."""
    return model.upsample == "half_pixel" and model.norm == "batch"


def default_tile(model: UNet, overlap: int | None = None) -> int:
    """:data:`TILE`, or 4 times the tile margin when that is larger (a multiple of
    ``2 ** depth``): the default network's margin is 176, its tiles 704."""
    multiple = 2 ** (len(model.widths) - 1)
    return max(TILE, 4 * _margin(model, overlap, multiple))


def tile_plan(shape: tuple[int, int], model: UNet, *, tile: int | None = None,
              overlap: int | None = None) -> tuple[tuple[int, int], list]:
    """Where :func:`predict_embeddings` puts its tiles on an ``(H, W)`` image.

    Returns:
      ``((tile_h, tile_w), tiles)`` with ``tiles`` a list of ``((y, x), (y0, y1), (x0, x1))``:
      the tile's top-left pixel and the rows and columns of the image it provides.
    """
    multiple = 2 ** (len(model.widths) - 1)
    margin = _margin(model, overlap, multiple)
    tile = default_tile(model, overlap) if tile is None else int(tile)
    if tile % multiple or tile < 2 * margin + multiple:
        raise ValueError(f"tile must be a multiple of {multiple} and larger than twice the "
                         f"overlap {margin} (got {tile})")
    # A network that tiles inexactly gets no shape buckets: padding would change its output.
    buckets = exact_tiling(model)
    th, rows = _axis_plan(shape[0], tile, margin, multiple, buckets)
    tw, cols = _axis_plan(shape[1], tile, margin, multiple, buckets)
    return (th, tw), [((r[0], c[0]), r[1:], c[1:]) for r in rows for c in cols]


def _margin(model: UNet, overlap: int | None, multiple: int) -> int:
    margin = receptive_radius(model) if overlap is None else int(overlap)
    if margin < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    return -(-margin // multiple) * multiple


def predict_embeddings(model: UNet, variables, guide_params, image: ArrayLike, *,
                       tile: int | None = None, overlap: int | None = None,
                       offset: ArrayLike = (0, 0), progress: bool = False):
    """Embeddings of one image of any size, in tiles that all live in the model's guide frame.

    The image is never resized. Each tile is run at its global offset (``offset`` plus its
    position), and keeps the pixels at least ``overlap`` away from its borders (the image's own
    borders excepted). With the default ``overlap``, the network's receptive radius
    (:func:`~harmonic_jax.model.receptive_radius`, rounded up to a multiple of ``2 ** depth``),
    no kept pixel sees a tile border, and the result equals one pass over the whole image (to
    float rounding) for networks with ``upsample="half_pixel"`` and BatchNorm
    (:func:`exact_tiling`). Images up to ``tile`` pixels a side run as one tile, padded up to a
    multiple of ``tile / 8`` per axis, so a folder of mixed sizes compiles at most 64 times (a
    few in practice); the padding is masked inside the network and changes nothing. (Networks
    that tile inexactly, such as those trained with the original's ``align_corners``
    upsampling, are padded only to a multiple of ``2 ** depth`` and warn when tiled.)

    The guide maps of every tile are taken in ``model.frame``: a network built with
    ``frame=None`` would see each tile in a frame of its own, so it is refused.

    Memory is the output plus one tile's activations, whatever the image size.

    Args:
      model, variables, guide_params: as for :func:`predict`.
      image: ``(H, W)`` or ``(H, W, C)``, any dtype :func:`prepare_image` takes (what it changes
        is warned about), or its :class:`Prepared` result.
      tile: tile side, a multiple of ``2 ** depth``; ``None``: :func:`default_tile`.
      overlap: pixels each tile border is kept away from; ``None``: the receptive radius.
      offset: ``(2,)`` the image's top-left pixel in the guide frame.
      progress: show a progress bar over the tiles.

    Returns:
      ``(H, W, N)`` float32 numpy embeddings, or ``(embeddings, fg_prob (H, W))`` with a
      foreground head.
    """
    if not isinstance(image, Prepared):
        image = prepare_image(image, input_channels(variables))
        for note in image.notes:
            warnings.warn(f"input: {note}", stacklevel=2)
    image = image.image
    guide_params = _check_guides(model, variables, guide_params)
    offset = np.asarray(offset, np.float32)
    if offset.shape != (2,):
        raise ValueError(f"offset must be (y, x), got shape {offset.shape}")
    if model.sinconv and model.frame is None:
        raise ValueError("the model has frame=None: its guide maps would be taken in each tile's "
                         "own frame; build it with the frame of its guides (fit.build_model)")
    height, width = image.shape[:2]
    (th, tw), tiles = tile_plan((height, width), model, tile=tile, overlap=overlap)
    if not exact_tiling(model) and len(tiles) > 1:
        warnings.warn(f"a network with upsample={model.upsample!r}, norm={model.norm!r} gives "
                      "tiled results that differ slightly from one pass", stacklevel=2)
    emb = np.zeros((height, width, model.out_channels), np.float32)
    prob = np.zeros((height, width), np.float32) if model.fg_head else None
    if progress:
        from tqdm.auto import tqdm

        tiles = tqdm(tiles, desc="tiles", leave=False)
    for (y, x), (y0, y1), (x0, x1) in tiles:
        patch = np.zeros((1, th, tw, image.shape[2]), np.float32)
        crop = image[y:y + th, x:x + tw]
        patch[0, :crop.shape[0], :crop.shape[1]] = crop
        valid = np.asarray([crop.shape[:2]], np.int32)
        out = jax.device_get(_apply(model, variables, patch, guide_params,
                                    (offset + [y, x])[None], valid))
        out_emb, logit = out if model.fg_head else (out, None)
        emb[y0:y1, x0:x1] = out_emb[0, y0 - y:y1 - y, x0 - x:x1 - x]
        if logit is not None:  # sigmoid on the host: no device op per slice shape
            part = logit[0, y0 - y:y1 - y, x0 - x:x1 - x].astype(np.float64)
            prob[y0:y1, x0:x1] = 1.0 / (1.0 + np.exp(-part))
    return (emb, prob) if model.fg_head else emb


def instance_scores(labels: np.ndarray, prob: np.ndarray) -> np.ndarray:
    """``(K,)`` mean foreground probability of each instance of ``labels`` (ids in sorted
    order, as :func:`~harmonic_jax.metrics.coco_ap` expects): a confidence for AP."""
    labels = np.asarray(labels)
    ids = np.unique(labels[labels > 0])
    sums = np.bincount(labels.ravel(), weights=np.asarray(prob, np.float64).ravel(),
                       minlength=int(labels.max()) + 1)
    counts = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
    return (sums[ids] / counts[ids]).astype(np.float32)


def segment(model, variables, guide_params, image: ArrayLike, *, fg_mask: ArrayLike | None = None,
            bandwidth: float = 0.5, min_size: int = cluster.MIN_SIZE,
            max_gap: float = cluster.MAX_GAP, fg_threshold: float = 0.5,
            background_instance: bool = False, return_embedding: bool = False,
            tile: int | None = None, progress: bool = False):
    """Instance labels for one image: :func:`predict_embeddings`, then mean-shift on the host.

    The foreground is ``fg_mask`` when given, else the network's foreground head (probability
    above ``fg_threshold``). A network with neither must have been trained with
    ``background_instance`` (its background regresses an embedding of its own): pass
    ``background_instance=True`` and every pixel is clustered, the cluster holding the most
    pixels being the background. ``bandwidth``, ``min_size`` and ``max_gap`` are
    :func:`~harmonic_jax.cluster.mean_shift`'s (same defaults, measured there).

    Returns:
      ``(H, W)`` int32, 0 = background; with ``return_embedding``, also the ``(H, W, N)`` float32
      embedding that was clustered and the ``(H, W)`` foreground probability (``None`` without
      a head).

    Raises:
      ValueError: no mask, no foreground head and ``background_instance`` false: the paper's
        objective leaves the background's embedding free, so its pixels would come back as
        instances.
    """
    if fg_mask is None and not model.fg_head and not background_instance:
        raise ValueError("the model has no foreground output: pass fg_mask, or "
                         "background_instance=True for a model trained with it")
    out = predict_embeddings(model, variables, guide_params, image, tile=tile, progress=progress)
    emb, prob = out if model.fg_head else (out, None)
    if fg_mask is not None:
        fg_mask = np.asarray(fg_mask, bool)
        if fg_mask.shape != emb.shape[:2]:
            raise ValueError(f"fg_mask shape {fg_mask.shape} does not match the image's "
                             f"{emb.shape[:2]}")
    elif prob is not None:
        fg_mask = prob > fg_threshold
    labels = cluster.mean_shift(emb, bandwidth=bandwidth, mask=fg_mask, min_size=min_size,
                                max_gap=max_gap, largest_is_background=fg_mask is None)
    return (labels, emb, prob) if return_embedding else labels
