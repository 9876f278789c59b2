"""The readers on small fixtures written in each dataset's exact official layout."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from harmonic_jax.data import load_bbbc010, load_folder, load_hela, resize_sample, to_uint8


def _bbbc010(root, wells=("A01", "B12")):
    images = root / "BBBC010_v2_images"
    masks = root / "BBBC010_v1_foreground_eachworm"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for well in wells:
        for channel in ("w1", "w2"):
            name = f"1649_1109_0003_Amp5-1_B_20070424_{well}_{channel}_9E84F49F-1B25.tif"
            tifffile.imwrite(images / name, rng.integers(0, 4096, (20, 24)).astype(np.uint16))
        first = np.zeros((20, 24), np.uint8)
        first[2:10, 2:20] = 255
        second = np.zeros((20, 24), np.uint8)
        second[6:16, 15:22] = 255  # overlaps the first worm at [6:10, 15:20]
        Image.fromarray(first).save(masks / f"{well}_01_ground_truth.png")
        Image.fromarray(second).save(masks / f"{well}_02_ground_truth.png")


def test_bbbc010_overlaps_are_ignored(tmp_path):
    _bbbc010(tmp_path)
    samples = load_bbbc010(tmp_path)
    assert [s.name for s in samples] == ["A01", "B12"]
    sample = samples[0]
    assert sample.image.shape == (20, 24, 2) and sample.image.dtype == np.uint8
    assert sample.masks.shape == (2, 20, 24)
    overlap = sample.masks[0] & sample.masks[1]
    assert overlap.sum() == 4 * 5
    np.testing.assert_array_equal(sample.ignore, overlap)
    assert (sample.labels[overlap] == 0).all() and sample.fg[overlap].all()
    assert (sample.labels[sample.masks[0] & ~overlap] == 1).all()
    assert (sample.labels[sample.masks[1] & ~overlap] == 2).all()
    with pytest.raises(FileNotFoundError, match="needs a _w1_ and a _w2_ image"):
        load_bbbc010(tmp_path, ["C03"])
    with pytest.raises(FileNotFoundError, match="BBBC010_v2_images"):
        load_bbbc010(tmp_path / "nowhere")


def test_hela_reads_annotated_frames(tmp_path):
    for seq in ("01", "02"):
        (tmp_path / seq).mkdir()
        (tmp_path / f"{seq}_GT" / "SEG").mkdir(parents=True)
        for frame in ("000", "001", "002"):
            tifffile.imwrite(tmp_path / seq / f"t{frame}.tif", np.full((12, 16), 7, np.uint8))
        labels = np.zeros((12, 16), np.uint16)
        labels[2:6, 3:9], labels[7:11, 10:15] = 1, 300
        tifffile.imwrite(tmp_path / f"{seq}_GT" / "SEG" / "man_seg002.tif", labels)
    samples = load_hela(tmp_path)
    assert [s.name for s in samples] == ["01/t002", "02/t002"]
    assert samples[0].image.shape == (12, 16, 1) and set(np.unique(samples[0].labels)) == {0, 1, 300}
    with pytest.raises(FileNotFoundError, match="t005.tif is missing"):
        load_hela(tmp_path, ["01/t005"])
    tifffile.imwrite(tmp_path / "01_GT" / "SEG" / "man_seg002.tif", np.zeros((5, 5), np.uint16))
    with pytest.raises(ValueError, match="differ in size"):
        load_hela(tmp_path, ["01/t002"])


def test_generic_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((10, 8, 3), np.uint8)).save(tmp_path / "images" / "cell_a.png")
    labels = np.zeros((10, 8), np.uint16)
    labels[1:4, 1:4] = 5
    tifffile.imwrite(tmp_path / "labels" / "cell_a.tif", labels)
    (sample,) = load_folder(tmp_path)
    assert sample.name == "cell_a" and sample.labels.max() == 5 and sample.fg.sum() == 9
    Image.fromarray(np.zeros((10, 8, 3), np.uint8)).save(tmp_path / "images" / "cell_b.png")
    with pytest.raises(FileNotFoundError, match="has no labels for 'cell_b'"):
        load_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="expected layout"):
        load_folder(tmp_path / "labels")


def test_to_uint8_and_resize():
    image = np.linspace(0, 60000, 200 * 3).reshape(200, 3).astype(np.uint16)
    out = to_uint8(image)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    labels = np.kron(np.arange(16, dtype=np.int32).reshape(4, 4), np.ones((5, 5), np.int32))
    from harmonic_jax.data import Sample

    small = resize_sample(Sample("x", np.zeros((20, 20, 2), np.uint8), labels, labels > 0,
                                 masks=np.stack([labels == 3]), ignore=labels == 7), 0.5)
    assert small.labels.shape == (10, 10) and small.image.shape == (10, 10, 2)
    assert set(np.unique(small.labels)) <= set(range(16))  # nearest neighbour: no new ids
    assert small.masks.shape == (1, 10, 10) and small.ignore.dtype == bool
