"""BBBC010 C. elegans with the paper's settings: N = 12, eps = 0.5, Adam lr 1e-5, 448 crops,
1000 epochs, bandwidth 0.5, scored with COCO AP. Worms overlap: overlap pixels are left out of
the embedding loss (see harmonic_jax.data.readers). The guides are the PyTorch original's
published C. elegans set, converted; to fit your own instead:

    harmonic-jax fit-guides --data <BBBC010 folder> ... --out configs/guides/bbbc010.json
"""

from harmonic_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="bbbc010",
        dataset="bbbc010",
        data="data/BBBC010",  # holds BBBC010_v2_images/ and BBBC010_v1_foreground_eachworm/
        split="configs/splits/bbbc010.json",
        guides="configs/guides/bbbc010_original.json",
        lr=1e-5,
        batch_size=4,
        epochs=1000,
        crop=(448, 448),
        bandwidth=0.5,
        min_size=500 // 4,  # the original dropped worms under 500 px
        workdir="runs/bbbc010",
        eval_every=2000,
        checkpoint_every=200,
    )
