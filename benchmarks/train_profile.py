"""Where the jitted train step spends its time: a ``jax.profiler`` trace of whole steps, each
thunk's time summed by the kind of work it does (read from the compiled HLO), for the default
U-Net and the compact CPU network.

Every XLA:CPU thunk (a fusion, a convolution, a dot, a copy) appears in the trace under its HLO
instruction name. The compiled module says what each is: a convolution (or a fusion holding one)
is a forward convolution, an input gradient or a weight gradient (its output has the kernel's
shape), and the JAX source path in its metadata names the layer (``SinConv``, ``DoubleConv``,
the upsampling, BatchNorm, the augmentation, the targets, Adam).

    .venv/bin/python benchmarks/train_profile.py [--nets default compact] [--batches 1 4] \
        [--out FILE.md] [--label TEXT]

To profile an older library (e.g. before a speed-up), check it out and put it first on the path:
``git worktree add /tmp/before REV`` and ``PYTHONPATH=/tmp/before`` before the command.

Shares are of the summed thunk time (the two cores can run two thunks at once, so it may exceed
the wall time, which is printed beside it).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_train import NETS, jax_step  # noqa: E402
from common import load_note  # noqa: E402


def _parse_hlo(text: str) -> tuple[dict, dict]:
    """Instructions of a compiled module: ``name -> (opcode, shape, op_name, calls)`` and
    ``computation -> [instruction names]``."""
    instructions, computations, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        if not line.startswith(" ") and "{" in line and ("%" in line or "ENTRY" in line):
            current = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
            continue
        head = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.+?) (\w[\w\-]*)\(", line)
        if not head:
            continue
        name, shape, opcode = head.groups()
        op_name = re.search(r'op_name="([^"]*)"', line)
        calls = re.search(r"calls=%?([\w.\-]+)", line)
        instructions[name] = (opcode, shape, op_name.group(1) if op_name else "",
                              calls.group(1) if calls else None, line)
        computations[current].append(name)
    return instructions, computations


def _source(name: str, instructions: dict, computations: dict) -> str:
    """The JAX source path of a thunk: its own, else the commonest of what it fuses."""
    _, _, op_name, calls, _ = instructions[name]
    inner = collections.Counter(instructions[n][2] for n in computations.get(calls, [])
                                if instructions[n][2])
    source = op_name or (inner.most_common(1)[0][0] if inner else "")
    return source.removeprefix("jit(_train_step)/")


def _kind(name: str, instructions: dict, computations: dict) -> str:
    """The kind of work of one thunk (see the module docstring)."""
    opcode, _, _, calls, _ = instructions.get(name, ("?", "", "", None, ""))
    inner = [instructions[n] for n in computations.get(calls, [])] if calls else []
    convs = [i for i in [instructions.get(name)] + inner if i and i[0] == "convolution"]
    dots = [i for i in [instructions.get(name)] + inner if i and i[0] == "dot"]
    source = _source(name, instructions, computations) if name in instructions else ""
    backward = "transpose(" in source
    if convs:
        conv = convs[0]
        layer = "SinConv" if "SinConv" in conv[2] else "3x3 conv" if "DoubleConv" in conv[2] \
            else "1x1 head" if "Conv_" in conv[2] else "conv"
        if not backward:
            return f"{layer}: forward"
        # A weight gradient slides the output gradient (a window of the image's size) over the
        # input; the other convolutions slide a kernel.
        window = re.search(r"window=\{size=([\dx]+)", conv[4])
        size = max(int(v) for v in window.group(1).split("x")) if window else 1
        return f"{layer}: weight gradient" if size > 11 else f"{layer}: input gradient"
    if "/cond/branch" in source and "UNet" in source:  # harmonic_jax.conv's CPU branch
        layer = "SinConv" if "SinConv" in source else "3x3 conv"
        return f"{layer}: weight gradient (matrix products and their copies)"
    if "ih,bhwc,jw->bijc" in source:
        return "upsampling" + (": backward" if backward else ": forward")
    if dots:
        return "other dots" + (": backward" if backward else "")
    if "BatchNorm" in source:
        return "BatchNorm" + (": backward" if backward else ": forward")
    if "random_view" in source or "map_coordinates" in source:
        return "augmentation"
    if "targets_for" in source or "relabel" in source or "segment_embeddings" in source \
            or opcode == "sort" or "sort" in source:
        return "targets"
    if "adam" in source or "optax" in source or "update" in source:
        return "Adam update"
    if "max_pool" in source or "reduce_window" in source or "select_and_scatter" in source:
        return "max-pool" + (": backward" if backward else ": forward")
    if opcode in ("copy", "transpose") or "copy" in name or "transpose" in name:
        return "copies and transposes"
    if "concatenate" in source or "concatenate" in name or opcode == "pad" or "pad" in source:
        return "concatenation, padding, masks"
    if "sin" in source or "maps" in source:
        return "guide maps"
    return "other (loss, masks, elementwise)"


def profile(net: str, batch: int, size: int, steps: int, top: int = 10):
    """Rows ``(kind, seconds per step, share)``, the ``top`` thunks ``(name, kind, seconds,
    source)``, wall seconds per step and compile seconds."""
    import jax

    import harmonic_jax

    print(f"profiling the library at {os.path.dirname(harmonic_jax.__file__)}", flush=True)
    step, state, data, compile_s = jax_step(net, batch, size)
    text = step.lower(state, data).compile().as_text()
    instructions, computations = _parse_hlo(text)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        jax.profiler.start_trace(folder)
        for _ in range(steps):
            state, metrics = step(state, data)
        jax.block_until_ready(metrics)
        jax.profiler.stop_trace()
        wall = (time.perf_counter() - start) / steps
        trace = sorted(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True))[-1]
        profile_data = jax.profiler.ProfileData.from_file(trace)
    seconds, thunks = collections.Counter(), collections.Counter()
    for plane in profile_data.planes:
        for line in plane.lines:
            for event in line.events:
                # A loop's or a branch's thunk spans the thunks of its body: count those.
                if event.name in instructions and instructions[event.name][0] not in (
                        "while", "conditional", "call"):
                    kind = _kind(event.name, instructions, computations)
                    seconds[kind] += event.duration_ns / 1e9 / steps
                    thunks[event.name, kind] += event.duration_ns / 1e9 / steps
    total = sum(seconds.values())
    rows = [(kind, s, s / total) for kind, s in seconds.most_common()]
    top = [(name, kind, s, _source(name, instructions, computations))
           for (name, kind), s in thunks.most_common(top)]
    return rows, top, wall, compile_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=["default", "compact"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--label", default="", help="appended to each table's heading")
    parser.add_argument("--top", type=int, default=12, help="list the slowest thunks")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args()
    load_before = os.getloadavg()
    lines = []
    for net in args.nets:
        for batch in args.batches:
            size = NETS[net]["size"]
            start = len(lines)
            rows, top, wall, compile_s = profile(net, batch, size, args.steps, args.top)
            total = sum(r[1] for r in rows)
            lines += [f"### {net} network, batch {batch}, {size} x {size}{args.label}", "",
                      f"Step {wall:.2f} s wall, {total:.2f} s of thunk time "
                      f"(compilation {compile_s:.0f} s).", "",
                      "| work | s / step | share |", "|---|---|---|"]
            lines += [f"| {kind} | {s:.3f} | {share:.1%} |" for kind, s, share in rows
                      if share >= 0.005]
            small = sum(s for _, s, share in rows if share < 0.005)
            lines += [f"| (kinds under 0.5% each) | {small:.3f} | {small / total:.1%} |", "",
                      f"The {len(top)} slowest thunks:", "",
                      "| thunk | work | s / step | JAX source |", "|---|---|---|---|"]
            lines += [f"| {name} | {kind} | {s:.3f} | `{source}` |" for name, kind, s, source in top]
            lines.append("")
            print("\n".join(lines[start:]), flush=True)
    note = load_note(load_before)
    print(note)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(["# Train-step profile", "",
                               f"`.venv/bin/python benchmarks/train_profile.py "
                               f"{' '.join(sys.argv[1:])}`", "", note, "", *lines]))


if __name__ == "__main__":
    main()
