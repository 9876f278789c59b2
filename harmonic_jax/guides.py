"""Guide functions: the fixed positional maps that define harmonic embeddings.

A *guide family* turns a small parameter array into ``N`` maps over the pixel grid. The paper's
family is the sine wave (eq. 3)::

    f_i(x, y; psi_i) = sin(psi_i[0] * x / W + psi_i[1] * y / H + psi_i[2])

with ``x`` the column and ``y`` the row, both in full-resolution pixels of a reference *frame* of
``H x W`` pixels. Every map in harmonic_jax is a function of absolute frame coordinates, so a tile
at ``offset=(oy, ox)`` of a large image sees exactly the values of the full image, and a decoder
layer at stride ``s`` sees the values at ``(i * s, j * s)`` (the paper's ``f(x * dL, y * dL)``).

Families are plain frozen dataclasses of pure functions, kept in a registry so that a family
defined in user code works everywhere a built-in does::

    def radial(params, height, width, *, stride=1, offset=(0, 0), frame=None): ...
    register_family("radial", GuideFamily(init=..., maps=radial))
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "ORIGINAL_CVPPP",
    "ORIGINAL_C_ELEGANS",
    "GuideFamily",
    "coord",
    "from_original",
    "frame_coordinates",
    "resolve_guides",
    "shipped_guides",
    "get_family",
    "init_sine",
    "list_families",
    "load_guides",
    "original_sine",
    "register_family",
    "save_guides",
    "sine",
]

Offset = tuple[ArrayLike, ArrayLike] | ArrayLike

#: The PyTorch original's published CVPPP guides ``[alpha, beta, phi]`` (trained at 448 x 448);
#: ``from_original(ORIGINAL_CVPPP, 448, 448)`` gives :func:`sine` parameters.
ORIGINAL_CVPPP = [
    [-24.22295570373535, 0.0, 0.4452361464500427], [-14.779047012329102, 0.0, 1.2561423778533936],
    [-16.399198532104492, 0.0, -0.3734317719936371], [18.362571716308594, 0.0, 0.7659217715263367],
    [-0.6603534817695618, 0.0, 0.24005144834518433], [-33.7341423034668, 0.0, -0.4350433051586151],
    [0.0, 4.286965370178223, 0.8109257817268372], [0.0, -19.908288955688477, 0.614355206489563],
    [0.0, 22.987812042236328, 0.28104516863822937], [0.0, 7.108828067779541, 0.4827950894832611],
    [0.0, 23.66850471496582, 0.21264752745628357], [0.0, -22.332250595092773, 1.0007625818252563],
]

#: The PyTorch original's published C. elegans guides ``[alpha, beta, phi]``.
ORIGINAL_C_ELEGANS = [
    [-10.27957820892334, 1.3967024087905884, 2.8719606399536133],
    [-42.62486267089844, 3.611276865005493, 1.9089478254318237],
    [-33.99772262573242, -0.23299844563007355, -0.5037446618080139],
    [-18.28744125366211, 4.426985263824463, -0.5736066102981567],
    [29.773433685302734, -0.08113036304712296, 0.8393508791923523],
    [-8.268046379089355, 0.033597033470869064, 1.5522394180297852],
    [0.7675176858901978, -4.629482746124268, 1.9060850143432617],
    [-0.9893818497657776, 19.173843383789062, -3.758657932281494],
    [-0.5943151116371155, -36.07362365722656, 1.2640318870544434],
    [-0.28905314207077026, 2.9335758686065674, 0.2935348451137543],
    [-0.8447716236114502, -20.75826072692871, -2.8999669551849365],
    [0.2188388705253601, -24.464981079101562, -0.18283100426197052],
]


def frame_coordinates(
    height: int,
    width: int,
    *,
    stride: int = 1,
    offset: Offset = (0, 0),
    frame: tuple[int, int] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Normalised frame coordinates of a (strided, offset) pixel grid.

    Cell ``(i, j)`` of the output grid stands for the full-resolution pixel
    ``(y, x) = (i * stride + offset[0], j * stride + offset[1])``.

    Args:
      height: full-resolution height of the region covered, in pixels.
      width: full-resolution width of the region covered, in pixels.
      stride: sampling stride ``s``; the grid has ``ceil(height / s) x ceil(width / s)`` cells.
      offset: ``(oy, ox)`` position of the region's top-left pixel in the frame. May be traced,
        so tiles at different offsets share one compilation.
      frame: ``(H, W)`` of the reference frame; defaults to ``(height, width)``.

    Returns:
      ``(y / H, x / W)``, two ``(ceil(height / s), ceil(width / s))`` float32 arrays.
    """
    height, width, stride = _check_grid(height, width, stride)
    frame_h, frame_w = (height, width) if frame is None else frame
    if frame_h <= 0 or frame_w <= 0:
        raise ValueError(f"frame must be two positive sizes (H, W), got {frame!r}")
    offset = jnp.asarray(offset, jnp.float32)
    if offset.shape != (2,):
        raise ValueError(f"offset must be (oy, ox), got shape {offset.shape}")
    rows = jnp.arange(math.ceil(height / stride), dtype=jnp.float32) * stride + offset[0]
    cols = jnp.arange(math.ceil(width / stride), dtype=jnp.float32) * stride + offset[1]
    y = jnp.broadcast_to((rows / frame_h)[:, None], (rows.shape[0], cols.shape[0]))
    x = jnp.broadcast_to((cols / frame_w)[None, :], (rows.shape[0], cols.shape[0]))
    return y, x


def _check_grid(height, width, stride) -> tuple[int, int, int]:
    for name, value in (("height", height), ("width", width), ("stride", stride)):
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(height), int(width), int(stride)


def _check_params(params: ArrayLike, what: str = "params") -> jax.Array:
    params = jnp.asarray(params)
    if params.ndim != 2 or params.shape[1] != 3:
        raise ValueError(f"{what} must have shape (N, 3), got {params.shape}")
    if not jnp.issubdtype(params.dtype, jnp.floating):
        params = params.astype(jnp.float32)
    return params


def sine(
    params: ArrayLike,
    height: int,
    width: int,
    *,
    stride: int = 1,
    offset: Offset = (0, 0),
    frame: tuple[int, int] | None = None,
) -> jax.Array:
    """Sine guide maps, eq. 3 of the paper.

    .. math::
        f_i(x, y) = \\sin(\\psi_{i,0} x / W + \\psi_{i,1} y / H + \\psi_{i,2})

    Args:
      params: ``(N, 3)`` float; per guide the x frequency, the y frequency and the phase.
      height, width, stride, offset, frame: the pixel grid, see :func:`frame_coordinates`.

    Returns:
      ``(ceil(height / stride), ceil(width / stride), N)`` float32.
    """
    params = _check_params(params).astype(jnp.float32)
    y, x = frame_coordinates(height, width, stride=stride, offset=offset, frame=frame)
    phase = x[..., None] * params[:, 0] + y[..., None] * params[:, 1] + params[:, 2]
    return jnp.sin(phase)


def init_sine(key: jax.Array, n: int, *, max_freq: float = 50.0) -> jax.Array:
    """Random sine-guide parameters as in the paper: frequencies U(0, max_freq), phases U(0, 2 pi).

    Args:
      key: a PRNG key.
      n: number of guides ``N``.
      max_freq: upper bound of the uniform frequency distribution.

    Returns:
      ``(n, 3)`` float32 parameters for :func:`sine`.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    k_freq, k_phase = jax.random.split(key)
    freqs = jax.random.uniform(k_freq, (n, 2), jnp.float32, 0.0, max_freq)
    phases = jax.random.uniform(k_phase, (n, 1), jnp.float32, 0.0, 2 * jnp.pi)
    return jnp.concatenate([freqs, phases], axis=1)


def _original_factors(height: int, width: int, stride: int) -> tuple[float, float]:
    """``(H / (H - s), W / (W - s))``: the original's ``linspace(0, 1, H / s)`` over eq. 3's
    ``y / H`` at stride ``s``."""
    if height <= stride or width <= stride:
        raise ValueError(f"the frame {(height, width)} must exceed the stride {stride} on both "
                         "sides for the original's guide convention")
    return height / (height - stride), width / (width - stride)


def from_original(sins: ArrayLike, height: int, width: int, *, stride: int = 1) -> jax.Array:
    r"""Converts the PyTorch original's ``[alpha, beta, phi]`` guides to :func:`sine` parameters.

    The original computes ``sin(alpha * row / (h - 1) + beta * col / (w - 1) + phi)`` on every
    ``h x w`` feature map (``torch.linspace(0, 1, h)``). On the stride-``s`` grid of a
    ``height x width`` frame (``h = height / s``, row ``i`` at ``y = i s``) the same maps are
    :func:`sine` with

    .. math:: \psi = [\beta W / (W - s), \; \alpha H / (H - s), \; \phi]

    so one set of original parameters is a different sine set at every stride; the
    ``"original"`` family (:func:`original_sine`) applies this per layer.

    Args:
      sins: ``(N, 3)`` original parameters ``[alpha, beta, phi]``.
      height: frame height ``H`` (> ``stride``) the original parameters were used at.
      width: frame width ``W`` (> ``stride``).
      stride: the feature map's stride ``s`` (1: the full-resolution maps).

    Returns:
      ``(N, 3)`` float32 parameters for :func:`sine` with ``frame=(height, width)``.
    """
    sins = np.asarray(sins, np.float64)
    if sins.ndim != 2 or sins.shape[1] != 3:
        raise ValueError(f"sins must have shape (N, 3), got {sins.shape}")
    fy, fx = _original_factors(height, width, stride)
    alpha, beta, phi = sins[:, 0], sins[:, 1], sins[:, 2]
    return jnp.asarray(np.stack([beta * fx, alpha * fy, phi], axis=1), jnp.float32)


def original_sine(
    params: ArrayLike,
    height: int,
    width: int,
    *,
    stride: int = 1,
    offset: Offset = (0, 0),
    frame: tuple[int, int] | None = None,
) -> jax.Array:
    r"""The PyTorch original's guide maps, in its own parameters (the ``"original"`` family).

    .. math:: f_i = \sin(\alpha_i \, y / (H - s) + \beta_i \, x / (W - s) + \phi_i)

    with ``(y, x)`` frame pixels and ``s`` the stride: on a frame-sized image this is the
    original's ``linspace(0, 1, H / s)`` at every scale (up to float32 rounding), so a ported
    checkpoint (:func:`harmonic_jax.port.load_original`) computes what the original computes.
    Unlike the original, the maps stay functions of frame coordinates, so tiles and padded
    images see what the whole frame-sized image sees.

    Args:
      params: ``(N, 3)`` float, the original's ``[alpha, beta, phi]`` (``alpha`` along rows).
      height, width, stride, offset, frame: the pixel grid, see :func:`frame_coordinates`.

    Returns:
      ``(ceil(height / stride), ceil(width / stride), N)`` float32.
    """
    params = _check_params(params).astype(jnp.float32)
    frame_h, frame_w = (height, width) if frame is None else frame
    fy, fx = _original_factors(frame_h, frame_w, stride)
    y, x = frame_coordinates(height, width, stride=stride, offset=offset, frame=frame)
    phase = y[..., None] * (params[:, 0] * fy) + x[..., None] * (params[:, 1] * fx) + params[:, 2]
    return jnp.sin(phase)


def coord(
    params: ArrayLike | None,
    height: int,
    width: int,
    *,
    stride: int = 1,
    offset: Offset = (0, 0),
    frame: tuple[int, int] | None = None,
) -> jax.Array:
    """CoordConv's maps ``(x / W, y / H)``; ``params`` is ignored (the family has none).

    Returns:
      ``(ceil(height / stride), ceil(width / stride), 2)`` float32.
    """
    del params
    y, x = frame_coordinates(height, width, stride=stride, offset=offset, frame=frame)
    return jnp.stack([x, y], axis=-1)


def _init_coord(key: jax.Array, n: int) -> jax.Array:
    del key, n
    return jnp.zeros((0, 3), jnp.float32)


@dataclasses.dataclass(frozen=True)
class GuideFamily:
    """A family of guide functions: two pure functions.

    Attributes:
      init: ``init(key, n) -> params``, a pytree of float arrays (``(n, 3)`` for the sine family).
      maps: ``maps(params, height, width, *, stride, offset, frame) -> (h, w, N) float32`` with the
        grid conventions of :func:`frame_coordinates`. It must be differentiable in ``params`` and
        traceable with a traced ``offset``.
      description: one line for listings.
      value_range: ``(low, high)`` bounds of every map value when known (``(-1, 1)`` for the
        sine family), so that the guide search can reject a margin no parameters can reach;
        ``None``: unknown.
    """

    init: Callable[[jax.Array, int], chex.ArrayTree]
    maps: Callable[..., jax.Array]
    description: str = ""
    value_range: tuple[float, float] | None = None


_FAMILIES: dict[str, GuideFamily] = {}


def register_family(name: str, family: GuideFamily, *, overwrite: bool = False) -> GuideFamily:
    """Adds a guide family to the registry so every module can use it by name.

    Args:
      name: the name to use in ``family=`` arguments and configs.
      family: the :class:`GuideFamily`.
      overwrite: replace an existing family of the same name instead of raising.

    Registering again functions of the same names (a notebook cell run twice, which makes new
    function objects) replaces the family without raising; other functions under a taken name
    need ``overwrite=True``.

    Returns:
      ``family``, so the call can be used as an expression.
    """
    if not isinstance(family, GuideFamily):
        raise TypeError(f"family must be a GuideFamily, got {type(family).__name__}")
    if name in _FAMILIES and not overwrite and not _same_functions(_FAMILIES[name], family):
        raise ValueError(f"guide family {name!r} is already registered with other functions; "
                         "pass overwrite=True")
    if name in _FAMILIES and _FAMILIES[name] is not family:
        jax.clear_caches()  # jitted code looked the old functions up by name: trace again
    _FAMILIES[name] = family
    return family


def _same_functions(a: GuideFamily, b: GuideFamily) -> bool:
    def names(f):
        return (getattr(f, "__module__", None), getattr(f, "__qualname__", repr(f)))

    return names(a.init) == names(b.init) and names(a.maps) == names(b.maps)


def get_family(family: str | GuideFamily) -> GuideFamily:
    """Looks a family up by name (a :class:`GuideFamily` passes through unchanged)."""
    if isinstance(family, GuideFamily):
        return family
    try:
        return _FAMILIES[family]
    except KeyError:
        raise ValueError(
            f"unknown guide family {family!r}; registered: {sorted(_FAMILIES)}"
        ) from None


def list_families() -> Sequence[str]:
    """Names of the registered families."""
    return sorted(_FAMILIES)


register_family(
    "sine",
    GuideFamily(init=init_sine, maps=sine, description="sin(a x/W + b y/H + c), eq. 3",
                value_range=(-1.0, 1.0)),
)
register_family(
    "original",
    GuideFamily(init=init_sine, maps=original_sine,
                description="the PyTorch original's sin(alpha row/(h-1) + beta col/(w-1) + phi)",
                value_range=(-1.0, 1.0)),
)
register_family(
    "coord",
    GuideFamily(init=_init_coord, maps=coord, description="CoordConv (x/W, y/H), no parameters"),
)


def save_guides(path, params: ArrayLike, **meta) -> None:
    """Writes guide parameters and their metadata (family, frame, margin, how they were made) as JSON.

    Args:
      path: output file.
      params: the parameters (an ``(N, 3)`` array for the sine family).
      **meta: JSON-serialisable facts; ``family`` and ``frame`` are expected by :func:`load_guides`.
    """
    record = dict(meta, params=np.asarray(params, np.float64).tolist())
    pathlib.Path(path).write_text(json.dumps(record, indent=1) + "\n")


_SHIPPED = pathlib.Path(__file__).resolve().parent / "guide_files"


def shipped_guides() -> list[str]:
    """Names of the guide files that ship with the library (``harmonic_jax/guide_files/``, also
    reachable as ``configs/guides/`` in a checkout)."""
    return sorted(p.stem for p in _SHIPPED.glob("*.json"))


def resolve_guides(path) -> pathlib.Path:
    """The file :func:`load_guides` reads for ``path``: ``path`` itself when it exists, else the
    shipped file of that name (``"cvppp_a1"``, ``configs/guides/cvppp_a1.json``), else ``path``."""
    path = pathlib.Path(path)
    shipped = _SHIPPED / f"{path.stem}.json"
    if not path.exists() and shipped.is_file() and path.suffix in ("", ".json") and \
            path.parent.name in ("", "guides"):
        return shipped
    return path


def load_guides(path) -> tuple[jax.Array, dict]:
    """Reads a file written by :func:`save_guides`, or a shipped one by name.

    Args:
      path: a JSON file; a name of :func:`shipped_guides` (``"cvppp_a1"``); or a missing
        ``configs/guides/<name>.json`` path whose name ships with the library (configs keep
        working after ``pip install`` without a checkout).

    Returns:
      ``(params, meta)``: float32 parameters and the other recorded fields (``family``, ``frame``...).

    Raises:
      FileNotFoundError: no such file. ValueError: not a guide file.
    """
    path = resolve_guides(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"guide file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"guide file {path} is not valid JSON: {err}") from None
    if not isinstance(record, dict) or "params" not in record or "family" not in record:
        raise ValueError(f"guide file {path} lacks 'params' or 'family'")
    params = jnp.asarray(np.asarray(record.pop("params"), np.float32))
    get_family(record["family"])
    return params, record
