"""The run folder's heartbeat and :func:`run_status`, with real ``semisupseg train`` children on the bundled scans:
running, cancelled (SIGTERM), crashed (SIGKILL), finished, failed; a live run folder refuses a second process; a
folder holding only the log of a failed start takes a new start (issue: rerunning the corrected command)."""
from __future__ import annotations

import json
import signal
import socket
import time

import pytest

from semisupseg.cli import main
from semisupseg.data import sample_dataset
from semisupseg.training import read_events
from semisupseg.training.heartbeat import (HEARTBEAT_FILE, Heartbeat, LogSummary, heartbeat_alive, read_heartbeat,
                                           run_state, run_status)

from helpers import train_child, wait_for_iteration

HIPPO = sample_dataset("hippocampus")
TINY = ["--labeled", str(HIPPO), "--split-labeled", "labeled_2", "--patch-size", "16", "16", "16",
        "--method", "supervised", "--amp", "off", "--set", "model.n_filters=4", "--set", "num_threads=1",
        "--set", "save_every=2", "--set", "val_every=1000"]


@pytest.mark.slow
def test_status_of_a_real_run_through_cancel_kill_resume_and_finish(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_status(run) == "empty"
    p = train_child(*TINY, "--iterations", "5000", "--out", str(run))
    try:
        wait_for_iteration(p, run / "events.jsonl", 2)
        state = run_state(run)
        assert state.status == "running" and state.pid == p.pid and state.host == socket.gethostname()
        assert state.beat_age_s < 30 and state.max_iterations == 5000
        # a second process is refused while it runs, by the CLI and by the engine, without touching its files
        before = (run / "events.jsonl").read_bytes()
        for args in (["--resume", str(run)], [*TINY, "--out", str(run), "--overwrite"]):
            assert main(["train", "--no-bar", *args]) == 2
            err = capsys.readouterr().err
            assert f"a training process is running in this folder (pid {p.pid}" in err, err
        assert (run / "events.jsonl").read_bytes()[:len(before)] == before
        assert read_heartbeat(run)["pid"] == p.pid
        # SIGTERM: the engine saves, logs 'cancelled' and its heartbeat says so
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=120)
        assert p.returncode == 130
        assert run_status(run) == "cancelled" and read_heartbeat(run)["status"] == "cancelled"
        k = run_state(run).iteration
        assert k >= 2
        # resumed, then killed outright: no final event, the pid is gone -> crashed
        p = train_child("--resume", str(run))
        wait_for_iteration(p, run / "events.jsonl", k + 2)
        assert run_status(run) == "running"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        state = run_state(run)
        assert state.status == "crashed" and read_heartbeat(run)["status"] == "running"  # as the kill left it
        assert state.iteration >= k + 2 and state.last_event["event"] != "cancelled"
        # the crashed run resumes (a dead heartbeat is no lock) and finishes
        assert main(["train", "--no-bar", "--resume", str(run), "--iterations", str(state.iteration + 2)]) == 0
        state = run_state(run)
        assert state.status == "finished" and state.iteration == state.max_iterations
        assert read_heartbeat(run)["status"] == "finished" and read_heartbeat(run)["ended"] is not None
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_failed_start_then_corrected_start_in_the_same_folder(tmp_path, capsys):
    run = tmp_path / "run"
    bad = tmp_path / "bad"
    (bad / "imagesTr").mkdir(parents=True)
    (bad / "labelsTr").mkdir()
    (bad / "imagesTr" / "a.nii.gz").write_bytes(b"not an image")
    (bad / "labelsTr" / "a.nii.gz").write_bytes(b"not a label")
    args = ["--patch-size", "16", "16", "16", "--amp", "off", "--set", "model.n_filters=4", "--set",
            "num_threads=1", "--validation", "0", "--iterations", "2", "--method", "supervised", "--out", str(run)]
    assert main(["train", "--no-bar", "--labeled", str(bad), *args]) == 2
    assert "a.nii.gz" in capsys.readouterr().err
    assert run_status(run) == "empty"  # unreadable data is found before the run folder is made
    # a start that fails inside the engine (here: an overlay case that is not a case of the run)
    good = ["--labeled", str(HIPPO), "--split-labeled", "labeled_2", *args]
    assert main(["train", "--no-bar", *good, "--overlay-case", "hippocampus_999"]) == 2
    assert "overlay case 'hippocampus_999' is not a case of this run" in capsys.readouterr().err
    # a refused start leaves no half-made run behind (no heartbeat, no events): the folder it made is gone
    assert run_status(run) == "empty" and not run.exists()
    assert main(["train", "--no-bar", "--resume", str(run)]) == 2  # nothing to resume: said so
    assert str(run) in capsys.readouterr().err
    # the corrected command starts in the same folder (no --overwrite needed: the folder holds no run state)
    assert main(["train", "--no-bar", *good]) == 0
    events = read_events(run / "events.jsonl")
    assert [e["event"] for e in events][0] == "started" and events[-1]["event"] == "finished"
    assert run_status(run) == "finished"
    # now it holds a run: a fresh start is refused, as before
    assert main(["train", "--no-bar", "--labeled", str(HIPPO), "--split-labeled", "labeled_2", *args]) == 2
    assert "holds a run" in capsys.readouterr().err
    # someone else's folder is not a run folder: refused, their file untouched
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["train", "--no-bar", "--labeled", str(HIPPO), *args[:-1], str(other)]) == 2
    assert "not empty" in capsys.readouterr().err and (other / "notes.txt").read_text() == "mine"


def test_heartbeat_liveness_rules(tmp_path):
    run = tmp_path / "r"
    hb = Heartbeat(run, interval_s=0.05, max_iterations=10)
    hb.iteration = 3
    hb.start()
    try:
        first = read_heartbeat(run)["beat"]
        time.sleep(0.3)
        rec = read_heartbeat(run)
        assert rec["beat"] > first and rec["iteration"] == 3 and heartbeat_alive(rec)
        assert run_status(run) == "running"  # alive before any event is logged (loading data)
        with pytest.raises(Exception, match="a training process is running"):
            Heartbeat(run).start()
    finally:
        hb.stop("failed")
    assert run_status(run) == "failed" and not heartbeat_alive(read_heartbeat(run))
    rec = read_heartbeat(run)
    # our own pid with another start time: the pid was reused by another process
    if rec["pid_start"] is not None:
        assert not heartbeat_alive(dict(rec, status="running", beat=time.time(), pid_start=rec["pid_start"] + 1))
    assert heartbeat_alive(dict(rec, status="running", beat=time.time()))
    assert not heartbeat_alive(dict(rec, status="running", beat=time.time() - 3600))  # stale beat
    # another machine sharing the folder: only the beat's age can tell
    other = dict(rec, status="running", host=socket.gethostname() + "-other", pid=1)
    assert heartbeat_alive(dict(other, beat=time.time()))
    assert not heartbeat_alive(dict(other, beat=time.time() - 3600))
    # a log whose last session has no final event and a stale heartbeat: crashed
    (run / "events.jsonl").write_text(json.dumps({"event": "started", "iteration": 0, "max_iterations": 10}) + "\n"
                                      + json.dumps({"event": "iteration", "iteration": 4, "max_iterations": 10})
                                      + "\n{\"event\": \"iterat")
    (run / HEARTBEAT_FILE).write_text(json.dumps(dict(other, beat=time.time() - 3600)))
    state = run_state(run)
    assert state.status == "crashed" and state.iteration == 4


def test_run_state_from_a_log_summary_is_the_state_from_the_file(tmp_path):
    """A reader that keeps a LogSummary of what it has read gets the same state as one that reads the whole log."""
    def ev(kind, it=None, **kw):
        return dict(kw, event=kind, **({} if it is None else {"iteration": it, "max_iterations": 10}))

    logs = {
        "empty": [],
        "crashed": [ev("started", 0), ev("iteration", 4)],
        "finished": [ev("started", 0), ev("iteration", 10), ev("finished", 10)],
        "cancelled then resumed, crashed": [ev("started", 0), ev("cancelled", 3, message="stop"), ev("resumed", 3),
                                            ev("iteration", 5)],
        "a failed start after a finished run": [ev("started", 0), ev("finished", 10), ev("failed", message="bad")],
        "cancelled": [ev("started", 0), ev("iteration", 2), ev("cancelled", 2, message="stop file")],
        "overlays last": [ev("started", 0), ev("finished", 10), ev("overlays", case="c1")],
    }
    dead = {"format": "semisupseg-heartbeat", "pid": 1, "host": socket.gethostname() + "-other", "status": "running",
            "beat": time.time() - 3600, "iteration": 7, "max_iterations": 10}
    statuses = {}
    for i, (name, events) in enumerate(logs.items()):
        for j, record in enumerate((None, dead, dict(dead, status="finished"))):
            run = tmp_path / f"{i}-{j}"
            run.mkdir()
            if events:
                (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
            if record is not None:
                (run / HEARTBEAT_FILE).write_text(json.dumps(record))
            summary = LogSummary()
            for e in events:  # as an incremental reader feeds it, one event at a time
                summary.add([e])
            now = time.time()
            state = run_state(run, now=now, log=summary)
            assert state == run_state(run, now=now), (name, record)
            statuses[name, j] = (state.status, state.iteration, state.message)
    assert statuses["empty", 0] == ("empty", None, None) and statuses["empty", 2] == ("finished", 7, None)
    assert statuses["crashed", 1] == ("crashed", 4, None)
    assert statuses["cancelled then resumed, crashed", 1] == ("crashed", 5, None)
    assert statuses["a failed start after a finished run", 1] == ("failed", 10, "bad")
    assert statuses["cancelled", 0] == ("cancelled", 2, "stop file")
    assert statuses["overlays last", 1] == ("finished", 10, None)
