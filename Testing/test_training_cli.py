"""``semisupseg methods`` and ``semisupseg train`` option handling (precedence, refusals) without training."""
from __future__ import annotations

import json

import yaml

from semisupseg.cli import main


def test_methods_lists_registered_methods(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [ln.split()[0] for ln in lines]
    assert "supervised" in names and names == sorted(names)
    sup = [ln for ln in lines if ln.startswith("supervised")][0]
    assert "Dice" in sup
    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = [r for r in rows if r["name"] == "supervised"][0]
    assert row["params"] == {"dice_weight": 1.0, "ce_weight": 0.0} and row["uses_unlabeled"] is False


def test_train_option_precedence(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: mean-teacher\niterations: 100\noptim: {lr: 0.02}\nbatch_size: 8\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--iterations", "50",
                 "--patch-size", "64", "64", "48", "--labeled", "DATA", "--validation", "a,b",
                 "--set", "optim.lr=0.005", "--set", "amp=off", "--print-config"]) == 0
    d = yaml.safe_load(capsys.readouterr().out)
    assert d["method"] == "mean-teacher" and d["iterations"] == 50 and d["batch_size"] == 8
    assert d["optim"]["lr"] == 0.005 and d["amp"] == "off" and d["data"]["patch_size"] == [64, 64, 48]
    assert d["data"]["validation"] == ["a", "b"] and d["out"] == str(tmp_path / "run")


def test_train_refusals(tmp_path, capsys):
    assert main(["train", "--method", "supervised"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "optim.lrr=1", "--print-config"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    assert main(["train", "--method", "no-such-method", "--labeled", str(tmp_path), "--out",
                 str(tmp_path / "r2")]) != 0
