"""Reading images, writing label images and overlays."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from harmonic_jax import io


def test_write_labels_round_trips_16_bit(tmp_path):
    labels = np.zeros((6, 7), np.int32)
    labels[1:3, 1:4] = 300  # past 8 bits
    labels[4, 5] = 2
    for name in ("a.png", "b.tif"):
        path = io.write_labels(tmp_path / "out" / name, labels)
        back = io.read_image(path)
        assert back.dtype == np.uint16
        np.testing.assert_array_equal(back, labels)
    many = np.full((2, 2), 70_000, np.int32)
    assert tifffile.imread(io.write_labels(tmp_path / "c.tif", many)).dtype == np.uint32
    with pytest.raises(ValueError, match="do not fit a 16-bit PNG; use .tif"):
        io.write_labels(tmp_path / "c.png", many)
    with pytest.raises(ValueError, match="written as .png or .tif"):
        io.write_labels(tmp_path / "c.jpg", labels)
    with pytest.raises(ValueError, match="ids >= 0"):
        io.write_labels(tmp_path / "d.png", -labels)


def test_overlay_colours_instances_and_draws_outlines():
    image = np.full((8, 8), 100, np.uint8)
    labels = np.zeros((8, 8), np.int32)
    labels[2:6, 2:6] = 1
    out = io.overlay(image, labels, alpha=0.5)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    np.testing.assert_array_equal(out[2, 2], [255, 255, 255])  # outline
    assert not np.array_equal(out[3, 3], [100, 100, 100])  # coloured inside


def test_find_and_read_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images .* in folder"):
        io.find_images([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.find_images([tmp_path / "missing.png"])
    with pytest.raises(FileNotFoundError, match="no image files or folders given"):
        io.find_images([])
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "imgs" / "b.png")
    (tmp_path / "imgs" / "a.tif").write_bytes(b"not a tiff")
    (tmp_path / "imgs" / "notes.txt").write_text("skip me")
    found = io.find_images([tmp_path / "imgs"])
    assert [p.name for p in found] == ["a.tif", "b.png"]
    with pytest.raises(ValueError, match="a.tif is not a readable image"):
        io.read_image(found[0])
    assert io.read_image(found[1]).shape == (4, 4)
