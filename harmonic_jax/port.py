"""Checkpoints of the PyTorch original (kulikovv/harmonic) in harmonic_jax.

:func:`load_original` reads a state dict of the original's ``UNet`` (``models/unet.py``: encoder
64-128-256-512-512, four SinConv up-blocks and a SinConv output block; METHOD.md section B) into
the variables of our default :class:`~harmonic_jax.model.UNet`, configured to compute what the
original computes:

- its guide maps with the ``"original"`` family (:func:`harmonic_jax.guides.original_sine`:
  ``linspace(0, 1, h)`` at every scale, for a frame of the original's input size);
- its ``align_corners=True`` bilinear upsampling;
- its input normalisation (torchvision's ``Normalize`` with ImageNet statistics, as in its
  CVPPP training notebook) inside the network, so our 0-255 pipeline feeds it unchanged;
- its BatchNorm running statistics (eval mode), its OIHW weights as HWIO.

The SinConv inputs are concatenated in the same order in both (skip, upsampled, then the 12
guide maps), so the 7x7 weights need no permutation. One command runs an original checkpoint on
a folder of images::

    harmonic-jax predict --model original:path/to/checkpoint.pth images/ --scale 1
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from harmonic_jax.config import TrainConfig
from harmonic_jax.model import UNet

__all__ = ["GREY_NORM", "IMAGENET_NORM", "ORIGINAL_MIN_SIZE", "ORIGINAL_MIN_SIZE_GREY",
           "load_original", "original_names"]

#: ``(mean, std)`` of torchvision's ImageNet normalisation, the original's input transform for
#: its RGB (CVPPP) network.
IMAGENET_NORM = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

#: Its grey (C. elegans) network's: ``Normalize(0.5, 0.5)``.
GREY_NORM = ((0.5,), (0.5,))

#: The original drops predicted labels under 1000 pixels on CVPPP (RGB), 500 on C. elegans (grey).
ORIGINAL_MIN_SIZE = 1000
ORIGINAL_MIN_SIZE_GREY = 500

_WIDTHS = (64, 128, 256, 512, 512)


def _double(ours: str, theirs: str) -> dict[tuple[str, ...], str]:
    """Our names of one (conv, BN, ReLU) x 2 block -> the original's prefixes."""
    return {(ours, "Conv_0"): f"{theirs}.0", (ours, "BatchNorm_0"): f"{theirs}.1",
            (ours, "Conv_1"): f"{theirs}.3", (ours, "BatchNorm_1"): f"{theirs}.4"}


def original_names() -> dict[tuple[str, ...], str]:
    """Our module paths (in ``params``) -> the original's state-dict prefixes (without
    ``module.``), for every convolution and BatchNorm of the default U-Net."""
    names = _double("DoubleConv_0", "inc.conv.conv")
    for k in range(1, 5):
        names |= _double(f"DoubleConv_{k}", f"down{k}.mpconv.1.conv")
        names[(f"SinConv_{k - 1}", "Conv_0")] = f"up{k}.sinconv.conv"
        names |= _double(f"DoubleConv_{k + 4}", f"up{k}.conv.conv")
    names[("SinConv_4", "Conv_0")] = "outc.sinconv.conv"
    names[("Conv_0",)] = "outc.conv"
    return names


_SINCONVS = ("up1", "up2", "up3", "up4", "outc")


def _read(source) -> dict[str, np.ndarray]:
    """A state dict as float64 numpy arrays, with the ``module.`` prefix of DataParallel gone."""
    if isinstance(source, (str, os.PathLike)):
        try:
            import torch
        except ImportError as err:
            raise ImportError("reading a PyTorch checkpoint file needs torch: pip install "
                              "'harmonic_jax[parity]', or pass a dict of numpy arrays") from err
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no checkpoint file {path}")
        try:  # weights_only: a checkpoint file cannot run code here
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many kinds
            raise ValueError(
                f"{path} is not a readable PyTorch state dict ({type(err).__name__}: {err}). "
                "A whole pickled model, or a Python 2 pickle (the original's .t7 files), can be "
                "re-saved where you trust it: torch.save(torch.load(path, weights_only=False, "
                "encoding='latin1').state_dict() (or the dict itself), new_path)") from None
    if isinstance(source, Mapping) and "state_dict" in source and isinstance(
            source["state_dict"], Mapping):
        source = source["state_dict"]  # {"state_dict": ..., "epoch": ...} training checkpoints
    if hasattr(source, "state_dict") and callable(source.state_dict):
        source = source.state_dict()  # a torch.nn.Module
    if not isinstance(source, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got "
                         f"{type(source).__name__}")
    out = {}
    for key, value in source.items():
        key = key[len("module."):] if key.startswith("module.") else key
        value = value.detach().cpu().double().numpy() if hasattr(value, "detach") else value
        out[key] = np.asarray(value, np.float64)
    return out


def _guides(state: Mapping[str, np.ndarray], atol: float) -> np.ndarray:
    """The ``(N, 3)`` ``[alpha, beta, phi]`` of the SinConv layers, which must agree."""
    per_layer = {}
    for layer in _SINCONVS:
        prefix = f"{layer}.sinconv.addcoords."
        n = len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})
        try:
            per_layer[layer] = np.array([[state[f"{prefix}{i}.{p}"].reshape(()) for p in
                                          ("alpha", "beta", "phase")] for i in range(n)])
        except KeyError as err:
            raise ValueError(f"the state dict lacks guide parameter {err.args[0]}") from None
    first = per_layer["up1"]
    if first.shape[0] == 0:
        raise ValueError("the state dict has no guide parameters (up1.sinconv.addcoords.*)")
    for layer, params in per_layer.items():
        if params.shape != first.shape or not np.allclose(params, first, rtol=0, atol=atol):
            raise ValueError(
                f"the guide parameters of {layer} differ from up1's (largest difference "
                f"{np.max(np.abs(params - first)) if params.shape == first.shape else 'shape'}); "
                "harmonic_jax shares one set across the SinConv layers")
    return first


def load_original(
    source,
    *,
    frame: tuple[int, int] = (448, 448),
    input_norm: tuple | str | None = "auto",
    guide_atol: float = 1e-6,
) -> tuple[UNet, dict, jnp.ndarray, TrainConfig]:
    """Reads a checkpoint of the PyTorch original into our default U-Net.

    Example::

        model, variables, guide_params, config = port.load_original("cvppp.pth")
        seg = evaluation.segment_image(model, variables, guide_params, config, image, scale=1)

    Args:
      source: a file saved with ``torch.save(model.state_dict())`` (or a training checkpoint
        holding one under ``"state_dict"``), or the state dict itself (tensors or numpy
        arrays); keys may carry DataParallel's ``module.`` prefix.
      frame: ``(H, W)`` of the images the original was run on (448 x 448 for its CVPPP
        weights); its guide maps span ``linspace(0, 1, H / s)`` over that frame at stride
        ``s``. Images of that size get exactly the original's output; give larger ones the
        same scale (they extend the frame's maps), or resize them to the frame as the original
        did.
      input_norm: ``(mean, std)`` the original normalised ``images / 255`` with; ``"auto"``:
        as its notebooks did, ImageNet's for an RGB network (CVPPP) and ``(0.5, 0.5)`` for a
        grey one (C. elegans); ``None``: the network takes ``images / 255 - 0.5`` as ours do.
      guide_atol: largest difference tolerated between the guide parameters of the five
        SinConv layers (ours share one set; the original stores one per layer).

    Returns:
      ``(model, variables, guide_params, config)`` as :func:`harmonic_jax.pretrained.load`
      returns them: the :class:`~harmonic_jax.model.UNet`, ``{"params", "batch_stats"}``, the
      ``(N, 3)`` float32 ``[alpha, beta, phi]`` and a config with the original's inference
      settings where ours has them: mean-shift bandwidth 0.5, the background as the largest
      cluster, its minimum area (1000 pixels for an RGB network, 500 for a grey one) as
      ``min_size``. The clustering itself is ours (:func:`harmonic_jax.cluster.mean_shift`:
      clusters split into connected parts, parts under ``min_size`` merged into a touching
      instance or dropped), not the original's sklearn pass over every pixel.

    Raises:
      ValueError: not a state dict, or one of another architecture (missing, unexpected or
        misshapen entries are named), or guide parameters that differ between layers.
      FileNotFoundError: no such file.
    """
    state = _read(source)
    guide_params = _guides(state, guide_atol)
    n = guide_params.shape[0]
    first = state.get("inc.conv.conv.0.weight")
    if first is None or first.ndim != 4:
        raise ValueError("not a state dict of the original UNet: no inc.conv.conv.0.weight "
                         f"(keys start with {sorted(state)[:3]})")
    channels = first.shape[1]
    if isinstance(input_norm, str):
        if input_norm != "auto":
            raise ValueError(f"input_norm must be (mean, std), 'auto' or None, got {input_norm!r}")
        input_norm = IMAGENET_NORM if channels == 3 else GREY_NORM if channels == 1 else None
    model = UNet(widths=_WIDTHS, out_channels=n, family="original", frame=tuple(frame),
                 sinconv_kernel=7, upsample="align_corners", input_norm=input_norm)
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    used = set()

    def take(key, shape):
        if key not in state:
            raise ValueError(f"the state dict lacks {key}")
        value = state[key]
        if value.shape != shape:
            raise ValueError(f"{key} has shape {value.shape}, the original UNet's is {shape}")
        used.add(key)
        return value

    def put(tree, path, leaf, value):
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(value, jnp.float32)

    widths_in = _in_channels(channels, n)
    for path, prefix in original_names().items():
        if "BatchNorm" in path[-1]:
            c = widths_in[path][1]
            put(params, path, "scale", take(f"{prefix}.weight", (c,)))
            put(params, path, "bias", take(f"{prefix}.bias", (c,)))
            put(stats, path, "mean", take(f"{prefix}.running_mean", (c,)))
            put(stats, path, "var", take(f"{prefix}.running_var", (c,)))
            used.add(f"{prefix}.num_batches_tracked")
        else:
            c_in, c_out, k = widths_in[path]
            weight = take(f"{prefix}.weight", (c_out, c_in, k, k))
            put(params, path, "kernel", weight.transpose(2, 3, 1, 0))  # OIHW -> HWIO
            put(params, path, "bias", take(f"{prefix}.bias", (c_out,)))
    used |= {k for k in state if ".sinconv.addcoords." in k}
    extra = sorted(set(state) - used)
    if extra:
        raise ValueError(f"the state dict has entries the original UNet does not: {extra[:8]}"
                         + (f" and {len(extra) - 8} more" if len(extra) > 8 else ""))
    config = dataclasses.replace(
        TrainConfig(), name="original", widths=_WIDTHS, sinconv_kernel=7,
        upsample="align_corners", fg_head=False, background_instance=True, bandwidth=0.5,
        min_size=ORIGINAL_MIN_SIZE_GREY if channels == 1 else ORIGINAL_MIN_SIZE,
        crop=tuple(frame), resize=1.0)
    return model, {"params": params, "batch_stats": stats}, jnp.asarray(
        guide_params, jnp.float32), config


def _in_channels(channels: int, n: int) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Each layer's ``(c_in, c_out, kernel)`` (convolutions) or ``(c, c)`` (BatchNorm)."""
    shapes: dict[tuple[str, ...], tuple[int, ...]] = {}

    def double(name, c_in, c_out):
        shapes[(name, "Conv_0")] = (c_in, c_out, 3)
        shapes[(name, "BatchNorm_0")] = (c_out, c_out)
        shapes[(name, "Conv_1")] = (c_out, c_out, 3)
        shapes[(name, "BatchNorm_1")] = (c_out, c_out)

    c = channels
    for k, width in enumerate(_WIDTHS):
        double(f"DoubleConv_{k}", c, width)
        c = width
    for k, out in enumerate((256, 128, 64, 64)):
        skip = _WIDTHS[3 - k]
        shapes[(f"SinConv_{k}", "Conv_0")] = (skip + c + n, out, 7)
        double(f"DoubleConv_{k + 5}", out, out)
        c = out
    shapes[("SinConv_4", "Conv_0")] = (c + n, c, 7)
    shapes[("Conv_0",)] = (c, n, 1)
    return shapes
