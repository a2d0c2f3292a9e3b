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
