"""Kill-and-resume through the CLI: a run killed with SIGKILL mid-run and resumed with ``--resume RUN_DIR`` reaches
the same iteration count with its checkpoints intact and — CPU, fp32, one thread — the uninterrupted run's weights."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from semisupseg.checkpoint import load_model, load_state
from semisupseg.training import read_events

REPO = Path(__file__).resolve().parents[1]


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


def _train(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "semisupseg", "train", "--no-bar", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    data = _write_dataset(tmp_path / "data")
    cfg = _config(tmp_path / "cfg.json", data, iterations=16)
    killed = _train("--config", str(cfg), "--out", str(tmp_path / "run"))
    events = tmp_path / "run" / "events.jsonl"
    deadline = time.time() + 120
    seen = 0
    while time.time() < deadline and killed.poll() is None:
        if events.exists():
            its = [e["iteration"] for e in read_events(events) if e["event"] == "iteration"]
            seen = max(its, default=0)
            if seen >= 5:
                break
        time.sleep(0.02)
    assert killed.poll() is None, f"the run ended before it could be killed: {killed.communicate()}"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert "finished" not in [e["event"] for e in read_events(events)]
    saved = load_state(tmp_path / "run" / "resume.pt")["iteration"]
    assert 4 <= saved < 16 and saved % 2 == 0

    resumed = _train("--resume", str(tmp_path / "run"))
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    from semisupseg.cli import main

    assert main(["train", "--no-bar", "--config", str(cfg), "--out", str(tmp_path / "ref")]) == 0  # uninterrupted

    kinds = [e["event"] for e in read_events(events)]
    assert kinds.count("resumed") == 1 and kinds[-1] == "finished"
    state = load_state(tmp_path / "run" / "resume.pt")
    assert state["iteration"] == 16
    for name in ("last.pt", "best.pt"):
        model, card = load_model(tmp_path / "run" / name)
        assert card.training["iterations"] in (10, 16)
    ref_state = load_state(tmp_path / "ref" / "resume.pt")
    assert all(torch.equal(ref_state["model"][k], state["model"][k]) for k in ref_state["model"])
    assert ref_state["best_metric"] == state["best_metric"]


def test_cli_refuses_non_empty_run_dir_and_cancels_on_sigterm(tmp_path, capsys):
    data = _write_dataset(tmp_path / "data")
    cfg = _config(tmp_path / "cfg.json", data, iterations=10_000)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("mine")
    from semisupseg.cli import main

    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "busy")]) == 2
    assert capsys.readouterr().err.count("not empty") == 1 and (tmp_path / "busy" / "x.txt").read_text() == "mine"
    p = _train("--config", str(cfg), "--out", str(tmp_path / "run"))
    events = tmp_path / "run" / "events.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if events.exists() and any(e["event"] == "iteration" for e in read_events(events)):
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "--resume" in err
    last = read_events(events)[-1]
    assert last["event"] == "cancelled"
    assert load_state(tmp_path / "run" / "resume.pt")["iteration"] == last["iteration"]
