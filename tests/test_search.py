import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from harmonic_jax import embedding, guides, search
from tests import references


# A family defined outside the library: radial waves sin(k * r + phase) around a centre.
def _radial_init(key, n):
    k_centre, k_freq, k_phase = jax.random.split(key, 3)
    return {
        "centre": jax.random.uniform(k_centre, (n, 2), jnp.float32),
        "freq": jax.random.uniform(k_freq, (n,), jnp.float32, 5.0, 30.0),
        "phase": jax.random.uniform(k_phase, (n,), jnp.float32, 0.0, 2 * jnp.pi),
    }


def _radial_maps(params, height, width, *, stride=1, offset=(0, 0), frame=None):
    y, x = guides.frame_coordinates(height, width, stride=stride, offset=offset, frame=frame)
    r = jnp.sqrt((y[..., None] - params["centre"][:, 0]) ** 2
                 + (x[..., None] - params["centre"][:, 1]) ** 2 + 1e-6)
    return jnp.sin(params["freq"] * r + params["phase"])


RADIAL = guides.register_family(
    "test-radial", guides.GuideFamily(init=_radial_init, maps=_radial_maps), overwrite=True
)


def _batch(seed, n_images=3, size=(10, 12)):
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.asarray([0, 2, 5, 9], np.int32), size=(n_images, *size))
    labels[-1] = np.where(labels[-1] > 0, 4, 0)  # one instance only: contributes 0
    return labels


@pytest.mark.parametrize("norm", [1, 2])
def test_hinge_loss_matches_reference(norm):
    params = guides.init_sine(jax.random.PRNGKey(0), 4)
    labels = _batch(0)
    maps = guides.sine(params, 10, 12)
    for margin in (0.5, 1.5):
        got = search.hinge_loss(params, labels, margin=margin, norm=norm)
        chex.assert_shape(got, ())
        want = references.hinge_loss(maps, labels, margin, norm)
        assert want > 0  # the margin is active on some pairs
        np.testing.assert_allclose(got, want, rtol=1e-5)
        np.testing.assert_allclose(
            search.collision_rate(params, labels, margin=margin, norm=norm),
            references.collision_rate(maps, labels, margin, norm),
        )


def test_default_distance_is_mean_shifts_l2():
    params = guides.init_sine(jax.random.PRNGKey(0), 4)
    labels = _batch(0)
    np.testing.assert_allclose(search.hinge_loss(params, labels, margin=1.5),
                               search.hinge_loss(params, labels, margin=1.5, norm=2))
    assert float(search.hinge_loss(params, labels, margin=1.5, norm=1)) != float(
        search.hinge_loss(params, labels, margin=1.5))


@pytest.mark.parametrize("norm", [0, 3, "2", True])
def test_bad_norm(norm):
    params = guides.init_sine(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="norm must be 1"):
        search.hinge_loss(params, _batch(0), norm=norm)
    with pytest.raises(ValueError, match="norm must be 1"):
        search.fit_guides(list(_batch(0)), n=2, norm=norm, steps=1, progress=False)


def test_unreachable_margin_is_an_error():
    # Two sine guides take values in [-1, 1]: no pair is farther apart than 2 * sqrt(2) in L2.
    with pytest.raises(ValueError, match=r"margin 3.0 cannot be reached in L2 with 2 guides"):
        search.fit_guides(list(_batch(0)), n=2, margin=3.0, steps=1, progress=False)
    with pytest.raises(ValueError, match="headroom must be"):
        search.fit_guides(list(_batch(0)), n=2, headroom=0.5, steps=1, progress=False)


def test_hinge_loss_with_frame_and_non_consecutive_ids():
    params = guides.init_sine(jax.random.PRNGKey(5), 3)
    labels = _batch(1) * 1000
    maps = guides.sine(params, 10, 12, frame=(32, 32))
    for norm in (1, 2):
        got = search.hinge_loss(params, labels, margin=4.0, frame=[32, 32], norm=norm)
        np.testing.assert_allclose(got, references.hinge_loss(maps, labels, 4.0, norm), rtol=1e-5)


@pytest.mark.parametrize("norm", [1, 2])
def test_hinge_loss_is_differentiable(norm):
    params = guides.init_sine(jax.random.PRNGKey(1), 3)
    labels = _batch(2)
    # A margin above every distance keeps all pairs in the linear part of the hinge.
    check_grads(lambda p: search.hinge_loss(p, labels, margin=10.0, norm=norm), (params,),
                order=1, modes=("rev",), atol=5e-2, rtol=5e-2, eps=1e-2)
    grad = jax.grad(lambda p: search.hinge_loss(p, labels, margin=10.0, norm=norm))(params)
    assert float(jnp.abs(grad).sum()) > 0
    # Identical embeddings (distance 0) still give a finite gradient.
    same = jnp.zeros((1, 4, 4), jnp.int32).at[0, :2].set(1).at[0, 2:].set(2)
    flat = jnp.asarray([[0.0, 0.0, 0.3]] * 3, jnp.float32)  # constant maps
    grad = jax.grad(lambda p: search.hinge_loss(p, same, margin=1.0, norm=norm))(flat)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_hinge_loss_under_jit_with_static_bound():
    params = guides.init_sine(jax.random.PRNGKey(2), 3)
    labels = jnp.asarray(_batch(3))
    jitted = jax.jit(lambda p, lab: search.hinge_loss(p, lab, margin=2.0, max_instances=3))
    np.testing.assert_allclose(jitted(params, labels), search.hinge_loss(params, labels,
                                                                          margin=2.0), rtol=1e-6)


def test_degenerate_inputs():
    params = guides.init_sine(jax.random.PRNGKey(0), 4)
    empty = np.zeros((2, 8, 8), np.int32)
    one = np.zeros((1, 8, 8), np.int32)
    one[0, 2:4, 2:4] = 7
    assert float(search.hinge_loss(params, empty)) == 0.0
    assert float(search.hinge_loss(params, one)) == 0.0
    assert search.collision_rate(params, empty) == 0.0


@pytest.mark.parametrize("margin", [0.0, -1.0, float("nan")])
def test_bad_margin(margin):
    with pytest.raises(ValueError, match="margin must be a positive number"):
        search.hinge_loss(guides.init_sine(jax.random.PRNGKey(0), 2), _batch(0), margin=margin)


def test_bad_params_and_labels():
    with pytest.raises(ValueError, match=r"params must have shape \(N, 3\)"):
        search.hinge_loss(np.zeros((4, 2), np.float32), _batch(0))
    with pytest.raises(ValueError, match="integer ids"):
        search.hinge_loss(guides.init_sine(jax.random.PRNGKey(0), 2), _batch(0) * 1.0)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**16), st.floats(0.05, 5.0), st.sampled_from([1, 2]))
def test_hinge_is_nonnegative_and_zero_when_pairs_are_far(seed, margin, norm):
    params = guides.init_sine(jax.random.PRNGKey(seed), 4)
    labels = _batch(seed)
    loss = float(search.hinge_loss(params, labels, margin=margin, norm=norm))
    assert loss >= 0.0
    maps = guides.sine(params, 10, 12)
    closest = min(
        references.distance(e[i], e[j], norm)
        for e in (references.instance_embeddings(maps, lab) for lab in labels[:-1])
        for i in range(len(e)) for j in range(i + 1, len(e))
    )
    assert float(search.hinge_loss(params, labels, margin=0.99 * closest, norm=norm)) == 0.0
    assert float(search.hinge_loss(params, labels, margin=1.01 * closest, norm=norm)) > 0.0


def test_user_family_runs_through_embedding_and_search():
    params = RADIAL.init(jax.random.PRNGKey(0), 5)
    labels = _batch(4)
    maps = _radial_maps(params, 10, 12)
    np.testing.assert_allclose(
        embedding.instance_embeddings(maps, labels[0]),
        references.instance_embeddings(maps, labels[0]), atol=1e-6,
    )
    np.testing.assert_allclose(
        search.hinge_loss(params, labels, margin=3.0, family="test-radial"),
        references.hinge_loss(maps, labels, 3.0, norm=2), rtol=1e-5,
    )
    with pytest.warns(UserWarning, match=r"stay closer than margin 3.0 in L2 \(closest pair"):
        result = search.fit_guides(list(labels), n=5, margin=3.0, family="test-radial",
                                   steps=30, pairs_per_step=16, images_per_step=2, lr=0.05,
                                   progress=False, eval_every=0, headroom=1.0)
    assert set(result.params) == {"centre", "freq", "phase"}
    assert result.loss < float(search.hinge_loss(RADIAL.init(jax.random.split(
        jax.random.PRNGKey(0))[1], 5), labels, margin=3.0, family="test-radial"))


@pytest.mark.parametrize("norm, margin, headroom", [(1, 1.0, 1.0), (2, 0.6, 1.5)])
def test_fit_guides_lowers_the_loss_and_reports_exact_numbers(norm, margin, headroom):
    labels = [np.kron(np.arange(1, 10, dtype=np.int32).reshape(3, 3), np.ones((6, 6), np.int32))]
    labels.append(np.pad(labels[0][:12, :12], ((0, 6), (0, 6))))  # a second, smaller image
    key = jax.random.PRNGKey(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = search.fit_guides(labels, n=6, margin=margin, norm=norm, headroom=headroom,
                                   steps=150, pairs_per_step=64, images_per_step=2, lr=0.2,
                                   key=key, progress=False, eval_every=0)
    # A warning names the closest pair exactly when some pairs stay closer than the margin.
    ours = [w for w in caught if "stay closer than margin" in str(w.message)]
    assert bool(ours) == (result.collision_rate > 0)
    init = guides.init_sine(jax.random.split(key)[1], 6)
    padded = search.pad_labels(labels)
    target = headroom * margin  # the hinge acts at headroom * margin
    assert result.frame == (18, 18) and result.norm == norm and result.headroom == headroom
    before = float(search.hinge_loss(init, padded, margin=target, norm=norm))
    assert result.loss < 0.25 * before
    np.testing.assert_allclose(
        result.loss, search.hinge_loss(result.params, padded, margin=target, norm=norm),
        rtol=1e-4)
    np.testing.assert_allclose(
        result.collision_rate,
        search.collision_rate(result.params, padded, margin=margin, norm=norm))
    dist = search.pair_distances(result.params, padded)  # reported in L2, mean-shift's metric
    np.testing.assert_allclose(result.min_distance, dist.min(), rtol=1e-4)
    np.testing.assert_allclose(result.p01_distance, np.percentile(dist, 1), rtol=1e-4)
    assert len(result.losses) == 150


def test_fit_guides_keeps_separating_beyond_the_margin():
    """With head-room the search goes on after every pair is beyond the margin: the closest pair
    ends farther apart than a search that stops at the margin."""
    labels = [np.kron(np.arange(1, 10, dtype=np.int32).reshape(3, 3), np.ones((6, 6), np.int32))]
    kwargs = dict(n=12, margin=0.5, steps=300, lr=0.1, progress=False, eval_every=10)
    stop = search.fit_guides(labels, headroom=1.0, **kwargs)
    go_on = search.fit_guides(labels, headroom=2.0, **kwargs)
    assert stop.loss == 0.0 and stop.min_distance >= 0.5 and len(stop.losses) < 300
    assert go_on.min_distance > stop.min_distance + 0.03 and len(go_on.losses) == 300


def test_fit_guides_stops_once_the_training_loss_is_zero():
    labels = [np.kron(np.arange(1, 5, dtype=np.int32).reshape(2, 2), np.ones((8, 8), np.int32))]
    result = search.fit_guides(labels, n=6, margin=0.01, steps=500, progress=False, eval_every=10)
    assert result.loss == 0.0 and len(result.losses) < 500


def test_fit_guides_skips_images_without_pairs_and_counts_them():
    two = np.kron(np.arange(1, 5, dtype=np.int32).reshape(2, 2), np.ones((8, 8), np.int32))
    one = np.where(two > 0, 7, 0)  # a single instance
    empty = np.zeros_like(two)
    result = search.fit_guides([two, one, empty], n=6, margin=0.3, steps=5, progress=False,
                               eval_every=0)
    assert result.skipped == 2


def test_fit_guides_needs_two_instances():
    with pytest.raises(ValueError, match="two or more instances"):
        search.fit_guides([np.ones((4, 4), np.int32)], steps=1, progress=False)


def test_shipped_cvppp_guides_separate_the_training_split(cvppp_guides, cvppp_train_labels):
    """The shipped file was searched in mean-shift's L2 and records what it reaches; it keeps
    every training pair farther apart than the original's published guides do (closest pair)."""
    params, meta = cvppp_guides
    assert meta["family"] == "sine" and params.shape == (12, 3)
    assert meta["margin"] == 0.5 and meta["norm"] == 2 and meta["steps"] > 0
    frame = tuple(meta["frame"])
    labels = search.pad_labels(cvppp_train_labels)
    stats = search.separation_stats(params, labels, frame=frame)
    for key in ("pairs", "l1_collision_rate", "l2_collision_rate", "min_l1", "min_l2", "p01_l2"):
        np.testing.assert_allclose(stats[key], meta[key], rtol=1e-4)
    assert stats["l2_collision_rate"] == 0.0
    original = search.separation_stats(guides.from_original(guides.ORIGINAL_CVPPP, *frame),
                                       labels, frame=frame)
    assert stats["min_l2"] > original["min_l2"] > 0.5
    assert stats["p01_l2"] > original["p01_l2"]


def test_pair_distances_match_reference():
    params = guides.init_sine(jax.random.PRNGKey(4), 3)
    labels = _batch(5)
    maps = guides.sine(params, 10, 12)
    want1, want2 = [], []
    for lab in labels:
        e = references.instance_embeddings(maps, lab)
        for i in range(len(e)):
            for j in range(i + 1, len(e)):
                want1.append(np.abs(e[i] - e[j]).sum())
                want2.append(np.sqrt(((e[i] - e[j]) ** 2).sum()))
    np.testing.assert_allclose(search.pair_distances(params, labels, norm=1), want1, rtol=1e-5)
    np.testing.assert_allclose(search.pair_distances(params, labels), want2, rtol=1e-5)
