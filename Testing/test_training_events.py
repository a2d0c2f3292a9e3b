"""Events: JSON lines (non-finite → null, numpy/tensors converted), stream copy, progress callback, disabled sink."""
from __future__ import annotations

import io
import json

import numpy as np
import torch

from semisupseg.training.events import Events, read_events


def test_json_lines_file_stream_progress(tmp_path):
    stream = io.StringIO()
    got = []
    ev = Events(path=tmp_path / "e.jsonl", stream=stream, bar=False, progress=lambda f, m: got.append((f, m)))
    ev.emit("started", iteration=0, max_iterations=4)
    ev.emit("iteration", iteration=1, max_iterations=4, loss=np.float32(0.5), losses={"dice": torch.tensor(0.25)},
            lr=0.01, eta_s=90.0, logs={"w": float("nan"), "arr": np.arange(2)})
    ev.emit("finished", iteration=4, max_iterations=4)
    ev.close()
    lines = stream.getvalue().splitlines()
    assert [json.loads(ln)["event"] for ln in lines] == ["started", "iteration", "finished"]
    rec = read_events(tmp_path / "e.jsonl")[1]
    assert rec["loss"] == 0.5 and rec["losses"] == {"dice": 0.25}
    assert rec["logs"] == {"w": None, "arr": [0, 1]} and isinstance(rec["time"], float)
    assert got[0][0] == 0.25 and "ETA 1.5 min" in got[0][1] and got[-1] == (1.0, "finished")
    with open(tmp_path / "e.jsonl", "a") as fh:  # a truncated last line (killed writer) is skipped
        fh.write('{"event": "itera')
    assert len(read_events(tmp_path / "e.jsonl")) == 3


def test_disabled_sink_writes_nothing(tmp_path):
    ev = Events(path=tmp_path / "e.jsonl", bar=False, enabled=False)
    ev.emit("started", iteration=0)
    assert not (tmp_path / "e.jsonl").exists()


def test_plain_lines_start_then_at_most_one_iteration_line_per_interval_and_the_last():
    out = io.StringIO()
    ev = Events(bar=False, lines=True, line_stream=out, line_interval_s=3600.0)
    ev.emit("started", iteration=0, max_iterations=5, method="supervised", device="cpu")
    for it in range(1, 5):
        ev.emit("iteration", iteration=it, max_iterations=5, loss=0.5, eta_s=10.0)
    ev.emit("validation", iteration=4, max_iterations=5, metrics={"dice": 0.75})
    ev.emit("iteration", iteration=5, max_iterations=5, loss=0.25, eta_s=0.0)
    ev.emit("finished", iteration=5, max_iterations=5)  # the end is said by the caller, not here
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [ln.split()[0] for ln in lines] == ["started", "iteration", "validation", "iteration"]
    assert lines[1].startswith("iteration 1/5 (20%)") and lines[3].startswith("iteration 5/5 (100%)")
    assert lines[2] == "validation at iteration 4/5: dice 0.7500"
    every = io.StringIO()
    ev = Events(bar=False, lines=True, line_stream=every, line_interval_s=0.0)
    for it in range(1, 4):
        ev.emit("iteration", iteration=it, max_iterations=9, loss=0.5)
    assert len(every.getvalue().splitlines()) == 3
