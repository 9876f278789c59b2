import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from harmonic_jax import cli, predict, pretrained
from harmonic_jax.config import TrainConfig, apply_overrides, load_config
from harmonic_jax.data import load_cvppp, load_folder, load_split, resize_sample
from harmonic_jax.fit import batch_indices, evaluate, fit, load_run

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_training_overfits_two_real_plants(tmp_path, cvppp_dir, tiny_run):
    run, result = tiny_run
    config = load_config(ROOT / "configs/tiny.py")
    assert result["step"] == config.steps
    # Inside its own predicted foreground and inside the true one (the paper's protocol).
    assert result["val"]["sbd"] >= 0.75 and result["val"]["sbd_true_fg"] >= 0.8, result["val"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    assert losses[-1] < 0.5 * losses[0]
    assert json.loads((run / "config.json").read_text())["name"] == "tiny"
    assert (run / "guides.json").exists() and (run / "best").is_dir()
    # The best checkpoint reloads for inference and scores what the run reported.
    model, variables, guide_params, loaded = load_run(run)
    samples = [resize_sample(s, loaded.resize) for s in load_cvppp(
        cvppp_dir, load_split(loaded.split)["train"][:2])]
    again = evaluate(model, variables, guide_params, samples, loaded)
    assert again["sbd"] == pytest.approx(result["val"]["sbd"], abs=1e-6)
    # Exported as a model folder, it loads with its checksum checked and predicts the same.
    folder = pretrained.export_run(run, tmp_path / "model", command="test")
    model2, variables2, guide_params2, config2 = pretrained.load(folder)
    assert config2 == loaded and model2 == model
    np.testing.assert_array_equal(guide_params2, guide_params)
    image = samples[0].image
    np.testing.assert_allclose(predict.predict(model2, variables2, guide_params2, image)[0],
                               predict.predict(model, variables, guide_params, image)[0], atol=1e-6)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["command"] == "test" and manifest["validation_curve"][-1]["step"] == 400
    weights = folder / "variables.msgpack"
    weights.write_bytes(weights.read_bytes()[:-1] + b"x")
    with pytest.raises(ValueError, match="SHA-256 .* does not match"):
        pretrained.load(folder)
    with pytest.raises(ValueError, match="no pretrained model 'nope'"):
        pretrained.load("nope")


def test_folder_run_derives_split_guides_and_instance_bound(tmp_path):
    from harmonic_jax.data.synthetic import write_blob_folder

    data = write_blob_folder(tmp_path / "data", 5, size=(48, 48))
    overrides = [f"data={data}", f"workdir={tmp_path / 'run'}", "steps=2", "crop=48,48",
                 "widths=4,8", "batch_size=2", "eval_every=2", "data_parallel=false"]
    config = load_config(ROOT / "configs/folder_cpu.py", overrides)
    assert config.split == "auto" and config.guides == "auto" and config.max_instances is None
    result = fit(config, progress=False)
    split = json.loads((tmp_path / "run/split.json").read_text())
    assert len(split["train"]) == 4 and len(split["test"]) == 1
    assert not set(split["train"]) & set(split["test"])
    saved = json.loads((tmp_path / "run/config.json").read_text())
    labels = load_folder(data, split["train"])
    assert saved["max_instances"] == max(len(np.unique(s.labels)) - 1 for s in labels)
    guides_meta = json.loads((tmp_path / "run/guides.json").read_text())
    assert guides_meta["frame"] == [48, 48] and len(guides_meta["params"]) == 12
    assert result["val"] is not None and set(result["val"]) == {
        "sbd", "abs_dic", "sbd_true_fg", "abs_dic_true_fg"}
    # Started again, the run reuses its split and guides (and has nothing left to do).
    assert fit(config, progress=False)["step"] == 2
    with pytest.raises(ValueError, match="names no data folder"):
        fit(load_config(ROOT / "configs/folder_cpu.py", [f"workdir={tmp_path / 'r2'}"]))


def test_data_order_is_a_function_of_the_step():
    seen = np.concatenate([batch_indices(3, s, 10, 4) for s in range(2)])
    assert len(set(seen)) == 8  # one epoch: no repeats
    np.testing.assert_array_equal(batch_indices(3, 5, 10, 4), batch_indices(3, 5, 10, 4))
    assert len(batch_indices(0, 0, 2, 4)) == 4  # fewer images than the batch


def test_config_overrides_and_errors(tmp_path):
    config = apply_overrides(TrainConfig(), ["crop=256,192", "lr=1e-4", "fg_head=true",
                                             "steps=none", "val_limit=3"])
    assert config.crop == (256, 192) and config.lr == 1e-4 and config.fg_head
    assert config.steps is None and config.val_limit == 3
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides(config, ["nonsense=1"])
    with pytest.raises(ValueError, match="must be true or false"):
        apply_overrides(config, ["flip=maybe"])
    for name in ("cvppp_a1", "cvppp_a1_cpu", "tiny", "bbbc010", "hela", "ecoli", "folder_cpu"):
        assert isinstance(load_config(ROOT / f"configs/{name}.py"), TrainConfig)
    with pytest.raises(SystemExit, match="does not exist"):
        cli.main(["train", "--config", str(tmp_path / "missing.py")])


def test_cosine_schedule_and_instance_bound(cvppp_samples):
    import optax

    from harmonic_jax.fit import check_instance_bound, make_optimizer

    config = TrainConfig(lr=1e-2, schedule="cosine", warmup_steps=10)
    opt = make_optimizer(config, 110)
    params = {"w": np.zeros(3, np.float32)}
    state = opt.init(params)
    rates = []
    for _ in range(110):
        grads = {"w": np.ones(3, np.float32)}
        with jax.numpy_dtype_promotion("standard"):  # as in the train step
            updates, state = opt.update(grads, state, params)
        rates.append(-float(updates["w"][0]))  # Adam's first step with constant grads: ~lr
    assert rates[0] == pytest.approx(0.0, abs=1e-9) and rates[10] == pytest.approx(1e-2, rel=1e-3)
    assert rates[60] == pytest.approx(1e-2 * (0.01 + 0.99 * 0.5), rel=1e-2)  # half-way cosine
    assert rates[-1] < 1e-3
    with pytest.raises(ValueError, match="schedule must be"):
        make_optimizer(dataclasses.replace(config, schedule="step"), 10)
    assert isinstance(make_optimizer(TrainConfig(), 10), optax.GradientTransformation)
    largest = max(len(np.unique(s.labels)) - 1 for s in cvppp_samples)
    assert check_instance_bound(cvppp_samples, None) == largest
    assert check_instance_bound(cvppp_samples, largest) == largest
    with pytest.warns(UserWarning, match=f"has {largest} instances, more than max_instances=3"):
        assert check_instance_bound(cvppp_samples, 3) == 3


def test_run_folder_config_check(tmp_path):
    from harmonic_jax.fit import _check_workdir

    config = TrainConfig(workdir=str(tmp_path))
    _check_workdir(config, tmp_path)  # no run yet
    old = json.loads(config.to_json())
    for newer in ("norm", "schedule", "warmup_steps", "pull_weight", "background_instance"):
        del old[newer]  # a run folder from before these fields existed
    (tmp_path / "config.json").write_text(json.dumps(old))
    _check_workdir(dataclasses.replace(config, steps=50), tmp_path)  # train longer: fine
    with pytest.raises(ValueError, match="another config.*'lr'"):
        _check_workdir(dataclasses.replace(config, lr=1.0), tmp_path)
    cosine = dataclasses.replace(config, schedule="cosine")
    (tmp_path / "config.json").write_text(cosine.to_json())
    with pytest.raises(ValueError, match="another config.*'steps'"):  # the schedule would jump
        _check_workdir(dataclasses.replace(cosine, steps=50), tmp_path)
