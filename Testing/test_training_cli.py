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


def _sample():
    from semisupseg.data import sample_dataset

    return str(sample_dataset("hippocampus"))


def test_train_refuses_bad_settings_in_one_line_before_reading_data(tmp_path, capsys):
    """What a first hour trips over: no method, a patch the V-Net cannot take, unknown or ill-typed network and
    method options, contradictory resume options. Each is one line (exit 2), and the run folder is not created."""
    base = ["train", "--labeled", _sample(), "--out", str(tmp_path / "run"), "--iterations", "1", "--no-bar"]
    cases = [
        (base, "choose a method: --method NAME"),
        (base + ["--method", "supervised", "--patch-size", "40", "40", "40"], "multiple of 16"),
        (base + ["--method", "supervised", "--set", "data.patch_size=[8,8,8]"], "e.g. 16 16 16"),
        (base + ["--method", "supervised", "--set", "model.extra={foo: 1}"], "unknown network option(s) 'foo'"),
        (base + ["--method", "supervised", "--set", "model.extra={dropout:false}"], "space after a key's colon"),
        (base + ["--method", "supervised", "--set", "model.extra={dropout: maybe}"], "dropout must be true or false"),
        (base + ["--method", "supervised", "--set", "model.n_filters=0"], "n_filters must be an integer >= 1"),
        (base + ["--method", "supervised", "--set", "model.normalization=foo"], "normalization must be one of"),
        (base + ["--method", "mean-teacher", "--set", "method_params.rampup_period=x"],
         "parameter rampup_period must be an integer, got 'x'"),
        (["train", "--resume", str(tmp_path / "run"), "--overwrite"], "give one of them"),
        (base + ["--method", "supervised", "--device", "xla"], "device 'xla' is not supported"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
        assert not (tmp_path / "run").exists(), argv
    # a config file that names no method is no method either (it trained supervised for 6000 iterations)
    no_method = tmp_path / "no_method.yaml"
    no_method.write_text("iterations: 1\n")
    assert main(base + ["--config", str(no_method)]) == 2
    err = capsys.readouterr().err
    assert "choose a method" in err and "no_method.yaml names none" in err and not (tmp_path / "run").exists()
    # the config file's own out: names the run folder
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: supervised\nout: {tmp_path / 'from_config'}\n")
    assert main(["train", "--config", str(cfg), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["out"] == str(tmp_path / "from_config")


def test_resume_never_replaces_a_model_it_cannot_continue(tmp_path, capsys):
    """--resume on a folder with models but no resume state would train from iteration 0 and replace them: refused.
    --resume --iterations N below the saved iteration is refused too (the config would say the run was shorter).
    A resume state given where a model is expected is named as what it is."""
    run = tmp_path / "run"
    assert main(["train", "--method", "supervised", "--labeled", _sample(), "--out", str(run), "--iterations", "2",
                 "--no-bar", "--validation", "1", "--patch-size", "16", "16", "16", "--set", "model.n_filters=2",
                 "--set", "amp=off"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--iterations", "1"]) == 2
    assert "--iterations 1 ends before the saved state (iteration 2)" in capsys.readouterr().err
    # the network or the cases cannot change under a resume (its state was a traceback after the data was read)
    for change, words in ((["--set", "model.n_filters=4"], "model.n_filters (2 -> 4)"),
                          (["--set", "data.num_labeled=3"], "data.num_labeled (None -> 3)")):
        assert main(["train", "--resume", str(run), "--iterations", "3", *change]) == 2
        err = capsys.readouterr().err
        assert f"--resume cannot change {words}" in err and len(err.strip().splitlines()) == 1
    assert main(["info", str(run / "resume.pt")]) == 2
    assert "is a training run's resume state, not a model: use the run's best.pt or last.pt" in capsys.readouterr().err
    (run / "resume.pt").unlink()
    before = (run / "last.pt").read_bytes()
    assert main(["train", "--resume", str(run), "--iterations", "4", "--no-bar"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume: the run holds last.pt" in err and "--overwrite" in err
    assert (run / "last.pt").read_bytes() == before


def test_resuming_a_finished_run_asks_for_more_iterations(tmp_path, capsys):
    """A finished run resumed without new iterations would train nothing (and write --set changes into its
    config): refused, the config unchanged; with more iterations it continues."""
    run = tmp_path / "run"
    assert main(["train", "--method", "supervised", "--labeled", _sample(), "--out", str(run), "--iterations", "2",
                 "--no-bar", "--validation", "0", "--patch-size", "16", "16", "16", "--set", "model.n_filters=2",
                 "--set", "amp=off"]) == 0
    config = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "optim.lr=0.1"]) == 2
    assert "the run has done its 2 iterations: give --iterations N (more than 2)" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == config
    assert main(["train", "--resume", str(run), "--iterations", "3", "--no-bar"]) == 0


def test_a_resume_says_which_settings_change_from_the_saved_iteration_on(tmp_path, capsys):
    from semisupseg.cli.train import _check_resume_changes
    from semisupseg.training import TrainConfig

    saved = TrainConfig().to_dict()
    now = TrainConfig().to_dict()
    now["batch_size"], now["optim"]["lr"], now["iterations"] = 6, 0.005, 9000
    _check_resume_changes(saved, now, tmp_path)
    err = capsys.readouterr().err
    assert err.startswith("note: resuming with changed settings") and "batch_size 4 -> 6" in err
    assert "optim.lr 0.01 -> 0.005" in err and "iterations" not in err
    _check_resume_changes(saved, TrainConfig().to_dict(), tmp_path)
    assert capsys.readouterr().err == ""


def test_under_torchrun_only_rank_0_speaks_for_the_run(tmp_path, capsys, monkeypatch):
    """Every rank runs train's start-up: the plan, notes and the closing line came once per process (rank 1's own
    'finished' line without the best Dice)."""
    from semisupseg.cli.train import _say

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    _say("finished 10 iterations")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    _say("finished 10 iterations")
    assert capsys.readouterr().err == "finished 10 iterations\n"


def test_the_run_remembers_its_data_folders_absolutely_for_a_resume_from_anywhere(tmp_path, monkeypatch, capsys):
    """data.labeled typed relative was saved relative: a resume from another working folder (Slicer, a scheduler)
    then found no data."""
    import shutil

    shutil.copytree(_sample(), tmp_path / "data" / "hip")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--method", "supervised", "--labeled", "data/hip", "--out", "run", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["data"]
    assert printed["labeled"] == str(tmp_path / "data" / "hip")


def test_validation_typed_on_the_command_line_replaces_the_split_files_list(tmp_path):
    """The bundled set's splits.json has a 'val' list: --validation 0 still validated its 2 cases, silently."""
    import argparse

    from semisupseg.cli.train import explicit_overrides, register
    from semisupseg.training import TrainConfig, apply_overrides
    from semisupseg.training.loading import resolve_cases

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    for typed, expected in (([], 2), (["--validation", "0"], 0), (["--validation", "1"], 1)):
        args = parser.parse_args(["train", "--labeled", _sample(), "--split-labeled", "labeled_2", *typed])
        cfg = TrainConfig()
        apply_overrides(cfg, explicit_overrides(args))
        ds, notes = resolve_cases(cfg.data)
        assert len(ds.val) == expected, (typed, notes)


def test_a_failure_after_training_started_keeps_the_run_folder(tmp_path):
    """A refused start leaves no half-made run; a run that had started keeps its events (its failure's record),
    which the clean-up removed with the rest when the error was an InputError raised mid-run."""
    import json

    from semisupseg.cli.train import _undo_start

    run = tmp_path / "run"
    run.mkdir()
    (run / "heartbeat.json").write_text("{}")
    (run / "events.jsonl").write_text(json.dumps({"event": "started", "iteration": 0}) + "\n" +
                                      json.dumps({"event": "failed", "message": "InputError: ..."}) + "\n")
    _undo_start(run, None)
    assert sorted(p.name for p in run.iterdir()) == ["events.jsonl", "heartbeat.json"]
    (run / "events.jsonl").write_text(json.dumps({"event": "failed", "message": "bad data"}) + "\n")
    _undo_start(run, None)
    assert not run.exists()


def test_a_run_started_without_a_stop_file_stops_at_the_run_folders_own(tmp_path):
    """The Slicer panel's Cancel for a run it did not start creates ``RUN/.stop`` and could otherwise only send a
    signal, which reaches no process on Windows or on another host: a run started without ``--stop-file`` now
    watches that file. One left by an earlier run (older than this start) does not stop it."""
    import os
    import sys
    import time
    from pathlib import Path

    from helpers import train_child, wait_for_iteration
    from semisupseg.cli.train import DEFAULT_STOP_FILE
    from semisupseg.data import sample_dataset
    from semisupseg.training import read_events

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SemiSupSeg"))
    from SemiSupSegLib.training_logic import STOP_FILE

    assert DEFAULT_STOP_FILE == STOP_FILE  # the panel's Cancel makes the file the run watches
    run = tmp_path / "run"
    run.mkdir()
    stale = run / DEFAULT_STOP_FILE
    stale.touch()
    os.utime(stale, (time.time() - 3600, time.time() - 3600))  # an earlier run's cancel
    args = ["--method", "supervised", "--labeled", str(sample_dataset("hippocampus")), "--out", str(run),
            "--patch-size", "16", "16", "16", "--batch-size", "2", "--labeled-batch-size", "2", "--device", "cpu",
            "--set", "model.n_filters=4", "--set", "amp=off", "--set", "val_every=100000"]
    proc = train_child(*args, "--iterations", "3000")
    try:
        wait_for_iteration(proc, run / "events.jsonl", 3)
        assert proc.poll() is None  # the stale file did not stop it
        stale.touch()  # Cancel
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    kinds = [e["event"] for e in read_events(run / "events.jsonl")]
    assert kinds[-1] == "cancelled" and (run / "resume.pt").is_file()
