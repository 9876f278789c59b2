"""A tiny run for tests: a small U-Net with a foreground head overfits two real CVPPP plants at
quarter resolution (133 x 125 pixels, the whole plant in each 128 x 128 crop) in about a minute on
two CPU cores."""

from harmonic_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="tiny",
        train_limit=2,
        val_subset="train",  # overfitting check: validate on the training plants
        val_limit=2,
        resize=0.25,
        widths=(16, 32, 64, 64),
        sinconv_kernel=3,
        lr=3e-3,
        schedule="cosine",  # measured on these two plants: true-fg SBD 0.83 against 0.76 constant
        warmup_steps=20,
        batch_size=2,
        steps=400,
        crop=(128, 128),
        scale_range=(1.0, 1.0),
        flip=False,
        workdir="runs/tiny",
        min_size=15,  # benchmarks/tune_inference.py on this run: 0.80 against 0.65 with 5
        max_gap=12.0,  # the library default 48 is for full resolution
        log_every=10,
        eval_every=400,
        checkpoint_every=100,
    )
