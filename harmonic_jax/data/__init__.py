"""Readers for the datasets of the paper, in their official on-disk layouts.

Every reader is ``reader(folder, names=None) -> list[Sample]``; ``READERS`` maps the names used
in configs to them.
"""

from harmonic_jax.data.cvppp import Sample, load_cvppp, load_split, resize_sample

READERS = {"cvppp": load_cvppp}

__all__ = ["READERS", "Sample", "load_cvppp", "load_split", "resize_sample"]
