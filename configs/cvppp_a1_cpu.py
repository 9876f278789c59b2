"""CVPPP A1 sized for about an hour on a 2-core CPU: half resolution (265 x 250 pixels), a
compact U-Net with 3x3 SinConvs and a foreground head, 256 x 256 crops; the recipe of the
shipped model ``pretrained.load("cvppp_a1")`` (benchmarks/results/cvppp_training.md for the
ablations). The held-out split is validated every 500 steps."""

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
        # Measured on 24 training plants with the trained network (benchmarks/tune_inference.py):
        # its fragments are larger than noise's; SBD 0.688 at (10, 48), 0.750 at (40, 48), 0.753
        # at (80, 48), 0.722 at (160, 48).
        min_size=80,
        max_gap=48.0,
        workdir="runs/cvppp_a1_cpu",
        log_every=20,
        eval_every=500,
        checkpoint_every=100,
    )
