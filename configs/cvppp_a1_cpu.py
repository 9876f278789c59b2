"""CVPPP A1 sized for about an hour on a 2-core CPU: half resolution (265 x 250 pixels), a
compact U-Net with 3x3 SinConvs, 256 x 256 crops. The guides, the loss and the inference are
the paper's; the held-out split is validated every 500 steps."""

from harmonic_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="cvppp_a1_cpu",
        dataset="cvppp",
        data="../shared/data/cvppp_a1",
        split="../shared/data/cvppp_a1_split.json",
        guides="configs/guides/cvppp_a1.json",
        resize=0.5,
        widths=(16, 32, 64, 128),
        sinconv_kernel=3,
        lr=2e-3,
        batch_size=4,
        steps=2000,
        crop=(256, 256),
        scale_range=(0.8, 1.25),
        min_size=10,
        max_gap=24.0,  # the library default 48 is for full resolution
        workdir="runs/cvppp_a1_cpu",
        log_every=20,
        eval_every=500,
        checkpoint_every=100,
    )
