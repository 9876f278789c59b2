"""Training configuration: one frozen dataclass; ``configs/<name>.py`` files return one.

As in flax's examples and big_vision, a config file is Python with ``get_config()``; overrides
are ``key=value`` strings parsed to the field's type (``crop=256,256``, ``lr=1e-4``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import typing
from collections.abc import Sequence
from pathlib import Path

__all__ = ["LEGACY_FIELDS", "TrainConfig", "apply_overrides", "config_from_record", "load_config"]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs. Paths are relative to the working directory."""

    name: str = "run"
    # Data: a reader name (see harmonic_jax.data.READERS), its folder and a split file.
    dataset: str = "cvppp"
    data: str = "../shared/data/cvppp_a1"
    split: str = "../shared/data/cvppp_a1_split.json"
    train_subset: str = "train"
    val_subset: str = "test"
    train_limit: int | None = None  # use only the first k training images
    val_limit: int | None = None
    resize: float = 1.0  # resample every image (and the guide frame) by this factor at load time
    # Guides (eq. 3-4): a file written by `harmonic-jax fit-guides`.
    guides: str = "configs/guides/cvppp_a1.json"
    # Network.
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)
    sinconv: bool = True
    sinconv_kernel: int = 7
    norm: str = "batch"  # "batch" (the original's) or "group"
    # Decoder upsampling: "half_pixel" (shift-equivariant: tiled prediction equals one pass) or
    # "align_corners" (the original's; its sampling positions depend on the image size).
    upsample: str = "half_pixel"
    # A foreground output (1x1 head, BCE on labels > 0): what tells a user's image's background
    # from its instances. Without it, pass masks at inference or train with background_instance.
    fg_head: bool = True
    # Optimisation (paper: Adam, lr 1e-5, 448 crops, scaling and flips).
    lr: float = 1e-5
    schedule: str = "constant"  # "constant" (paper) or "cosine": linear warm-up, cosine decay
    warmup_steps: int = 0
    batch_size: int = 4
    epochs: int = 500
    steps: int | None = None  # overrides epochs when set
    crop: tuple[int, int] = (448, 448)
    scale_range: tuple[float, float] = (0.75, 1.25)
    flip: bool = True
    # Static bound per crop (CVPPP A1: at most 20 leaves); None: the training set's largest
    # instance count. Instances beyond it leave the loss (fit warns).
    max_instances: int | None = 32
    instance_weighting: bool = False  # per-pixel weight 1 / log(instance area)
    pull_weight: float = 0.0  # weight of train.pull_loss beside eq. 5 (0: the paper's objective)
    # "harmonic" (eq. 5) or "discriminative" (De Brabandere et al. 2017, the paper's baseline:
    # harmonic_jax.baselines.discriminative) with its pull and push margins; the latter is
    # clustered with bandwidth delta_v, as its paper did (cluster_kwargs).
    loss: str = "harmonic"
    delta_v: float = 0.5
    delta_d: float = 1.5
    # True: the background is an instance with its own target, eq. 5 over the full image.
    background_instance: bool = False
    # The BCE's weight beside eq. 5, whose L1 sums N = 12 channels: at 1 the head reached a
    # foreground IoU of 0.49-0.70 on configs/tiny.py's plants in 400 steps, at 10 0.94-0.96.
    fg_loss_weight: float = 10.0
    # Inference (paper: mean-shift with bandwidth = margin = 0.5).
    bandwidth: float = 0.5
    min_size: int | None = None  # None: cluster.mean_shift's measured default
    max_gap: float | None = None  # None: cluster.mean_shift's measured default
    # Book-keeping.
    seed: int = 0
    workdir: str = "runs/run"
    log_every: int = 10
    eval_every: int = 500
    checkpoint_every: int = 100
    keep_last: int = 3
    data_parallel: bool = True  # split each batch over all local devices

    def cluster_kwargs(self) -> dict:
        """``bandwidth``, ``min_size`` and ``max_gap`` for ``cluster.mean_shift`` / ``segment``;
        the library's defaults where the config leaves them ``None``. A network trained with the
        discriminative loss is clustered with bandwidth ``delta_v``, as De Brabandere et al. did."""
        bandwidth = self.delta_v if self.loss == "discriminative" else self.bandwidth
        out = {"bandwidth": bandwidth, "min_size": self.min_size, "max_gap": self.max_gap}
        return {k: v for k, v in out.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


# Values of fields that run folders and model folders written before the field existed meant.
LEGACY_FIELDS = {"upsample": "align_corners"}


def config_from_record(record: dict) -> TrainConfig:
    """The :class:`TrainConfig` of a saved ``config.json`` (a run or model folder): lists become
    tuples, unknown keys (``image_channels``) are dropped, and fields the file predates take
    the value they had then (:data:`LEGACY_FIELDS`)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    fields = dict(LEGACY_FIELDS, **record)
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in fields.items() if k in known})


def _parse(field: dataclasses.Field, text: str):
    hint = typing.get_type_hints(TrainConfig)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args and typing.get_origin(hint) in (typing.Union, type(int | None)) else hint
    if text.lower() in ("none", "null") and type(None) in typing.get_args(hint):
        return None
    if typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        return tuple(item(v) for v in text.split(","))
    if base is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{field.name} must be true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return base(text)


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Returns ``config`` with ``key=value`` overrides applied (values parsed to field types)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"override {item!r}: expected key=value with key one of "
                             f"{sorted(fields)}")
        try:
            changes[key] = _parse(fields[key], value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"override {item!r}: {err}") from None
    return dataclasses.replace(config, **changes)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Loads ``get_config()`` from a config file and applies overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"harmonic_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, TrainConfig):
        raise ValueError(f"{path}: get_config() must return a TrainConfig")
    return apply_overrides(config, overrides)
