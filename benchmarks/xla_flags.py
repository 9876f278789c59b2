"""Train-step time under XLA:CPU flags: each flag set in its own process running
``bench_train.py``'s worker, same step, same data.

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
from bench_train import NETS  # noqa: E402
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="compact", choices=["default", "compact"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    before = os.getloadavg()
    worker = [sys.executable, os.path.join(os.path.dirname(__file__), "bench_train.py"),
              "--worker", "jax", "--net", args.net, "--batch", str(args.batch),
              "--steps", str(args.steps), "--size", str(NETS[args.net]["size"])]
    print(f"{args.net} network, batch {args.batch}: step seconds by XLA_FLAGS")
    print(f"{'flags':>38} {'step s':>7} {'vs defaults':>11} {'loss of last step':>17}")
    base = None
    for name, flags in FLAG_SETS.items():
        env = dict(os.environ, XLA_FLAGS=flags)
        out = subprocess.run(worker, env=env, capture_output=True, text=True)
        if out.returncode:
            print(f"{name:>38} failed: {out.stderr.strip().splitlines()[-1]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or row["step_s"]
        print(f"{name:>38} {row['step_s']:7.3f} {base / row['step_s']:10.2f}x "
              f"{row['loss']:17.6f}", flush=True)
    print(load_note(before))


if __name__ == "__main__":
    main()
