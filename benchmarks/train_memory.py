"""Memory of the jitted train step: XLA's temporaries and the process's peak, per scheduler.

For the default network (or ``--net compact``) at each batch it compiles the train step of
``bench_train.py`` twice, with XLA:CPU's memory-optimised thunk scheduler (the library's
default, ``train.CPU_MEMORY_SCHEDULER``) and with XLA's default one, each in its own process, and
prints XLA's temporary buffer size (``memory_analysis().temp_size_in_bytes``: every activation,
gradient and scratch buffer of the step) and, with ``--steps N``, the peak resident memory of the
process after N steps and their mean time.

    .venv/bin/python benchmarks/train_memory.py [--net default] [--batches 1 4] [--steps 0]
        [--src DIR]

``--src DIR`` measures the library in ``DIR/harmonic_jax`` instead (e.g. a copy with the
``nn.remat`` lines of ``model.py`` deleted, to measure what the rematerialisation saves).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench_train import NETS, REPO, build_step  # noqa: E402
from common import load_note  # noqa: E402


def worker(net: str, batch: int, steps: int, memory_scheduler: bool) -> dict:
    """Compiles (and with ``steps`` runs) the step in this process; returns its figures."""
    import jax

    import harmonic_jax

    step, state, data = build_step(net, batch, NETS[net]["size"],
                                   memory_scheduler=memory_scheduler)
    compiled = step.lower(state, data).compile()
    out = dict(library=os.path.dirname(harmonic_jax.__file__),
               temp_mib=compiled.memory_analysis().temp_size_in_bytes / 2**20)
    if steps:
        state, metrics = compiled(state, data)
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, data)
        jax.block_until_ready(metrics)
        out.update(step_s=(time.perf_counter() - start) / steps, loss=float(metrics["loss"]),
                   peak_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=sorted(NETS), default="default")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=0, help="also run this many steps")
    parser.add_argument("--src", help="folder holding the harmonic_jax to measure")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.net, args.batch, args.steps, bool(args.worker))))
        return
    before = os.getloadavg()
    env = dict(os.environ, PYTHONPATH=os.path.abspath(args.src or REPO))
    print(f"{'net':>7} {'batch':>5} {'scheduler':>17} {'XLA temp MiB':>12} {'peak MiB':>9} "
          f"{'step s':>7}")
    for batch in args.batches:
        for memory_scheduler in (1, 0):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(memory_scheduler), "--net", args.net,
                 "--batch", str(batch), "--steps", str(args.steps)],
                check=True, capture_output=True, text=True, env=env)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            name = "memory-optimised" if memory_scheduler else "XLA's default"
            peak = f"{row['peak_mib']:9.0f}" if "peak_mib" in row else f"{'-':>9}"
            step = f"{row['step_s']:7.2f}" if "step_s" in row else f"{'-':>7}"
            print(f"{args.net:>7} {batch:5d} {name:>17} {row['temp_mib']:12.0f} {peak} {step}",
                  flush=True)
    print(f"library: {row['library']}")
    print(load_note(before))


if __name__ == "__main__":
    main()
