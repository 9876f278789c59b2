"""Trained networks shipped with the library: ``load("cvppp_a1")``.

Each model is a folder of package data, ``harmonic_jax/pretrained/<name>/``:

- ``variables.msgpack``: the network's ``{"params", "batch_stats"}`` (flax serialization);
- ``guides.json``: the guide parameters it was trained for (and their frame);
- ``config.json``: the training config (its network, resolution and inference settings);
- ``manifest.json``: the SHA-256 of those three files, the command that trained it, its steps,
  wall time, validation curve and held-out scores.

:func:`export_run` writes such a folder from a run folder of :func:`~harmonic_jax.fit.fit`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import serialization

from harmonic_jax.config import config_from_record
from harmonic_jax.guides import load_guides

__all__ = ["available", "export_run", "load", "model_dir"]

_ROOT = Path(__file__).resolve().parent
_WEIGHTS = "variables.msgpack"


def available() -> list[str]:
    """Names of the shipped models."""
    return sorted(p.name for p in _ROOT.iterdir() if (p / "manifest.json").is_file())


def model_dir(name: str | Path) -> Path:
    """The folder of a shipped model (by name), or ``name`` itself when it is a model folder
    (one written by :func:`export_run`).

    Raises:
      ValueError: no model of that name ships with the library.
    """
    shipped = _ROOT / str(name)
    folder = shipped if (shipped / "manifest.json").is_file() else Path(name)
    if not (folder / "manifest.json").is_file():
        raise ValueError(f"no pretrained model {str(name)!r}; available: {available()}")
    return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(name: str | Path = "cvppp_a1"):
    """Loads a shipped model, an exported model folder, or a training run folder, for inference.

    Example::

        model, variables, guide_params, config = pretrained.load("cvppp_a1")
        seg = evaluation.segment_image(model, variables, guide_params, config, image)
        labels = seg.labels["predicted fg"]  # (H, W) int32 at the image's own size

    The network works at ``config.resize`` times the resolution of the data it was trained on
    (CVPPP A1 at 0.5: resize images by it first; :func:`harmonic_jax.evaluation.segment_image`
    does, and maps the labels back).

    Args:
      name: a name of :func:`available`, a folder written by :func:`export_run`, or a run folder
        of :func:`~harmonic_jax.fit.fit` (its best checkpoint by validation SBD).

    Returns:
      ``(model, variables, guide_params, config)``: the :class:`~harmonic_jax.model.UNet`, its
      ``{"params", "batch_stats"}``, the ``(N, 3)`` guide parameters and the
      :class:`~harmonic_jax.config.TrainConfig` it was trained with.

    Raises:
      ValueError: unknown name, or a file's SHA-256 differs from the manifest's (a corrupt or
        altered file).
      FileNotFoundError: a run folder without a checkpoint.
    """
    if not (_ROOT / str(name) / "manifest.json").is_file() and not (
            Path(name) / "manifest.json").is_file() and (Path(name) / "config.json").is_file():
        from harmonic_jax.fit import load_run

        return load_run(name)
    from harmonic_jax.fit import build_model  # fit imports the training stack; load lazily

    folder = model_dir(name)
    manifest = json.loads((folder / "manifest.json").read_text())
    for file, expected in manifest["sha256"].items():
        digest = _sha256(folder / file) if (folder / file).is_file() else "missing"
        if digest != expected:
            raise ValueError(f"{folder / file}: SHA-256 {digest} does not match the manifest's "
                             f"{expected}; the file is corrupt or was changed")
    weights = folder / _WEIGHTS
    fields = json.loads((folder / "config.json").read_text())
    config = config_from_record(fields)
    guide_params, meta = load_guides(folder / "guides.json")
    frame = tuple(round(f * config.resize) for f in meta["frame"])
    model = build_model(config, frame, meta["family"])
    channels = fields["image_channels"]
    target = jax.eval_shape(lambda: model.init(
        jax.random.PRNGKey(0), jnp.zeros((1, *config.crop, channels)), guide_params=guide_params))
    variables = serialization.from_bytes(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                      target), weights.read_bytes())
    return model, variables, guide_params, config


def export_run(workdir: str | Path, dest: str | Path, *, best: bool = False,
               config_updates: dict | None = None, **record) -> Path:
    """Writes a run's newest (or best) checkpoint as a shippable model folder (see the module
    docstring).

    Args:
      workdir: a run folder of :func:`~harmonic_jax.fit.fit`.
      dest: the model folder to write (e.g. ``harmonic_jax/pretrained/cvppp_a1``).
      best: the checkpoint with the best validation SBD instead of the newest. Leave it off when
        the validation images are the held-out test images: choosing by them would bias the
        scores reported on them.
      config_updates: config fields to change in the shipped ``config.json`` (e.g. inference
        settings measured after training: ``min_size``).
      **record: JSON-serialisable facts for the manifest (command, steps, held-out scores...);
        the validation curve is read from the run's ``metrics.jsonl``.

    Returns:
      ``dest``.
    """
    from harmonic_jax.fit import load_run

    workdir, dest = Path(workdir), Path(dest)
    _, variables, _, _ = load_run(workdir, best=best)
    dest.mkdir(parents=True, exist_ok=True)
    variables = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), variables)
    (dest / _WEIGHTS).write_bytes(serialization.to_bytes(variables))
    shutil.copyfile(workdir / "guides.json", dest / "guides.json")
    fields = dict(json.loads((workdir / "config.json").read_text()), **(config_updates or {}))
    config_from_record(fields)  # the updated fields must still make a TrainConfig
    (dest / "config.json").write_text(json.dumps(fields, indent=1))
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines() if x]
    curve = [x for x in lines if "val_sbd" in x]
    files = (_WEIGHTS, "guides.json", "config.json")
    manifest = {"sha256": {f: _sha256(dest / f) for f in files},
                "bytes": (dest / _WEIGHTS).stat().st_size, "validation_curve": curve, **record}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dest
