"""``semisupseg worker`` end to end with a real child process: the JSON-line protocol, the model cache, errors that
keep the worker alive, cancellation of one request, and the end of the process when its stdin closes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from semisupseg.inference import SegmentOptions, segment
from semisupseg.io import read_image, read_volume
from semisupseg.worker import geometry_of, save_volume_npy, volume_from_npy

from helpers import tiny_model

REPO = Path(__file__).resolve().parents[1]
LA_SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "la" / "imagesTr" / "06SR5RBREL16DQ6M8LWS.nii.gz"
HIPPO_SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus" / "imagesTr" / "hippocampus_008.nii.gz"


class Worker:
    """A real ``python -m semisupseg worker`` child with line-based helpers."""

    def __init__(self, tmp_path: Path):
        env = dict(os.environ, OMP_NUM_THREADS="1", SEMISUPSEG_HOME=str(tmp_path / "home"))
        self.stderr = open(tmp_path / "worker.stderr", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "semisupseg", "worker", "--threads", "1"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env=env, cwd=str(REPO))
        self.ready = self.read()

    def send(self, request: dict) -> None:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, f"worker stdout closed; stderr: {self.stderr_text()}"
        return json.loads(line)  # every stdout line is protocol JSON

    def until(self, request_id, kinds=("result", "error", "pong", "bye")) -> list:
        events = []
        while True:
            ev = self.read()
            events.append(ev)
            if ev.get("id") == request_id and ev["event"] in kinds:
                return events

    def stderr_text(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """One worker for the protocol tests (each test's requests are independent; starting one costs seconds)."""
    w = Worker(tmp_path_factory.mktemp("worker"))
    yield w
    w.close()


def test_segment_requests_reuse_the_cached_model(tmp_path, worker):
    model = tiny_model(tmp_path / "la.pt")
    assert worker.ready["event"] == "ready" and worker.ready["pid"] == worker.proc.pid
    worker.send({"op": "ping", "id": "p"})
    pong = worker.read()
    assert pong["event"] == "pong" and pong["id"] == "p" and pong["pid"] == worker.proc.pid
    assert str(model.resolve()) not in pong["cached_models"]

    worker.send({"op": "segment", "id": 1, "input": str(LA_SAMPLE), "model": str(model),
                 "output_dir": str(tmp_path / "r1"), "outputs": ["labels", "sdm", "entropy", "probabilities"]})
    events = worker.until(1)
    first = events[-1]
    assert first["event"] == "result", first
    assert events[0]["event"] == "started"
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 3
    assert first["model_cached"] is False

    # the same model again: served from the cache, same labels; the input as a raw array + geometry this time
    image = read_image(LA_SAMPLE)
    raw = save_volume_npy(image.array, tmp_path / "in" / "image.npy")
    worker.send({"op": "segment", "id": 2, "input": str(raw), "geometry": geometry_of(image), "model": str(model),
                 "output_dir": str(tmp_path / "r2"), "outputs": ["labels"]})
    second = worker.until(2)[-1]
    assert second["event"] == "result" and second["model_cached"] is True
    assert second["timings"]["model_s"] < first["timings"]["model_s"]
    worker.send({"op": "ping", "id": "q"})
    assert worker.read()["cached_models"][-1] == str(model.resolve())

    # outputs: the input's geometry, the labels of an in-process segment() with the same model
    expected = segment(image, model, options=SegmentOptions())
    labels1 = volume_from_npy(first["outputs"]["labels"], first["geometry"])
    labels2 = volume_from_npy(second["outputs"]["labels"], second["geometry"])
    assert labels1.same_geometry(image) and labels2.same_geometry(image)
    assert np.array_equal(labels1.array, expected.labels.array) and np.array_equal(labels2.array, labels1.array)
    sdm = np.load(first["outputs"]["sdm"])
    assert sdm.shape == image.shape_zyx and np.allclose(sdm, expected.sdm.array[0], atol=1e-6)
    prob = np.load(first["outputs"]["probabilities"])
    assert np.allclose(prob, expected.probabilities.array[1], atol=1e-6)
    assert np.allclose(np.load(first["outputs"]["entropy"]), expected.entropy.array, atol=1e-6)
    assert first["voxels"] == {"left atrium": int(np.count_nonzero(expected.labels.array == 1))}
    assert first["class_names"] == ["background", "left atrium"] and first["label_values"] == [0, 1]

    # a changed model file is loaded again, not served stale
    time.sleep(0.01)
    tiny_model(tmp_path / "other.pt", seed=9)
    os.replace(tmp_path / "other.pt", model)
    worker.send({"op": "segment", "id": 3, "input": str(LA_SAMPLE), "model": str(model),
                 "output_dir": str(tmp_path / "r3"), "format": ".nrrd"})
    third = worker.until(3)[-1]
    assert third["event"] == "result" and third["model_cached"] is False
    labels3 = read_volume(third["outputs"]["labels"])
    assert labels3.same_geometry(image)
    assert np.array_equal(labels3.array, segment(image, model, options=SegmentOptions()).labels.array)


def test_load_ahead_of_the_first_request(tmp_path, worker):
    model = tiny_model(tmp_path / "preload.pt", seed=3)
    worker.send({"op": "load", "id": "l1", "model": str(model)})
    first = worker.read()
    assert first["event"] == "loaded" and first["model_cached"] is False and first["path"] == str(model.resolve())
    worker.send({"op": "load", "id": "l2", "model": str(model)})
    assert worker.read()["model_cached"] is True
    worker.send({"op": "segment", "id": "s", "input": str(LA_SAMPLE), "model": str(model),
                 "output_dir": str(tmp_path / "s")})
    assert worker.until("s")[-1]["model_cached"] is True
    worker.send({"op": "load", "id": "l3", "model": str(tmp_path / "absent.pt")})
    error = worker.read()
    assert error["event"] == "error" and "absent.pt: model file not found" in error["error"]


def test_errors_name_the_file_and_keep_the_worker_alive(tmp_path, worker):
    model = tiny_model(tmp_path / "la.pt")
    cases = [
        ({"input": str(tmp_path / "missing.nii.gz"), "model": str(model)}, "missing.nii.gz: input not found"),
        ({"input": str(LA_SAMPLE), "model": str(tmp_path / "nope.pt")}, "nope.pt: model file not found"),
        ({"input": str(LA_SAMPLE), "model": "no-such-name"}, "'no-such-name' is neither a model name"),
        ({"input": str(LA_SAMPLE), "model": str(model), "outputs": ["labels", "bogus"]}, "unknown outputs"),
        ({"input": str(tmp_path / "x.npy"), "model": str(model)}, "needs the request's 'geometry'"),
    ]
    for i, (fields, message) in enumerate(cases):
        worker.send(dict({"op": "segment", "id": i, "output_dir": str(tmp_path / f"o{i}")}, **fields))
        final = worker.until(i)[-1]
        assert final["event"] == "error" and final["kind"] == "input", final
        assert message in final["error"] and "\n" not in final["error"]
    # a corrupt model file: one line naming it
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 truncated")
    worker.send({"op": "segment", "id": "c", "input": str(LA_SAMPLE), "model": str(tmp_path / "corrupt.pt"),
                 "output_dir": str(tmp_path / "oc")})
    final = worker.until("c")[-1]
    assert final["event"] == "error" and "corrupt.pt" in final["error"]
    # outputs are never replaced without "overwrite"
    out = tmp_path / "kept"
    out.mkdir()
    (out / "labels.npy").write_bytes(b"precious")
    worker.send({"op": "segment", "id": "k", "input": str(LA_SAMPLE), "model": str(model), "output_dir": str(out)})
    final = worker.until("k")[-1]
    assert final["event"] == "error" and "labels.npy: output exists" in final["error"]
    assert (out / "labels.npy").read_bytes() == b"precious"
    # garbage lines and unknown ops are answered, not fatal
    worker.proc.stdin.write("this is not json\n")
    worker.proc.stdin.flush()
    bad = worker.read()
    assert bad["event"] == "error" and "bad request line" in bad["error"]
    worker.send({"op": "dance", "id": "d"})
    assert "unknown op 'dance'" in worker.read()["error"]
    # still alive and working
    worker.send({"op": "segment", "id": "ok", "input": str(LA_SAMPLE), "model": str(model),
                 "output_dir": str(tmp_path / "ok")})
    assert worker.until("ok")[-1]["event"] == "result"
    assert worker.proc.poll() is None


def test_cancel_one_request_via_stop_file(tmp_path, worker):
    """A request whose stop file appears ends with a 'cancelled' error; the worker serves the next one."""
    model = tiny_model(tmp_path / "hip.pt", classes=("background", "anterior", "posterior"), spacing=(1, 1, 1),
                       patch=(16, 16, 16))
    stop = tmp_path / "stop"
    # many windows (papers' layout, flips): long enough to be stopped in the middle
    worker.send({"op": "segment", "id": "long", "input": str(HIPPO_SAMPLE), "model": str(model),
                 "output_dir": str(tmp_path / "long"), "stop_file": str(stop),
                 "options": {"layout": "papers", "tta_axes": [0, 1, 2]}})
    events = []
    while True:
        ev = worker.read()
        events.append(ev)
        if ev["event"] == "progress" and ev["fraction"] > 0.06 and not stop.exists():
            stop.touch()
        if ev["event"] in ("result", "error"):
            break
    assert ev["event"] == "error" and ev["kind"] == "cancelled", ev
    assert max(e["fraction"] for e in events if e["event"] == "progress") < 0.9
    assert not (tmp_path / "long").exists() or not any((tmp_path / "long").iterdir())
    worker.send({"op": "segment", "id": "next", "input": str(HIPPO_SAMPLE), "model": str(model),
                 "output_dir": str(tmp_path / "next")})
    final = worker.until("next")[-1]
    assert final["event"] == "result" and final["model_cached"] is True


def test_worker_exits_when_stdin_closes(tmp_path):
    w = Worker(tmp_path)
    try:
        w.send({"op": "ping", "id": 1})
        assert w.read()["event"] == "pong"
        w.proc.stdin.close()
        assert w.proc.wait(timeout=30) == 0
    finally:
        w.close()


def test_shutdown_and_stray_prints_go_to_stderr(tmp_path):
    """Only protocol lines reach stdout, even if code prints or writes to file descriptor 1 (here: at exit, from a
    sitecustomize)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import atexit, os\n"
        "atexit.register(lambda: (print('stray print', flush=True), os.write(1, b'stray fd write\\n')))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    requests = '{"op": "ping", "id": 1}\n{"op": "shutdown", "id": 2}\n{"op": "ping", "id": 3}\n'
    out = subprocess.run([sys.executable, "-m", "semisupseg", "worker"], input=requests,
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    # shutdown ends the worker: the request after it is not served
    assert [json.loads(line)["event"] for line in lines] == ["ready", "pong", "bye"]
    assert "stray print" in out.stderr and "stray fd write" in out.stderr
