"""What a new user meets in the first hour (issue: mistyped options, help texts, messages, progress in logs,
demo outputs): each fixed behaviour is pinned here, on the real command-line parsers and the bundled scans."""
from __future__ import annotations

import argparse
import json
import re

import pytest

from semisupseg.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


# ------------------------------------------------------------------------------------------------ mistyped options
@pytest.mark.parametrize("argv, wrong, right", [
    (["segment", "scan.nii.gz", "--modle", "m.pt", "-o", "out"], "--modle", "--model"),
    (["train", "--iteratons", "5"], "--iteratons", "--iterations"),
    (["train", "--iteration", "5"], "--iteration", "--iterations"),  # no silent abbreviation
    (["evaluate", "pred", "ref", "--label", "1"], "--label", "--labels"),
])
def test_unknown_option_is_named_by_its_command_with_the_closest_name(argv, wrong, right, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"semisupseg {argv[0]}: error: unknown option {wrong} (did you mean {right}?)" in err
    assert "usage:" not in err and "required" not in err  # no usage block, no "--model is required" first
    assert len(err.strip().splitlines()) == 2


def test_no_parser_accepts_abbreviations_and_every_command_uses_the_same_parser_class():
    from semisupseg.cli.parser import Parser

    parser = build_parser()
    subs = dict(_subparsers(parser))
    assert {"train", "segment", "evaluate", "info", "demo"} <= set(subs)
    for name, sub in [("semisupseg", parser)] + list(subs.items()):
        assert isinstance(sub, Parser), name
        assert sub.allow_abbrev is False, name


def test_unknown_command_suggests_the_closest(capsys):
    with pytest.raises(SystemExit):
        main(["trian"])
    assert "unknown command 'trian' (did you mean train?)" in capsys.readouterr().err


def test_option_values_that_look_like_options_still_parse():
    args = build_parser().parse_args(["segment", "a.nii.gz", "-m", "m.pt", "-o", "out", "--roi", "-4", "20", "0",
                                      "9", "0", "9", "--overlap=0.25"])
    assert args.roi == [-4, 20, 0, 9, 0, 9] and args.overlap == 0.25
    args = build_parser().parse_args(["train", "--events", "-", "--out", "r", "--set", "optim.lr=0.1"])
    assert args.events == "-" and args.overrides == ["optim.lr=0.1"]
    assert build_parser().parse_args(["segment", "a.nii.gz", "-mm.pt", "-o", "o"]).model == "m.pt"


# ------------------------------------------------------------------------------------------------ help texts
def test_help_texts_are_plain(capsys):
    parser = build_parser()
    for name, sub in [("semisupseg", parser)] + list(_subparsers(parser)):
        text = sub.format_help()
        assert "``" not in text and not re.search(r":(class|func|mod|meth|attr):", text), name
        assert "(default: True)" not in text and "(default: False)" not in text, name
        assert "(default: None)" not in text, name
    seg = " ".join(dict(_subparsers(parser))["segment"].format_help().split())
    assert "(default: 0.5)" in seg  # real defaults are still shown


# ------------------------------------------------------------------------------------------------ --num-labeled
def test_num_labeled_count_or_fraction_and_the_error_that_sends_users_there(tmp_path, capsys):
    from semisupseg.data import sample_dataset

    hip = str(sample_dataset("hippocampus"))  # splits.json: train = 4 cases (all labeled), val = 2
    run = str(tmp_path / "run")
    # a semi-supervised method on a fully labeled folder: the error names --num-labeled
    assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--out", run]) == 2
    err = capsys.readouterr().err
    assert "--num-labeled" in err and "unlabeled" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--out", run, "--num-labeled", "1",
                 "--print-config"]) == 0
    assert "num_labeled: 1" in capsys.readouterr().out
    assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--out", run, "--num-labeled", "0.5",
                 "--print-config"]) == 0
    captured = capsys.readouterr()
    assert "num_labeled: 2" in captured.out and "2 of the 4 labeled training cases" in captured.err
    for bad in ("0", "1.5", "many"):
        assert main(["train", "--method", "mean-teacher", "--labeled", hip, "--out", run, "--num-labeled", bad,
                     "--print-config"]) == 2
        assert "--num-labeled" in capsys.readouterr().err
    help_text = dict(_subparsers(build_parser()))["train"].format_help()
    assert "--num-labeled N|FRACTION" in help_text
    # check-data takes the same option (the data options are shared)
    assert main(["check-data", "--labeled", hip, "--num-labeled", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["labeled"]) == 2 and len(report["unlabeled"]) == 2
