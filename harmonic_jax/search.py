"""Guide search (eq. 4): choose guide parameters that keep every pair of instances apart.

.. math::
    \\ell(\\Psi) = \\sum_I \\frac{1}{|P_I|} \\sum_{(S, S') \\in P_I}
        \\max\\bigl(0, \\varepsilon - \\lVert e(S) - e(S') \\rVert_1\\bigr)

``P_I`` is the set of unordered pairs of instances of training image ``I`` (background is not an
instance); images with fewer than two instances contribute 0. :func:`fit_guides` minimises a
stochastic estimate of the per-image mean over random pairs of random images.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike
from tqdm.auto import tqdm

from harmonic_jax.embedding import (
    check_labels,
    count_instances,
    instance_embeddings,
    relabel,
    segment_embeddings,
)
from harmonic_jax.guides import GuideFamily, get_family

__all__ = [
    "FitResult",
    "collision_rate",
    "fit_guides",
    "hinge_loss",
    "pad_labels",
    "pair_distances",
]


def _check_margin(margin: float) -> float:
    if not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin must be a positive number, got {margin!r}")
    return float(margin)


def _pair_terms(means: jax.Array, valid: jax.Array, margin) -> tuple[jax.Array, ...]:
    """Hinge sum, pair count and close-pair count over the unordered pairs of one image.

    Args:
      means: ``(M, N)`` instance embeddings; valid: ``(M,)`` bool, which rows are instances.
    """
    m = means.shape[0]
    dist = jnp.sum(jnp.abs(means[:, None, :] - means[None, :, :]), axis=-1)
    upper = jnp.triu(jnp.ones((m, m), bool), k=1)
    pairs = upper & valid[:, None] & valid[None, :]
    hinge = jnp.where(pairs, jax.nn.relu(margin - dist), 0.0)
    n_pairs = jnp.sum(pairs).astype(jnp.float32)
    n_close = jnp.sum(pairs & (dist < margin)).astype(jnp.float32)
    return jnp.sum(hinge), n_pairs, n_close


@functools.partial(jax.jit, static_argnames=("family", "max_instances", "frame"))
def _image_terms(params, dense, margin, *, family: GuideFamily, max_instances: int, frame):
    """Per image: (hinge sum, pair count, close-pair count), each ``(B,)`` float32."""
    _, height, width = dense.shape
    maps = family.maps(params, height, width, stride=1, offset=(0, 0), frame=frame)
    maps = maps.reshape(height * width, -1)

    def one(d):
        means, counts = segment_embeddings(maps, d.reshape(-1), max_instances)
        return _pair_terms(means, counts > 0, margin)

    return jax.lax.map(one, dense, batch_size=min(8, dense.shape[0]))


def _dense_batch(labels: ArrayLike, max_instances: int | None):
    labels = jnp.asarray(labels) if isinstance(labels, jax.core.Tracer) else np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    labels = check_labels(labels, ndim=3)
    if max_instances is None:
        if isinstance(labels, jax.core.Tracer):
            raise ValueError("under jit, pass a static max_instances")
        max_instances = count_instances(labels)
    max_instances = max(int(max_instances), 1)
    dense, _ = jax.vmap(relabel, in_axes=(0, None))(labels, max_instances)
    return dense, max_instances


def hinge_loss(
    params: chex.ArrayTree,
    labels: ArrayLike,
    *,
    margin: float = 0.5,
    family: str | GuideFamily = "sine",
    frame: tuple[int, int] | None = None,
    max_instances: int | None = None,
) -> jax.Array:
    """The guide-search objective, eq. 4 exactly (L1 distance, background excluded).

    Args:
      params: guide parameters of ``family`` (``(N, 3)`` float for "sine").
      labels: ``(B, H, W)`` (or one ``(H, W)``) integer label images, 0 = background.
      margin: the margin ``epsilon`` > 0.
      family: a registered family name or a :class:`~harmonic_jax.guides.GuideFamily`.
      frame: ``(H, W)`` reference frame of the guide maps; defaults to the label size.
      max_instances: static bound on instances per image; needed only when ``labels`` is traced.

    Returns:
      Scalar float32: the sum over images of the mean pair hinge; 0 for images with < 2 instances.
      Differentiable in ``params``.
    """
    margin = _check_margin(margin)
    dense, m = _dense_batch(labels, max_instances)
    hinge, n_pairs, _ = _image_terms(
        params, dense, jnp.float32(margin), family=get_family(family), max_instances=m,
        frame=frame,
    )
    return jnp.sum(hinge / jnp.maximum(n_pairs, 1.0))


def collision_rate(
    params: chex.ArrayTree,
    labels: ArrayLike,
    *,
    margin: float = 0.5,
    family: str | GuideFamily = "sine",
    frame: tuple[int, int] | None = None,
) -> float:
    """Fraction of same-image instance pairs whose embeddings are closer than ``margin`` in L1.

    Args: as :func:`hinge_loss` (``labels`` must be concrete).

    Returns:
      A float in [0, 1]; 0.0 when there is no pair at all.
    """
    margin = _check_margin(margin)
    dense, m = _dense_batch(labels, None)
    _, n_pairs, n_close = _image_terms(
        params, dense, jnp.float32(margin), family=get_family(family), max_instances=m,
        frame=frame,
    )
    total = float(jnp.sum(n_pairs))
    return float(jnp.sum(n_close)) / total if total else 0.0


def pair_distances(
    params: chex.ArrayTree,
    labels: ArrayLike,
    *,
    family: str | GuideFamily = "sine",
    frame: tuple[int, int] | None = None,
    norm: int = 1,
) -> np.ndarray:
    """Distances between the embeddings of every same-image instance pair (host side).

    Useful to see how far apart the guides keep instances: eq. 4 uses L1 (``norm=1``), while
    mean-shift clusters with an L2 kernel (``norm=2``).

    Args:
      params, family, frame: the guides, as for :func:`hinge_loss`.
      labels: ``(B, H, W)`` integer label images (concrete).
      norm: 1 or 2.

    Returns:
      1-D float64 array, one entry per unordered pair, image by image.
    """
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 2 else labels
    fam = get_family(family)
    maps = fam.maps(params, *labels.shape[1:], stride=1, offset=(0, 0), frame=frame)
    out = []
    for lab in labels:
        e = np.asarray(instance_embeddings(maps, lab), np.float64)
        i, j = np.triu_indices(len(e), k=1)
        out.append(np.linalg.norm(e[i] - e[j], ord=norm, axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def pad_labels(label_images: Sequence[ArrayLike]) -> np.ndarray:
    """Stacks label images of different sizes, padding bottom/right with background.

    Padding keeps every pixel at its absolute position, so guide maps are unchanged.

    Returns:
      ``(B, max H, max W)`` int32.
    """
    arrays = [np.asarray(check_labels(lab, name=f"label_images[{i}]"))
              for i, lab in enumerate(label_images)]
    if not arrays:
        raise ValueError("label_images is empty")
    height = max(a.shape[0] for a in arrays)
    width = max(a.shape[1] for a in arrays)
    out = np.zeros((len(arrays), height, width), np.int32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = a
    return out


def _instance_pixels(labels: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices and dense instance index of the labelled pixels of each image (host side).

    Only instance pixels matter for eq. 4, and they are a small part of most images, so the
    search gathers them instead of reducing over whole images.

    Returns:
      ``pixels`` ``(B, F)`` int32 flat pixel indices, ``segments`` ``(B, F)`` int32 dense instance
      index (``m`` for padding), ``n_inst`` ``(B,)`` int32 instance counts; ``F`` is the largest
      labelled-pixel count.
    """
    flat = labels.reshape(labels.shape[0], -1)
    size = max(int(np.count_nonzero(flat, axis=1).max()), 1)
    pixels = np.zeros((flat.shape[0], size), np.int32)
    segments = np.full((flat.shape[0], size), m, np.int32)
    n_inst = np.zeros(flat.shape[0], np.int32)
    for i, row in enumerate(flat):
        where = np.flatnonzero(row)
        ids, dense = np.unique(row[where], return_inverse=True)
        pixels[i, : where.size] = where
        segments[i, : where.size] = dense
        n_inst[i] = ids.size
    return pixels, segments, n_inst


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit_guides` found.

    Attributes:
      params: the fitted guide parameters.
      losses: ``(steps taken,)`` float32 minibatch loss per step.
      collision_rate: final fraction of colliding training pairs (exact, all images).
      loss: final exact eq. 4 loss over all images.
      seconds: wall time of the optimisation loop (compilation included).
      frame: the reference frame ``(H, W)`` the parameters are defined in.
    """

    params: chex.ArrayTree
    losses: np.ndarray
    collision_rate: float
    loss: float
    seconds: float
    frame: tuple[int, int]


def _sample_pairs(key, n_inst, images_per_step, pairs_per_step):
    """Random images (those with >= 2 instances) and a random distinct pair in each picked one."""
    k_img, k_pick, k_a, k_b = jax.random.split(key, 4)
    usable = (n_inst >= 2).astype(jnp.float32)
    images = jax.random.choice(
        k_img, n_inst.shape[0], (images_per_step,), replace=False, p=usable / jnp.sum(usable)
    )
    slot = jax.random.randint(k_pick, (pairs_per_step,), 0, images_per_step)
    k = n_inst[images][slot]
    first = jax.random.randint(k_a, (pairs_per_step,), 0, k)
    second = (first + 1 + jax.random.randint(k_b, (pairs_per_step,), 0, k - 1)) % k
    return images, slot, first, second


def fit_guides(
    label_images: Sequence[ArrayLike],
    *,
    n: int = 12,
    margin: float = 0.5,
    family: str | GuideFamily = "sine",
    steps: int = 2000,
    pairs_per_step: int = 512,
    images_per_step: int = 8,
    lr: float = 0.05,
    key: jax.Array | None = None,
    frame: tuple[int, int] | None = None,
    init_params: chex.ArrayTree | None = None,
    eval_every: int = 100,
    progress: bool = True,
) -> FitResult:
    """Fits guide parameters by minimising eq. 4 with Adam on random pairs of random images.

    Each step draws ``images_per_step`` training images (among those with two or more instances),
    computes all their instance embeddings from one evaluation of the guide maps, and averages the
    hinge over ``pairs_per_step`` random pairs of distinct instances of those images.

    Args:
      label_images: integer label images (0 = background), any sizes.
      n: number of guides.
      margin: the margin ``epsilon``.
      family: guide family name or object.
      steps: optimisation steps.
      pairs_per_step: random pairs per minibatch.
      images_per_step: images per minibatch (capped at the number of usable images).
      lr: Adam learning rate.
      key: PRNG key for the initialisation and the sampling (default ``PRNGKey(0)``).
      frame: reference frame ``(H, W)``; defaults to the largest label size.
      init_params: start from these instead of ``family.init(key, n)``.
      eval_every: every this many steps, evaluate the exact loss over all images and stop early
        once it is zero (the paper's criterion); 0 disables.
      progress: show a tqdm progress bar.

    Returns:
      A :class:`FitResult`.
    """
    margin = _check_margin(margin)
    fam = get_family(family)
    labels = pad_labels(label_images)
    m = max(count_instances(labels), 1)
    pixels, segments, n_inst = _instance_pixels(labels, m)
    usable = int(np.sum(n_inst >= 2))
    if usable == 0:
        raise ValueError("label_images: no image has two or more instances; nothing to separate")
    images_per_step = min(images_per_step, usable)
    height, width = labels.shape[1:]
    frame = (int(height), int(width)) if frame is None else tuple(int(s) for s in frame)

    key = jax.random.PRNGKey(0) if key is None else key
    key, k_init = jax.random.split(key)
    params = fam.init(k_init, n) if init_params is None else init_params
    optimizer = optax.adam(lr)
    opt_state = optimizer.init(params)
    pixels, segments, n_inst_dev = jnp.asarray(pixels), jnp.asarray(segments), jnp.asarray(n_inst)

    def flat_maps(params):
        maps = fam.maps(params, height, width, stride=1, offset=(0, 0), frame=frame)
        return maps.reshape(height * width, -1)

    def minibatch_loss(params, key):
        images, slot, first, second = _sample_pairs(key, n_inst_dev, images_per_step,
                                                    pairs_per_step)
        maps = flat_maps(params)
        means, _ = jax.vmap(segment_embeddings, in_axes=(0, 0, None))(
            maps[pixels[images]], segments[images], m
        )
        dist = jnp.sum(jnp.abs(means[slot, first] - means[slot, second]), axis=-1)
        return jnp.mean(jax.nn.relu(margin - dist))

    @jax.jit
    def step(params, opt_state, key):
        loss, grads = jax.value_and_grad(minibatch_loss)(params, key)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and float decays
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params):
        """Exact eq. 4 loss and collision rate over all images."""
        maps = flat_maps(params)

        def one(args):
            means, counts = segment_embeddings(maps[args[0]], args[1], m)
            return _pair_terms(means, counts > 0, margin)

        hinge, n_pairs, n_close = jax.lax.map(one, (pixels, segments), batch_size=8)
        return jnp.sum(hinge / jnp.maximum(n_pairs, 1.0)), jnp.sum(n_close), jnp.sum(n_pairs)

    losses = []
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="fit_guides", disable=not progress, mininterval=1.0)
    for i in bar:
        if eval_every and i % eval_every == 0:
            full_loss, n_close, n_pairs = evaluate(params)
            bar.set_postfix(loss=f"{float(full_loss):.4f}", collisions=int(n_close))
            if float(full_loss) == 0.0:
                break
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
        losses.append(loss)
    bar.close()
    losses = np.asarray(jnp.stack(losses)) if losses else np.zeros(0, np.float32)
    full_loss, n_close, n_pairs = evaluate(params)
    rate = float(n_close) / float(n_pairs) if float(n_pairs) else 0.0
    seconds = time.perf_counter() - start
    return FitResult(params, losses, rate, float(full_loss), seconds, frame)
