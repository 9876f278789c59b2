"""Methods the paper compares harmonic embeddings with, trained by the same U-Net and train step.

- :mod:`harmonic_jax.baselines.discriminative`: De Brabandere et al. (2017), "Semantic instance
  segmentation with a discriminative loss function" (the paper's Table 1 baseline).
"""
