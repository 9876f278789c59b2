"""E. coli (a generic images/ + labels/ folder) with the paper's settings: N = 12, eps = 0.5,
Adam lr 1e-5, bandwidth 0.5; the paper processes 256 x 256 crops and does not state the epochs
(1000 here). Fit the guides on your labels first:

    harmonic-jax fit-guides --dataset folder --data data/ecoli --split configs/splits/ecoli.json \\
        --frame 256 256 --out configs/guides/ecoli.json
"""

from harmonic_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="ecoli",
        dataset="folder",
        data="data/ecoli",  # holds images/<name>.png and labels/<name>.png
        split="configs/splits/ecoli.json",
        guides="configs/guides/ecoli.json",
        lr=1e-5,
        batch_size=8,
        epochs=1000,
        crop=(256, 256),
        bandwidth=0.5,
        workdir="runs/ecoli",
        eval_every=2000,
        checkpoint_every=200,
    )
