"""Training config: YAML/JSON load, dotted overrides with type checks, save/reload round trip."""
from __future__ import annotations

import json

import pytest

from semisupseg.errors import InputError
from semisupseg.training.config import (TrainConfig, apply_overrides, config_from_dict, load_config, parse_override,
                                        save_config)


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert (cfg.optim.schedule, cfg.optim.step_size, cfg.optim.gamma) == ("step", 2500, 0.1)
    assert (cfg.batch_size, cfg.labeled_batch_size, cfg.ema_decay) == (4, 2, 0.99)
    # patch size, spacing and normalisation are left to the data (semisupseg.data.fingerprint) unless set
    assert cfg.data.patch_size is None and cfg.data.spacing is None and cfg.data.normalization == {}
    cfg.data.patch_size = [112, 112, 80]
    assert cfg.data.patch_size_zyx == (80, 112, 112)


def test_yaml_load_nested_and_types(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("method: mean-teacher\niterations: 50\noptim:\n  lr: 0.005\n  schedule: poly\n"
                 "data:\n  patch_size: [64, 64, 48]\n  validation: [a, b]\nmethod_params:\n  consistency: 0.1\n")
    cfg = load_config(p)
    assert cfg.method == "mean-teacher" and cfg.iterations == 50
    assert cfg.optim.lr == 0.005 and cfg.optim.schedule == "poly" and cfg.optim.momentum == 0.9
    assert cfg.data.patch_size_zyx == (48, 64, 64)
    assert cfg.data.validation == ["a", "b"]
    assert cfg.method_params == {"consistency": 0.1}


def test_json_load_and_errors(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"iterations": 7, "optim": {"lrr": 1}}))
    with pytest.raises(InputError, match=r"optim\.lrr.*optim\.lr"):
        load_config(p)
    p.write_text(json.dumps({"iterations": "many"}))
    with pytest.raises(InputError, match="iterations"):
        load_config(p)
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_dotted_keys_and_coercion():
    cfg = TrainConfig()
    apply_overrides(cfg, ["optim.lr=1e-3", "data.patch_size=[32,32,16]", "iterations=12", "amp=off",
                          "method_params.consistency=0.5", "data.validation=3", "data.validation=[x1]",
                          "optim.grad_clip=null", "data.augment=false"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.data.patch_size == [32, 32, 16] and cfg.iterations == 12 and cfg.amp == "off"
    assert cfg.method_params == {"consistency": 0.5}
    assert cfg.data.validation == ["x1"] and cfg.optim.grad_clip is None and cfg.data.augment is False and cfg.validate().data.augment == "none"
    with pytest.raises(InputError, match="did you mean iterations"):
        apply_overrides(cfg, ["iteration=3"])
    with pytest.raises(InputError, match="key=value"):
        parse_override("optim.lr")
    with pytest.raises(InputError, match="integer"):
        apply_overrides(cfg, ["batch_size=2.5"])


def test_validate_ranges():
    with pytest.raises(InputError, match="labeled_batch_size") as err:
        config_from_dict({"batch_size": 2, "labeled_batch_size": 3}).validate()
    assert str(err.value) == ("config labeled_batch_size: must be in [1, batch_size=2], got 3 "
                              "(set --labeled-batch-size too)")
    with pytest.raises(InputError, match="amp"):
        config_from_dict({"amp": "fp8"}).validate()
    with pytest.raises(InputError, match="schedule"):
        config_from_dict({"optim": {"schedule": "cosine"}}).validate()


@pytest.mark.parametrize("override, words", [
    ({"optim": {"grad_clip": -1.0}}, "optim.grad_clip: must be > 0"),  # a negative limit reversed the gradients
    ({"optim": {"momentum": -1.0}}, "optim.momentum: must be in [0, 1)"),
    ({"optim": {"weight_decay": -1e-4}}, "optim.weight_decay: must be >= 0"),
    ({"optim": {"step_size": 0}}, "optim.step_size: must be >= 1"),
    ({"optim": {"gamma": 0.0}}, "optim.gamma: must be > 0"),
    ({"optim": {"nesterov": True, "momentum": 0.0}}, "optim.nesterov: needs optim.momentum > 0"),
    ({"num_threads": -1}, "num_threads: must be >= 1"),
    ({"val_blend": "bogus"}, "val_blend: must be one of"),  # was found at the first validation, after training
    ({"data": {"max_unlabeled": -1}}, "data.max_unlabeled: must be >= 0"),  # dropped one case by slicing
    ({"data": {"patch_size": [16, 16, 16]}, "batch_size": 2, "labeled_batch_size": 1},  # BatchNorm's ValueError
     "16 x 16 x 16 leaves the V-Net's deepest stage one voxel"),
])
def test_settings_that_would_crash_or_mislead_a_run_are_refused_before_it(override, words):
    with pytest.raises(InputError) as err:
        config_from_dict(override).validate()
    assert words in str(err.value)
    config_from_dict({"optim": {"grad_clip": 12.0}, "num_threads": 2}).validate()  # the sane values pass
    for fine in ({"batch_size": 4, "labeled_batch_size": 2}, {"model": {"normalization": "instancenorm"}}):
        config_from_dict({"data": {"patch_size": [16, 16, 16]}, "batch_size": 2, "labeled_batch_size": 1,
                          **fine}).validate()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_and_reload_round_trip(tmp_path, suffix):
    cfg = TrainConfig()
    apply_overrides(cfg, ["optim.lr=0.02", "data.patch_size=[64,64,48]", "method_params.x=1", "out=run"])
    path = save_config(cfg, tmp_path / f"config{suffix}")
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write leaves no temp file


def test_schedule_note_says_when_the_learning_rate_never_decays():
    from semisupseg.training.config import schedule_note

    cfg = TrainConfig(iterations=2500)  # steps 0..2499: the first x0.1 would come at step 2500
    note = schedule_note(cfg)
    assert note.startswith("note:") and "2500" in note and "0.01 to the end" in note and "poly" in note
    cfg.iterations = 2501  # step 2500 runs at 0.001
    assert schedule_note(cfg) is None
    cfg.iterations, cfg.optim.step_size = 2000, 1500
    assert schedule_note(cfg) is None
    cfg.optim.step_size, cfg.optim.schedule = 2500, "poly"
    assert schedule_note(cfg) is None
    cfg.optim.schedule, cfg.optim.gamma = "step", 1.0  # a 'step' that never changes the rate is no surprise
    assert schedule_note(cfg) is None


def test_residual_and_encoder_depths_overrides_reach_the_network_config():
    from semisupseg.methods import get_method
    from semisupseg.training.engine import network_config

    cfg = apply_overrides(TrainConfig(), ["model.residual=true", "model.encoder_depths=[2,3,3,3,3]",
                                          "model.max_filters=48"])
    net = network_config(cfg, get_method("sgrs"))
    assert net["residual"] is True and net["encoder_depths"] == [2, 3, 3, 3, 3] and net["max_filters"] == 48
    plain = network_config(TrainConfig(), get_method("sgrs"))
    assert "residual" not in plain and "encoder_depths" not in plain  # the releases' network: metadata unchanged


def test_under_torchrun_the_batchnorm_check_counts_each_processs_patches(monkeypatch):
    """2 + 2 patches of 16^3 are fine in one process, but under torchrun with 2 processes each passes 1 + 1: sgrs
    failed at its first step with BatchNorm's ValueError on rank 1. Refused before the run, per process."""
    cfg = {"data": {"patch_size": [16, 16, 16]}, "batch_size": 4, "labeled_batch_size": 2}
    config_from_dict(cfg).validate()
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="a pass of one patch per process of the 2 under torchrun"):
        config_from_dict(cfg).validate()
    config_from_dict({**cfg, "batch_size": 8, "labeled_batch_size": 4}).validate()
    config_from_dict({**cfg, "batch_size": 1, "labeled_batch_size": 1}).validate()  # fewer than the processes
