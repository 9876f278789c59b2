"""Your own data on a 2-core CPU: an ``images/`` + ``labels/`` folder, in one command.

    harmonic-jax train --config configs/folder_cpu.py --set data=DIR workdir=runs/mine

On first use the run folder gets ``split.json`` (a seeded 20% of the images held out),
``guides.json`` (guides fitted on the training labels in the frame of a training crop) and,
in ``config.json``, ``max_instances`` (the largest instance count of a training image). The
network and the optimisation are the CPU recipe measured on CVPPP A1 and crowded blobs
(benchmarks/results/cvppp_training.md); resize big images with ``--set resize=0.5``.
"""

from harmonic_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="folder_cpu",
        dataset="folder",
        data="",  # set data=DIR
        split="auto",
        guides="auto",
        max_instances=None,
        widths=(16, 32, 64, 128),
        sinconv_kernel=3,
        lr=2e-3,
        batch_size=4,
        steps=1500,
        crop=(256, 256),
        scale_range=(0.8, 1.25),
        workdir="runs/folder_cpu",
        log_every=20,
        eval_every=500,
        checkpoint_every=100,
    )
