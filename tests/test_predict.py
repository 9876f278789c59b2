"""Tiled prediction in one guide frame, shape buckets, and the input boundary."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harmonic_jax import guides, predict
from harmonic_jax.model import compact_unet, receptive_radius

GUIDES = guides.init_sine(jax.random.PRNGKey(0), 12)


@pytest.fixture(scope="module")
def net():
    """A small half-pixel U-Net (3 levels) with non-trivial BatchNorm statistics."""
    model = compact_unet(widths=(4, 8, 8), sinconv_kernel=3, fg_head=True, frame=(150, 210))
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                           guide_params=GUIDES))()
    stats = jax.tree.map(lambda x: x + 0.3, variables["batch_stats"])
    return model, {"params": variables["params"], "batch_stats": stats}


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (150, 203, 3)).astype(np.uint8)


def test_tiles_equal_one_pass(net, image):
    model, variables = net
    emb, prob = predict.predict(model, variables, GUIDES, image)
    for tile in (96, 128):  # 40 and 6 tiles: every kind of seam and image border
        shape, tiles = predict.tile_plan(image.shape[:2], model, tile=tile)
        assert len(tiles) > 1 and shape == (tile, tile)
        got_emb, got_prob = predict.predict_embeddings(model, variables, GUIDES, image, tile=tile)
        assert got_emb.dtype == np.float32 and got_emb.shape == (150, 203, 12)
        np.testing.assert_allclose(got_emb, emb, atol=1e-4)
        np.testing.assert_allclose(got_prob, prob, atol=1e-4)
    # Seams closer to the kept pixels than the receptive field do show: the margin is needed.
    near = predict.predict_embeddings(model, variables, GUIDES, image, tile=64, overlap=0)[0]
    assert np.abs(near - emb).max() > 1e-2
    # The same image elsewhere in the guide frame: tiles take their global offsets.
    shifted = predict.predict(model, variables, GUIDES, image, offset=[[8.0, 16.0]])[0]
    got = predict.predict_embeddings(model, variables, GUIDES, image, tile=96, offset=(8, 16))[0]
    np.testing.assert_allclose(got, shifted, atol=1e-4)
    assert np.abs(shifted - emb).max() > 1e-2


def test_padding_is_masked(net, image):
    model, variables = net
    x = predict.normalize_images(image[None, :37, :45])
    alone = model.apply(variables, x, guide_params=GUIDES)
    padded = jnp.pad(x, ((0, 0), (0, 27), (0, 51), (0, 0)), constant_values=0.7)
    valid = jnp.asarray([[37, 45]])
    inside = model.apply(variables, padded, guide_params=GUIDES, valid=valid)
    np.testing.assert_allclose(inside[0][:, :37, :45], alone[0], atol=1e-5)
    np.testing.assert_allclose(inside[1][:, :37, :45], alone[1], atol=1e-5)


def test_mixed_sizes_compile_once_per_bucket(net):
    model, variables = net
    rng = np.random.default_rng(1)
    sizes = [(30, 40), (33, 47), (60, 64), (61, 50), (100, 90), (99, 95), (120, 70)]
    buckets = {predict.tile_plan(s, model, tile=128)[0] for s in sizes}
    # Tile 128: each axis is padded up to a multiple of 128 / 8 = 16.
    assert buckets == {(32, 48), (48, 48), (64, 64), (112, 96), (128, 80)}
    predict._apply.clear_cache()
    for size in sizes:
        predict.predict_embeddings(model, variables, GUIDES,
                                   rng.integers(0, 256, (*size, 3)).astype(np.uint8), tile=128)
    assert predict._apply._cache_size() == len(buckets)


def test_receptive_radius_bounds_the_influence(net):
    model, _ = net
    radius = receptive_radius(model)
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                           guide_params=GUIDES))()  # fresh: no dead ReLUs

    def centre(x):
        return model.apply(variables, x, guide_params=GUIDES)[0][0, 64, 64].sum()

    grad = jax.grad(centre)(jax.random.normal(jax.random.PRNGKey(2), (1, 160, 160, 3)))
    rows, cols = np.nonzero(np.abs(np.asarray(grad[0])).sum(-1))
    reach = max(np.abs(rows - 64).max(), np.abs(cols - 64).max())
    assert radius // 2 < reach <= radius, (reach, radius)


def test_prepare_image_conversions():
    rgb = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    same = predict.prepare_image(rgb, 3)
    np.testing.assert_array_equal(same.image, rgb.astype(np.float32))
    assert same.image.dtype == np.float32 and same.notes == ()
    unit = predict.prepare_image(rgb / 255.0, 3)
    np.testing.assert_allclose(unit.image, rgb, atol=1e-4)
    assert "float image in [0, 1] scaled by 255" in unit.notes
    deep = np.linspace(0, 4000, 5 * 6).reshape(5, 6).astype(np.uint16)
    out = predict.prepare_image(deep, 3)
    lo, hi = np.percentile(deep.astype(np.float64), (0.5, 99.5))
    want = np.clip((deep - lo) / (hi - lo), 0, 1) * 255
    np.testing.assert_allclose(out.image[..., 1], want, atol=1e-3)
    assert out.image.shape == (5, 6, 3)
    assert any("uint16" in n for n in out.notes) and "grey image replicated to RGB" in out.notes
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 9, np.uint8)], -1)
    assert predict.prepare_image(rgba, 3).notes == ("alpha channel dropped",)
    first = predict.prepare_image(np.moveaxis(rgb, -1, 0).repeat(2, 1).repeat(2, 2), 3)
    assert first.image.shape == (10, 12, 3) and "moved last" in first.notes[0]
    grey_rgb = np.repeat(rgb[..., :1], 3, -1)
    assert predict.prepare_image(grey_rgb, 1).image.shape == (5, 6, 1)


@pytest.mark.parametrize("bad, channels, message", [
    (np.zeros((5, 6, 2), np.uint8), 3, "takes 3-channel images but this image has 2 channels"),
    (np.zeros((5, 6, 3), np.uint8) + np.arange(3, dtype=np.uint8), 1,
     "takes 1-channel images but this image has 3"),
    (np.where(np.eye(4) > 0, np.nan, 0.5), 3, "has 4 NaN or infinite pixels"),
    (np.zeros((0, 5), np.uint8), 3, "empty"),
    (np.zeros((2, 3, 4, 5)), 3, "expected an"),
    (np.array([["a", "b"]]), 3, "not a number type"),
])
def test_prepare_image_errors(bad, channels, message):
    with pytest.raises(ValueError, match=message):
        predict.prepare_image(bad, channels)


def test_wrong_guides_and_offset(net, image):
    model, variables = net
    with pytest.raises(ValueError, match="trained with 12 guide maps, but these guide "
                                         "parameters give 5"):
        predict.predict_embeddings(model, variables, GUIDES[:5], image)
    with pytest.raises(ValueError, match=r"params must have shape \(N, 3\)"):
        predict.predict_embeddings(model, variables, GUIDES[:, :2], image)
    with pytest.raises(ValueError, match="offset must be"):
        predict.predict_embeddings(model, variables, GUIDES, image, offset=(1, 2, 3))
    with pytest.raises(ValueError, match="tile must be a multiple of 4"):
        predict.predict_embeddings(model, variables, GUIDES, image, tile=130)


def test_instance_scores_are_mean_probabilities():
    labels = np.array([[0, 3, 3], [5, 5, 0]])
    prob = np.array([[0.1, 0.2, 0.4], [1.0, 0.5, 0.9]])
    np.testing.assert_allclose(predict.instance_scores(labels, prob), [0.3, 0.75], rtol=1e-6)


def test_lists_from_json_work_like_tuples(net, image):
    model, variables = net
    from_json = compact_unet(widths=[4, 8, 8], sinconv_kernel=3, fg_head=True, frame=[150, 210])
    assert from_json == model and hash(from_json) == hash(model)  # jit's static argument
    got = predict.predict_embeddings(from_json, variables, GUIDES.tolist(), image[:40, :50],
                                     offset=[4, 4])[0]
    want = predict.predict_embeddings(model, variables, GUIDES, image[:40, :50], offset=(4, 4))[0]
    np.testing.assert_array_equal(got, want)
