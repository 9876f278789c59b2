import json

import numpy as np
import pytest
from PIL import Image

from harmonic_jax import cli
from harmonic_jax.data import load_cvppp, load_split
from harmonic_jax.guides import load_guides


def _write_plant(folder, name, labels, image_shape=None):
    folder.mkdir(parents=True, exist_ok=True)
    height, width = image_shape or labels.shape
    rgba = np.full((height, width, 4), 255, np.uint8)
    Image.fromarray(rgba).save(folder / f"{name}_rgb.png")
    palette = Image.fromarray(labels.astype(np.uint8), mode="P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    palette.save(folder / f"{name}_label.png")
    Image.fromarray(((labels > 0) * 255).astype(np.uint8)).save(folder / f"{name}_fg.png")


def _plant(seed):
    labels = np.zeros((24, 20), np.int32)
    for k in range(1, 5):
        labels[(k - 1) * 6:(k - 1) * 6 + 4, 2 + seed:12 + seed] = k
    return labels


def test_reads_the_official_layout(tmp_path):
    _write_plant(tmp_path, "plant001", _plant(0))
    _write_plant(tmp_path, "plant002", _plant(1))
    samples = load_cvppp(tmp_path)
    assert [s.name for s in samples] == ["plant001", "plant002"]
    assert samples[0].image.shape == (24, 20, 3) and samples[0].image.dtype == np.uint8
    np.testing.assert_array_equal(samples[1].labels, _plant(1))
    np.testing.assert_array_equal(samples[1].fg, _plant(1) > 0)


def test_real_cvppp(cvppp_samples):
    for sample in cvppp_samples:
        assert sample.image.shape == (530, 500, 3)
        assert 11 <= sample.labels.max() <= 20
        np.testing.assert_array_equal(sample.fg, sample.labels > 0)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cvppp(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no plant"):
        load_cvppp(tmp_path)
    _write_plant(tmp_path, "plant001", _plant(0), image_shape=(25, 20))
    with pytest.raises(ValueError, match="differ in size"):
        load_cvppp(tmp_path)
    with pytest.raises(FileNotFoundError, match="plant009_rgb.png is missing"):
        load_cvppp(tmp_path, ["plant009"])
    (tmp_path / "split.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must map split names"):
        load_split(tmp_path / "split.json")


def test_cli_fit_guides_writes_a_loadable_file(tmp_path, capsys):
    for i in range(3):
        _write_plant(tmp_path / "A1", f"plant00{i}", _plant(i))
    (tmp_path / "split.json").write_text(json.dumps({"train": ["plant000", "plant001"]}))
    out = tmp_path / "guides.json"
    cli.main(["fit-guides", "--data", str(tmp_path / "A1"), "--split", str(tmp_path / "split.json"),
              "--n", "4", "--steps", "5", "--margin", "0.3", "--out", str(out)])
    params, meta = load_guides(out)
    assert params.shape == (4, 3) and meta["n_images"] == 2 and meta["frame"] == [24, 20]
    assert meta["command"].startswith("harmonic-jax fit-guides")
    printed = capsys.readouterr().out
    assert "closest pair L2" in printed and "pairs closer than 0.3" in printed
    assert meta["norm"] == 2 and meta["min_l2"] > 0 and "p01_l2" in meta
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["fit-guides", "--data", str(tmp_path / "nope"), "--split", ""])
