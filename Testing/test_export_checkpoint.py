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


def test_an_export_imports_back_whole_with_the_card_beside_it(tmp_path, home, capsys):
    """import-checkpoint ignored the card export-checkpoint writes beside the weights: without --spacing it refused,
    and the window fell back to 112 x 112 x 80 (other labels); with the card read, the round trip gives the model
    back - spacing, window, classes, normalisation and inference settings - and options still win over it."""
    from semisupseg.checkpoint import read_card

    peer = tmp_path / "la.pth"
    assert main(["export-checkpoint", "left-atrium", "-o", str(peer), "--layout", "uamt"]) == 0
    back = tmp_path / "back" / "la.pt"
    assert main(["import-checkpoint", str(peer), "-o", str(back), "--layout", "uamt"]) == 0
    assert "come from la.json beside the weights" in capsys.readouterr().err
    original, card = read_card(resolve_model("left-atrium")), read_card(back)
    for field in ("spacing_xyz", "patch_size_xyz", "class_names", "label_values", "normalization", "inference",
                  "network"):
        assert getattr(card, field) == getattr(original, field), field
    again = tmp_path / "again.pt"
    assert main(["import-checkpoint", str(peer), "-o", str(again), "--layout", "uamt", "--patch-size", "32", "32",
                 "32"]) == 0
    assert read_card(again).patch_size_xyz == (32, 32, 32)
    # no card beside: the spacing must be said
    peer.with_suffix(".json").unlink()
    assert main(["import-checkpoint", str(peer), "-o", str(tmp_path / "bare.pt"), "--layout", "uamt"]) == 2
    assert "--spacing MM is needed" in capsys.readouterr().err
