"""Guide search (eq. 4): choose guide parameters that keep every pair of instances apart.

.. math::
    \\ell(\\Psi) = \\sum_I \\frac{1}{|P_I|} \\sum_{(S, S') \\in P_I}
        \\max\\bigl(0, m - \\lVert e(S) - e(S') \\rVert_p\\bigr)

``P_I`` is the set of unordered pairs of instances of training image ``I`` (background is not an
instance); images with fewer than two instances contribute 0. The paper's eq. 4 is ``p = 1``,
``m = epsilon``. :func:`fit_guides` minimises a stochastic estimate of the per-image mean over
random pairs of random images.

**Decision: the search serves the clustering.** Mean-shift (:func:`harmonic_jax.cluster.mean_shift`)
merges embeddings that lie within its bandwidth of each other in **L2**, and an L1 margin of
``epsilon`` only guarantees an L2 distance of ``epsilon / sqrt(N)`` (a difference spread evenly over
``N`` channels is ``sqrt(N)`` times smaller in L2). Every function here therefore defaults to
``norm=2`` with ``margin`` = the bandwidth, 0.5. A margin of exactly the bandwidth leaves no room
for a network's error, so :func:`fit_guides` optimises the hinge at ``headroom * margin`` (default
4x, measured): it keeps pushing the closest pairs apart after all of them are beyond the bandwidth, and
reports the separation reached (minimum and 1st-percentile pair distance). ``norm=1,
headroom=1`` is eq. 4 exactly, with the paper's stopping rule (zero hinge on the training pairs).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import warnings
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
    "distance",
    "fit_guides",
    "hinge_loss",
    "pad_labels",
    "pair_distances",
    "separation_stats",
]


def _check_margin(margin: float) -> float:
    if not np.isfinite(margin) or margin <= 0:
        raise ValueError(f"margin must be a positive number, got {margin!r}")
    return float(margin)


def _check_norm(norm) -> int:
    if norm not in (1, 2) or isinstance(norm, bool):
        raise ValueError(f"norm must be 1 (eq. 4's L1) or 2 (mean-shift's L2), got {norm!r}")
    return int(norm)


def distance(diff: jax.Array, norm: int = 2) -> jax.Array:
    """L1 or L2 norm over the last axis, with a finite gradient at 0 (for the search).

    Args:
      diff: ``(..., N)`` float differences of embeddings.
      norm: 1 or 2.

    Returns:
      ``(...)`` float, ``sum |diff|`` or ``sqrt(sum diff^2)``.
    """
    if norm == 1:
        return jnp.sum(jnp.abs(diff), axis=-1)
    return jnp.sqrt(jnp.maximum(jnp.sum(diff * diff, axis=-1), 1e-12))


def _pair_matrix(means: jax.Array, valid: jax.Array, norm: int):
    """``(M, M)`` distances and the mask of unordered instance pairs of one image.

    Args:
      means: ``(M, N)`` instance embeddings; valid: ``(M,)`` bool, which rows are instances.
    """
    m = means.shape[0]
    dist = distance(means[:, None, :] - means[None, :, :], norm)
    upper = jnp.triu(jnp.ones((m, m), bool), k=1)
    return dist, upper & valid[:, None] & valid[None, :]


def _pair_terms(means, valid, margin, norm: int, target=None) -> tuple[jax.Array, ...]:
    """Hinge sum at ``target`` (default ``margin``), pair count and count of pairs closer than
    ``margin``, over the unordered pairs of one image."""
    dist, pairs = _pair_matrix(means, valid, norm)
    target = margin if target is None else target
    hinge = jnp.where(pairs, jax.nn.relu(target - dist), 0.0)
    n_pairs = jnp.sum(pairs).astype(jnp.float32)
    n_close = jnp.sum(pairs & (dist < margin)).astype(jnp.float32)
    return jnp.sum(hinge), n_pairs, n_close


@functools.partial(jax.jit, static_argnames=("family", "max_instances", "frame", "norm"))
def _image_terms(params, dense, margin, *, family: GuideFamily, max_instances: int, frame,
                 norm: int):
    """Per image: (hinge sum, pair count, close-pair count), each ``(B,)`` float32."""
    _, height, width = dense.shape
    maps = family.maps(params, height, width, stride=1, offset=(0, 0), frame=frame)
    maps = maps.reshape(height * width, -1)

    def one(d):
        means, counts = segment_embeddings(maps, d.reshape(-1), max_instances)
        return _pair_terms(means, counts > 0, margin, norm)

    return jax.lax.map(one, dense, batch_size=min(8, dense.shape[0]))


def _frame(frame) -> tuple[int, int] | None:
    """Frames arrive as tuples or, from a guide file, as lists: one hashable form for jit."""
    if frame is None:
        return None
    frame = tuple(int(f) for f in np.asarray(frame).ravel())
    if len(frame) != 2:
        raise ValueError(f"frame must be (H, W), got {frame!r}")
    return frame


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
    norm: int = 2,
    family: str | GuideFamily = "sine",
    frame: tuple[int, int] | None = None,
    max_instances: int | None = None,
) -> jax.Array:
    """The guide-search objective: eq. 4 with an L1 (``norm=1``) or L2 (``norm=2``) distance.

    Args:
      params: guide parameters of ``family`` (``(N, 3)`` float for "sine").
      labels: ``(B, H, W)`` (or one ``(H, W)``) integer label images, 0 = background.
      margin: the margin ``m`` > 0 (the paper: ``epsilon = 0.5``).
      norm: 2 (default): the L2 distance mean-shift clusters with; 1: eq. 4 exactly.
      family: a registered family name or a :class:`~harmonic_jax.guides.GuideFamily`.
      frame: ``(H, W)`` reference frame of the guide maps; defaults to the label size.
      max_instances: static bound on instances per image; needed only when ``labels`` is traced.

    Returns:
      Scalar float32: the sum over images of the mean pair hinge; 0 for images with < 2 instances.
      Differentiable in ``params``.
    """
    margin, norm = _check_margin(margin), _check_norm(norm)
    dense, m = _dense_batch(labels, max_instances)
    hinge, n_pairs, _ = _image_terms(
        params, dense, jnp.float32(margin), family=get_family(family), max_instances=m,
        frame=_frame(frame), norm=norm,
    )
    return jnp.sum(hinge / jnp.maximum(n_pairs, 1.0))


def collision_rate(
    params: chex.ArrayTree,
    labels: ArrayLike,
    *,
    margin: float = 0.5,
    norm: int = 2,
    family: str | GuideFamily = "sine",
    frame: tuple[int, int] | None = None,
) -> float:
    """Fraction of same-image instance pairs whose embeddings are closer than ``margin``.

    Args: as :func:`hinge_loss` (``labels`` must be concrete).

    Returns:
      A float in [0, 1]; 0.0 when there is no pair at all.
    """
    margin, norm = _check_margin(margin), _check_norm(norm)
    dense, m = _dense_batch(labels, None)
    _, n_pairs, n_close = _image_terms(
        params, dense, jnp.float32(margin), family=get_family(family), max_instances=m,
        frame=_frame(frame), norm=norm,
    )
    total = float(jnp.sum(n_pairs))
    return float(jnp.sum(n_close)) / total if total else 0.0


#: One compilation per map shape and instance bound, shared by every call.
_embed = jax.jit(instance_embeddings, static_argnames="max_instances")


def _pair_differences(params, labels, family, frame) -> np.ndarray:
    """``(P, N)`` float64 embedding differences of every same-image instance pair."""
    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 2 else labels
    fam = get_family(family)
    maps = fam.maps(params, *labels.shape[1:], stride=1, offset=(0, 0), frame=_frame(frame))
    counts = [count_instances(lab) for lab in labels]
    bound = max(counts, default=0)
    out = [np.zeros((0, maps.shape[-1]))]
    for lab, count in zip(labels, counts):
        if count < 2:
            continue
        e = np.asarray(_embed(maps, lab, max_instances=bound), np.float64)[:count]
        i, j = np.triu_indices(count, k=1)
        out.append(e[i] - e[j])
    return np.concatenate(out)


def pair_distances(
    params: chex.ArrayTree,
    labels: ArrayLike,
    *,
    family: str | GuideFamily = "sine",
    frame: tuple[int, int] | None = None,
    norm: int = 2,
) -> np.ndarray:
    """Distances between the embeddings of every same-image instance pair (host side).

    Shows how far apart the guides keep instances: mean-shift clusters with an L2 kernel
    (``norm=2``), eq. 4 uses L1 (``norm=1``).

    Args:
      params, family, frame: the guides, as for :func:`hinge_loss`.
      labels: ``(B, H, W)`` integer label images (concrete).
      norm: 2 or 1.

    Returns:
      1-D float64 array, one entry per unordered pair, image by image.
    """
    norm = _check_norm(norm)
    return np.linalg.norm(_pair_differences(params, labels, family, frame), ord=norm, axis=1)


def separation_stats(
    params: chex.ArrayTree,
    labels: ArrayLike,
    *,
    margin: float = 0.5,
    family: str | GuideFamily = "sine",
    frame: tuple[int, int] | None = None,
) -> dict:
    """How well guides separate the instance pairs of ``labels``, in both norms (host side).

    Returns:
      ``{"pairs", "l1_collision_rate", "l2_collision_rate", "min_l1", "min_l2", "p01_l2"}``:
      the pair count, the fractions of pairs closer than ``margin`` in L1 and in L2, the closest
      pair in each norm and the 1st percentile in L2 (mean-shift's metric). Python floats.
    """
    margin = _check_margin(margin)
    diff = _pair_differences(params, labels, family, frame)
    l1 = np.linalg.norm(diff, ord=1, axis=1)
    l2 = np.linalg.norm(diff, ord=2, axis=1)
    if l1.size == 0:
        raise ValueError("labels: no image has two or more instances")
    return dict(pairs=int(l1.size), l1_collision_rate=float(np.mean(l1 < margin)),
                l2_collision_rate=float(np.mean(l2 < margin)), min_l1=float(l1.min()),
                min_l2=float(l2.min()), p01_l2=float(np.percentile(l2, 1)))


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
    """What :func:`fit_guides` found (every number exact, over all training pairs).

    Attributes:
      params: the fitted guide parameters (the best exact objective seen during the search).
      losses: ``(steps taken,)`` float32 minibatch loss per step.
      collision_rate: fraction of training pairs closer than ``margin`` (in ``norm``).
      loss: the exact objective of ``params``: eq. 4's per-image mean hinge at
        ``headroom * margin``, summed over images.
      seconds: wall time of the optimisation loop (compilation included).
      frame: the reference frame ``(H, W)`` the parameters are defined in.
      norm: the distance searched in (1 or 2).
      margin: the separation asked for; the hinge acted at ``headroom * margin``.
      headroom: the factor on the margin at which the hinge acted.
      min_distance: the closest training pair in L2, mean-shift's metric (whatever ``norm``).
      p01_distance: the 1st percentile of the training pair distances in L2.
      skipped: label images with fewer than two instances (no pair to separate), left out.
    """

    params: chex.ArrayTree
    losses: np.ndarray
    collision_rate: float
    loss: float
    seconds: float
    frame: tuple[int, int]
    norm: int = 2
    margin: float = 0.5
    headroom: float = 4.0
    min_distance: float = float("nan")
    p01_distance: float = float("nan")
    skipped: int = 0


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


def _check_reachable(fam: GuideFamily, params, margin: float, norm: int) -> None:
    """Rejects a margin that no parameters of a family with bounded values can reach."""
    if fam.value_range is None:
        return
    n = fam.maps(params, 1, 1, stride=1, offset=(0, 0), frame=None).shape[-1]
    low, high = fam.value_range
    largest = (high - low) * n ** (1.0 / norm)
    if margin > largest:
        raise ValueError(
            f"margin {margin} cannot be reached in L{norm} with {n} guides whose values lie in "
            f"[{low}, {high}]: no two embeddings are farther apart than {largest:.4g}; use more "
            f"guides or a smaller margin")


def fit_guides(
    label_images: Sequence[ArrayLike],
    *,
    n: int = 12,
    margin: float = 0.5,
    norm: int = 2,
    headroom: float = 4.0,
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
    """Fits guide parameters by minimising the hinge with Adam on random pairs of random images.

    Each step draws ``images_per_step`` training images (among those with two or more instances),
    computes all their instance embeddings from one evaluation of the guide maps, and averages the
    hinge ``max(0, headroom * margin - d)`` over ``pairs_per_step`` random pairs of distinct
    instances of those images. Every ``eval_every`` steps the exact objective over all images is
    computed; the best parameters seen are returned, and the search stops when it is zero.

    Args:
      label_images: integer label images (0 = background), any sizes.
      n: number of guides (the paper: 12).
      margin: the separation the clustering needs: mean-shift's bandwidth, 0.5 (the paper's
        epsilon). ``collision_rate`` counts the pairs closer than this.
      norm: 2 (default): L2, the metric of mean-shift's kernel, so that ``margin`` is the
        guarantee :func:`~harmonic_jax.cluster.mean_shift` needs; 1: eq. 4's L1.
      headroom: the hinge acts at ``headroom * margin``, so the search goes on separating the
        closest pairs after every pair is beyond the bandwidth (room for the network's error);
        1 with ``norm=1`` is eq. 4 exactly. The default 4 is the best measured (2000 steps, L2,
        margin 0.5; closest / 1st-percentile training pair): on the CVPPP A1 training split
        headroom 2: 0.59 / 1.03, 3: 0.68 / 1.28, 4: 0.79 / 1.41, 6: 0.53 / 1.16 (the original's
        published guides: 0.557 / 1.148); on 16 crowded blob test images (``touching_blobs``)
        2: 0.40 / 1.61, 4: 0.42 / 1.71.
      family: guide family name or object.
      steps: most optimisation steps.
      pairs_per_step: random pairs per minibatch.
      images_per_step: images per minibatch (capped at the number of usable images).
      lr: Adam learning rate.
      key: PRNG key for the initialisation and the sampling (default ``PRNGKey(0)``).
      frame: reference frame ``(H, W)``; defaults to the largest label size.
      init_params: start from these instead of ``family.init(key, n)``.
      eval_every: steps between exact evaluations (best-parameter tracking, early stop); 0: only
        at the end.
      progress: show a tqdm progress bar.

    Returns:
      A :class:`FitResult`. A warning names the closest pair when some training pairs stay closer
      than ``margin``.

    Raises:
      ValueError: no image has two instances; ``norm`` is not 1 or 2; ``margin`` is not
        positive; ``headroom`` is below 1; ``margin`` exceeds the largest distance the family
        can produce.
    """
    margin, norm = _check_margin(margin), _check_norm(norm)
    if not np.isfinite(headroom) or headroom < 1.0:
        raise ValueError(f"headroom must be a number >= 1, got {headroom!r}")
    target = float(headroom) * margin
    fam = get_family(family)
    labels = pad_labels(label_images)
    m = max(count_instances(labels), 1)
    pixels, segments, n_inst = _instance_pixels(labels, m)
    usable = int(np.sum(n_inst >= 2))
    if usable == 0:
        raise ValueError("label_images: no image has two or more instances; nothing to separate")
    images_per_step = min(images_per_step, usable)
    height, width = labels.shape[1:]
    frame = (int(height), int(width)) if frame is None else _frame(frame)

    key = jax.random.PRNGKey(0) if key is None else key
    key, k_init = jax.random.split(key)
    params = fam.init(k_init, n) if init_params is None else init_params
    _check_reachable(fam, params, margin, norm)
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
        dist = distance(means[slot, first] - means[slot, second], norm)
        return jnp.mean(jax.nn.relu(target - dist))

    @jax.jit
    def step(params, opt_state, key):
        loss, grads = jax.value_and_grad(minibatch_loss)(params, key)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and float decays
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params):
        """Exact objective over all images."""
        maps = flat_maps(params)

        def one(args):
            means, counts = segment_embeddings(maps[args[0]], args[1], m)
            return _pair_terms(means, counts > 0, margin, norm, target)

        hinge, n_pairs, _ = jax.lax.map(one, (pixels, segments), batch_size=8)
        return jnp.sum(hinge / jnp.maximum(n_pairs, 1.0))

    @jax.jit
    def all_distances(params):
        """``(B, M, M)`` pair distances in ``norm`` and in L2, ``inf`` where there is no pair."""
        maps = flat_maps(params)

        def one(args):
            means, counts = segment_embeddings(maps[args[0]], args[1], m)
            dist, pairs = _pair_matrix(means, counts > 0, norm)
            l2, _ = _pair_matrix(means, counts > 0, 2)
            return jnp.where(pairs, dist, jnp.inf), jnp.where(pairs, l2, jnp.inf)

        return jax.lax.map(one, (pixels, segments), batch_size=8)

    losses = []
    best, best_loss = params, np.inf
    start = time.perf_counter()
    bar = tqdm(range(steps), desc="fit_guides", disable=not progress, mininterval=1.0)
    for i in bar:
        if eval_every and i % eval_every == 0:
            full_loss = float(evaluate(params))
            if full_loss < best_loss:
                best, best_loss = params, full_loss
            bar.set_postfix(loss=f"{full_loss:.4f}")
            if full_loss == 0.0:
                break
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(key, i))
        losses.append(loss)
    bar.close()
    if best_loss > 0.0:
        full_loss = float(evaluate(params))
        if full_loss < best_loss:
            best, best_loss = params, full_loss
    losses = np.asarray(jnp.stack(losses)) if losses else np.zeros(0, np.float32)
    dist, l2 = (np.asarray(d) for d in all_distances(best))
    dist, l2 = dist[np.isfinite(dist)], l2[np.isfinite(l2)]
    seconds = time.perf_counter() - start
    rate = float(np.mean(dist < margin)) if dist.size else 0.0
    closest = float(l2.min()) if l2.size else float("inf")
    p01 = float(np.percentile(l2, 1)) if l2.size else float("inf")
    if rate > 0.0:
        warnings.warn(
            f"fit_guides: {rate:.3%} of the training pairs stay closer than margin {margin} in "
            f"L{norm} (closest pair {float(dist.min()):.4f}; in L2 {closest:.4f}, 1st percentile "
            f"{p01:.4f}); more guides, more steps or another family may separate them",
            stacklevel=2)
    return FitResult(best, losses, rate, best_loss, seconds, frame, norm=norm, margin=margin,
                     headroom=float(headroom), min_distance=closest, p01_distance=p01,
                     skipped=len(n_inst) - usable)
