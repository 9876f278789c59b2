"""TFDS builders for the datasets, without TensorFlow.

Only ``tfds.features.Tensor`` features (``tfds.features.Image`` needs TensorFlow and, for
16-bit data, OpenCV), the ``array_record`` file format and ``as_data_source()`` for reading.
The builders read the official folder given as ``manual_dir`` through the readers of
:mod:`harmonic_jax.data`; variable-size images are stored as flat arrays with their shape.

    builder = make_builder("cvppp", data_dir="~/tfds")
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir="path/to/A1"))
    source = builder.as_data_source(split="train")
    sample = decode(source[0])
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from harmonic_jax.data import READERS, Sample

__all__ = ["decode", "make_builder"]

_FEATURES = {
    "image": tfds.features.Tensor(shape=(None,), dtype=np.uint8),
    "image_shape": tfds.features.Tensor(shape=(3,), dtype=np.int32),
    "labels": tfds.features.Tensor(shape=(None,), dtype=np.int32),
    "index": tfds.features.Tensor(shape=(), dtype=np.int32),
}


def _encode(index: int, sample: Sample) -> dict:
    return {"image": sample.image.reshape(-1).astype(np.uint8),
            "image_shape": np.asarray(sample.image.shape, np.int32),
            "labels": sample.labels.reshape(-1).astype(np.int32),
            "index": np.int32(index)}


def decode(record: dict) -> Sample:
    """A stored record back to a :class:`Sample` (name = the sample's index as text)."""
    shape = tuple(int(s) for s in record["image_shape"])
    labels = np.asarray(record["labels"]).reshape(shape[:2])
    return Sample(str(int(record["index"])), np.asarray(record["image"]).reshape(shape), labels,
                  labels > 0)


def make_builder(dataset: str, **kwargs) -> tfds.core.GeneratorBasedBuilder:
    """A TFDS builder for a dataset of :data:`~harmonic_jax.data.READERS`; one ``train`` split.

    Args:
      dataset: reader name ("cvppp", "bbbc010", "hela", "folder").
      **kwargs: passed to the builder (``data_dir``...).
    """
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; readers: {sorted(READERS)}")
    reader = READERS[dataset]

    class Builder(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        MANUAL_DOWNLOAD_INSTRUCTIONS = f"Give the official {dataset} folder as manual_dir."

        def _info(self):
            return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(_FEATURES))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(dl_manager.manual_dir)}

        def _generate_examples(self, folder):
            for i, sample in enumerate(reader(folder)):
                yield i, _encode(i, sample)

    Builder.__name__ = f"harmonic_{dataset}"
    Builder.name = f"harmonic_{dataset}"
    return Builder(**kwargs)
