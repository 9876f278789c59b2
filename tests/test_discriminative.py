"""The discriminative-loss baseline (De Brabandere et al. 2017) against a hand-computed case and
a float64 loop, and trained by the shared train step."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from harmonic_jax import guides, train
from harmonic_jax.baselines import discriminative as disc
from harmonic_jax.model import compact_unet


def _reference(pred, segments, m, delta_v=0.5, delta_d=1.5, weights=(1.0, 1.0, 0.001)):
    """The paper's three terms by explicit loops in float64, averaged over the images."""
    totals = []
    for p, seg in zip(np.asarray(pred, np.float64), np.asarray(segments)):
        ids = [c for c in range(m) if np.any(seg == c)]
        means = {c: p[seg == c].mean(axis=0) for c in ids}
        var = dist = reg = 0.0
        for c in ids:
            d = np.linalg.norm(p[seg == c] - means[c], axis=-1)
            var += np.mean(np.maximum(d - delta_v, 0) ** 2) / len(ids)
            reg += np.linalg.norm(means[c]) / len(ids)
            for other in ids:
                if other != c:
                    gap = np.linalg.norm(means[c] - means[other])
                    dist += max(2 * delta_d - gap, 0) ** 2 / (len(ids) * (len(ids) - 1))
        totals.append((var, dist, reg))
    var, dist, reg = np.mean(totals, axis=0)
    return weights[0] * var + weights[1] * dist + weights[2] * reg, (var, dist, reg)


def test_hand_computed_case():
    # Instance 0: [0, 0] and [2, 0] (mean [1, 0], both 1 away: (1 - 0.5)^2 = 0.25 each);
    # instance 1: twice [1, 1] (no pull); means 1 apart: (2 * 1.5 - 1)^2 = 4 per ordered pair;
    # the last pixel is background (id M = 3) and id 2 is padding.
    pred = jnp.asarray([[[[0, 0], [2, 0], [1, 1], [1, 1], [9, 9]]]], jnp.float32)
    segments = jnp.asarray([[[0, 0, 1, 1, 3]]], jnp.int32)
    loss, terms = disc.discriminative_loss(pred, segments, 3)
    np.testing.assert_allclose(terms["var"], (0.25 + 0) / 2, rtol=1e-6)
    np.testing.assert_allclose(terms["dist"], (4 + 4) / (2 * 1), rtol=1e-6)
    np.testing.assert_allclose(terms["reg"], (1 + math.sqrt(2)) / 2, rtol=1e-6)
    np.testing.assert_allclose(loss, 0.125 + 4 + 0.001 * (1 + math.sqrt(2)) / 2, rtol=1e-6)


class LossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_float64_loop(self):
        rng = np.random.default_rng(0)
        m = 5
        pred = rng.normal(0, 1.2, (3, 7, 6, 4)).astype(np.float32)
        segments = rng.integers(0, m + 2, (3, 7, 6)).astype(np.int32)  # M: bg, M + 1: overflow
        segments[1] = np.where(segments[1] < m, 2, segments[1])  # one instance: no push term
        segments[2] = m  # no instance at all: every term 0
        for delta_v, delta_d in ((0.5, 1.5), (0.1, 3.0)):
            fn = self.variant(lambda p, s, dv=delta_v, dd=delta_d: disc.discriminative_loss(
                p, s, m, delta_v=dv, delta_d=dd))
            loss, terms = fn(jnp.asarray(pred), jnp.asarray(segments))
            want, (var, dist, reg) = _reference(pred, segments, m, delta_v, delta_d)
            chex.assert_type(loss, jnp.float32)
            np.testing.assert_allclose(loss, want, rtol=1e-5)
            np.testing.assert_allclose([terms["var"], terms["dist"], terms["reg"]],
                                       [var, dist, reg], rtol=1e-5, atol=1e-7)


def test_gradient_is_finite_where_distances_vanish():
    # Every pixel on its mean and two equal means: norms at 0, whose sqrt has no gradient.
    pred = jnp.ones((1, 4, 4, 3), jnp.float32)
    segments = jnp.asarray(np.repeat([[0, 0, 1, 1]], 4, axis=0)[None], jnp.int32)
    grad = jax.grad(lambda p: disc.discriminative_loss(p, segments, 2)[0])(pred)
    assert np.all(np.isfinite(grad))
    empty = jax.grad(lambda p: disc.discriminative_loss(p, jnp.full((1, 4, 4), 2), 2)[0])(pred)
    np.testing.assert_array_equal(empty, 0.0)


def test_train_step_learns_separable_embeddings():
    """A tiny network trained by the shared step with loss="discriminative": the loss falls, and
    both the harmonic and discriminative metrics report their own terms."""
    model = compact_unet(widths=(8, 16), sinconv=False, fg_head=True, frame=(32, 32))
    optimizer = optax.adam(3e-3)
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 5, (2, 4, 4)), np.ones((1, 8, 8), np.int64)).astype(np.int32)
    batch = dict(image=(labels[..., None] * 40 + rng.integers(0, 30, (2, 32, 32, 3))).astype(
        np.uint8), labels=labels, size=np.full((2, 2), 32, np.int32))
    state = train.create_state(model, optimizer, guides.init_sine(jax.random.PRNGKey(0), 12),
                               key=jax.random.PRNGKey(1), image_shape=(32, 32, 3))
    step = train.make_train_step(model, optimizer, crop=(32, 32), scale_range=(1.0, 1.0),
                                 flip=False, max_instances=8, loss="discriminative")
    losses = []
    for _ in range(30):
        state, metrics = step(state, jax.device_put(batch))
        losses.append(float(metrics["discriminative_loss"]))
    assert {"var_term", "dist_term", "reg_term", "fg_loss"} <= set(metrics)
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.5 * losses[0], losses
    with pytest.raises(ValueError, match="loss must be one of"):
        train.make_train_step(model, optimizer, crop=(32, 32), loss="triplet")
    with pytest.raises(ValueError, match="background=True and weighting=True are eq. 5's"):
        train.make_train_step(model, optimizer, crop=(32, 32), loss="discriminative",
                              background=True)


def test_discriminative_networks_cluster_at_delta_v():
    from harmonic_jax.config import TrainConfig

    assert TrainConfig(loss="discriminative", delta_v=0.3).cluster_kwargs()["bandwidth"] == 0.3
    assert TrainConfig(delta_v=0.3, bandwidth=0.7).cluster_kwargs()["bandwidth"] == 0.7
