"""The training loop: ``fit(config)`` trains, validates, logs and checkpoints one run.

A run lives in ``config.workdir``: ``config.json`` and ``guides.json`` (what the weights mean),
``metrics.jsonl`` (one JSON object per log line), ``checkpoints/`` (the last k states) and
``best/`` (the best by validation SBD). Started again with the same command, a run continues
from its newest intact checkpoint: the data order is a function of (seed, step) and the
augmentation key of (rng, step), so the resumed run computes what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from harmonic_jax.checkpoint import Checkpointer
from harmonic_jax.config import LEGACY_FIELDS, TrainConfig, config_from_record
from harmonic_jax.data import READERS, Sample, load_split, resize_sample
from harmonic_jax.distributed import barrier, is_primary, process_rows, replicate
from harmonic_jax.embedding import count_instances
from harmonic_jax.evaluation import PREDICTED, evaluate_samples
from harmonic_jax.guides import load_guides, resolve_guides, save_guides
from harmonic_jax.model import UNet
from harmonic_jax.search import fit_guides
from harmonic_jax.train import LOSSES, create_state, data_mesh, make_train_step, shard_batch

__all__ = [
    "batch_indices",
    "build_model",
    "check_instance_bound",
    "config_summary",
    "derive_split",
    "evaluate",
    "fit",
    "fit_run_guides",
    "load_run",
    "make_optimizer",
    "stack_samples",
]


def build_model(config: TrainConfig, frame, family: str = "sine") -> UNet:
    """The U-Net a config describes, for guides of ``family`` (the guide file's) defined in
    ``frame``."""
    return UNet(widths=tuple(config.widths), sinconv=config.sinconv, family=family,
                frame=tuple(frame), sinconv_kernel=config.sinconv_kernel, fg_head=config.fg_head,
                norm=config.norm, upsample=config.upsample)


def make_optimizer(config: TrainConfig, steps: int) -> optax.GradientTransformation:
    """Adam at ``config.lr``: constant (the paper's), or with ``schedule="cosine"`` a linear
    warm-up over ``warmup_steps`` and a cosine decay to 1% of ``lr`` at ``steps``."""
    if config.schedule == "constant":
        return optax.adam(config.lr)
    if config.schedule == "cosine":
        warmup = min(config.warmup_steps, max(steps - 1, 0))
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, config.lr, warmup_steps=warmup, decay_steps=max(steps, warmup + 1),
            end_value=0.01 * config.lr)
        return optax.adam(schedule)
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {config.schedule!r}")


def check_instance_bound(samples: list[Sample], max_instances: int | None) -> int:
    """The static instance bound of a run, checked against the training labels (host side).

    A crop holds at most the instances of its image, so the largest count per image bounds
    every crop's. With ``max_instances=None`` that count is the bound.

    Returns:
      The bound to train with.

    Warns:
      UserWarning: an image has more instances than ``max_instances``; crops that hold more
      leave the extra instances out of the loss.
    """
    counts = [count_instances(s.labels) for s in samples]
    largest = max(counts, default=0)
    if max_instances is None:
        return max(largest, 1)
    if largest > max_instances:
        worst = samples[int(np.argmax(counts))].name
        warnings.warn(
            f"training image {worst} has {largest} instances, more than max_instances="
            f"{max_instances}: in crops holding more, the instances beyond the bound leave the "
            f"loss; set max_instances={largest} (or None) to train on all of them", stacklevel=2)
    return max_instances


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
    """Mean SBD and |DiC| over ``samples`` (already at the run's resolution).

    Returns:
      ``{"sbd", "abs_dic"}``: mean-shift inside the predicted foreground (what a user gets) when
      the network has a foreground head, else inside the true foreground; with a head, also
      ``{"sbd_true_fg", "abs_dic_true_fg"}`` inside the true foreground (the paper's protocol).
    """
    _, summary = evaluate_samples(model, variables, guide_params, config, samples, scale=1.0,
                                  ap=False)
    out = {}
    for kind, suffix in ((PREDICTED, ""), ("true fg", "_true_fg" if model.fg_head else "")):
        if kind in summary:
            out.update({"sbd" + suffix: summary[kind]["sbd"],
                        "abs_dic" + suffix: summary[kind]["abs_dic"]})
    return out


def _load(config: TrainConfig, subset: str, limit: int | None) -> list[Sample]:
    if config.dataset not in READERS:
        raise ValueError(f"unknown dataset {config.dataset!r}; readers: {sorted(READERS)}")
    names = load_split(config.split)[subset] if config.split else None
    if names is not None and limit is not None:
        names = names[:limit]
    samples = READERS[config.dataset](config.data, names)
    samples = samples if limit is None else samples[:limit]
    return samples if config.resize == 1.0 else [resize_sample(s, config.resize) for s in samples]


def derive_split(config: TrainConfig, workdir: Path, test_fraction: float = 0.2) -> Path:
    """The run's ``split.json`` (``{"train": [...], "test": [...]}``), written on first use: a
    seeded random ``test_fraction`` of the dataset's images (at least one) is held out.

    Raises:
      ValueError: the dataset holds fewer than two images.
    """
    path = workdir / "split.json"
    if path.is_file():
        return path
    names = [s.name for s in READERS[config.dataset](config.data, None)]
    if len(names) < 2:
        raise ValueError(f"{config.data} holds {len(names)} image(s); a run needs at least two "
                         "(training and held out)")
    order = np.random.default_rng(config.seed).permutation(len(names))
    held = max(1, round(test_fraction * len(names)))
    split = {"train": sorted(names[i] for i in order[held:]),
             "test": sorted(names[i] for i in order[:held])}
    path.write_text(json.dumps(split, indent=1))
    return path


def fit_run_guides(config: TrainConfig, workdir: Path, samples: list[Sample], *,
                   progress: bool = True) -> Path:
    """The run's ``guides.json``, fitted on first use on the training labels (as the network sees
    them, after ``resize``) in the frame of a training crop, with the search's defaults and the
    config's bandwidth as the margin."""
    path = workdir / "guides.json"
    if path.is_file():
        return path
    frame = tuple(config.crop)
    result = fit_guides([s.labels for s in samples], frame=frame, margin=config.bandwidth,
                        key=jax.random.PRNGKey(config.seed), progress=progress)
    save_guides(path, result.params, family="sine", frame=[round(f / config.resize) for f in frame],
                margin=result.margin, norm=result.norm, headroom=result.headroom,
                min_l2=result.min_distance, p01_l2=result.p01_distance,
                source=f"fitted by harmonic_jax.fit on the {len(samples)} training images of "
                       f"{config.data}")
    return path


_FREE = ("steps", "epochs", "eval_every", "checkpoint_every", "log_every")
_RESOLVED = {"split": "auto", "guides": "auto", "max_instances": None}  # filled in by the run


def _check_workdir(config: TrainConfig, workdir: Path) -> None:
    """Refuses to continue a run folder with another config, before anything is written to it.

    The book-keeping fields may change (``steps`` too, to train longer, unless a learning-rate
    schedule depends on it); settings a run derives (``split=auto``, ``guides=auto``,
    ``max_instances=None``) match whatever it derived; fields a run folder predates compare
    with the values they had then (``LEGACY_FIELDS``).
    """
    saved = workdir / "config.json"
    if not saved.exists():
        return
    before = json.loads(saved.read_text())
    default = json.loads(TrainConfig().to_json())
    free = set(_FREE) if config.schedule == "constant" else set(_FREE) - {"steps", "epochs"}
    changed = {}
    derived = {"split": str(workdir / "split.json"), "guides": str(workdir / "guides.json")}
    for key, value in json.loads(config.to_json()).items():
        old = before.get(key, LEGACY_FIELDS.get(key, default[key]))
        # "auto" matches what the run derived itself (not a split file given before).
        resolved = (key in _RESOLVED and value == _RESOLVED[key]
                    and (key == "max_instances" or old == derived[key]))
        if key in free or resolved or old == value:
            continue
        changed[key] = (old, value)
    if changed:
        raise ValueError(f"{workdir} holds a run with another config ({changed}); use a new "
                         "workdir or the same settings")


def _prepare_workdir(config: TrainConfig, workdir: Path, image_channels: int) -> None:
    """Writes config.json (plus the input channels) and guides.json."""
    record = dict(json.loads(config.to_json()), image_channels=image_channels)
    (workdir / "config.json").write_text(json.dumps(record, indent=1))
    source = resolve_guides(config.guides)  # a shipped file when there is no checkout
    if source.resolve() != (workdir / "guides.json").resolve():
        shutil.copyfile(source, workdir / "guides.json")


def _resume_log(path: Path, start_step: int) -> float:
    """Drops log lines past ``start_step`` (logged after the checkpoint a run resumes from) and
    returns the training seconds logged up to it (0 for a fresh run)."""
    if not path.exists():
        return 0.0
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:  # e.g. a line cut short by a crash
            warnings.warn(f"{path}:{number} is not JSON; dropped", stacklevel=3)
    kept = [x for x in lines if x.get("step", 0) <= start_step]
    path.write_text("".join(json.dumps(x) + "\n" for x in kept))
    return max((x.get("seconds", 0.0) for x in kept), default=0.0)


def _quiet(*_args) -> None:
    """Prints nothing (the log lines of processes other than 0)."""


def fit(config: TrainConfig, *, progress: bool = True) -> dict:
    """Trains (or resumes) the run described by ``config``.

    In a multi-process run (:func:`harmonic_jax.distributed.initialize` first) every process
    calls it with the same config: the batch of each step is split over all processes' devices,
    process 0 logs and shows progress, checkpoints are written once.

    Returns:
      ``{"step", "seconds", "train_seconds", "val", "workdir", "state", "model"}``: ``seconds``
      of this call; ``train_seconds`` the run's training time over all its sessions (validation
      excluded); ``val`` the last validation of this call (see :func:`evaluate`) or ``None``;
      ``state`` the final :class:`TrainState`.
    """
    if not config.data:
        raise ValueError(f"config {config.name!r} names no data folder: set data=DIR "
                         "(e.g. harmonic-jax train --config ... --set data=DIR)")
    if config.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {config.loss!r}")
    multi = jax.process_count() > 1  # harmonic_jax.distributed: every process's devices
    primary = is_primary()  # process 0 prepares the run folder and logs
    if multi and not primary:  # wait until process 0 has written split, guides and config
        barrier("harmonic_jax.fit: run folder prepared")
    workdir = Path(config.workdir)
    _check_workdir(config, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.split == "auto":
        config = dataclasses.replace(config, split=str(derive_split(config, workdir)))
    if config.guides != "auto" and not resolve_guides(config.guides).is_file():
        raise FileNotFoundError(
            f"guide file {config.guides} does not exist: fit guides on the training labels first "
            f"(harmonic-jax fit-guides ... --out {config.guides}, or search.fit_guides), or set "
            f"guides=auto to fit them into the run folder")
    train_samples = _load(config, config.train_subset, config.train_limit)
    if config.guides == "auto":
        config = dataclasses.replace(config, guides=str(fit_run_guides(
            config, workdir, train_samples, progress=progress)))
    guide_params, meta = load_guides(config.guides)
    val_samples = _load(config, config.val_subset, config.val_limit) if config.val_subset else []
    data = stack_samples(train_samples)
    config = dataclasses.replace(
        config, max_instances=check_instance_bound(train_samples, config.max_instances))
    if primary:
        _prepare_workdir(config, workdir, data["image"].shape[-1])
    if multi and primary:
        barrier("harmonic_jax.fit: run folder prepared")
    n = len(train_samples)
    steps = config.steps or config.epochs * max(n // config.batch_size, 1)

    frame = tuple(round(f * config.resize) for f in meta["frame"])
    model = build_model(config, frame, meta["family"])
    optimizer = make_optimizer(config, steps)
    mesh = data_mesh() if multi or (config.data_parallel and jax.local_device_count() > 1) \
        else None
    if mesh is not None and config.batch_size % mesh.devices.size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                         f"{mesh.devices.size} devices" + (
                             f" of the {jax.process_count()} processes; use a multiple"
                             if multi else "; change it or set data_parallel=false"))
    step_fn = make_train_step(
        model, optimizer, crop=config.crop, scale_range=config.scale_range, flip=config.flip,
        max_instances=config.max_instances, weighting=config.instance_weighting,
        fg_loss_weight=config.fg_loss_weight, pull_weight=config.pull_weight,
        background=config.background_instance, loss=config.loss, delta_v=config.delta_v,
        delta_d=config.delta_d, mesh=mesh,
    )
    fresh = create_state(model, optimizer, guide_params, key=jax.random.PRNGKey(config.seed),
                         image_shape=(*config.crop, data["image"].shape[-1]))
    checkpointer = Checkpointer(workdir, keep_last=config.keep_last)
    state = checkpointer.restore(fresh) or fresh
    if mesh is not None:  # the same values on every process, as one replicated global state
        state = replicate(state, mesh)
    start_step = int(state.step)
    trained = _resume_log(workdir / "metrics.jsonl", start_step) if primary else 0.0
    log = (workdir / "metrics.jsonl").open("a") if primary else io.StringIO()
    val = None
    start, eval_seconds = time.perf_counter(), 0.0

    def train_seconds() -> float:
        """Training wall time of the run so far (all sessions), validation excluded."""
        return trained + time.perf_counter() - start - eval_seconds
    bar = tqdm(total=steps, initial=start_step, desc=config.name, disable=not (progress and primary),
               mininterval=1.0)
    seen, tick = 0, time.perf_counter()
    try:
        for step in range(start_step, steps):
            idx = batch_indices(config.seed, step, n, config.batch_size)
            if multi:
                idx = process_rows(idx)  # this process's rows of the global batch
            batch = shard_batch({k: v[idx] for k, v in data.items()}, mesh)
            state, step_metrics = step_fn(state, batch)
            seen += config.batch_size  # the global batch, over all processes
            bar.update(1)
            done = step + 1
            if done % config.log_every == 0 or done == steps:
                values = {k: float(v) for k, v in step_metrics.items()}
                rate = seen / (time.perf_counter() - tick)
                seen, tick = 0, time.perf_counter()
                bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{rate:.1f}")
                log.write(json.dumps({"step": done, **values, "images_per_s": rate,
                                      "seconds": train_seconds()}) + "\n")
                log.flush()
            if done % config.checkpoint_every == 0 or done == steps:
                checkpointer.save(state)
                if done % config.log_every and done != steps:  # resumes read the time from here
                    log.write(json.dumps({"step": done, "seconds": train_seconds()}) + "\n")
            if val_samples and (done % config.eval_every == 0 or done == steps):
                variables = {"params": state.params, "batch_stats": state.batch_stats}
                guides_now = state.guide_params
                if multi:  # local copies: each process evaluates alone, on its first device
                    variables, guides_now = jax.device_put(jax.tree.map(
                        np.asarray, (variables, guides_now)), jax.local_devices()[0])
                tock = time.perf_counter()
                val = evaluate(model, variables, guides_now, val_samples, config)
                eval_seconds += time.perf_counter() - tock
                log.write(json.dumps({"step": done, "seconds": train_seconds(),
                                      **{f"val_{k}": v for k, v in val.items()}}) + "\n")
                log.flush()
                checkpointer.save(state, best_metrics=val)
                true_fg = (f" (true foreground: SBD {val['sbd_true_fg']:.4f}, |DiC| "
                           f"{val['abs_dic_true_fg']:.2f})" if "sbd_true_fg" in val else "")
                (tqdm.write if primary else _quiet)(f"step {done}: validation SBD {val['sbd']:.4f}, "
                           f"|DiC| {val['abs_dic']:.2f}{true_fg}")
    finally:
        bar.close()
        log.close()
        checkpointer.close()
    return {"step": int(state.step), "seconds": time.perf_counter() - start,
            "train_seconds": train_seconds(), "val": val, "workdir": str(workdir),
            "state": state, "model": model}


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
    config = config_from_record(fields)
    guide_params, meta = load_guides(workdir / "guides.json")
    frame = tuple(round(f * config.resize) for f in meta["frame"])
    model = build_model(config, frame, meta["family"])
    channels = fields["image_channels"]
    abstract = jax.eval_shape(lambda: create_state(
        model, make_optimizer(config, config.steps or 1), guide_params, key=jax.random.PRNGKey(0),
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
