"""Batch inference (issue 13, faults): ``semisupseg segment`` over many files goes on past bad files, reports them
at the end with a non-zero exit, leaves no outputs for them, and its memory stays flat. The short version of
``benchmarks/batch_memory.py`` (100 files: ``nice -n 5 python benchmarks/batch_memory.py --files 100 --bad 2``)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "src" / "semisupseg" / "models" / "hippocampus.pt"


def _batch_memory():
    spec = importlib.util.spec_from_file_location("batch_memory", REPO / "benchmarks" / "batch_memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["batch_memory"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    if not MODEL.exists():
        pytest.skip("the shipped hippocampus model is not in this checkout")
    bm = _batch_memory()
    tmp = tmp_path_factory.mktemp("batch")
    paths = bm.make_files(tmp / "in", 20, 2, seed=3)
    (tmp / "out").mkdir()
    (tmp / "out" / "case019_label.nii.gz").write_bytes(b"the user's file")  # not in this batch: kept
    paths = paths[:19]
    res = bm.run_batch(paths, MODEL, tmp / "out")
    return paths, tmp / "out", res


@pytest.mark.slow
def test_a_batch_goes_on_past_bad_files_and_fails_at_the_end(batch):
    paths, out, res = batch
    bad = ["case006", "case013"]  # the truncated NIfTI and the text file (make_files puts them at n/3 and 2n/3)
    assert res["returncode"] == 2, res["stderr"]
    assert [f["case"] for f in res["failed"]] == bad
    assert "truncated" in res["failed"][0]["error"] and "case006.nii.gz" in res["failed"][0]["error"]
    assert "text file" in res["failed"][1]["error"] and "case013.nii.gz" in res["failed"][1]["error"]
    good = [p.name.split(".")[0] for p in paths if p.name.split(".")[0] not in bad]
    assert res["done"] == good  # every other case, in order, including those after the bad files
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{c}_label.nii.gz" for c in good]
                                                           + ["case019_label.nii.gz"])
    assert (out / "case019_label.nii.gz").read_bytes() == b"the user's file"
    assert res["summary"]["cases"] == 19 and [f["case"] for f in res["summary"]["failed"]] == bad
    errors = [line for line in res["stderr"].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 2 of 19 cases failed") and "Traceback" not in \
        res["stderr"]
    assert "case006.nii.gz" in errors[0] and "case013.nii.gz" in errors[0]


@pytest.mark.slow
def test_a_batch_memory_stays_flat(batch):
    _, _, res = batch
    rss = res["rss_mb"]
    assert len(rss) == 19
    # The resident size after each case jumps between allocator levels ~15-25 MiB apart with the crop's size and what
    # the allocator keeps (seen 397-422 and 509-526 MiB within flat batches; a CI run had cases 3-7 mostly low and the
    # last five all high), so neither two readings nor two floors can be compared. The least-squares trend over
    # cases 3-19 can: a jump of h MiB between the halves tilts it by at most ~0.09 h per case (< 2.5 MiB/case for
    # h = 25), while a model copy kept per case (~9 MiB) gives ~9 MiB/case. A leak of one case's arrays (~0.5
    # MiB/case) is below this test's resolution (the 100-file benchmarks/batch_memory.py is the place for that).
    trend = float(np.polyfit(np.arange(len(rss) - 2), np.asarray(rss[2:], dtype=float), 1)[0])
    assert trend < 4.0, (trend, rss)
    assert res["peak_mb"] < 1024, res["peak_mb"]


def test_plain_progress_lines_say_each_failure_and_go_on(tmp_path, capsys):
    """Without --json-progress: a 'failed:' line per bad case as it happens, the good case still written."""
    if not MODEL.exists():
        pytest.skip("the shipped hippocampus model is not in this checkout")
    from semisupseg.cli import main

    bm = _batch_memory()
    paths = bm.make_files(tmp_path / "in", 3, 1, seed=1)
    assert main(["segment", *map(str, paths), "--model", str(MODEL), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("failed: case001")]
    assert len(failed) == 1 and "going on with the other cases" in failed[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case000_label.nii.gz", "case002_label.nii.gz"]
    assert err.strip().splitlines()[-1].startswith("error: 1 of 3 cases failed")


def test_a_single_bad_input_is_still_the_commands_error(tmp_path, capsys):
    from semisupseg.cli import main

    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not an image")
    assert main(["segment", str(bad), "--model", str(MODEL), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "bad.nii.gz" in err[-1] and "cases failed" not in err[-1]
    assert not (tmp_path / "out").exists()


def test_json_progress_failed_events_move_the_runner_progress_on():
    sys.path.insert(0, str(REPO / "SemiSupSeg"))
    from SemiSupSegLib.runner import ProgressTracker

    tracker = ProgressTracker()
    for event in ({"event": "case", "case": "a", "index": 0, "cases": 2}, {"event": "done", "case": "a"},
                  {"event": "case", "case": "b", "index": 1, "cases": 2},
                  {"event": "failed", "case": "b", "index": 1, "cases": 2, "error": "b.nii.gz: truncated"}):
        tracker.update(json.loads(json.dumps(event)), now=0.0)
    assert tracker.fraction == 1.0 and "failed" in tracker.message
