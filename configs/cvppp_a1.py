"""CVPPP A1 with the paper's settings: the original's U-Net with SinConv, N = 12, eps = 0.5,
Adam lr 1e-5, 448 x 448 crops with scaling and flips, 500 epochs, mean-shift bandwidth 0.5."""

from harmonic_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="cvppp_a1",
        dataset="cvppp",
        data="../shared/data/cvppp_a1",
        split="../shared/data/cvppp_a1_split.json",
        guides="configs/guides/cvppp_a1.json",
        widths=(64, 128, 256, 512, 512),
        lr=1e-5,
        batch_size=4,
        epochs=500,
        crop=(448, 448),
        bandwidth=0.5,
        workdir="runs/cvppp_a1",
        eval_every=2400,  # every 100 epochs of 24 steps
        checkpoint_every=240,
    )
