"""``semisupseg export-checkpoint`` takes a model the way segment, rank and info do: a catalogue name (shipped, user or
run), a model file, or a training run's folder; what it writes is what the same model file gives by path."""
from __future__ import annotations

import json

import pytest
import torch

from semisupseg.catalogue import resolve_model
from semisupseg.checkpoint import export_peer_checkpoint
from semisupseg.cli import main

from helpers import tiny_model


def _same_state(a, b) -> bool:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("SEMISUPSEG_HOME", str(h))
    return h


def test_export_a_shipped_model_by_name(tmp_path, home, capsys):
    """The report: ``export-checkpoint hippocampus ...`` said "hippocampus: no such file"."""
    by_name, by_path = tmp_path / "by_name.pth", tmp_path / "by_path.pth"
    assert main(["export-checkpoint", "left-atrium", "-o", str(by_name), "--layout", "uamt"]) == 0
    assert f"wrote {by_name}" in capsys.readouterr().out
    export_peer_checkpoint(resolve_model("left-atrium"), by_path, "uamt")
    assert _same_state(by_name, by_path)
    assert json.loads(by_name.with_suffix(".json").read_text())["exported"]["from"] == "left-atrium.pt"
    # the shipped ensemble by name: its own error (pick a member), then a member
    assert main(["export-checkpoint", "hippocampus", "-o", str(tmp_path / "h.pth"), "--layout", "uamt"]) == 2
    err = capsys.readouterr().err
    assert "no such file" not in err and "hippocampus.pt: is an ensemble of 5 networks" in err
    assert main(["export-checkpoint", "hippocampus", "-o", str(tmp_path / "h.pth"), "--layout", "uamt",
                 "--member", "2"]) == 0
    assert (tmp_path / "h.pth").is_file() and (tmp_path / "h.json").is_file()


def test_export_a_user_model_a_run_and_a_run_folder(tmp_path, home, capsys):
    f = tiny_model(tmp_path / "files" / "mine.pt", seed=5, method="sassnet")
    run = tmp_path / "runs" / "myrun"
    best = tiny_model(run / "best.pt", seed=6, method="sassnet")
    tiny_model(run / "last.pt", seed=7, method="sassnet")
    assert main(["models", "add", str(f), "--name", "my-model"]) == 0
    assert main(["models", "register-run", str(run), "--name", "my-run"]) == 0
    capsys.readouterr()
    for model, want in (("my-model", f), ("my-run", best), (str(run), best)):
        out = tmp_path / f"{model.replace('/', '_')}.pth"
        assert main(["export-checkpoint", model, "-o", str(out), "--layout", "sassnet"]) == 0, model
        ref = tmp_path / "ref.pth"
        export_peer_checkpoint(want, ref, "sassnet", overwrite=True)
        assert _same_state(out, ref), model
    # the errors of the other commands: an unknown name, a run folder without a model yet, a missing file
    empty = tmp_path / "runs" / "started"
    empty.mkdir()
    for model, line in (("nosuch", "error: 'nosuch' is neither a model name of the catalogue"),
                        (str(empty), f"error: {empty}: holds no best.pt or last.pt: is it a training run that has "
                                     "saved a model yet?"),
                        (str(tmp_path / "gone.pt"), f"error: {tmp_path / 'gone.pt'}: model file not found")):
        assert main(["export-checkpoint", model, "-o", str(tmp_path / "x.pth"), "--layout", "sassnet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(line), (model, err)
    assert not (tmp_path / "x.pth").exists()
