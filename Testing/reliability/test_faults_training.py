"""SIGKILL inside real training runs (issue 13, faults): the short version of ``benchmarks/fault_injection.py``.

The long version (50+ kills) is run by hand: ``nice -n 5 python benchmarks/fault_injection.py --kills 50``.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from semisupseg.fileio import atomic_open, remove_stale_temps, temp_destination, write_text_atomic
from semisupseg.training.events import Events, drop_partial_line, read_events

REPO = Path(__file__).resolve().parents[2]


def _fault_injection():
    spec = importlib.util.spec_from_file_location("fault_injection", REPO / "benchmarks" / "fault_injection.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fault_injection"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_resumed_log_does_not_glue_its_first_event_to_a_cut_line(tmp_path):
    log = tmp_path / "events.jsonl"
    first = Events(log, bar=False, lines=False)
    first.emit("started", iteration=0)
    first.emit("iteration", iteration=1, loss=0.5)
    first.close()
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"event": "iteration", "time": 1.0, "itera')  # a kill in the middle of a write
    second = Events(log, bar=False, lines=False)
    second.emit("resumed", iteration=1)
    second.close()
    lines = log.read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["started", "iteration", "resumed"]
    assert log.read_bytes().startswith(whole)
    assert drop_partial_line(log) == 0 and drop_partial_line(tmp_path / "missing.jsonl") == 0


def test_drop_partial_line_of_a_log_without_any_newline(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_bytes(b'{"event": "sta')
    assert drop_partial_line(log) == 14 and log.read_bytes() == b""
    log.write_bytes(b"")
    assert drop_partial_line(log) == 0


def test_stale_temporary_files_of_atomic_writers_are_recognised_and_removed(tmp_path):
    keep = tmp_path / "resume.pt"
    keep.write_bytes(b"complete")
    with pytest.raises(KeyboardInterrupt):  # a writer that never reached its rename (its finally removes the temp)
        with atomic_open(keep, "wb", overwrite=True) as fh:
            fh.write(b"half")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume.pt"]
    # what SIGKILL leaves: the temporary file, as the writer names it
    stale = [tmp_path / ".resume.pt.ab12_x.tmp", tmp_path / ".last.json.zz9.tmp", tmp_path / ".x.nii.gz.q1.tmp.nii.gz"]
    for p in stale:
        p.write_bytes(b"half")
    (tmp_path / ".hidden").write_text("the user's")
    (tmp_path / "notes.tmp").write_text("the user's")
    assert [temp_destination(p.name) for p in stale] == ["resume.pt", "last.json", "x.nii.gz"]
    assert temp_destination(".hidden") is None and temp_destination("notes.tmp") is None
    removed = remove_stale_temps(tmp_path, ["resume.pt", "last.json"])
    assert sorted(p.name for p in removed) == sorted(p.name for p in stale[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", ".x.nii.gz.q1.tmp.nii.gz", "notes.tmp",
                                                          "resume.pt"]
    assert keep.read_bytes() == b"complete"
    write_text_atomic("x", tmp_path / "a.txt")
    assert remove_stale_temps(tmp_path) == [tmp_path / ".x.nii.gz.q1.tmp.nii.gz"]


def test_check_run_folder_finds_half_written_files(tmp_path):
    fi = _fault_injection()
    (tmp_path / "last.json").write_text('{"format": "semisupseg-mo')
    (tmp_path / "resume.pt").write_bytes(b"PK\x03\x04 truncated zip")
    (tmp_path / "events.jsonl").write_text('{"event": "started"}\n{"ev\n{"event": "iteration"}\n{"event": "it')
    (tmp_path / ".best.pt.k2.tmp").write_bytes(b"x")
    check = fi.check_run_folder(tmp_path)
    assert sorted(h.split(":")[0] for h in check.half_written) == ["events.jsonl", "last.json", "resume.pt"]
    assert check.temps == [".best.pt.k2.tmp"]
    (tmp_path / "events.jsonl").write_text('{"event": "started"}\n{"event": "it')  # only the last line cut: tolerated
    for name in ("last.json", "resume.pt"):
        (tmp_path / name).unlink()
    check = fi.check_run_folder(tmp_path)
    assert check.half_written == [] and check.partial_event_line


@pytest.mark.slow
def test_sigkill_inside_writes_and_at_random_then_resume_matches_the_uninterrupted_run(tmp_path):
    """Four kills (in the middle of an event line, of resume.pt, before last.json's rename, at a random moment),
    a resume after each, then the finished run equals an uninterrupted one bitwise; no file was ever half-written
    and no temporary file is left."""
    fi = _fault_injection()
    plans = [{"file": "events.jsonl", "occurrence": 1, "call": 6},
             {"file": "resume.pt", "occurrence": 2, "call": 3},
             {"file": "last.json", "occurrence": 1, "call": 2},
             None]
    res = fi.run_campaign(len(plans), seed=4, work=tmp_path, iterations=24, plans=plans, log=lambda *a: None)
    print(res.table())
    assert not res.failures and not res.half_written and not res.mismatches, res.to_dict()
    assert res.completed == 1 and res.total_kills == 4 and res.planned_not_hit == 0, res.to_dict()
    assert res.kills["inside write: events.jsonl"] == 1 and res.partial_lines_seen >= 1
    assert res.temps_left_by_kills >= 2 and res.temps_remaining == []
    run = tmp_path / "run"
    lines = (run / "events.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["event"] for line in lines]  # every line whole: the cut one was removed
    assert kinds[0] == "started" and kinds[-1] == "finished"
    startup_kills = res.kills["random time (start-up)"]  # killed before it could say "resumed"
    assert res.resumes == 4 and kinds.count("resumed") == res.resumes - startup_kills
    assert [e["event"] for e in read_events(run / "events.jsonl")] == kinds
