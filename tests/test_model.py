import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harmonic_jax import guides
from harmonic_jax.model import UNet, compact_unet, count_params, upsample_bilinear

GUIDES = guides.init_sine(jax.random.PRNGKey(0), 12)


def _param_count(model, channels):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, channels)),
                                               guide_params=GUIDES))
    return count_params(shapes["params"])


def test_default_unet_has_the_original_parameter_count():
    assert _param_count(UNet(), 3) == 28_837_260
    assert _param_count(UNet(), 1) == 28_836_108
    # The ablation swaps each SinConv for a plain 7x7 conv: 12 fewer input channels, 5 layers.
    ablation = _param_count(UNet(sinconv=False), 3)
    assert 28_837_260 - ablation == 12 * 49 * (256 + 128 + 64 + 64 + 64)


def test_upsample_matches_align_corners_reference():
    x = np.random.default_rng(0).normal(size=(1, 3, 4, 2)).astype(np.float32)
    got = np.asarray(upsample_bilinear(jnp.asarray(x)))
    # align_corners=True: output pixel i samples input position i * (n - 1) / (2n - 1).
    want = np.zeros((1, 6, 8, 2))
    for i in range(6):
        for j in range(8):
            y, x_ = i * 2 / 5, j * 3 / 7
            y0, x0 = int(np.floor(y)), int(np.floor(x_))
            y1, x1 = min(y0 + 1, 2), min(x0 + 1, 3)
            fy, fx = y - y0, x_ - x0
            want[0, i, j] = ((1 - fy) * (1 - fx) * x[0, y0, x0] + (1 - fy) * fx * x[0, y0, x1]
                             + fy * (1 - fx) * x[0, y1, x0] + fy * fx * x[0, y1, x1])
    np.testing.assert_allclose(got, want, atol=1e-5)


class UNetTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_any_input_size_and_fg_head(self):
        model = compact_unet(widths=(4, 8, 8), sinconv_kernel=3, fg_head=True, frame=(32, 32))
        images = jnp.ones((2, 21, 30, 3))
        variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), images,
                                               guide_params=GUIDES))()
        emb, logit = self.variant(lambda v, x: model.apply(v, x, guide_params=GUIDES))(
            variables, images)
        chex.assert_shape(emb, (2, 21, 30, 12))
        chex.assert_shape(logit, (2, 21, 30))
        chex.assert_type([emb, logit], jnp.float32)


def test_sinconv_sees_the_offset():
    # The same pixels at another frame offset give another output: the maps are absolute.
    model = compact_unet(widths=(4, 8), sinconv_kernel=3, frame=(32, 32))
    images = jnp.ones((1, 16, 16, 3))
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), images, guide_params=GUIDES))()
    at_zero = model.apply(variables, images, guide_params=GUIDES)
    shifted = model.apply(variables, images, guide_params=GUIDES, offset=jnp.array([[8.0, 0.0]]))
    assert float(jnp.abs(at_zero - shifted).max()) > 1e-3
    plain = compact_unet(widths=(4, 8), sinconv_kernel=3, sinconv=False)
    v2 = jax.jit(lambda: plain.init(jax.random.PRNGKey(0), images))()
    np.testing.assert_array_equal(plain.apply(v2, images),
                                  plain.apply(v2, images, offset=jnp.array([[8.0, 0.0]])))


def test_bad_model_input():
    model = compact_unet(widths=(4, 8))
    with pytest.raises(ValueError, match=r"images must be \(B, H, W, C\)"):
        model.init(jax.random.PRNGKey(0), jnp.ones((16, 16, 3)), guide_params=GUIDES)
    with pytest.raises(ValueError, match="guide_params is required"):
        model.init(jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 3)))


def test_predict_and_segment():
    from harmonic_jax import cluster, predict

    model = compact_unet(widths=(4, 8), sinconv_kernel=3, frame=(16, 16), fg_head=True)
    image = np.random.default_rng(0).integers(0, 255, (20, 24, 3)).astype(np.uint8)
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 20, 24, 3)),
                                           guide_params=GUIDES))()
    emb, prob = predict.predict(model, variables, GUIDES, image)
    chex.assert_shape([emb, prob], [(20, 24, 12), (20, 24)])
    assert 0 <= float(prob.min()) and float(prob.max()) <= 1
    labels = predict.segment(model, variables, GUIDES, image, fg_mask=np.ones((20, 24), bool),
                             min_size=0)
    assert labels.shape == (20, 24) and labels.dtype == np.int32 and labels.min() >= 1
    none = predict.segment(model, variables, GUIDES, image, fg_mask=np.zeros((20, 24), bool))
    assert none.max() == 0
    # No foreground output and no mask: the largest cluster is the background.
    plain = compact_unet(widths=(4, 8), sinconv_kernel=3, frame=(16, 16), fg_head=False)
    plain_vars = jax.jit(lambda: plain.init(jax.random.PRNGKey(0), jnp.zeros((1, 20, 24, 3)),
                                            guide_params=GUIDES))()
    emb = np.asarray(predict.predict(plain, plain_vars, GUIDES, image))
    clusters = cluster.cluster_labels(emb)
    largest = np.argmax(np.bincount(clusters.ravel()))
    labels = predict.segment(plain, plain_vars, GUIDES, image, min_size=0, max_gap=0,
                             background_instance=True)
    assert np.all(labels[clusters == largest] == 0) and np.all(labels[clusters != largest] > 0)
    with pytest.raises(ValueError, match="no foreground output: pass fg_mask"):
        predict.segment(plain, plain_vars, GUIDES, image)
    with pytest.raises(ValueError, match="images must be"):
        predict.predict(model, variables, GUIDES, image[..., 0])


def test_group_norm_is_batch_independent():
    model = compact_unet(widths=(8, 16), sinconv_kernel=3, frame=(16, 16), norm="group")
    images = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), images[:1],
                                           guide_params=GUIDES))()
    assert "batch_stats" not in variables
    both = model.apply(variables, images, guide_params=GUIDES, train=True)
    alone = model.apply(variables, images[:1], guide_params=GUIDES, train=True)
    np.testing.assert_allclose(both[:1], alone, atol=1e-5)  # the batch does not leak in
    with pytest.raises(ValueError, match="norm must be 'batch' or 'group'"):
        compact_unet(widths=(8, 16), norm="layer").init(jax.random.PRNGKey(0), images,
                                                         guide_params=GUIDES)


def test_max_pool_2x2_equals_flax_max_pool_and_shares_the_gradient_at_ties():
    import flax.linen as nn

    from harmonic_jax.model import max_pool_2x2

    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 8, 3)).astype(np.float32))
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))
    grad = jax.grad(lambda x: jnp.sum(max_pool_2x2(x) * jnp.arange(1.0, 4.0)))(x)
    ref = jax.grad(lambda x: jnp.sum(nn.max_pool(x, (2, 2), strides=(2, 2)) * jnp.arange(1.0, 4.0)))(x)
    np.testing.assert_array_equal(grad, ref)  # no ties: the same gradient
    tied = jnp.ones((1, 2, 2, 1), jnp.float32)
    np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(max_pool_2x2(x)))(tied), 0.25)
    with pytest.raises(ValueError, match="even"):
        max_pool_2x2(jnp.zeros((1, 3, 4, 1)))
