"""The Slicer modules' background runner with real child processes: a ``python -m semisupseg segment`` child on a
bundled scan (progress parsed, results), cancel (stop file honoured; else the whole process tree killed, nothing
survives), failures reported with their one-line reason, temporary files always removed; and the warm worker
client (cache, restart after a crash, cancel of one request, nothing left after close)."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from SemiSupSegLib.runner import (ProcessRunner, ProgressTracker, WorkerClient, WorkerError, child_environment,
                                  package_root, python_command)
from semisupseg.inference import SegmentOptions, segment
from semisupseg.io import read_image, read_volume

from helpers import alive, gone, tiny_model

REPO = Path(__file__).resolve().parents[2]
LA_SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "la" / "imagesTr" / "06SR5RBREL16DQ6M8LWS.nii.gz"
HIPPO_SAMPLE = REPO / "src" / "semisupseg" / "sample_data" / "hippocampus" / "imagesTr" / "hippocampus_008.nii.gz"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

#: a child that starts a grandchild, reports both pids, then ignores the stop file and SIGTERM forever
STUBBORN_CHILD = r"""
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                               "signal.SIG_IGN); time.sleep(600)"])
print(json.dumps({"event": "pids", "child": os.getpid(), "grandchild": grandchild.pid}), flush=True)
print("a log line", flush=True)
while True:
    time.sleep(0.05)
"""

#: a child that leaves a grandchild holding its stdout and exits at once
LEAVES_A_STRAY = r"""
import json, os, subprocess, sys
g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(json.dumps({"event": "pids", "grandchild": g.pid}), flush=True)
"""

#: a child that fails with a traceback after some output
CRASHES = r"""
import json, sys
print(json.dumps({"event": "progress", "fraction": 0.5, "message": "half way"}), flush=True)
print("plain text on stdout", flush=True)
sys.stderr.write("Traceback (most recent call last):\n  File 'x', line 1\nValueError: bad thing happened\n")
sys.exit(3)
"""


# ----------------------------------------------------------------------------------------------------------------------
# Command and environment
# ----------------------------------------------------------------------------------------------------------------------

def test_python_command_outside_and_inside_slicer(tmp_path):
    assert python_command() == [sys.executable]  # slicer-core has no application: the current interpreter
    # a Slicer install: the application next to PythonSlicer (Linux/Windows layout) ...
    bin_dir = tmp_path / "Slicer-5.8" / "bin"
    bin_dir.mkdir(parents=True)
    app = bin_dir / "SlicerApp-real"
    app.touch()
    python_slicer = bin_dir / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    python_slicer.touch()
    assert python_command(app) == [str(python_slicer)]
    assert python_command(python_slicer) == [str(python_slicer)]
    # ... and the macOS layout, the application in Contents/MacOS and PythonSlicer in Contents/bin
    macos = tmp_path / "Slicer.app" / "Contents"
    (macos / "MacOS").mkdir(parents=True)
    (macos / "bin").mkdir()
    (macos / "MacOS" / "Slicer").touch()
    (macos / "bin" / "PythonSlicer").touch()
    assert python_command(macos / "MacOS" / "Slicer") == [str(macos / "bin" / "PythonSlicer")]


def test_child_environment_finds_this_package(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/elsewhere", str(package_root())]))
    env = child_environment({"OMP_NUM_THREADS": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(package_root()), "/elsewhere"]
    assert (package_root() / "semisupseg" / "__init__.py").is_file()
    assert env["OMP_NUM_THREADS"] == "1" and env["PYTHONUNBUFFERED"] == "1"


def test_progress_tracker_segment_and_training_events():
    t = ProgressTracker()
    t.update({"event": "case", "case": "a", "index": 0, "cases": 2}, now=0.0)
    t.update({"event": "progress", "fraction": 0.5, "message": "sliding windows"}, now=10.0)
    assert t.fraction == 0.25 and t.message == "[1/2] sliding windows"
    t.update({"event": "done"}, now=20.0)
    t.update({"event": "case", "case": "b", "index": 1, "cases": 2}, now=20.0)
    t.update({"event": "progress", "fraction": 0.5, "message": "sliding windows"}, now=30.0)
    # 0.25 -> 0.75 of the job in 20 s: 0.25 left takes 10 s more
    assert t.fraction == 0.75 and t.eta_s == pytest.approx(10.0)
    t = ProgressTracker()
    t.update({"event": "iteration", "iteration": 30, "max_iterations": 120, "eta_s": 90.0})
    assert t.fraction == 0.25 and t.eta_s == 90.0 and t.message == "iteration 30/120"


# ----------------------------------------------------------------------------------------------------------------------
# ProcessRunner
# ----------------------------------------------------------------------------------------------------------------------

def test_segment_child_progress_results_and_cleanup(tmp_path):
    """A real ``semisupseg segment`` child driven like the GUI does (poll from a timer): progress and ETA from its
    JSON lines, result files readable in ``on_event``, then the temporary folder is gone."""
    model = tiny_model(tmp_path / "la.pt")
    image = read_image(LA_SAMPLE)
    seen, read_back, logs = [], {}, []

    def on_event(event):
        seen.append(event)
        if event["event"] == "done":  # outputs put in the run's temporary folder are read here
            read_back.update({k: read_volume(v, allow_channels=True) for k, v in event["outputs"].items()})

    runner = ProcessRunner(["segment", str(LA_SAMPLE), "--model", str(model), "-o", "{temp_dir}/out",
                            "--json-progress", "--sdm", "--entropy"], on_event=on_event, on_log=logs.append,
                           env=ONE_THREAD)
    assert not runner.running and runner.returncode is None
    runner.start()
    temp_dir, stop_file = runner.temp_dir, runner.stop_file
    assert temp_dir.is_dir() and stop_file.parent == temp_dir and runner.command[-2:] == ["--stop-file",
                                                                                        str(stop_file)]
    polled, etas = [], []
    deadline = time.monotonic() + 300
    while runner.running and time.monotonic() < deadline:
        polled += runner.poll()
        if runner.eta_s is not None:
            etas.append(runner.eta_s)
        time.sleep(0.02)
    assert not runner.running and runner.returncode == 0 and runner.error is None
    assert polled == seen  # poll returns exactly what on_event got
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "case" and kinds[-2:] == ["done", "exit"] and "progress" in kinds
    assert seen[-1] == {"event": "exit", "returncode": 0, "cancelled": False, "error": None,
                        "seconds": seen[-1]["seconds"]}
    fractions = [e["fraction"] for e in seen if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert runner.progress == 1.0 and runner.message and etas and min(etas) >= 0
    # the child's outputs, read during the run, are those of the same model in-process
    expected = segment(image, model, options=SegmentOptions())
    assert set(read_back) == {"labels", "sdm", "entropy"}
    assert read_back["labels"].same_geometry(image)
    assert np.array_equal(read_back["labels"].array, expected.labels.array)
    assert np.allclose(read_back["sdm"].array, expected.sdm.array[0], atol=1e-5)
    # the temporary folder and the stop file are gone; nothing more to poll
    assert not temp_dir.exists() and runner.poll() == []


def test_failing_child_reports_its_one_line_reason(tmp_path):
    model = tiny_model(tmp_path / "la.pt")
    runner = ProcessRunner(["segment", str(tmp_path / "missing.nii.gz"), "--model", str(model), "-o",
                            str(tmp_path / "out"), "--json-progress"], env=ONE_THREAD)
    assert runner.start().wait(timeout=300) == 2
    assert runner.error == f"error: {tmp_path / 'missing.nii.gz'}: input not found"
    assert not runner.temp_dir.exists() and not (tmp_path / "out").exists()
    # a crash with a traceback: the last stderr line is the reason; JSON and plain stdout lines are told apart
    events = []
    crash = ProcessRunner(["ignored"], on_event=events.append, python=[sys.executable, "-c", CRASHES])
    assert crash.start().wait(timeout=60) == 3
    assert crash.error == "ValueError: bad thing happened"
    assert [e["event"] for e in events] == ["progress", "exit"] and events[-1]["error"] == crash.error
    assert crash.progress == 0.5 and crash.message == "half way"
    assert "plain text on stdout" in crash.log_text and "Traceback" in crash.log_text
    assert not crash.temp_dir.exists()
    # a Python that cannot be run: OSError at start, no temporary folder left
    broken = ProcessRunner(["segment"], python=[str(tmp_path / "no-python")])
    with pytest.raises(OSError):
        broken.start()
    assert not broken.temp_dir.exists()


def test_cancel_honoured_by_a_real_segment_child(tmp_path):
    """The stop file asks a real ``segment`` child to stop: it exits by itself (code 130) well within the grace
    period, writes no output, and the run reports cancelled, not failed."""
    model = tiny_model(tmp_path / "hip.pt", classes=("background", "anterior", "posterior"), spacing=(1, 1, 1),
                       patch=(16, 16, 16))
    events = []
    runner = ProcessRunner(["segment", str(HIPPO_SAMPLE), "--model", str(model), "-o", str(tmp_path / "out"),
                            "--json-progress", "--layout", "papers", "--tta", "x", "y", "z"],
                           on_event=events.append, env=ONE_THREAD).start()
    deadline = time.monotonic() + 300
    while not any(e["event"] == "progress" and e["fraction"] > 0.06 for e in events):
        assert runner.running and time.monotonic() < deadline, runner.log_text
        runner.poll()
        time.sleep(0.01)
    t = time.monotonic()
    runner.cancel(grace_s=60)
    assert time.monotonic() - t < 30  # it stopped by itself: no need for the grace period's end
    assert runner.returncode == 130 and runner.cancelled and runner.error is None
    assert events[-1]["event"] == "exit" and events[-1]["cancelled"] is True
    assert "cancelled" in runner.log_text
    assert not list((tmp_path / "out").glob("*label*")) and not runner.temp_dir.exists()


@pytest.mark.skipif(os.name != "posix", reason="process groups: the Windows branch (taskkill /T) is not tested here")
@pytest.mark.parametrize("block", [True, False])
def test_cancel_kills_the_whole_tree(tmp_path, block):
    """A child that ignores the stop file and SIGTERM, with a grandchild: after the grace period both are killed
    and nothing survives."""
    events = []
    runner = ProcessRunner(["segment"], on_event=events.append, python=[sys.executable, "-c", STUBBORN_CHILD])
    runner.start()
    deadline = time.monotonic() + 60
    while not events:
        runner.poll()
        assert time.monotonic() < deadline, runner.log_text
        time.sleep(0.02)
    pids = [events[0]["child"], events[0]["grandchild"]]
    assert pids[0] == runner.pid and all(alive(p) for p in pids)
    t = time.monotonic()
    runner.cancel(grace_s=0.5, block=block)
    if not block:
        assert runner.running  # returns at once; the GUI timer's poll() does the rest
        while runner.running:
            runner.poll()
            time.sleep(0.02)
    assert 0.5 <= time.monotonic() - t < 20
    assert runner.stop_file is not None and runner.returncode == -signal.SIGKILL
    assert runner.cancelled and runner.error is None and events[-1]["cancelled"] is True
    assert gone(pids), [p for p in pids if alive(p)]
    assert "a log line" in runner.log_text and not runner.temp_dir.exists()


@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_no_stray_outlives_a_finished_child(tmp_path):
    """A grandchild left running (and holding the stdout pipe) by a child that exits normally does not keep the run
    open and does not survive it."""
    events = []
    runner = ProcessRunner(["x"], on_event=events.append, python=[sys.executable, "-c", LEAVES_A_STRAY],
                           stop_file_option=None)
    assert runner.start().wait(timeout=60) == 0
    assert events[0]["event"] == "pids" and gone([events[0]["grandchild"]])
    assert runner.command[-1] == "x"  # no --stop-file for a command without one


@pytest.mark.skipif(os.name != "posix", reason="sessions")
def test_run_ends_even_if_an_escaped_process_holds_the_pipes(tmp_path, monkeypatch):
    """A grandchild that left the process tree (its own session) and keeps stdout open cannot be killed with the
    tree; the run still ends shortly after the child did instead of hanging."""
    monkeypatch.setattr("SemiSupSegLib.runner.PIPE_GRACE_S", 0.5)
    escapes = ("import json, subprocess, sys\n"
               "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
               "print(json.dumps({'event': 'pids', 'grandchild': g.pid}), flush=True)\n")
    events = []
    runner = ProcessRunner(["x"], on_event=events.append, python=[sys.executable, "-c", escapes])
    try:
        assert runner.start().wait(timeout=30) == 0
        assert "still held by a process outside" in runner.log_text and not runner.temp_dir.exists()
    finally:
        for e in events:
            if e.get("event") == "pids":
                os.kill(e["grandchild"], signal.SIGKILL)  # the test's own escaped process


@pytest.mark.skipif(os.name != "posix", reason="the sweep of stale folders is POSIX-only")
def test_folders_of_dead_runs_are_swept(tmp_path, monkeypatch):
    """Temporary folders left by a process killed before it could clean up (SIGKILL, a Slicer crash) are removed by
    the next run; those of live processes and other names are not touched."""
    import subprocess
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"semisupseg-run-{dead.pid}-abcd"
    (stale / "out").mkdir(parents=True)
    (stale / "stop").touch()
    live = tmp_path / f"semisupseg-run-{os.getppid()}-efgh"
    live.mkdir()
    other = tmp_path / "semisupseg-run-notapid"
    other.mkdir()
    runner = ProcessRunner(["x"], python=[sys.executable, "-c", "pass"], stop_file_option=None)
    runner.start()
    assert runner.temp_dir.parent == tmp_path and runner.temp_dir.name.startswith(f"semisupseg-run-{os.getpid()}-")
    assert runner.wait(timeout=60) == 0
    assert not stale.exists() and live.is_dir() and other.is_dir() and not runner.temp_dir.exists()


# ----------------------------------------------------------------------------------------------------------------------
# WorkerClient
# ----------------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_worker_client_cache_restart_cancel_close(tmp_path):
    model = tiny_model(tmp_path / "la.pt")
    image = read_image(LA_SAMPLE)
    expected = segment(image, model, options=SegmentOptions())
    client = WorkerClient(env=ONE_THREAD, threads=1)
    try:
        assert client.pid is None  # started lazily
        progress = []
        first = client.segment(image, model, outputs=["labels", "sdm", "entropy"], on_event=progress.append)
        result = first.wait(timeout=300)
        assert client.starts == 1 and result["model_cached"] is False
        assert [e["event"] for e in progress][0] == "started" and progress[-1] is result
        assert first.progress == 1.0 and first.input_dir is not None and not first.input_dir.exists()
        vols = first.volumes()
        assert vols["labels"].same_geometry(image) and np.array_equal(vols["labels"].array, expected.labels.array)
        assert np.allclose(vols["sdm"].array, expected.sdm.array[0], atol=1e-6)
        out_dir = first.output_dir
        first.cleanup()
        assert not out_dir.exists()
        # second click: the model is cached, the input can be a file
        second = client.segment(LA_SAMPLE, model).wait(timeout=300)
        assert second["model_cached"] is True
        pid = client.pid

        # an error names the file; the worker stays
        bad = client.segment(tmp_path / "missing.nii.gz", model)
        with pytest.raises(WorkerError, match="missing.nii.gz: input not found") as info:
            bad.wait(timeout=60)
        assert info.value.kind == "input" and client.pid == pid and client.alive

        # cancelling one request leaves the worker alive
        hip = tiny_model(tmp_path / "hip.pt", classes=("background", "a", "p"), spacing=(1, 1, 1), patch=(16, 16, 16))
        loaded = client.preload(hip).wait(timeout=60)
        assert loaded["event"] == "loaded" and loaded["model_cached"] is False
        events = []
        long = client.segment(HIPPO_SAMPLE, hip, options={"layout": "papers", "tta_axes": [0, 1, 2]},
                              on_event=events.append)
        while not any(e["event"] == "progress" and e["fraction"] > 0.06 for e in events):
            long.poll()
            assert not long.done, events[-1:]
            time.sleep(0.01)
        long.cancel(grace_s=60)
        assert long.done and long.cancelled and long.error_kind == "cancelled" and long.result is None
        assert client.pid == pid and client.ping()["cached_models"][-1] == str(hip.resolve())

        # the worker dies (crash, killed by the user): the next request starts a new one
        os.kill(pid, signal.SIGKILL)
        assert gone([pid])
        again = client.segment(image, model).wait(timeout=300)
        assert client.starts == 2 and client.pid != pid and again["model_cached"] is False
        assert np.array_equal(np.load(again["outputs"]["labels"]), expected.labels.array)

        # a request in flight when the worker dies gets an error, not a hang
        events = []
        doomed = client.segment(HIPPO_SAMPLE, hip, options={"layout": "papers", "tta_axes": [0, 1, 2]},
                                on_event=events.append)
        while not any(e["event"] == "progress" for e in events):
            doomed.poll()
            time.sleep(0.01)
        os.kill(client.pid, signal.SIGKILL)
        with pytest.raises(WorkerError, match="the segmentation worker exited") as info:
            doomed.wait(timeout=60)
        assert info.value.kind == "worker"
        last_pid = client.pid
    finally:
        temp = client.temp_dir
        client.close()
    assert not client.alive and gone([last_pid]) and not temp.exists()


def test_worker_that_cannot_start_is_reported(tmp_path):
    """A worker that dies at start (e.g. a broken environment): ``start()`` raises with its last stderr line and a
    request sent without waiting ends with the same reason; the temporary folder is still removed."""
    fails = "import sys; sys.stderr.write('ImportError: No module named torch\\n'); sys.exit(1)"
    client = WorkerClient(python=[sys.executable, "-c", fails])
    with pytest.raises(RuntimeError, match="did not start: ImportError: No module named torch"):
        client.start()
    request = client.segment(LA_SAMPLE, tmp_path / "any.pt")  # returns at once, the worker starts behind it
    with pytest.raises(WorkerError, match=r"worker exited \(code 1\): ImportError: No module named torch") as info:
        request.wait(timeout=60)
    assert info.value.kind == "worker" and client.starts == 2
    temp = client.temp_dir
    client.close()
    assert not temp.exists()


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="process groups")
def test_worker_killed_when_a_cancel_is_not_answered(tmp_path):
    """A request that does not stop within the grace period (here: the worker is frozen with SIGSTOP) gets the
    worker killed; the request ends as cancelled and the next one runs in a fresh worker."""
    model = tiny_model(tmp_path / "la.pt")
    client = WorkerClient(env=ONE_THREAD, threads=1)
    try:
        client.start()
        pid = client.pid
        os.kill(pid, signal.SIGSTOP)
        request = client.segment(LA_SAMPLE, model)
        request.cancel(grace_s=0.5, block=True)
        assert request.done and request.error_kind == "cancelled" and gone([pid])
        assert client.segment(LA_SAMPLE, model).wait(timeout=300)["event"] == "result"
        assert client.starts == 2
        # a closed client can be used again: a new worker and temporary folder
        client.close()
        assert not client.alive and client.ping()["event"] == "pong" and client.starts == 3
        assert client.temp_dir.is_dir()
    finally:
        client.close()
