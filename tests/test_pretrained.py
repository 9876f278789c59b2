"""The shipped CVPPP model: intact, small, and scoring on held-out plants what its manifest says."""

import json

import numpy as np
import pytest

from harmonic_jax import evaluation, metrics, pretrained
from harmonic_jax.data import load_cvppp, load_split
from tests.conftest import SPLIT


def test_shipped_cvppp_model_reproduces_its_held_out_scores(cvppp_dir):
    assert "cvppp_a1" in pretrained.available()
    folder = pretrained.model_dir("cvppp_a1")
    assert (folder / "variables.msgpack").stat().st_size <= 10 * 2**20
    manifest = json.loads((folder / "manifest.json").read_text())
    model, variables, guide_params, config = pretrained.load("cvppp_a1")  # checks the SHA-256s
    assert model.fg_head and config.split.endswith("cvppp_a1_split.json")
    # Trained on the training split only: no held-out plant in its training subset.
    split = load_split(SPLIT)
    assert config.train_subset == "train" and config.train_limit is None
    assert model.upsample == "half_pixel"  # tiles exactly
    recorded = manifest["held_out_per_image"]["embedding, predicted fg"][:3]
    for row in recorded:  # the pipeline of `harmonic-jax predict`, at the plants' own size
        sample = load_cvppp(cvppp_dir, [row["image"]])[0]
        assert row["image"] in split["test"]
        seg = evaluation.segment_image(model, variables, guide_params, config, sample.image)
        labels = seg.labels["predicted fg"]
        assert labels.shape == sample.labels.shape
        assert metrics.sbd(labels, sample.labels) == pytest.approx(row["sbd"], abs=1e-6)
    assert manifest["held_out"]["embedding, predicted fg"]["sbd"] > \
        manifest["held_out"]["components, predicted fg"]["sbd"]
    with pytest.raises(ValueError, match="no pretrained model"):
        pretrained.model_dir("cvppp_b9")
    assert np.asarray(guide_params).shape == (12, 3)
