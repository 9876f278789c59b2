"""``harmonic-jax predict`` and ``evaluate`` on real plants with the session's tiny run."""

import csv
import shutil

import numpy as np
import pytest

from harmonic_jax import cli, evaluation, io, metrics, pretrained
from harmonic_jax.data import load_cvppp, load_split
from tests.conftest import SPLIT


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_predict_and_evaluate_commands(tiny_run, cvppp_dir, tmp_path, capsys):
    run, _ = tiny_run
    names = load_split(SPLIT)["train"][:2]  # the plants the tiny run overfits
    folder = tmp_path / "data"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for name in names:
        shutil.copy(cvppp_dir / f"{name}_rgb.png", folder / "images" / f"{name}.png")
        shutil.copy(cvppp_dir / f"{name}_label.png", folder / "labels" / f"{name}.png")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")

    out = tmp_path / "pred"
    with pytest.raises(SystemExit, match="1 images were skipped"):
        cli.main(["predict", str(folder / "images"), str(tmp_path / "broken"), "--model",
                  str(run), "--out", str(out)])
    rows = _csv(out / "instances.csv")
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == [f"{n}.png" for n in names] + ["x.png"]
    assert "not a readable image" in rows[-1]["error"]
    samples = load_cvppp(cvppp_dir, names)
    for sample, row in zip(samples, rows):
        labels = io.read_image(out / row["labels"])
        assert labels.dtype == np.uint16 and labels.shape == sample.labels.shape  # full size
        assert int(row["instances"]) == len(np.unique(labels[labels > 0]))
        assert (out / "overlays" / f"{sample.name}.png").is_file()
        row["sbd"] = metrics.sbd(labels.astype(np.int32), sample.labels)

    cli.main(["evaluate", "--model", str(run), "--dataset", "folder", "--data", str(folder),
              "--split", "", "--out", str(tmp_path / "eval")])
    printed = capsys.readouterr().out
    assert "predicted fg" in printed and "AP50" in printed
    per_image = [r for r in _csv(tmp_path / "eval" / "per_image.csv")
                 if r["foreground"] == "predicted fg"]
    for row, again in zip(rows, per_image):  # the same pipeline as predict
        assert float(again["sbd"]) == pytest.approx(row["sbd"], abs=1e-9)
    summary = {r["foreground"]: r for r in _csv(tmp_path / "eval" / "summary.csv")}
    assert float(summary["predicted fg"]["sbd"]) >= 0.7, summary
    assert float(summary["true fg"]["sbd"]) >= 0.7, summary


def test_segment_image_maps_back_and_checks_masks(tiny_run, cvppp_dir):
    model, variables, guide_params, config = pretrained.load(tiny_run[0])
    sample = load_cvppp(cvppp_dir, load_split(SPLIT)["train"][:1])[0]
    grey = sample.image.mean(-1).astype(np.float32) / 255  # grey floats in [0, 1]
    seg = evaluation.segment_image(model, variables, guide_params, config, grey)
    assert seg.labels["predicted fg"].shape == sample.labels.shape
    assert "grey image replicated to RGB" in seg.notes and "float image in [0, 1] scaled by 255" \
        in seg.notes
    assert len(seg.scores["predicted fg"]) == len(np.unique(seg.labels["predicted fg"])) - 1
    with pytest.raises(ValueError, match="mask 'true fg' has shape"):
        evaluation.segment_image(model, variables, guide_params, config, sample.image,
                                 masks={"true fg": sample.fg[:-1]})
