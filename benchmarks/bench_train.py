"""Train-step throughput and peak memory: our default U-Net against a PyTorch model of the same
architecture and parameter count (the original's, 28,837,260 parameters), same machine, same
threads, 448 x 448 inputs, Adam, L1 loss on 12 outputs; and the compact CPU network of
``configs/cvppp_a1_cpu.py`` (widths 16-32-64-128, 3x3 SinConvs, foreground head) at 256 x 256.

Each framework runs in its own process (so peak memory is its own). Ours times the full jitted
step (on-device augmentation, targets, forward, backward, update); compilation is reported
apart, and the compile counter checks that no step after the first recompiles.

    .venv/bin/python benchmarks/bench_train.py [--nets default compact] [--batches 1 4] [--steps 3]
        [--before REV]

``--before REV`` adds the train step of the library at git revision ``REV`` (e.g. the commit
before a speed-up), measured in the same run with the same script.

It ends with a check that the machine was idle (other processes' CPU time over the run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import load_note  # noqa: E402

GUIDES = "configs/guides/cvppp_a1.json"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# The networks measured: the default (the original's architecture) and the compact CPU network
# of configs/cvppp_a1_cpu.py (the recipe of the shipped model), each at its training crop size.
NETS = {
    "default": dict(widths=(64, 128, 256, 512, 512), kernel=7, fg_head=False, size=448),
    "compact": dict(widths=(16, 32, 64, 128), kernel=3, fg_head=True, size=256),
}


def build_step(net: str, batch: int, size: int, **step_kwargs):
    """The jitted train step of ``net`` (``step_kwargs`` go to ``make_train_step``), its state
    and a batch of random ``size``-square images on the device, before any step:
    ``(step, state, data)``."""
    import jax
    import numpy as np
    import optax

    from harmonic_jax import guides, train
    from harmonic_jax.model import UNet

    params, meta = guides.load_guides(os.path.join(REPO, GUIDES))
    spec = NETS[net]
    model = UNet(widths=spec["widths"], sinconv_kernel=spec["kernel"], fg_head=spec["fg_head"],
                 frame=tuple(meta["frame"]))
    optimizer = optax.adam(1e-5)
    state = train.create_state(model, optimizer, params, key=jax.random.PRNGKey(0),
                               image_shape=(size, size, 3))
    step = train.make_train_step(model, optimizer, crop=(size, size), scale_range=(1.0, 1.0),
                                 flip=False, **step_kwargs)
    rng = np.random.default_rng(0)
    data = dict(image=rng.integers(0, 255, (batch, size, size, 3)).astype(np.uint8),
                labels=np.kron(rng.integers(0, 16, (batch, 8, 8)),
                               np.ones((1, size // 8, size // 8), np.int64)).astype(np.int32),
                size=np.full((batch, 2), size, np.int32))
    return step, state, jax.device_put(data)


def jax_step(net: str, batch: int, size: int):
    """:func:`build_step` after one (compiling) step: ``(step, state, data,
    first_step_seconds)``."""
    import jax

    step, state, data = build_step(net, batch, size)
    start = time.perf_counter()
    state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    return step, state, data, time.perf_counter() - start


def run_jax(net: str, batch: int, steps: int, size: int) -> dict:
    import jax

    import harmonic_jax
    from harmonic_jax.model import count_params

    step, state, data, compile_s = jax_step(net, batch, size)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / steps
    before = os.environ.get("BENCH_BEFORE_REV")
    if before and not harmonic_jax.__file__.startswith(os.environ["PYTHONPATH"]):
        raise RuntimeError(f"the 'before' worker imported {harmonic_jax.__file__}")
    return dict(framework=f"jax before ({before[:12]})" if before else "jax", batch=batch,
                params=count_params(state.params),
                step_s=seconds, images_per_s=batch / seconds, first_step_s=compile_s,
                compilations=step._cache_size(), peak_mib=_peak_mib(),
                loss=float(metrics["loss"]))


def torch_unet(widths=(64, 128, 256, 512, 512), kernel=7, fg_head=False):
    """The original's architecture in PyTorch (28,837,260 parameters for RGB, N = 12, with the
    default arguments), or the compact network's (``fg_head``: a 1x1 foreground head beside the
    embedding's)."""
    import torch
    from torch import nn

    sins = json.load(open(GUIDES))["params"]  # our (N, 3) [x freq, y freq, phase] in a 448 frame

    class SinMaps(nn.Module):
        def __init__(self, stride):
            super().__init__()
            self.stride = stride
            self.register_buffer("psi", torch.tensor(sins, dtype=torch.float32))

        def forward(self, x):
            b, _, h, w = x.shape
            ys = torch.arange(h, dtype=torch.float32) * self.stride / 448
            xs = torch.arange(w, dtype=torch.float32) * self.stride / 448
            phase = (xs[None, None, :] * self.psi[:, 0, None, None]
                     + ys[None, :, None] * self.psi[:, 1, None, None] + self.psi[:, 2, None, None])
            return torch.cat([x, torch.sin(phase).expand(b, -1, -1, -1)], 1)

    def double(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(True),
                             nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(True))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ModuleList([double(3, widths[0])] + [
                double(a, b) for a, b in zip(widths[:-1], widths[1:])])
            depth = len(widths) - 1
            self.dec = nn.ModuleList()
            channels = widths[-1]
            for level in range(depth):
                skip = widths[depth - 1 - level]
                out = widths[max(depth - 2 - level, 0)]
                self.dec.append(nn.ModuleList([
                    SinMaps(2 ** (depth - 1 - level)),
                    nn.Conv2d(skip + channels + 12, out, kernel, padding=kernel // 2),
                    double(out, out)]))
                channels = out
            self.last = nn.Sequential(SinMaps(1), nn.Conv2d(channels + 12, widths[0], kernel,
                                                            padding=kernel // 2))
            self.head = nn.Conv2d(widths[0], 13 if fg_head else 12, 1)

        def forward(self, x):
            skips = []
            for i, block in enumerate(self.enc):
                x = block(nn.functional.max_pool2d(x, 2) if i else x)
                skips.append(x)
            x = skips.pop()
            for maps, sinconv, conv in self.dec:
                up = nn.functional.interpolate(x, scale_factor=2, mode="bilinear",
                                               align_corners=True)
                x = conv(sinconv(maps(torch.cat([skips.pop(), up], 1))))
            return self.head(self.last(x))

    return Net()


def run_torch(net: str, batch: int, steps: int, size: int) -> dict:
    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count())
    spec = NETS[net]
    net = torch_unet(spec["widths"], spec["kernel"], spec["fg_head"])
    n_params = sum(p.numel() for p in net.parameters())
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-5)
    rng = np.random.default_rng(0)
    images = torch.tensor(rng.integers(0, 255, (batch, 3, size, size)), dtype=torch.float32)
    targets = torch.tensor(rng.uniform(-1, 1, (batch, 12, size, size)), dtype=torch.float32)
    fg = torch.tensor(rng.uniform(0, 1, (batch, size, size)) > 0.5, dtype=torch.float32)

    def step():
        optimizer.zero_grad()
        out = net(images / 255 - 0.5)
        loss = (out[:, :12] - targets).abs().sum(1).mean()
        if spec["fg_head"]:
            loss = loss + 10 * nn.functional.binary_cross_entropy_with_logits(out[:, 12], fg)
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return dict(framework="torch", batch=batch, params=n_params, step_s=seconds,
                images_per_s=batch / seconds, first_step_s=first, compilations=None,
                peak_mib=_peak_mib())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", choices=sorted(NETS), default=["default", "compact"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--size", type=int, help="input size (default: the network's crop)")
    parser.add_argument("--before", metavar="REV",
                        help="also time the library of git revision REV (checked out with "
                             "`git worktree` into a temporary folder)")
    parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--net", choices=sorted(NETS), help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = run_jax if args.worker == "jax" else run_torch
        print(json.dumps(worker(args.net, args.batch, args.steps, args.size)))
        return
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        tree = None
        if args.before:
            tree = os.path.join(folder, "before")
            added = subprocess.run(["git", "worktree", "add", "--detach", tree, args.before],
                                   cwd=REPO, capture_output=True, text=True)
            if added.returncode:
                sys.exit(f"git worktree add {args.before} failed: {added.stderr.strip()}")
        try:
            _compare(args, tree)
        finally:
            if tree:
                subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=REPO,
                               check=False)
                subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=False)
    print(load_note(before))


def _compare(args, tree: str | None) -> None:
    """Prints the table: ours (and the ``tree``'s library), then PyTorch, per net and batch."""
    print(f"{'net':>7} {'size':>4} {'batch':>5} {'framework':>27} {'params':>11} {'img/s':>7} "
          f"{'step s':>7} {'1st step s':>10} {'compiles':>8} {'peak MiB':>9}")
    for net in args.nets:
        size = args.size or NETS[net]["size"]
        for batch in args.batches:
            rows = {}
            for framework in ("before", "jax", "torch") if tree else ("jax", "torch"):
                env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
                if framework == "before":  # the old library first on the path
                    env.update(PYTHONPATH=tree, BENCH_BEFORE_REV=args.before)
                out = subprocess.run(
                    [sys.executable, __file__, "--worker", framework.replace("before", "jax"),
                     "--net", net, "--batch", str(batch), "--steps", str(args.steps),
                     "--size", str(size)],
                    check=True, capture_output=True, text=True, env=env)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows[framework] = row
                print(f"{net:>7} {size:4d} {batch:5d} {row['framework']:>27} {row['params']:11,d} "
                      f"{row['images_per_s']:7.3f} {row['step_s']:7.2f} "
                      f"{row['first_step_s']:10.1f} {str(row['compilations'] or '-'):>8} "
                      f"{row['peak_mib']:9.0f}", flush=True)
            ratio = rows["jax"]["images_per_s"] / rows["torch"]["images_per_s"]
            memory = rows["jax"]["peak_mib"] / rows["torch"]["peak_mib"]
            print(f"{net} batch {batch}: throughput ratio jax/torch {ratio:.2f}x (goal >= 1.0), "
                  f"peak memory ratio {memory:.2f}x (goal <= 1.2)", flush=True)
            if tree:
                old = rows["before"]
                print(f"{net} batch {batch}: before ({args.before}) throughput ratio "
                      f"{old['images_per_s'] / rows['torch']['images_per_s']:.2f}x, peak memory "
                      f"ratio {old['peak_mib'] / rows['torch']['peak_mib']:.2f}x; now "
                      f"{rows['jax']['images_per_s'] / old['images_per_s']:.2f}x faster",
                      flush=True)


if __name__ == "__main__":
    main()
