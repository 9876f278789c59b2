"""Learning the embedding network: the L1 objective (eq. 5), the train state and a jitted,
data-parallel train step.

The step takes whole (padded) images and does everything numeric on the device: augmentation
(:func:`~harmonic_jax.data.augment.random_view`), guide maps at each crop's offset, target
embeddings, the forward and backward pass and the Adam update. Data parallelism is ``jax.jit``
over a ``('data',)`` mesh: the batch is split along it with ``NamedSharding``, the state is
replicated, and XLA inserts the gradient and BatchNorm reductions, so a step on 8 devices
computes what one device computes for the same global batch.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from harmonic_jax.baselines.discriminative import DELTA_D, DELTA_V, discriminative_loss
from harmonic_jax.data.augment import random_view
from harmonic_jax.embedding import relabel, segment_embeddings
from harmonic_jax.guides import get_family

__all__ = [
    "TrainState",
    "create_state",
    "data_mesh",
    "LOSSES",
    "embedding_loss",
    "make_train_step",
    "pull_loss",
    "shard_batch",
    "targets_for",
]


def embedding_loss(
    pred: jax.Array,
    target: jax.Array,
    fg_mask: jax.Array | None = None,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Eq. 5: mean over foreground pixels of the L1 distance to the target embedding.

    .. math:: L = \\frac{1}{|fg|} \\sum_{(x, y) \\in fg} w_{x,y} \\lVert E[x, y] - e(S(x, y)) \\rVert_1

    Args:
      pred, target: ``(..., H, W, N)`` float.
      fg_mask: ``(..., H, W)`` bool; all pixels when ``None`` (datasets without a mask).
      weights: optional ``(..., H, W)`` per-pixel weights (e.g. ``1 / log(area)``).

    Returns:
      Scalar float32; 0 when there is no foreground pixel.
    """
    chex.assert_equal_shape([pred, target])
    l1 = jnp.sum(jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)
    mask = jnp.ones(l1.shape, jnp.float32) if fg_mask is None else fg_mask.astype(jnp.float32)
    chex.assert_equal_shape([l1, mask])
    weighted = mask if weights is None else mask * weights.astype(jnp.float32)
    return jnp.sum(l1 * weighted) / jnp.maximum(jnp.sum(mask), 1.0)


def pull_loss(pred: jax.Array, segments: jax.Array, mask: jax.Array,
              num_segments: int) -> jax.Array:
    """Mean L1 distance of each pixel's prediction to its segment's mean prediction.

    The pull term of De Brabandere et al. (2017) without its hinge, in eq. 5's L1:

    .. math:: L_{pull} = \\frac{1}{|M|} \\sum_{(x, y) \\in M}
        \\lVert E[x, y] - \\bar E_{S(x, y)} \\rVert_1, \\quad
        \\bar E_S = \\frac{1}{|S|} \\sum_{(u, v) \\in S} E[u, v]

    Eq. 5 alone lets a network follow the guide maps inside an instance (its mean is right, its
    pixels are not); this term asks directly for what mean-shift needs, one value per instance.

    Args:
      pred: ``(B, H, W, N)`` float predictions.
      segments: ``(B, H, W)`` int32 segment ids in ``0..num_segments`` (``num_segments``: none).
      mask: ``(B, H, W)`` bool, the pixels that count.
      num_segments: static number of segments averaged.

    Returns:
      Scalar float32; 0 when ``mask`` is empty.
    """
    chex.assert_rank(pred, 4)
    chex.assert_equal_shape([pred[..., 0], segments, mask])

    def one(p, seg):
        means, _ = segment_embeddings(p.astype(jnp.float32), seg, num_segments)
        means = jnp.concatenate([means, jnp.zeros((1, means.shape[1]), means.dtype)])
        return jnp.sum(jnp.abs(p.astype(jnp.float32) - means[seg]), axis=-1)

    dist = jax.vmap(one)(pred, segments)
    weight = mask.astype(jnp.float32)
    return jnp.sum(dist * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def targets_for(guide_params, labels, offsets, *, family, frame, max_instances, weighting=False,
                background=False):
    """Target embeddings of a batch of crops, pixel weights and segment ids (jittable).

    Args:
      labels: ``(B, H, W)`` int32 crops; offsets: ``(B, 2)`` crop positions in the guide frame.
      max_instances: static bound ``M`` on the instances of one crop.
      weighting: per-pixel weights ``1 / log(area)`` of the pixel's segment (else ones).
      background: the background is an instance with its own target, the mean of the guide
        maps over the crop's background (eq. 5 summed over the full image); else its target is 0
        and it is left out of the loss.

    Returns:
      ``targets (B, H, W, N)`` float32, ``weights (B, H, W)`` float32 (0 on pixels out of the
      loss) and ``segments (B, H, W)`` int32: ``0..M-1`` the instances (k-th smallest id), ``M``
      the background and ``M + 1`` the pixels of instances beyond the ``M`` smallest ids, which
      must leave the loss.
    """
    fam = get_family(family)
    _, height, width = labels.shape
    m = max_instances

    def one(lab, off):
        maps = fam.maps(guide_params, height, width, stride=1, offset=off, frame=frame)
        dense, _ = relabel(lab, m)
        seg = jnp.where((lab > 0) & (dense == m), m + 1, dense)
        means, counts = segment_embeddings(maps, seg, m + 1)  # rows 0..M: instances, background
        if not background:
            means = means.at[m].set(0.0)
        means = jnp.concatenate([means, jnp.zeros((1, means.shape[1]), means.dtype)])
        weight = 1.0 / jnp.log(jnp.maximum(counts, 3.0)) if weighting else jnp.ones_like(counts)
        if not background:
            weight = weight.at[m].set(0.0)
        weight = jnp.concatenate([weight, jnp.zeros((1,), weight.dtype)])
        return means[seg], weight[seg], seg

    return jax.vmap(one)(labels, offsets)


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree; checkpointed whole).

    Attributes:
      step: int32 scalar.
      params, batch_stats: the network's variables.
      opt_state: optax state.
      rng: PRNG key; the augmentation of step ``s`` uses ``fold_in(rng, s)``.
      guide_params: the fixed guide parameters the network is trained for.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    guide_params: Any


def create_state(model: nn.Module, optimizer, guide_params, *, key, image_shape) -> TrainState:
    """Initialises the network (jitted: an unjitted U-Net init takes ~10 s) and the optimiser.

    Args:
      image_shape: ``(H, W, C)`` of the training crops.
    """
    k_init, k_rng = jax.random.split(key)

    @jax.jit
    def init(k):
        dummy = jnp.zeros((1, *image_shape), jnp.float32)
        variables = model.init(k, dummy, guide_params=guide_params, train=False)
        with jax.numpy_dtype_promotion("standard"):
            opt_state = optimizer.init(variables["params"])
        return variables, opt_state

    variables, opt_state = init(k_init)
    return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                      batch_stats=variables.get("batch_stats", {}), opt_state=opt_state,
                      rng=k_rng, guide_params=jnp.array(guide_params, copy=True))


LOSSES = ("harmonic", "discriminative")


def _train_step(state: TrainState, batch: dict, *, model, optimizer, crop, scale_range, flip,
                max_instances, weighting, fg_loss_weight, pull_weight, background, loss_kind,
                delta_v, delta_d):
    """One optimisation step on a batch of whole images; see :func:`make_train_step`."""
    images, labels, sizes = batch["image"], batch["labels"], batch["size"]
    keys = jax.random.split(jax.random.fold_in(state.rng, state.step), images.shape[0])
    view = functools.partial(random_view, crop=crop, scale_range=scale_range, flip=flip)
    images, labels, offsets = jax.vmap(view)(keys, images, labels, sizes)
    images = images / 255.0 - 0.5
    targets, weights, segments = targets_for(
        state.guide_params, labels, offsets, family=model.family, frame=model.frame,
        max_instances=max_instances, weighting=weighting, background=background)
    fg = labels > 0
    # Pixels of instances beyond max_instances leave the loss (segment M + 1).
    counted = segments <= max_instances if background else segments < max_instances

    def loss_fn(params):
        out, updates = model.apply(
            {"params": params, "batch_stats": state.batch_stats}, images,
            guide_params=state.guide_params, offset=offsets, train=True,
            mutable=["batch_stats"],
        )
        updates = {"batch_stats": updates.get("batch_stats", state.batch_stats)}
        emb, logit = out if model.fg_head else (out, None)
        if loss_kind == "discriminative":
            loss, terms = discriminative_loss(emb, segments, max_instances, delta_v=delta_v,
                                              delta_d=delta_d)
            metrics = {"discriminative_loss": loss} | {f"{k}_term": v for k, v in terms.items()}
        else:
            loss = embedding_loss(emb, targets, counted, weights)
            metrics = {"embedding_loss": loss}
        if pull_weight:
            pull = pull_loss(emb, segments, counted, max_instances + 1)
            metrics["pull_loss"] = pull
            loss = loss + pull_weight * pull
        if logit is not None:
            bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logit, fg.astype(jnp.float32)))
            metrics["fg_loss"] = bce
            loss = loss + fg_loss_weight * bce
        return loss, (updates, metrics)

    (loss, (updates, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and float decays
        param_updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
        batch_stats=updates["batch_stats"], opt_state=opt_state,
    )
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
    return new_state, metrics


def data_mesh(devices=None) -> Mesh:
    """A 1-D ``('data',)`` mesh over the given devices (default: all of them, every process's
    in a multi-process run; :mod:`harmonic_jax.distributed`)."""
    if devices is None:  # each process's devices together, in process order (process_rows)
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(list(devices)), ("data",))


def shard_batch(batch: dict, mesh: Mesh | None) -> dict:
    """Puts a host batch on the devices, split along its first axis over ``mesh``.

    In a multi-process run ``batch`` holds this process's rows of the global batch
    (:func:`harmonic_jax.distributed.process_rows`); the result is the global batch.

    Raises:
      ValueError: the batch size is not divisible by the number of (this process's) devices.
    """
    if mesh is None:
        return jax.device_put(batch)
    local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    n = len(local)
    size = len(next(iter(batch.values())))
    if size % n:
        raise ValueError(f"batch size {size} is not divisible by the {n} devices of the data "
                         f"mesh; use a multiple of {n} or data_parallel=False")
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}


# XLA:CPU's thunk scheduler that minimises the peak memory (see make_train_step).
CPU_MEMORY_SCHEDULER = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def make_train_step(model, optimizer, *, crop, scale_range=(0.75, 1.25), flip=True,
                    max_instances=32, weighting=False, fg_loss_weight=10.0, pull_weight=0.0,
                    background=False, loss="harmonic", delta_v=DELTA_V, delta_d=DELTA_D,
                    mesh=None, memory_scheduler=True):
    """Builds the jitted ``train_step(state, batch) -> (state, metrics)``; the state is donated.

    The loss is eq. 5 (:func:`embedding_loss`, over the foreground, or over every pixel with
    ``background``; see :func:`targets_for`), or with ``loss="discriminative"`` the baseline's
    (:func:`~harmonic_jax.baselines.discriminative.discriminative_loss` with margins ``delta_v``
    and ``delta_d``, over the instances); plus ``pull_weight`` times :func:`pull_loss` and,
    for a model with a foreground head, ``fg_loss_weight`` times the head's binary cross-entropy
    against ``labels > 0``. Pixels of instances beyond ``max_instances`` leave the loss.

    ``batch`` holds ``image (B, H, W, C)`` (0-255), ``labels (B, H, W)`` int32 and ``size (B, 2)``
    int32 (true sizes inside padded arrays). With ``mesh``, put batches on the devices with
    :func:`shard_batch`; the state is replicated.

    ``memory_scheduler``: on CPU, compile with XLA's memory-optimised thunk scheduler
    (:data:`CPU_MEMORY_SCHEDULER`) instead of its default, which orders the thunks for
    concurrency and computes rematerialised values and weight-gradient inputs early, holding them
    through the backward pass; ``benchmarks/results/train_speed.md`` gives what it saves. The
    results are the same (``tests/test_train.py``). Other platforms ignore it.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "discriminative" and (background or weighting):
        raise ValueError("background=True and weighting=True are eq. 5's options; the "
                         "discriminative loss weighs each instance once and leaves the "
                         "background to the foreground head")
    step = functools.partial(
        _train_step, model=model, optimizer=optimizer, crop=tuple(crop),
        scale_range=tuple(scale_range), flip=flip, max_instances=max_instances,
        weighting=weighting, fg_loss_weight=fg_loss_weight, pull_weight=pull_weight,
        background=background, loss_kind=loss, delta_v=float(delta_v), delta_d=float(delta_d),
    )
    platform = jax.default_backend() if mesh is None else mesh.devices.flat[0].platform
    options = dict(CPU_MEMORY_SCHEDULER) if memory_scheduler and platform == "cpu" else None
    if mesh is None:
        return jax.jit(step, donate_argnums=0, compiler_options=options)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step, donate_argnums=0, compiler_options=options,
                   in_shardings=(replicated, NamedSharding(mesh, PartitionSpec("data"))),
                   out_shardings=(replicated, replicated))
