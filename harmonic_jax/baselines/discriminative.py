r"""The discriminative loss of De Brabandere, Neven and Van Gool (2017), the paper's baseline.

The network maps each pixel to a free embedding (no guide functions); the loss pulls the pixels
of an instance towards their mean and pushes the means of different instances apart:

.. math::
    L_{var} = \frac{1}{C} \sum_{c=1}^{C} \frac{1}{N_c} \sum_{i \in c}
        [\lVert \mu_c - x_i \rVert - \delta_v]_+^2

    L_{dist} = \frac{1}{C (C - 1)} \sum_{c_A \ne c_B}
        [2 \delta_d - \lVert \mu_{c_A} - \mu_{c_B} \rVert]_+^2

    L_{reg} = \frac{1}{C} \sum_{c=1}^{C} \lVert \mu_c \rVert

    L = \alpha L_{var} + \beta L_{dist} + \gamma L_{reg}

with ``C`` the instances of an image, ``N_c`` the pixels of instance ``c``, ``x_i`` a pixel's
embedding and L2 distances; the loss is averaged over the images of a batch. Defaults as in the
paper: ``delta_v = 0.5``, ``delta_d = 1.5``, ``alpha = beta = 1``, ``gamma = 0.001``. At inference
the embeddings are clustered by mean-shift with bandwidth ``delta_v``
(:func:`harmonic_jax.cluster.mean_shift`), as the paper did.

Train it with ``make_train_step(..., loss="discriminative")`` (or the config field
``loss = "discriminative"``); the background is left to the foreground head, as in the paper's
CVPPP experiments, which segmented inside a foreground mask.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from harmonic_jax.embedding import segment_embeddings

__all__ = ["DELTA_D", "DELTA_V", "WEIGHTS", "discriminative_loss", "image_terms"]

#: Pull margin: pixels within it of their instance's mean cost nothing (the paper's 0.5).
DELTA_V = 0.5
#: Push margin: means at least ``2 delta_d`` apart cost nothing (the paper's 1.5).
DELTA_D = 1.5
#: ``(alpha, beta, gamma)``, the weights of the pull, push and regularisation terms.
WEIGHTS = (1.0, 1.0, 0.001)


def _norm(x: jax.Array) -> jax.Array:
    """L2 norm over the last axis whose gradient at 0 is 0 (not NaN)."""
    sq = jnp.sum(x * x, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def image_terms(
    pred: jax.Array,
    segments: jax.Array,
    num_instances: int,
    *,
    delta_v: float = DELTA_V,
    delta_d: float = DELTA_D,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The three terms of one image, over a padded instance set (jittable).

    Args:
      pred: ``(H, W, D)`` float embeddings.
      segments: ``(H, W)`` int32: ``0..M-1`` the instances, ``M`` or more: pixels out of the loss
        (background, instances beyond the bound); absent ids are padding.
      num_instances: static bound ``M``.
      delta_v, delta_d: the pull and push margins.

    Returns:
      ``(var, dist, reg)`` float32 scalars; all 0 without an instance, ``dist`` 0 with one.
    """
    chex.assert_rank(pred, 3)
    chex.assert_equal_shape([pred[..., 0], segments])
    pred = pred.astype(jnp.float32)
    means, counts = segment_embeddings(pred, segments, num_instances)  # (M, D), (M,)
    present = counts > 0
    c = jnp.sum(present.astype(jnp.float32))
    inside = segments < num_instances
    safe = jnp.where(inside, segments, 0)
    hinge = jnp.maximum(_norm(pred - means[safe]) - delta_v, 0.0) ** 2
    per_instance = jax.ops.segment_sum(jnp.where(inside, hinge, 0.0).reshape(-1),
                                       safe.reshape(-1), num_segments=num_instances)
    var = jnp.sum(per_instance / jnp.maximum(counts, 1.0)) / jnp.maximum(c, 1.0)
    gaps = _norm(means[:, None, :] - means[None, :, :])  # (M, M)
    pairs = present[:, None] & present[None, :] & ~jnp.eye(num_instances, dtype=bool)
    push = jnp.where(pairs, jnp.maximum(2 * delta_d - gaps, 0.0) ** 2, 0.0)
    dist = jnp.sum(push) / jnp.maximum(c * (c - 1), 1.0)
    reg = jnp.sum(jnp.where(present, _norm(means), 0.0)) / jnp.maximum(c, 1.0)
    return var, dist, reg


def discriminative_loss(
    pred: jax.Array,
    segments: jax.Array,
    num_instances: int,
    *,
    delta_v: float = DELTA_V,
    delta_d: float = DELTA_D,
    weights: tuple[float, float, float] = WEIGHTS,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The discriminative loss of a batch (the module docstring's ``L``), jittable.

    Args:
      pred: ``(B, H, W, D)`` float embeddings.
      segments: ``(B, H, W)`` int32 instance ids as in :func:`image_terms`
        (:func:`harmonic_jax.train.targets_for` makes them).
      num_instances: static bound ``M`` on the instances of an image.
      delta_v, delta_d: the pull and push margins.
      weights: ``(alpha, beta, gamma)``.

    Returns:
      The float32 loss and its terms ``{"var", "dist", "reg"}``, each the mean over the images.
    """
    chex.assert_rank(pred, 4)
    terms = jax.vmap(lambda p, s: image_terms(p, s, num_instances, delta_v=delta_v,
                                              delta_d=delta_d))(pred, segments)
    var, dist, reg = (jnp.mean(t) for t in terms)
    alpha, beta, gamma = weights
    return alpha * var + beta * dist + gamma * reg, {"var": var, "dist": dist, "reg": reg}
