"""ISBI DIC-C2DH-HeLa with the paper's settings: N = 12, eps = 0.5, Adam lr 1e-5, 448 crops,
8000 epochs, bandwidth 0.5. The data has no foreground masks: a foreground head is trained with
the embeddings (the paper: SBD 78 without a mask, 86 with one). Fit the guides first:

    harmonic-jax fit-guides --dataset hela --data <HeLa folder> \\
        --split configs/splits/hela.json --frame 448 448 --out configs/guides/hela.json

The ground truth is partial (not every cell of every frame is annotated): unannotated cells
count as background in the loss and in the scores.
"""

from harmonic_jax.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        name="hela",
        dataset="hela",
        data="data/DIC-C2DH-HeLa",  # holds 01/, 01_GT/SEG/, 02/, 02_GT/SEG/
        split="configs/splits/hela.json",
        guides="configs/guides/hela.json",
        fg_head=True,
        lr=1e-5,
        batch_size=4,
        epochs=8000,
        crop=(448, 448),
        bandwidth=0.5,
        workdir="runs/hela",
        eval_every=2000,
        checkpoint_every=200,
    )
