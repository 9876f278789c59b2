import sys

import numpy as np
import tensorflow_datasets as tfds

from harmonic_jax.data import load_cvppp
from harmonic_jax.data.tfds_builders import decode, make_builder
from tests.test_data import _plant, _write_plant


def test_tfds_builder_round_trip_without_tensorflow(tmp_path):
    for i in range(3):
        _write_plant(tmp_path / "A1", f"plant00{i}", _plant(i))
    builder = make_builder("cvppp", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "A1")),
    )
    source = builder.as_data_source(split="train")
    expected = load_cvppp(tmp_path / "A1")
    assert len(source) == 3
    for i in range(3):
        sample = decode(source[i])
        original = expected[int(sample.name)]
        np.testing.assert_array_equal(sample.image, original.image)
        np.testing.assert_array_equal(sample.labels, original.labels)
    assert "tensorflow" not in sys.modules
