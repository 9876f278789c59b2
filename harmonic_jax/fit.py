"""The training loop: ``fit(config)`` trains, validates, logs and checkpoints one run.

A run lives in ``config.workdir``: ``config.json`` and ``guides.json`` (what the weights mean),
``metrics.jsonl`` (one JSON object per log line), ``checkpoints/`` (the last k states) and
``best/`` (the best by validation SBD). Started again with the same command, a run continues
from its newest intact checkpoint: the data order is a function of (seed, step) and the
augmentation key of (rng, step), so the resumed run computes what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from harmonic_jax import metrics, predict
from harmonic_jax.checkpoint import Checkpointer
from harmonic_jax.config import TrainConfig
from harmonic_jax.data import READERS, Sample, load_split, resize_sample
from harmonic_jax.guides import load_guides
from harmonic_jax.model import UNet
from harmonic_jax.train import create_state, data_mesh, make_train_step, shard_batch

__all__ = [
    "batch_indices",
    "build_model",
    "config_summary",
    "evaluate",
    "fit",
    "load_run",
    "stack_samples",
]


def build_model(config: TrainConfig, frame) -> UNet:
    """The U-Net a config describes, for guides defined in ``frame``."""
    return UNet(widths=tuple(config.widths), sinconv=config.sinconv, frame=tuple(frame),
                sinconv_kernel=config.sinconv_kernel, fg_head=config.fg_head)


def stack_samples(samples: list[Sample]) -> dict:
    """Pads images and labels to one size (bottom/right) for batching on the device.

    Returns:
      ``image (n, H, W, C)`` uint8, ``labels (n, H, W)`` int32, ``size (n, 2)`` int32.
    """
    height = max(s.labels.shape[0] for s in samples)
    width = max(s.labels.shape[1] for s in samples)
    channels = samples[0].image.shape[-1]
    out = dict(image=np.zeros((len(samples), height, width, channels), samples[0].image.dtype),
               labels=np.zeros((len(samples), height, width), np.int32),
               size=np.array([s.labels.shape for s in samples], np.int32))
    for i, s in enumerate(samples):
        out["image"][i, : s.labels.shape[0], : s.labels.shape[1]] = s.image
        out["labels"][i, : s.labels.shape[0], : s.labels.shape[1]] = s.labels
    return out


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """Indices of the images of step ``step``: a fresh permutation each epoch (deterministic)."""
    per_epoch = max(n // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    rng = np.random.default_rng([seed, epoch])
    order = np.concatenate([rng.permutation(n) for _ in range(-(-batch_size // n))])
    return order[position * batch_size: (position + 1) * batch_size]


def evaluate(model, variables, guide_params, samples: list[Sample], config: TrainConfig) -> dict:
    """Mean SBD and |DiC| over ``samples``: mean-shift inside each image's foreground mask (the
    predicted one when the network has a foreground head)."""
    sbd, dic = [], []
    for s in samples:
        pred = predict.segment(model, variables, guide_params, s.image,
                               fg_mask=None if model.fg_head else s.fg,
                               **config.cluster_kwargs())
        sbd.append(metrics.sbd(pred, s.labels))
        dic.append(abs(metrics.dic(pred, s.labels)))
    return {"sbd": float(np.mean(sbd)), "abs_dic": float(np.mean(dic))}


def _load(config: TrainConfig, subset: str, limit: int | None) -> list[Sample]:
    if config.dataset not in READERS:
        raise ValueError(f"unknown dataset {config.dataset!r}; readers: {sorted(READERS)}")
    names = load_split(config.split)[subset] if config.split else None
    if names is not None and limit is not None:
        names = names[:limit]
    samples = READERS[config.dataset](config.data, names)
    samples = samples if limit is None else samples[:limit]
    return samples if config.resize == 1.0 else [resize_sample(s, config.resize) for s in samples]


def _prepare_workdir(config: TrainConfig, workdir: Path, image_channels: int) -> None:
    """Writes config.json (plus the input channels) and guides.json; refuses another config."""
    workdir.mkdir(parents=True, exist_ok=True)
    saved = workdir / "config.json"
    record = dict(json.loads(config.to_json()), image_channels=image_channels)
    if saved.exists():
        before = json.loads(saved.read_text())
        changed = {k: (before.get(k), v) for k, v in record.items()
                   if before.get(k) != v and k not in ("steps", "epochs", "eval_every",
                                                       "checkpoint_every", "log_every")}
        if changed:
            raise ValueError(f"{workdir} holds a run with another config ({changed}); "
                             "use a new workdir or the same settings")
    saved.write_text(json.dumps(record, indent=1))
    shutil.copyfile(config.guides, workdir / "guides.json")


def fit(config: TrainConfig, *, progress: bool = True) -> dict:
    """Trains (or resumes) the run described by ``config``.

    Returns:
      ``{"step", "seconds", "val": {"sbd", "abs_dic"} | None, "workdir", "state", "model"}``:
      ``val`` from the last validation of this call, ``state`` the final :class:`TrainState`.
    """
    workdir = Path(config.workdir)
    if not Path(config.guides).is_file():
        raise FileNotFoundError(
            f"guide file {config.guides} does not exist: fit guides on the training labels first "
            f"(harmonic-jax fit-guides ... --out {config.guides}, or search.fit_guides)")
    guide_params, meta = load_guides(config.guides)
    train_samples = _load(config, config.train_subset, config.train_limit)
    val_samples = _load(config, config.val_subset, config.val_limit) if config.val_subset else []
    data = stack_samples(train_samples)
    _prepare_workdir(config, workdir, data["image"].shape[-1])
    n = len(train_samples)
    steps = config.steps or config.epochs * max(n // config.batch_size, 1)

    frame = tuple(round(f * config.resize) for f in meta["frame"])
    model = build_model(config, frame)
    optimizer = optax.adam(config.lr)
    mesh = data_mesh() if config.data_parallel and jax.local_device_count() > 1 else None
    if mesh is not None and config.batch_size % mesh.devices.size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                         f"{mesh.devices.size} local devices; change it or set data_parallel=false")
    step_fn = make_train_step(
        model, optimizer, crop=config.crop, scale_range=config.scale_range, flip=config.flip,
        max_instances=config.max_instances, weighting=config.instance_weighting,
        fg_loss_weight=config.fg_loss_weight, mesh=mesh,
    )
    fresh = create_state(model, optimizer, guide_params, key=jax.random.PRNGKey(config.seed),
                         image_shape=(*config.crop, data["image"].shape[-1]))
    checkpointer = Checkpointer(workdir, keep_last=config.keep_last)
    state = checkpointer.restore(fresh) or fresh
    start_step = int(state.step)
    log = (workdir / "metrics.jsonl").open("a")
    val = None
    start = time.perf_counter()
    bar = tqdm(total=steps, initial=start_step, desc=config.name, disable=not progress,
               mininterval=1.0)
    seen, tick = 0, time.perf_counter()
    try:
        for step in range(start_step, steps):
            idx = batch_indices(config.seed, step, n, config.batch_size)
            batch = shard_batch({k: v[idx] for k, v in data.items()}, mesh)
            state, step_metrics = step_fn(state, batch)
            seen += len(idx)
            bar.update(1)
            done = step + 1
            if done % config.log_every == 0 or done == steps:
                values = {k: float(v) for k, v in step_metrics.items()}
                rate = seen / (time.perf_counter() - tick)
                seen, tick = 0, time.perf_counter()
                bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{rate:.1f}")
                log.write(json.dumps({"step": done, **values, "images_per_s": rate}) + "\n")
                log.flush()
            if done % config.checkpoint_every == 0 or done == steps:
                checkpointer.save(state)
            if val_samples and (done % config.eval_every == 0 or done == steps):
                variables = {"params": state.params, "batch_stats": state.batch_stats}
                val = evaluate(model, variables, state.guide_params, val_samples, config)
                log.write(json.dumps({"step": done, "val_sbd": val["sbd"],
                                      "val_abs_dic": val["abs_dic"]}) + "\n")
                log.flush()
                checkpointer.save(state, best_metrics=val)
                tqdm.write(f"step {done}: validation SBD {val['sbd']:.4f}, "
                           f"|DiC| {val['abs_dic']:.2f}")
    finally:
        bar.close()
        log.close()
        checkpointer.close()
    return {"step": int(state.step), "seconds": time.perf_counter() - start, "val": val,
            "workdir": str(workdir), "state": state, "model": model}


def load_run(workdir: str | Path, *, best: bool = True):
    """Loads a trained run for inference: ``(model, variables, guide_params, config)``.

    Args:
      workdir: a run folder written by :func:`fit`.
      best: the best checkpoint by validation SBD (else the newest).

    Raises:
      FileNotFoundError: ``workdir`` is not a run folder or holds no checkpoint.
    """
    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise FileNotFoundError(f"{workdir} is not a run folder (no config.json)")
    fields = json.loads((workdir / "config.json").read_text())
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in fields.items() if k in known})
    guide_params, meta = load_guides(workdir / "guides.json")
    frame = tuple(round(f * config.resize) for f in meta["frame"])
    model = build_model(config, frame)
    channels = fields["image_channels"]
    abstract = jax.eval_shape(lambda: create_state(
        model, optax.adam(config.lr), guide_params, key=jax.random.PRNGKey(0),
        image_shape=(*config.crop, channels)))
    checkpointer = Checkpointer(workdir, keep_last=config.keep_last)
    try:
        state = checkpointer.restore(abstract, best=best)
        if state is None and best:
            state = checkpointer.restore(abstract)
    finally:
        checkpointer.close()
    if state is None:
        raise FileNotFoundError(f"{workdir} holds no checkpoint yet")
    return model, {"params": state.params, "batch_stats": state.batch_stats}, \
        state.guide_params, config


def config_summary(config: TrainConfig) -> str:
    """One line naming the settings that differ from the defaults."""
    default = TrainConfig()
    diff = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(default, f.name)}
    return ", ".join(f"{k}={v}" for k, v in diff.items())
