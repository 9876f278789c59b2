"""Readers for the datasets of the paper, in their official on-disk layouts.

Every reader is ``reader(folder, names=None) -> list[Sample]``; ``READERS`` maps the names used
in configs to them.
"""

from harmonic_jax.data.cvppp import Sample, load_cvppp, load_split, resize_sample
from harmonic_jax.data.readers import load_bbbc010, load_folder, load_hela, to_uint8

READERS = {
    "cvppp": load_cvppp,
    "bbbc010": load_bbbc010,
    "hela": load_hela,
    "folder": load_folder,
}

__all__ = [
    "READERS",
    "Sample",
    "load_bbbc010",
    "load_cvppp",
    "load_folder",
    "load_hela",
    "load_split",
    "resize_sample",
    "to_uint8",
]
