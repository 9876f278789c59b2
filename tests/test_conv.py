import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from harmonic_jax import conv

NHWC = ("NHWC", "HWIO", "NHWC")


def _weight_gradient_loop(x, g, kernel, padding):
    """float64 reference: dW[dy, dx] = sum over pixels of x_pad[y + dy, x + dx]^T g[y, x]."""
    (kh, kw), ((top, bottom), (left, right)) = kernel, padding
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    _, ho, wo, _ = g.shape
    out = np.zeros((kh, kw, x.shape[-1], g.shape[-1]))
    for dy in range(kh):
        for dx in range(kw):
            patch = xp[:, dy:dy + ho, dx:dx + wo].reshape(-1, x.shape[-1])
            out[dy, dx] = patch.T @ g.astype(np.float64).reshape(-1, g.shape[-1])
    return out


# block_rows 40: several blocks (a short last one for the asymmetric case); 1: one output row a
# block, each block's input rows overlapping the next's.
@pytest.mark.parametrize("block_rows", [conv.BLOCK_ROWS, 40, 1])
@pytest.mark.parametrize("batch, height, width, c_in, c_out, kernel, padding", [
    (1, 9, 7, 3, 5, (3, 3), ((1, 1), (1, 1))),
    (2, 8, 11, 4, 6, (7, 7), ((3, 3), (3, 3))),
    (3, 6, 5, 2, 3, (5, 3), ((2, 2), (1, 1))),
    (1, 7, 6, 3, 2, (3, 3), ((0, 2), (2, 0))),  # asymmetric padding
    (2, 5, 5, 2, 4, (3, 3), ((0, 0), (0, 0))),  # valid convolution
])
def test_weight_gradient_matches_float64_loop(batch, height, width, c_in, c_out, kernel,
                                              padding, block_rows):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, height, width, c_in)).astype(np.float32)
    ho = height + sum(padding[0]) - kernel[0] + 1
    wo = width + sum(padding[1]) - kernel[1] + 1
    g = rng.normal(size=(batch, ho, wo, c_out)).astype(np.float32)
    got = conv.weight_gradient(jnp.asarray(x), jnp.asarray(g), kernel, padding,
                               block_rows=block_rows)
    assert got.shape == (*kernel, c_in, c_out) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), _weight_gradient_loop(x, g, kernel, padding),
                               rtol=1e-5, atol=1e-4)


def test_weight_gradient_of_bfloat16_accumulates_in_float32():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 12, 10, 8)).astype(np.float32)
    g = rng.normal(size=(2, 12, 10, 16)).astype(np.float32)
    x16, g16 = jnp.asarray(x, jnp.bfloat16), jnp.asarray(g, jnp.bfloat16)
    got = conv.weight_gradient(x16, g16, (3, 3), ((1, 1), (1, 1)), block_rows=30)
    assert got.dtype == jnp.bfloat16
    # The float64 sums of the same bfloat16 values: the result, accumulated in float32 and
    # rounded once to bfloat16, is within a few bfloat16 roundings of them.
    ref = _weight_gradient_loop(np.asarray(x16, np.float64), np.asarray(g16, np.float64),
                                (3, 3), ((1, 1), (1, 1)))
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=2e-2, atol=2e-2)


def test_weight_gradient_rejects_an_output_of_the_wrong_size():
    x, g = jnp.zeros((1, 8, 8, 2)), jnp.zeros((1, 7, 8, 3))
    with pytest.raises(ValueError, match="does not match"):
        conv.weight_gradient(x, g, (3, 3), ((1, 1), (1, 1)))


class ConvTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_gradients_equal_lax_and_the_matmul_path_is_taken(self):
        rng = np.random.default_rng(1)
        x = jnp.asarray(rng.normal(size=(2, 10, 9, 8)).astype(np.float32))
        w = jnp.asarray(rng.normal(size=(5, 5, 8, 16)).astype(np.float32))
        assert conv.uses_matmul_gradient(8, 16, 5)

        def loss(fn):
            def f(x, w):
                y = fn(x, w, (1, 1), ((2, 2), (2, 2)), dimension_numbers=NHWC)
                return jnp.sum(jnp.sin(y)), y
            return self.variant(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))

        (_, y), (dx, dw) = loss(conv.conv_general_dilated)(x, w)
        (_, y_ref), (dx_ref, dw_ref) = loss(jax.lax.conv_general_dilated)(x, w)
        np.testing.assert_array_equal(y, y_ref)  # forward: XLA's own convolution
        np.testing.assert_array_equal(dx, dx_ref)  # input gradient: XLA's own
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-4)
        # The CPU weight gradient is the matrix-product path (a scan over kernel rows).
        jaxpr = str(jax.make_jaxpr(jax.grad(lambda w: jnp.sum(conv.conv_general_dilated(
            x, w, (1, 1), ((2, 2), (2, 2)), dimension_numbers=NHWC))))(w))
        assert "scan" in jaxpr and "platform_index" in jaxpr


@pytest.mark.parametrize("kwargs", [
    dict(window_strides=(2, 2), padding=((1, 1), (1, 1))),
    dict(window_strides=(1, 1), padding="SAME"),
    dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), rhs_dilation=(2, 2)),
    dict(window_strides=(1, 1), padding=((-1, 1), (1, 1))),  # negative padding crops
])
def test_other_convolutions_are_left_to_lax(kwargs):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(1, 8, 8, 8)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, 8, 32)).astype(np.float32))
    ours = jax.grad(lambda w: jnp.sum(conv.conv_general_dilated(x, w, dimension_numbers=NHWC,
                                                                **kwargs) ** 2))
    ref = jax.grad(lambda w: jnp.sum(jax.lax.conv_general_dilated(x, w, dimension_numbers=NHWC,
                                                                  **kwargs) ** 2))
    assert "scan" not in str(jax.make_jaxpr(ours)(w))
    np.testing.assert_array_equal(ours(w), ref(w))


def test_thin_input_layers_keep_xla_weight_gradient():
    # Measured (benchmarks/bench_conv.py): an RGB input layer is faster with XLA's.
    assert not conv.uses_matmul_gradient(3, 64, 3) and not conv.uses_matmul_gradient(3, 16, 3)
    assert conv.uses_matmul_gradient(16, 16, 3) and conv.uses_matmul_gradient(140, 64, 7)
