"""A 2-D convolution whose weight gradient XLA:CPU computes at matrix-multiply speed.

XLA:CPU computes a convolution's weight gradient as a convolution whose "kernel" is the output
gradient, a window the size of the image; that runs 3-16x slower than the forward convolution
(``benchmarks/results/train_profile.md``: the weight gradients were 61% of the default network's
train step). Here the weight gradient is written as the matrix products it is:

.. math:: \\frac{\\partial L}{\\partial W_{dy, dx}} = \\sum_{b, y, x}
    X^{pad}_{b, y + dy, x + dx}{}^{\\top} G_{b, y, x}

With each padded image flattened row by row to ``(Hp Wp, C_in)``, a shift by ``(dy, dx)`` is a
shift by ``dy Wp + dx`` rows; the ``k`` column shifts are stacked on the gradient's side (the
narrower one in the decoder's SinConvs, where the time goes), so each kernel row ``dy`` is one
matrix product ``(C_in, n) x (n, k C_out)`` over a contiguous slice of the flattened input, and a
``lax.scan`` over the ``k`` rows keeps one such slice in memory at a time. The price is memory
during the backward pass of a layer: the stacked gradient, ``k`` times the output gradient
(0.36 GB per 448 x 448 image for a 7x7 layer of 64 channels), and one slice of the input.
The batch stays its own axis, so a batch sharded over devices gives a sum over devices, as the
data-parallel train step needs.

The forward pass and the input gradient are XLA's own. Only CPU takes the matrix-product path
(``lax.platform_dependent``); other backends keep XLA's weight gradient. Being a
``jax.custom_vjp``, the convolution supports reverse-mode differentiation (also of higher
order) but not forward mode (``jax.jvp``, ``jax.jacfwd``).
"""

from __future__ import annotations

import functools
import operator

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv_general_dilated", "weight_gradient", "uses_matmul_gradient"]

_NHWC = ("NHWC", "HWIO", "NHWC")


def uses_matmul_gradient(in_channels: int, out_channels: int, kernel: int) -> bool:
    """Whether :func:`conv_general_dilated` computes this layer's weight gradient by matrix
    products on CPU; ``kernel`` is the kernel's width (the products have ``kernel * out_channels``
    columns).

    Measured on 2 CPU cores, layer by layer (``benchmarks/bench_conv.py``): the products are
    1.2-3.0x faster than XLA on every layer of the default network but its RGB input layer
    (e.g. the 7x7 SinConv 140 -> 64 at 448 x 448: 2.4 s against 6.2 s), and up to 2.5x on the
    compact network's layers of 32 and more output channels (two of its small layers run at
    0.8-0.9x); with ``k C_out`` under 64 (3x3
    to 16 channels) or under 8 input channels the products are too narrow, and XLA's convolution
    is 2-8x faster. Over each network's layers the rule's picks are within 1% of the best of the
    two (default: 9.4 s against XLA's 19.3 s; compact: 0.46 s against 0.55 s).
    """
    return in_channels >= 8 and kernel * out_channels >= 64


def weight_gradient(x: jax.Array, g: jax.Array, kernel: tuple[int, int],
                    padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """The weight gradient of a stride-1 NHWC/HWIO convolution, as matrix products.

    Args:
      x: ``(B, H, W, C_in)`` the convolution's input.
      g: ``(B, Ho, Wo, C_out)`` the gradient of its output.
      kernel: ``(kh, kw)``.
      padding: ``((top, bottom), (left, right))`` as given to the convolution.

    Returns:
      ``(kh, kw, C_in, C_out)`` in ``x``'s dtype (accumulated in float32).
    """
    (kh, kw), ((top, bottom), (left, right)) = kernel, padding
    batch, _, _, c_in = x.shape
    _, ho, wo, c_out = g.shape
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    hp, wp = xp.shape[1:3]
    if hp != ho + kh - 1 or wp != wo + kw - 1:
        raise ValueError(f"output {ho}x{wo} does not match input {x.shape[1:3]}, kernel "
                         f"{kernel} and padding {padding} at stride 1")
    xf = xp.reshape(batch, hp * wp, c_in)
    # Output pixel (y, x) sits at row y * wp + x of the flattened gradient; the columns past wo
    # are zeros, so the n rows up to the last output pixel hold every product once.
    n = (ho - 1) * wp + wo
    gf = jnp.pad(g, ((0, 0), (0, 0), (0, wp - wo), (0, 0))).reshape(batch, ho * wp, c_out)[:, :n]
    # stacked[b, m, dx, o] = gf[b, m - dx, o]: the kw column shifts, on the gradient's side.
    stacked = jnp.stack([jnp.pad(gf, ((0, 0), (dx, kw - 1 - dx), (0, 0))) for dx in range(kw)],
                        axis=2).reshape(batch, n + kw - 1, kw * c_out)

    def row(_, dy):
        rows = lax.dynamic_slice_in_dim(xf, dy * wp, n + kw - 1, axis=1)
        out = jnp.einsum("bmi,bmo->io", rows, stacked,
                         preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
        return None, out.reshape(c_in, kw, c_out).transpose(1, 0, 2)

    _, grad = lax.scan(row, None, jnp.arange(kh))
    return grad.astype(x.dtype)


def _lax_conv(x, w, padding):
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, padding):
    return _lax_conv(x, w, padding)


def _conv_fwd(x, w, padding):
    return _lax_conv(x, w, padding), (x, w)


def _conv_bwd(padding, residuals, g):
    x, w = residuals
    (dx,) = jax.vjp(lambda x: _lax_conv(x, w, padding), x)[1](g)
    dw = lax.platform_dependent(
        cpu=lambda: weight_gradient(x, g, w.shape[:2], padding).astype(w.dtype),
        default=lambda: jax.vjp(lambda w: _lax_conv(x, w, padding), w)[1](g)[0])
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated``, with the fast CPU weight gradient where it applies.

    For ``flax.linen.Conv(conv_general_dilated=...)``. It applies to 2-D, stride-1, undilated,
    ungrouped NHWC/HWIO convolutions of real floating inputs with explicit non-negative padding,
    default precision and :func:`uses_matmul_gradient` shapes; everything else goes to
    ``lax.conv_general_dilated`` unchanged. Forward values are XLA's in both cases; gradients
    agree up to the summation order. The convolutions it takes support reverse-mode
    differentiation only (see the module docstring).
    """
    simple = (lhs.ndim == 4 and tuple(window_strides) == (1, 1)
              and all(d == 1 for d in (*tuple(lhs_dilation or ()), *tuple(rhs_dilation or ())))
              and feature_group_count == 1 and batch_group_count == 1 and precision is None
              and preferred_element_type is None and not isinstance(padding, str)
              and jnp.issubdtype(lhs.dtype, jnp.floating)
              and all(operator.index(p) >= 0 for pair in padding for p in pair)
              and _is_nhwc(dimension_numbers, lhs.ndim)
              and uses_matmul_gradient(rhs.shape[2], rhs.shape[3], rhs.shape[1]))
    if not simple:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    padding = tuple((operator.index(lo), operator.index(hi)) for lo, hi in padding)
    return _conv(lhs, rhs, padding)


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
    """Whether ``dimension_numbers`` are NHWC input and output with an HWIO kernel."""
    if dimension_numbers is None:
        return False
    numbers = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
    return numbers == lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, _NHWC)
