"""Augmentation as pure, jittable functions of a PRNG key: random scale, flip and crop in one
resampling (bilinear for images, nearest-neighbour for labels: ids are never interpolated).

The crop's top-left corner in the (scaled, flipped) image is returned as ``offset``, so guide
maps at that offset are the maps of the augmented image: training and inference share one
coordinate frame.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates

__all__ = ["random_view", "resample"]


def resample(image, labels, *, out_size, scale, offset, flip, size):
    """Samples an ``out_size`` window of the image scaled by ``scale`` and optionally flipped.

    Output pixel ``(i, j)`` shows the scaled image's pixel ``(i + offset[0], j + offset[1])``;
    the scaled image's pixel ``(u, v)`` is the source's ``(u / scale, v / scale)`` (mirrored in
    ``v`` when ``flip``). Outside the source: 0.

    Args:
      image: ``(H, W, C)`` float; labels: ``(H, W)`` int; size: ``(2,)`` true ``(h, w)`` of the
        source inside a padded array (pixels beyond it count as outside).
      out_size: static ``(h, w)``.
      scale: scalar > 0; offset: ``(2,)``; flip: scalar bool.

    Returns:
      ``(out_h, out_w, C)`` float32 image and ``(out_h, out_w)`` int32 labels.
    """
    out_h, out_w = out_size
    size = jnp.asarray(size, jnp.float32)
    rows = (jnp.arange(out_h, dtype=jnp.float32) + offset[0]) / scale
    cols = (jnp.arange(out_w, dtype=jnp.float32) + offset[1]) / scale
    cols = jnp.where(flip, size[1] - 1.0 - cols, cols)
    yy, xx = jnp.meshgrid(rows, cols, indexing="ij")
    inside = (yy > -0.5) & (yy < size[0] - 0.5) & (xx > -0.5) & (xx < size[1] - 0.5)

    def bilinear(channel):
        return map_coordinates(channel, [yy, xx], order=1, mode="constant", cval=0.0)

    image = image.astype(jnp.float32)
    out_image = jax.vmap(bilinear, in_axes=-1, out_axes=-1)(image)
    # Nearest neighbour by index: label ids are never interpolated.
    iy = jnp.clip(jnp.round(yy), 0, labels.shape[0] - 1).astype(jnp.int32)
    ix = jnp.clip(jnp.round(xx), 0, labels.shape[1] - 1).astype(jnp.int32)
    out_labels = labels.astype(jnp.int32)[iy, ix]
    return (jnp.where(inside[..., None], out_image, 0.0),
            jnp.where(inside, out_labels, 0).astype(jnp.int32))


def random_view(
    key: jax.Array,
    image: jax.Array,
    labels: jax.Array,
    size: jax.Array,
    *,
    crop: tuple[int, int] = (448, 448),
    scale_range: tuple[float, float] = (0.75, 1.25),
    flip: bool = True,
):
    """A random scaled, flipped crop (the paper's augmentation), jittable.

    The crop position is uniform over the scaled image; an image smaller than the crop is
    padded with zeros (its position is random too).

    Args:
      key: PRNG key.
      image: ``(H, W, C)``; labels: ``(H, W)`` int; size: ``(2,)`` true size inside the arrays.
      crop: static output ``(h, w)``.
      scale_range: scale drawn log-uniformly from this range.
      flip: draw a left-right flip with probability 1/2.

    Returns:
      ``(image (h, w, C) float32, labels (h, w) int32, offset (2,) float32)``.
    """
    k_scale, k_flip, k_y, k_x = jax.random.split(key, 4)
    lo, hi = jnp.log(scale_range[0]), jnp.log(scale_range[1])
    scale = jnp.exp(jax.random.uniform(k_scale, (), jnp.float32, lo, hi))
    do_flip = jax.random.bernoulli(k_flip) if flip else jnp.bool_(False)
    scaled = jnp.round(jnp.asarray(size, jnp.float32) * scale)
    slack = scaled - jnp.asarray(crop, jnp.float32)
    # Anywhere the crop fits; or a random placement of the whole image inside a larger crop.
    u = jnp.stack([jax.random.uniform(k_y), jax.random.uniform(k_x)])
    offset = jnp.floor(jnp.where(slack >= 0, u * (slack + 1), u * slack))
    out_image, out_labels = resample(image, labels, out_size=crop, scale=scale, offset=offset,
                                     flip=do_flip, size=size)
    return out_image, out_labels, offset
