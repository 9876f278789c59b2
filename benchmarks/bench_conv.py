"""Weight gradients of every convolution of the default and the compact U-Net: XLA's own against
:func:`harmonic_jax.conv.weight_gradient` (matrix products), same process, same inputs.

It prints, per layer, both times, their ratio, the path ``conv.uses_matmul_gradient`` picks,
and whether the pick was the faster one; then the totals of each network (XLA's, the picked
paths', and the best possible). It is the measurement behind that rule.

    .venv/bin/python benchmarks/bench_conv.py [--nets default compact] [--repeats 3]

With ``--block-rows N ...`` it times instead the matrix-product path of the default network's
7x7 SinConv 140 -> 64 at 448 x 448 (the layer the time goes to), at batch 1 and 4, for each
block size (``weight_gradient(block_rows=N)``), interleaved over the repeats; the best of each.
With ``--dot-forms`` it times one kernel row's product of that layer (every pixel at once) in
the two forms XLA:CPU could be given: contracting the batch and pixel axes,
``einsum("bmi,bmo->io")``, and the same over the flattened ``(batch * pixels)`` axis.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_train import NETS  # noqa: E402
from common import load_note  # noqa: E402

from harmonic_jax import conv  # noqa: E402

BATCH = {"default": 1, "compact": 4}  # the batches of bench_train's headline and of the recipe


def layers(widths, kernel, size, guides=12):
    """``(name, size, c_in, c_out, k)`` of each convolution of a :class:`UNet` (no 1x1 heads)."""
    out, channels = [], 3
    for level, width in enumerate(widths):
        s = size // 2**level
        out += [(f"enc{level}a", s, channels, width, 3), (f"enc{level}b", s, width, width, 3)]
        channels = width
    depth = len(widths) - 1
    for level in range(depth):
        s = size // 2 ** (depth - 1 - level)
        skip, features = widths[depth - 1 - level], widths[max(depth - 2 - level, 0)]
        out += [(f"dec{level} SinConv", s, skip + channels + guides, features, kernel),
                (f"dec{level}a", s, features, features, 3), (f"dec{level}b", s, features, features, 3)]
        channels = features
    out.append(("last SinConv", size, channels + guides, widths[0], kernel))
    return out


def _time(fn, *args, repeats):
    fn(*args).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


def block_sweep(sizes, repeats: int) -> None:
    """Times ``conv.weight_gradient`` of the 7x7 SinConv 140 -> 64 at 448 x 448 for each block
    size, at batch 1 and 4, the sizes interleaved within each repeat."""
    rng = np.random.default_rng(0)
    pad = ((3, 3), (3, 3))
    for batch in (1, 4):
        x = jnp.asarray(rng.normal(size=(batch, 448, 448, 140)).astype(np.float32))
        g = jnp.asarray(rng.normal(size=(batch, 448, 448, 64)).astype(np.float32))
        fns = {n: jax.jit(lambda x, g, n=n: conv.weight_gradient(x, g, (7, 7), pad, block_rows=n))
               for n in sizes}
        best = {n: _time(fn, x, g, repeats=1) for n, fn in fns.items()}
        for _ in range(repeats - 1):
            for n, fn in fns.items():
                best[n] = min(best[n], _time(fn, x, g, repeats=1))
        print(f"batch {batch}: " + ", ".join(f"{n} rows {t:.3f} s" for n, t in best.items()),
              flush=True)


def dot_forms(repeats: int) -> None:
    """Times one kernel row's product of the 7x7 SinConv 140 -> 64 at 448 x 448 (rows of the
    column-padded image, 7 stacked column shifts of 64 channels), at batch 1 and 4, as a dot
    contracting (batch, pixels) and as one over the flattened axis; interleaved, best of each."""
    rng = np.random.default_rng(0)
    rows = 448 * 454
    for batch in (1, 4):
        x = jnp.asarray(rng.normal(size=(batch, rows, 140)).astype(np.float32))
        s = jnp.asarray(rng.normal(size=(batch, rows, 7 * 64)).astype(np.float32))
        fns = {"bmi,bmo->io": jax.jit(lambda x, s: jnp.einsum("bmi,bmo->io", x, s)),
               "flattened mi,mo->io": jax.jit(lambda x, s: jnp.einsum(
                   "mi,mo->io", x.reshape(-1, x.shape[-1]), s.reshape(-1, s.shape[-1])))}
        best = {n: _time(fn, x, s, repeats=1) for n, fn in fns.items()}
        for _ in range(repeats - 1):
            for n, fn in fns.items():
                best[n] = min(best[n], _time(fn, x, s, repeats=1))
        print(f"batch {batch}: " + ", ".join(f"{n} {t:.3f} s" for n, t in best.items()),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=["default", "compact"])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--block-rows", type=int, nargs="+", help="time these block sizes")
    parser.add_argument("--dot-forms", action="store_true", help="time the two product forms")
    args = parser.parse_args()
    before = os.getloadavg()
    if args.dot_forms:
        dot_forms(args.repeats)
        print(load_note(before))
        return
    if args.block_rows:
        block_sweep(args.block_rows, args.repeats)
        print(load_note(before))
        return
    rng = np.random.default_rng(0)
    for net in args.nets:
        spec, batch = NETS[net], BATCH[net]
        totals = np.zeros(4)  # xla, matmul, picked, best
        print(f"\n{net} network, batch {batch}, {spec['size']} x {spec['size']}")
        print(f"{'layer':>14} {'size':>4} {'in':>5} {'out':>4} {'k':>2} {'XLA s':>7} "
              f"{'matmul s':>8} {'XLA/matmul':>10} {'picked':>7} {'right':>5}")
        for name, size, c_in, c_out, k in layers(spec["widths"], spec["kernel"], spec["size"]):
            pad = ((k // 2, k // 2),) * 2
            x = jnp.asarray(rng.normal(size=(batch, size, size, c_in)).astype(np.float32))
            g = jnp.asarray(rng.normal(size=(batch, size, size, c_out)).astype(np.float32))
            w = jnp.zeros((k, k, c_in, c_out), jnp.float32)
            xla = jax.jit(lambda x, g, w, pad=pad: jax.vjp(
                lambda w: jax.lax.conv_general_dilated(x, w, (1, 1), pad,
                                                       dimension_numbers=conv._NHWC), w)[1](g)[0])
            ours = jax.jit(lambda x, g, k=k, pad=pad: conv.weight_gradient(x, g, (k, k), pad))
            t_xla = _time(xla, x, g, w, repeats=args.repeats)
            t_ours = _time(ours, x, g, repeats=args.repeats)
            picked = conv.uses_matmul_gradient(c_in, c_out, k)
            t_picked = t_ours if picked else t_xla
            right = (t_ours <= t_xla) == picked or abs(t_ours / t_xla - 1) < 0.1
            totals += (t_xla, t_ours, t_picked, min(t_xla, t_ours))
            print(f"{name:>14} {size:4d} {c_in:5d} {c_out:4d} {k:2d} {t_xla:7.3f} {t_ours:8.3f} "
                  f"{t_xla / t_ours:10.2f} {'matmul' if picked else 'XLA':>7} "
                  f"{'yes' if right else 'NO':>5}", flush=True)
        print(f"{net}: weight gradients in all, XLA {totals[0]:.2f} s, matmul {totals[1]:.2f} s, "
              f"the rule's picks {totals[2]:.2f} s ({totals[0] / totals[2]:.2f}x XLA), best "
              f"possible {totals[3]:.2f} s")
    print(load_note(before))


if __name__ == "__main__":
    main()
