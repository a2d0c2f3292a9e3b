"""A run outlives the reader of its output: closing the pipes of a ``semisupseg train`` child (Slicer quitting, a
closed terminal) must not end the run."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from semisupseg.cli.streams import PipeSafeStream

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "semisupseg" / "sample_data" / "hippocampus"


def test_pipe_safe_stream_passes_writes_through():
    buf = io.StringIO()
    s = PipeSafeStream(buf)
    assert s.write("abc") == 3
    s.flush()
    assert buf.getvalue() == "abc" and not s.broken and s.getvalue() == "abc"


def test_training_finishes_after_its_output_pipes_close(tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "semisupseg", "train", "--method", "supervised", "--labeled", str(SAMPLE),
            "--num-labeled", "2", "--validation", "0", "--patch-size", "16", "16", "16", "--iterations", "40",
            "--out", str(run), "--events", "-", "--set", "model.n_filters=4", "--set", "num_threads=1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    # wait until training writes events, then the reader goes away
    for line in proc.stdout:
        if b'"iteration"' in line:
            break
    proc.stdout.close()
    proc.stderr.close()
    assert proc.wait(timeout=300) == 0
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "finished" and events[-1]["iteration"] == 40
    assert (run / "last.pt").exists()


def test_debug_environment_shows_the_traceback_behind_an_error_line(tmp_path, monkeypatch, capsys):
    """A user error is one line; with SEMISUPSEG_DEBUG=1 the same error comes with its traceback (the details)."""
    from semisupseg.cli import main

    missing = tmp_path / "missing.nii.gz"
    monkeypatch.delenv("SEMISUPSEG_DEBUG", raising=False)
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    monkeypatch.setenv("SEMISUPSEG_DEBUG", "1")
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: ")
