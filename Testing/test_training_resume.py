"""Kill-and-resume through the CLI: a run killed with SIGKILL mid-run and resumed with ``--resume RUN_DIR`` reaches
the same iteration count with its checkpoints intact and — CPU, fp32, one thread — the uninterrupted run's weights."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from semisupseg.checkpoint import load_model, load_state
from semisupseg.training import read_events

from helpers import train_child, wait_for_iteration


def _write_dataset(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(5)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        label = np.zeros((16, 24, 24), np.uint8)
        label[3:11, 4 + i:16 + i, 5:17] = 1
        image = (rng.normal(0, 1, label.shape) + 2.0 * label).astype(np.float32)
        for arr, folder in ((image, "imagesTr"), (label, "labelsTr")):
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing((1.5, 1.5, 2.0))
            sitk.WriteImage(img, str(root / folder / f"case{i}.nii.gz"))
    return root


def _config(path: Path, data: Path, iterations: int) -> Path:
    path.write_text(json.dumps({
        "method": "supervised", "iterations": iterations, "batch_size": 2, "labeled_batch_size": 2,
        "device": "cpu", "amp": "off", "num_threads": 1, "val_every": 10, "save_every": 2, "seed": 3,
        "method_params": {"dice_weight": 0.5, "ce_weight": 0.5},
        "optim": {"lr": 0.05},
        "model": {"n_filters": 2},
        "data": {"labeled": str(data), "validation": 1, "patch_size": [16, 16, 16]},
    }))
    return path


@pytest.mark.slow
def test_sigterm_cancel_then_sigkill_then_resume_matches_uninterrupted_run(tmp_path, capsys):
    from semisupseg.cli import main

    data = _write_dataset(tmp_path / "data")
    cfg = _config(tmp_path / "cfg.json", data, iterations=16)
    run = tmp_path / "run"
    events = run / "events.jsonl"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "busy")]) == 2  # refuses a used dir
    assert "not empty" in capsys.readouterr().err and (tmp_path / "busy" / "x.txt").read_text() == "mine"

    # 1. SIGTERM: saves and exits with 130
    p = train_child("--config", str(cfg), "--out", str(run))
    wait_for_iteration(p, events, 3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "--resume" in err, err
    last = read_events(events)[-1]
    assert last["event"] == "cancelled"
    k = last["iteration"]
    assert 3 <= k < 16 and load_state(run / "resume.pt")["iteration"] == k and (run / "last.pt").exists()

    # 2. resumed, then killed with SIGKILL (no chance to save anything)
    p = train_child("--resume", str(run))
    wait_for_iteration(p, events, k + 4)
    assert p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    kinds = [e["event"] for e in read_events(events)]
    assert kinds.count("resumed") == 1 and kinds[-1] != "finished"
    saved = load_state(run / "resume.pt")["iteration"]
    assert k <= saved < 16

    # 3. resumed again to the end; equal to an uninterrupted run
    assert main(["train", "--no-bar", "--resume", str(run)]) == 0
    assert main(["train", "--no-bar", "--config", str(cfg), "--out", str(tmp_path / "ref")]) == 0
    kinds = [e["event"] for e in read_events(events)]
    assert kinds.count("resumed") == 2 and kinds[-1] == "finished"
    state = load_state(run / "resume.pt")
    ref_state = load_state(tmp_path / "ref" / "resume.pt")
    assert state["iteration"] == ref_state["iteration"] == 16
    for name in ("last.pt", "best.pt"):
        _, card = load_model(run / name)
        assert card.training["iterations"] in (10, 16)
    assert all(torch.equal(ref_state["model"][k], state["model"][k]) for k in ref_state["model"])
    assert all(torch.equal(ref_state["optimizer"]["state"][i]["momentum_buffer"],
                           state["optimizer"]["state"][i]["momentum_buffer"]) for i in ref_state["optimizer"]["state"])
    assert ref_state["best_metric"] == state["best_metric"]


def test_config_pins_every_method_parameter(tmp_path):
    """config.yaml records the resolved method parameters, not only the overrides: a default changed by a later
    version does not change a run that is resumed with it."""
    from dataclasses import fields

    from semisupseg.cli import main
    from semisupseg.data import sample_dataset
    from semisupseg.methods.mean_teacher import MeanTeacherParams
    from semisupseg.training.config import load_config

    run = tmp_path / "run"
    assert main(["train", "--method", "mean-teacher", "--labeled", str(sample_dataset("hippocampus")),
                 "--split-labeled", "labeled_2", "--out", str(run), "--iterations", "1", "--validation", "0",
                 "--patch-size", "16", "16", "16", "--set", "model.n_filters=2", "--set", "num_threads=1",
                 "--set", "method_params.consistency=0.3", "--no-bar"]) == 0
    saved = load_config(run / "config.yaml").method_params
    assert set(saved) == {f.name for f in fields(MeanTeacherParams)}
    assert saved["consistency"] == 0.3 and saved["rampup_period"] == MeanTeacherParams().rampup_period
    assert MeanTeacherParams(**saved) == MeanTeacherParams(consistency=0.3)
