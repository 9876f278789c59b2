"""A tiny run for tests: a small U-Net on two real CVPPP plants at small crops."""

import dataclasses

from harmonic_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="tiny",
        train_limit=2,
        val_subset="train",  # overfitting check: validate on the training plants
        val_limit=2,
        widths=(16, 32, 64),
        sinconv_kernel=5,
        lr=3e-3,
        batch_size=2,
        steps=200,
        crop=(128, 128),
        scale_range=(1.0, 1.0),
        flip=False,
        workdir="runs/tiny",
        log_every=10,
        eval_every=200,
        checkpoint_every=50,
    )


def with_(**changes) -> TrainConfig:
    return dataclasses.replace(get_config(), **changes)
