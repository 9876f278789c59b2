"""Readers for the datasets of the paper, in their official on-disk layouts."""

from harmonic_jax.data.cvppp import Sample, load_cvppp, load_split

__all__ = ["Sample", "load_cvppp", "load_split"]
