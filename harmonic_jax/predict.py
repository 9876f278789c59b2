"""Inference: embeddings from the network (jitted), then instances by mean-shift on the host."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from harmonic_jax import cluster

__all__ = ["normalize_images", "predict", "segment"]


def normalize_images(images: ArrayLike) -> jax.Array:
    """0-255 images to the network's input range [-0.5, 0.5] (as in training)."""
    return jnp.asarray(images, jnp.float32) / 255.0 - 0.5


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, images, guide_params, offset):
    return model.apply(variables, normalize_images(images), guide_params=guide_params,
                       offset=offset, train=False)


def predict(model, variables, guide_params, images: ArrayLike, *, offset: ArrayLike | None = None):
    """Per-pixel embeddings (and foreground probability with a foreground head).

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
    out = _apply(model, variables, images, guide_params, offset)
    if model.fg_head:
        out = (out[0], jax.nn.sigmoid(out[1]))
    if single:
        out = jax.tree.map(lambda x: x[0], out)
    return out


def segment(model, variables, guide_params, image: ArrayLike, *, fg_mask: ArrayLike | None = None,
            bandwidth: float = 0.5, min_size: int = cluster.MIN_SIZE,
            max_gap: float = cluster.MAX_GAP, fg_threshold: float = 0.5,
            background_instance: bool = False, return_embedding: bool = False):
    """Instance labels for one ``(H, W, C)`` image: :func:`predict`, then mean-shift on the host.

    The foreground is ``fg_mask`` when given, else the network's foreground head (probability
    above ``fg_threshold``). A network with neither must have been trained with
    ``background_instance`` (its background regresses an embedding of its own): pass
    ``background_instance=True`` and every pixel is clustered, the cluster holding the most
    pixels being the background. ``bandwidth``, ``min_size`` and ``max_gap`` are
    :func:`~harmonic_jax.cluster.mean_shift`'s (same defaults, measured there).

    Returns:
      ``(H, W)`` int32, 0 = background; with ``return_embedding``, also the ``(H, W, N)`` float32
      embedding that was clustered.

    Raises:
      ValueError: no mask, no foreground head and ``background_instance`` false: the paper's
        objective leaves the background's embedding free, so its pixels would come back as
        instances.
    """
    if fg_mask is None and not model.fg_head and not background_instance:
        raise ValueError("the model has no foreground output: pass fg_mask, or "
                         "background_instance=True for a model trained with it")
    out = predict(model, variables, guide_params, image)
    emb, prob = out if model.fg_head else (out, None)
    emb = np.asarray(emb)
    if fg_mask is None and prob is not None:
        fg_mask = np.asarray(prob) > fg_threshold
    labels = cluster.mean_shift(emb, bandwidth=bandwidth, mask=fg_mask, min_size=min_size,
                                max_gap=max_gap, largest_is_background=fg_mask is None)
    return (labels, emb) if return_embedding else labels
