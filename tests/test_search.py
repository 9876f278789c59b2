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


def test_hinge_loss_matches_reference():
    params = guides.init_sine(jax.random.PRNGKey(0), 4)
    labels = _batch(0)
    maps = guides.sine(params, 10, 12)
    for margin in (0.5, 3.0):
        got = search.hinge_loss(params, labels, margin=margin)
        chex.assert_shape(got, ())
        np.testing.assert_allclose(got, references.hinge_loss(maps, labels, margin), rtol=1e-5)
        np.testing.assert_allclose(
            search.collision_rate(params, labels, margin=margin),
            references.collision_rate(maps, labels, margin),
        )


def test_hinge_loss_with_frame_and_non_consecutive_ids():
    params = guides.init_sine(jax.random.PRNGKey(5), 3)
    labels = _batch(1) * 1000
    maps = guides.sine(params, 10, 12, frame=(32, 32))
    got = search.hinge_loss(params, labels, margin=4.0, frame=(32, 32))
    np.testing.assert_allclose(got, references.hinge_loss(maps, labels, 4.0), rtol=1e-5)


def test_hinge_loss_is_differentiable():
    params = guides.init_sine(jax.random.PRNGKey(1), 3)
    labels = _batch(2)
    # A margin above every distance keeps all pairs in the linear part of the hinge.
    check_grads(lambda p: search.hinge_loss(p, labels, margin=10.0), (params,), order=1,
                modes=("rev",), atol=5e-2, rtol=5e-2, eps=1e-2)
    grad = jax.grad(lambda p: search.hinge_loss(p, labels, margin=10.0))(params)
    assert float(jnp.abs(grad).sum()) > 0


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
@given(st.integers(0, 2**16), st.floats(0.05, 5.0))
def test_hinge_is_nonnegative_and_zero_when_pairs_are_far(seed, margin):
    params = guides.init_sine(jax.random.PRNGKey(seed), 4)
    labels = _batch(seed)
    loss = float(search.hinge_loss(params, labels, margin=margin))
    assert loss >= 0.0
    maps = guides.sine(params, 10, 12)
    closest = min(
        np.abs(e[i] - e[j]).sum()
        for e in (references.instance_embeddings(maps, lab) for lab in labels[:-1])
        for i in range(len(e)) for j in range(i + 1, len(e))
    )
    assert float(search.hinge_loss(params, labels, margin=0.99 * closest)) == 0.0
    assert float(search.hinge_loss(params, labels, margin=1.01 * closest)) > 0.0


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
        references.hinge_loss(maps, labels, 3.0), rtol=1e-5,
    )
    result = search.fit_guides(list(labels), n=5, margin=3.0, family="test-radial", steps=30,
                               pairs_per_step=16, images_per_step=2, lr=0.05, progress=False,
                               eval_every=0)
    assert set(result.params) == {"centre", "freq", "phase"}
    assert result.loss < float(search.hinge_loss(RADIAL.init(jax.random.split(
        jax.random.PRNGKey(0))[1], 5), labels, margin=3.0, family="test-radial"))


def test_fit_guides_lowers_the_loss_and_reports_exact_numbers():
    labels = [np.kron(np.arange(1, 10, dtype=np.int32).reshape(3, 3), np.ones((6, 6), np.int32))]
    labels.append(np.pad(labels[0][:12, :12], ((0, 6), (0, 6))))  # a second, smaller image
    key = jax.random.PRNGKey(3)
    result = search.fit_guides(labels, n=6, margin=1.0, steps=150, pairs_per_step=64,
                               images_per_step=2, lr=0.2, key=key, progress=False, eval_every=0)
    init = guides.init_sine(jax.random.split(key)[1], 6)
    padded = search.pad_labels(labels)
    assert result.frame == (18, 18)
    assert result.loss < 0.25 * float(search.hinge_loss(init, padded, margin=1.0))
    np.testing.assert_allclose(result.loss, search.hinge_loss(result.params, padded, margin=1.0),
                               rtol=1e-4)
    assert result.collision_rate == search.collision_rate(result.params, padded, margin=1.0)
    assert len(result.losses) == 150


def test_fit_guides_stops_once_the_training_loss_is_zero():
    labels = [np.kron(np.arange(1, 5, dtype=np.int32).reshape(2, 2), np.ones((8, 8), np.int32))]
    result = search.fit_guides(labels, n=6, margin=0.01, steps=500, progress=False, eval_every=10)
    assert result.loss == 0.0 and len(result.losses) < 500


def test_fit_guides_needs_two_instances():
    with pytest.raises(ValueError, match="two or more instances"):
        search.fit_guides([np.ones((4, 4), np.int32)], steps=1, progress=False)


def test_shipped_cvppp_guides_separate_the_training_split(cvppp_guides, cvppp_train_labels):
    params, meta = cvppp_guides
    assert meta["family"] == "sine" and meta["margin"] == 0.5 and params.shape == (12, 3)
    labels = search.pad_labels(cvppp_train_labels[:24])
    rate = search.collision_rate(params, labels, margin=0.5, frame=tuple(meta["frame"]))
    assert rate == meta["collision_rate"] == 0.0


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
    np.testing.assert_allclose(search.pair_distances(params, labels), want1, rtol=1e-5)
    np.testing.assert_allclose(search.pair_distances(params, labels, norm=2), want2, rtol=1e-5)
