"""Train-step time under XLA:CPU flags: each flag set in its own process, same step, same data.

The flags the issue named: YNNPACK's, XNNPACK's and oneDNN's library fusions and the thunk
runtime. The library sets none of them: none was faster in two runs here (the tables and the
caveat on this machine's drifting speed are in ``benchmarks/results/train_speed.md``).

    .venv/bin/python benchmarks/xla_flags.py [--net compact] [--batch 4] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import load_note  # noqa: E402

FLAG_SETS = {
    "defaults (YNNPACK fusions on)": "",
    "YNNPACK fusions off (Eigen)": "--xla_cpu_experimental_ynn_fusion_type=",
    "XNNPACK convolutions and dots": "--xla_cpu_experimental_xnn_fusion_type="
                                     "individual_convolution,individual_dot",
    "oneDNN convolutions and dots": "--xla_cpu_experimental_onednn_fusion_type="
                                    "individual_convolution,individual_dot",
    "oneDNN rewriter (xla_cpu_use_onednn)": "--xla_cpu_use_onednn=true",
    "no thunk runtime": "--xla_cpu_use_thunk_runtime=false",
}

_WORKER = """
import sys, time, json
sys.path.insert(0, {bench!r})
import jax
from bench_train import NETS, jax_step
step, state, data, first = jax_step({net!r}, {batch}, NETS[{net!r}]["size"])
start = time.perf_counter()
for _ in range({steps}):
    state, metrics = step(state, data)
jax.block_until_ready(metrics)
print(json.dumps(dict(step_s=(time.perf_counter() - start) / {steps}, first_s=first,
                      loss=float(metrics["loss"]))))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="compact", choices=["default", "compact"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    before = os.getloadavg()
    code = _WORKER.format(bench=os.path.dirname(os.path.abspath(__file__)), net=args.net,
                          batch=args.batch, steps=args.steps)
    print(f"{args.net} network, batch {args.batch}: step seconds by XLA_FLAGS")
    print(f"{'flags':>38} {'step s':>7} {'vs defaults':>11} {'loss after steps':>16}")
    base = None
    for name, flags in FLAG_SETS.items():
        env = dict(os.environ, XLA_FLAGS=flags)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True)
        if out.returncode:
            print(f"{name:>38} failed: {out.stderr.strip().splitlines()[-1]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or row["step_s"]
        print(f"{name:>38} {row['step_s']:7.3f} {base / row['step_s']:10.2f}x "
              f"{row['loss']:16.6f}", flush=True)
    print(load_note(before))


if __name__ == "__main__":
    main()
