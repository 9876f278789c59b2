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
matrix product ``(C_in, n) x (n, k C_out)`` over a contiguous slice of the flattened input.
The output rows are taken in blocks of about 16,384 pixels (all images of the batch together):
a ``lax.scan`` over the blocks, and one over the kernel rows inside it, keep one block's rows of
the input and of the gradient, its stacked gradient (``k`` times its output gradient) and one
input slice in memory at a time (about 55 MB for the 7x7 SinConv 140 -> 64). The batch is
flattened into each product's contraction, so a batch sharded over devices gives a sum over
devices, as the data-parallel train step needs.

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
BLOCK_ROWS = 16384  # see weight_gradient


def uses_matmul_gradient(in_channels: int, out_channels: int, kernel: int) -> bool:
    """Whether :func:`conv_general_dilated` computes this layer's weight gradient by matrix
    products on CPU (``out_channels`` and ``kernel``, the kernel's width, are kept in the
    signature but no longer decide).

    Measured on 2 CPU cores, layer by layer (``benchmarks/bench_conv.py``): the products are
    1.6-4.6x faster than XLA on every layer of the default network but its RGB input layer (e.g.
    the 7x7 SinConv 140 -> 64 at 448 x 448: 1.5 s against 6.2 s; all weight gradients 5.7 s
    against 20.7 s) and 1.1-3.1x on the compact network's other layers (0.31 s against 0.61 s in
    all). On a layer of 3 input channels the products pay little or lose (1.2x on the default
    network's RGB input, 0.5x on the compact network's), so layers of fewer than 8 input
    channels keep XLA's.
    """
    del out_channels, kernel
    return in_channels >= 8


def weight_gradient(x: jax.Array, g: jax.Array, kernel: tuple[int, int],
                    padding: tuple[tuple[int, int], tuple[int, int]], *,
                    block_rows: int = BLOCK_ROWS) -> jax.Array:
    """The weight gradient of a stride-1 NHWC/HWIO convolution, as matrix products.

    The output rows are taken in blocks of about ``block_rows`` flattened pixels (all images of
    the batch together); each block contributes ``kh`` products ``(C_in, n) x (n, kw C_out)``
    (see the module docstring), and a ``lax.scan`` over the blocks keeps one block's stacked
    gradient and input slices in memory at a time.

    Args:
      x: ``(B, H, W, C_in)`` the convolution's input.
      g: ``(B, Ho, Wo, C_out)`` the gradient of its output.
      kernel: ``(kh, kw)``.
      padding: ``((top, bottom), (left, right))`` as given to the convolution.
      block_rows: the products' contraction length to aim for (pixels of a block, summed over
        the batch). The default, 16,384, is within about 5% of the fastest of 4,096-262,144
        for the default network's 7x7 SinConv 140 -> 64 at 448 x 448 (batch 1: 1.24 s against
        1.18 s at 4,096 and 1.46 s at 262,144; batch 4: 5.14 s against 5.05-5.72 s;
        ``benchmarks/bench_conv.py --block-rows``), with 4 times fewer blocks than 4,096 (one
        reduction over devices per block and kernel row in a data-parallel step); the memory
        grows with the blocks.

    Returns:
      ``(kh, kw, C_in, C_out)`` in ``x``'s dtype (accumulated in float32).
    """
    (kh, kw), ((top, bottom), (left, right)) = kernel, padding
    batch, height, width, c_in = x.shape
    _, ho, wo, c_out = g.shape
    hp, wp = height + top + bottom, width + left + right
    if hp != ho + kh - 1 or wp != wo + kw - 1:
        raise ValueError(f"output {ho}x{wo} does not match input {x.shape[1:3]}, kernel "
                         f"{kernel} and padding {padding} at stride 1")
    # hc output rows a block, in nb blocks; the last block's missing rows are zeros.
    nb = min(ho, max(1, -(-batch * ho * wp // block_rows)))
    hc = -(-ho // nb)
    nb = -(-ho // hc)
    n = hc * wp
    acc_type = x.dtype if jnp.finfo(x.dtype).bits >= 32 else jnp.float32

    def rows_of(a, start, count, pad_left, pad_right):
        """Rows ``start .. start + count`` of ``a`` (zeros outside it), its columns padded, and
        flattened: pixel ``(y, x)`` of the block sits at row ``y * wp + x``. Padding block by
        block keeps no padded copy of a whole layer alive: XLA would compute such copies early
        and hold them through the backward pass."""
        rows = start + jnp.arange(count)
        rows = jnp.where(rows < 0, a.shape[1], rows)  # take would wrap a negative row around
        picked = jnp.take(a, rows, axis=1, mode="fill", fill_value=0)
        picked = jnp.pad(picked, ((0, 0), (0, 0), (pad_left, pad_right), (0, 0)))
        return picked.reshape(batch, count * wp, a.shape[-1])

    def block(acc, j):
        # Output rows j hc .. (j + 1) hc (zeros past ho; kw - 1 zero columns past wo) and the
        # input rows they see: padded rows j hc .. j hc + hc + kh - 1.
        gb = rows_of(g, j * hc, hc, 0, wp - wo)
        xb = rows_of(x, j * hc - top, hc + kh - 1, left, right)
        # stacked[b, m, dx] = gb[b, m - dx]: the kw column shifts, on the gradient's side (zeros
        # before the block: the previous row's zero columns).
        stacked = jnp.stack([jnp.pad(gb, ((0, 0), (dx, 0), (0, 0)))[:, :n] for dx in range(kw)],
                            axis=2).reshape(batch * n, kw * c_out)
        # One kernel row at a time (an inner loop: XLA keeps a loop body's buffers apart from
        # every other layer's, so each row's input slice made in one body would add up). The
        # products are two-dimensional: XLA:CPU runs a dot contracting over (batch, rows) at
        # about half the speed of the same dot over the flattened (batch * rows) axis
        # (benchmarks/bench_conv.py --dot-forms).
        def row(_, dy):
            rows = lax.dynamic_slice_in_dim(xb, dy * wp, n, axis=1).reshape(batch * n, c_in)
            return None, jnp.einsum("mi,mo->io", rows, stacked, preferred_element_type=acc_type)

        return acc + lax.scan(row, None, jnp.arange(kh))[1], None

    grad, _ = lax.scan(block, jnp.zeros((kh, c_in, kw * c_out), acc_type), jnp.arange(nb))
    return grad.reshape(kh, c_in, kw, c_out).transpose(0, 2, 1, 3).astype(x.dtype)


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
