"""The network: a U-Net whose decoder convolutions see the guide maps (SinConv).

The default :class:`UNet` reproduces the architecture of the PyTorch original's released weights
(METHOD.md section B): encoder widths 64-128-256-512-512 of (3x3 conv, BatchNorm, ReLU) x 2 with
2x max-pooling; each decoder block upsamples bilinearly (the original: align_corners=True; here by
default with half-pixel centres, see :func:`upsample_half_pixel`), zero-pads to the skip's size,
concatenates ``[skip, upsampled]``, appends the guide maps at the block's stride and convolves
7x7 (the SinConv), then applies the double conv; a last SinConv and a 1x1 convolution give ``N``
linear outputs. 28,837,260 trainable parameters for RGB input and N = 12.

Guide parameters are inputs, not trained weights: ``model.apply(variables, images,
guide_params=..., offset=...)``. ``offset`` gives each image's top-left pixel in the guide frame.

With ``upsample="half_pixel"`` and BatchNorm the network is translation-equivariant for offsets that
are multiples of ``2 ** depth``, and the pixels past an image's ``valid`` size are zeroed after every
layer, as a convolution's own zero padding would be: a tile of a large image, or an image padded to
a larger shape bucket, gives exactly the pixels of the whole image
(:func:`harmonic_jax.predict.predict_embeddings`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name
from jax.typing import ArrayLike

from harmonic_jax.conv import conv_general_dilated
from harmonic_jax.guides import get_family

__all__ = [
    "SinConv",
    "UNet",
    "compact_unet",
    "count_params",
    "max_pool_2x2",
    "receptive_radius",
    "upsample_bilinear",
    "upsample_half_pixel",
]


def _interpolation_matrix(n: int, factor: int) -> np.ndarray:
    """``(factor * n, n)`` linear-interpolation weights with aligned corners."""
    out = n * factor
    pos = np.linspace(0.0, n - 1.0, out)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    matrix = np.zeros((out, n), np.float32)
    matrix[np.arange(out), lo] += 1 - frac
    matrix[np.arange(out), hi] += frac
    return matrix


def upsample_bilinear(x: jax.Array, factor: int = 2) -> jax.Array:
    """Bilinear upsampling with ``align_corners=True`` (PyTorch's convention in the original).

    Computed as two small matrix products (fast forward and backward on every backend).

    Args:
      x: ``(B, h, w, C)``.

    Returns:
      ``(B, factor * h, factor * w, C)``; corner pixels keep their values exactly.
    """
    rows = jnp.asarray(_interpolation_matrix(x.shape[1], factor), x.dtype)
    cols = jnp.asarray(_interpolation_matrix(x.shape[2], factor), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


def _half_pixel_matrix(n: int) -> np.ndarray:
    """``(2n, n)`` weights of 2x linear upsampling with half-pixel centres, zero outside."""
    matrix = np.zeros((2 * n, n), np.float32)
    j = np.arange(n)
    matrix[2 * j, j] = matrix[2 * j + 1, j] = 0.75
    matrix[2 * j[1:], j[1:] - 1] = 0.25
    matrix[2 * j[:-1] + 1, j[:-1] + 1] = 0.25
    return matrix


def upsample_half_pixel(x: jax.Array) -> jax.Array:
    """2x bilinear upsampling with half-pixel centres; pixels outside the input count as zero.

    Output row ``2j`` is ``0.75 x[j] + 0.25 x[j-1]`` and row ``2j+1`` is ``0.75 x[j] + 0.25 x[j+1]``
    (the same along columns): the transposed convolution with kernel ``[1, 3, 3, 1] / 4``. Unlike
    ``align_corners=True``, whose sampling positions depend on the image size, this commutes with
    even shifts, and treating the outside as zero matches the convolutions' zero padding, so a tile
    or a padded image sees what the whole image sees.

    Args:
      x: ``(B, h, w, C)``.

    Returns:
      ``(B, 2h, 2w, C)``, same dtype.
    """
    rows = jnp.asarray(_half_pixel_matrix(x.shape[1]), x.dtype)
    cols = jnp.asarray(_half_pixel_matrix(x.shape[2]), x.dtype)
    return jnp.einsum("ih,bhwc,jw->bijc", rows, x, cols)


def _conv(features: int, kernel: int, dtype) -> nn.Conv:
    """A ``kernel x kernel`` same-padded convolution whose weight gradient is fast on CPU
    (:mod:`harmonic_jax.conv`); parameters as ``nn.Conv``'s."""
    return nn.Conv(features, (kernel, kernel), padding=kernel // 2, dtype=dtype,
                   conv_general_dilated=conv_general_dilated)


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2, as a reshape and a max.

    The same values as ``nn.max_pool(x, (2, 2), strides=(2, 2))``, several times cheaper to train
    on XLA:CPU: the pooling window's backward pass there computes argmax indices with four
    full-size index arrays (``benchmarks/results/train_profile.md``). At a tie the gradient is
    shared between the tied pixels instead of going to the first one (both are subgradients);
    after a ReLU most ties are zeros, whose gradient the ReLU stops anyway.

    Args:
      x: ``(B, h, w, C)`` with even ``h, w``.

    Returns:
      ``(B, h / 2, w / 2, C)``.
    """
    batch, height, width, channels = x.shape
    if height % 2 or width % 2:
        raise ValueError(f"max_pool_2x2 needs even sizes, got {height}x{width}")
    return jnp.max(x.reshape(batch, height // 2, 2, width // 2, 2, channels), axis=(2, 4))


def _valid_mask(valid: jax.Array, shape: tuple[int, int], stride: int, dtype) -> jax.Array:
    """``(B, h, w, 1)`` ones on the pixels of a stride-``stride`` grid inside ``valid`` (B, 2)."""
    limit = -(-valid // stride)  # ceil: a pixel of a coarse grid is valid if it covers one
    rows = jnp.arange(shape[0], dtype=limit.dtype)[None, :] < limit[:, :1]
    cols = jnp.arange(shape[1], dtype=limit.dtype)[None, :] < limit[:, 1:]
    return (rows[:, :, None] & cols[:, None, :])[..., None].astype(dtype)


class SinConv(nn.Module):
    """Convolution of the input concatenated with guide maps (CoordConv with the "coord" family).

    Attributes:
      features: output channels.
      kernel_size: square kernel size (7 in the paper's network).
      stride: the input's stride relative to the full-resolution image.
      family: guide family name.
      frame: reference frame ``(H, W)`` of the guides; ``None``: the full-resolution input size.
      dtype: computation dtype.
    """

    features: int
    kernel_size: int = 7
    stride: int = 1
    family: str = "sine"
    frame: tuple[int, int] | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, guide_params, offset, full_size, mask=None):
        """x: ``(B, h, w, C)``; offset: ``(B, 2)``; full_size: static full-res ``(H, W)``;
        mask: ``(B, h, w, 1)`` zeroing the padding (guide maps included), or ``None``."""
        fam = get_family(self.family)
        height, width = full_size

        def maps_at(o):
            return fam.maps(guide_params, height, width, stride=self.stride, offset=o,
                            frame=self.frame)

        maps = jax.vmap(maps_at)(jnp.asarray(offset, jnp.float32))
        maps = jax.lax.stop_gradient(maps[:, : x.shape[1], : x.shape[2]]).astype(x.dtype)
        x = jnp.concatenate([x, maps], axis=-1)
        x = x if mask is None else x * mask
        return _conv(self.features, self.kernel_size, self.dtype)(x)


def _norm(kind: str, features: int, train: bool, dtype) -> nn.Module:
    """BatchNorm (the original's) or GroupNorm (batch-independent: groups of ``gcd(8, features)``
    channels)."""
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                            dtype=dtype)
    if kind == "group":
        return nn.GroupNorm(num_groups=None, group_size=math.gcd(8, features), epsilon=1e-5,
                            dtype=dtype)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


# What the backward pass keeps of a DoubleConv: its input and its convolutions' outputs. The
# normalisation, ReLU and mask after each convolution are recomputed from them (elementwise work
# and one mean per channel), instead of keeping their full-size intermediates.
_KEEP_CONV_OUTPUTS = jax.checkpoint_policies.save_only_these_names("conv_out")


class DoubleConv(nn.Module):
    """(3x3 conv -> normalisation -> ReLU) x 2.

    Rematerialised (``nn.remat``): for the backward pass it keeps only its input and the two
    convolutions' outputs, and recomputes the normalisations and ReLUs
    (``benchmarks/results/train_speed.md`` gives what that saves). ``train`` is static: pass it
    positionally.
    """

    features: int
    dtype: jnp.dtype = jnp.float32
    norm: str = "batch"

    @functools.partial(nn.remat, static_argnums=(2,), policy=_KEEP_CONV_OUTPUTS)
    @nn.compact
    def __call__(self, x, train: bool, mask=None):
        """``mask``: ``(B, h, w, 1)`` or ``None``; zeroes the padding after each layer."""
        for _ in range(2):
            x = checkpoint_name(_conv(self.features, 3, self.dtype)(x), "conv_out")
            x = _norm(self.norm, self.features, train, self.dtype)(x)
            x = nn.relu(x)
            x = x if mask is None else x * mask
        return x


class UNet(nn.Module):
    """U-Net regressing ``N`` embedding channels (plus an optional foreground logit).

    Attributes:
      widths: encoder widths; ``len(widths) - 1`` down-sampling steps.
      out_channels: embedding size ``N``.
      sinconv: append guide maps in the decoder (``False``: the paper's ablation, plain 7x7 convs).
      family: guide family of the SinConv layers.
      frame: guide reference frame ``(H, W)``; ``None``: the input size.
      sinconv_kernel: kernel size of the SinConv layers.
      fg_head: add a 1x1 foreground-logit head.
      norm: ``"batch"`` (the original's BatchNorm) or ``"group"`` (GroupNorm, 8 channels a group).
        GroupNorm's statistics span the whole image, so a tiled prediction is not exact with it.
      upsample: ``"half_pixel"`` (:func:`upsample_half_pixel`, the default: exact tiling) or
        ``"align_corners"`` (:func:`upsample_bilinear`, the original's; networks trained before
        this option existed).
      input_norm: ``(mean, std)``, per-channel on the 0-1 scale, or ``None`` (the default: the
        network takes ``images / 255 - 0.5`` as they come). With it, the input becomes
        ``(x + 0.5 - mean) / std``, torchvision's ``Normalize(mean, std)`` of ``images / 255``:
        the PyTorch original's input, for its ported checkpoints
        (:func:`harmonic_jax.port.load_original`).
      dtype: computation dtype (``jnp.bfloat16`` on GPU); parameters stay float32.
    """

    widths: Sequence[int] = (64, 128, 256, 512, 512)
    out_channels: int = 12
    sinconv: bool = True
    family: str = "sine"
    frame: tuple[int, int] | None = None
    sinconv_kernel: int = 7
    fg_head: bool = False
    norm: str = "batch"
    upsample: str = "half_pixel"
    input_norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    dtype: jnp.dtype = jnp.float32

    def __post_init__(self):
        # Lists (from JSON) become tuples: the module is a static, hashed argument of jit.
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.frame is not None:
            object.__setattr__(self, "frame", tuple(int(f) for f in self.frame))
        if self.input_norm is not None:
            mean, std = (tuple(float(v) for v in part) for part in self.input_norm)
            if len(mean) != len(std) or min(std) <= 0:
                raise ValueError(f"input_norm must be (mean, std) of one length with std > 0, "
                                 f"got {self.input_norm!r}")
            object.__setattr__(self, "input_norm", (mean, std))
        super().__post_init__()

    @nn.compact
    def __call__(self, images: ArrayLike, *, guide_params=None, offset=None, valid=None,
                 train: bool = False):
        """Predicts per-pixel embeddings.

        Args:
          images: ``(B, H, W, C)`` float, any ``H, W`` (padded to a multiple of
            ``2 ** (len(widths) - 1)`` inside and cropped back).
          guide_params: parameters of ``family`` (ignored with ``sinconv=False``).
          offset: ``(B, 2)`` top-left pixel of each image in the guide frame; zeros when ``None``.
          valid: ``(B, 2)`` int, the rows and columns of each image that are real (the rest is
            padding, e.g. to a shape bucket); ``None``: all ``H, W``. Activations past them are
            zeroed after every layer, so the valid pixels do not depend on the padding.
          train: use batch statistics (and update ``batch_stats``).

        Returns:
          ``(B, H, W, out_channels)`` embeddings, and with ``fg_head`` a ``(B, H, W)`` logit
          (as a tuple).
        """
        images = jnp.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"images must be (B, H, W, C), got shape {images.shape}")
        if self.sinconv and guide_params is None:
            raise ValueError("guide_params is required when sinconv=True")
        batch, height, width, channels = images.shape
        if self.input_norm is not None:
            mean, std = (jnp.asarray(v, jnp.float32) for v in self.input_norm)
            if mean.shape != (channels,):
                raise ValueError(f"input_norm has {mean.shape[0]} channels, the images {channels}")
            images = (images + 0.5 - mean) / std
        depth = len(self.widths) - 1
        multiple = 2**depth
        pad_h, pad_w = -height % multiple, -width % multiple
        x = jnp.pad(images.astype(self.dtype), ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        full = (height + pad_h, width + pad_w)
        offset = jnp.zeros((batch, 2), jnp.float32) if offset is None else offset
        if self.upsample not in ("half_pixel", "align_corners"):
            raise ValueError(f"upsample must be 'half_pixel' or 'align_corners', got "
                             f"{self.upsample!r}")
        upsample = upsample_half_pixel if self.upsample == "half_pixel" else upsample_bilinear
        if valid is None and (pad_h or pad_w):
            valid = jnp.broadcast_to(jnp.asarray([height, width], jnp.int32), (batch, 2))

        def mask(x, stride):
            if valid is None:
                return None
            return _valid_mask(jnp.asarray(valid, jnp.int32), x.shape[1:3], stride, x.dtype)

        def masked(x, stride):
            m = mask(x, stride)
            return x if m is None else x * m

        x = masked(x, 1)

        def sin_conv(features, stride):
            if self.sinconv:
                return SinConv(features, self.sinconv_kernel, stride, self.family, self.frame,
                               self.dtype)
            return _conv(features, self.sinconv_kernel, self.dtype)

        def apply_conv(conv, x, stride):
            if self.sinconv:
                return conv(x, guide_params, offset, full, mask(x, stride))
            return conv(x)

        def decode(conv, low, skip, stride):
            """The decoder's 7x7 convolution of [skip, upsampled low] at ``stride``."""
            up = upsample(low)
            up = jnp.pad(up, ((0, 0), (0, skip.shape[1] - up.shape[1]),
                              (0, skip.shape[2] - up.shape[2]), (0, 0)))
            return apply_conv(conv, jnp.concatenate([skip, masked(up, stride)], axis=-1), stride)

        # For the backward pass the decoder keeps the skip and the coarse input of each of its
        # convolutions, and recomputes the upsampling, the concatenation and the guide maps,
        # instead of keeping their full-size concatenation.
        decode = nn.remat(decode, policy=jax.checkpoint_policies.nothing_saveable,
                          static_argnums=(3,))

        skips = []
        for level, features in enumerate(self.widths):
            if level:
                x = max_pool_2x2(x)  # masked zeros never win: x >= 0
            x = DoubleConv(features, self.dtype, self.norm)(x, train, mask(x, 2**level))
            skips.append(x)
        x = skips.pop()
        for level in range(depth):
            skip = skips.pop()
            stride = 2 ** (depth - 1 - level)
            features = self.widths[max(depth - 2 - level, 0)]
            x = decode(sin_conv(features, stride), x, skip, stride)
            x = DoubleConv(features, self.dtype, self.norm)(masked(x, stride), train,
                                                             mask(x, stride))
        x = apply_conv(sin_conv(self.widths[0], 1), x, 1)
        emb = nn.Conv(self.out_channels, (1, 1), dtype=self.dtype)(x)
        emb = emb[:, :height, :width].astype(jnp.float32)
        if not self.fg_head:
            return emb
        logit = nn.Conv(1, (1, 1), dtype=self.dtype)(x)[:, :height, :width, 0]
        return emb, logit.astype(jnp.float32)


def compact_unet(**kwargs) -> UNet:
    """A small U-Net for CPU work and tests: widths 16-32-64-64, 5x5 SinConv."""
    kwargs.setdefault("widths", (16, 32, 64, 64))
    kwargs.setdefault("sinconv_kernel", 5)
    return UNet(**kwargs)


def receptive_radius(model: UNet) -> int:
    """How far (pixels) an output pixel of ``model`` can see from itself, from its layers.

    Each 3x3 convolution at stride ``s`` adds ``s``, an upsampling to stride ``s`` adds ``2s``
    (it reads a neighbour of the coarser grid) and a ``k x k`` SinConv at stride ``s`` adds
    ``(k // 2) s``; a 2x2 max-pool adds nothing beyond the footprint of its coarse pixel. A
    tile whose borders lie this far from the pixels it keeps gives them exactly as the whole
    image would
    (:func:`harmonic_jax.predict.predict_embeddings`).
    """
    depth = len(model.widths) - 1
    half = model.sinconv_kernel // 2
    encoder = sum(2 * 2**level for level in range(depth + 1))
    decoder = sum(2 ** (k + 1) + half * 2**k + 2 * 2**k for k in range(depth))
    return encoder + decoder + half


def count_params(params) -> int:
    """Number of scalars in a parameter pytree."""
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
