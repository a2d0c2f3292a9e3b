"""Commands run side by side (:mod:`semisupseg.cli.side_by_side`, the demo's two trainings): they really overlap,
their events become prefixed progress lines and the rest goes to their logs, a failure stops the others (their
whole process groups, also a child that ignores SIGTERM) and names the failed run, Ctrl-C stops them all."""
from __future__ import annotations

import io
import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import gone
from semisupseg.cli.side_by_side import ChildRun, child_command, run_side_by_side
from semisupseg.errors import SemiSupSegError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX here")

#: a child that runs the Python code given as its argument
SCRIPT = textwrap.dedent("""
    import json, os, signal, subprocess, sys, time
    def event(kind, **f):
        print(json.dumps(dict(event=kind, **f)), flush=True)
    exec(sys.argv[1])
""")


def python(argv):
    return [sys.executable, "-c", SCRIPT, *argv]


def test_runs_overlap_and_their_events_become_prefixed_lines(tmp_path):
    flag = tmp_path / "b-started"
    # a waits for a file that b writes: this ends only if both run at the same time
    a = ChildRun("a", [f"""
event("started", method="m", iteration=0, max_iterations=2)
for _ in range(400):
    if os.path.exists({str(flag)!r}): break
    time.sleep(0.05)
else:
    sys.exit(7)
print("not an event", flush=True)
print("to stderr", file=sys.stderr, flush=True)
event("iteration", iteration=1, max_iterations=2, loss=0.5)
event("iteration", iteration=2, max_iterations=2, loss=0.25)
event("finished", iteration=2, max_iterations=2, elapsed_s=1.0)
"""], tmp_path / "a.log")
    b = ChildRun("b", [f"open({str(flag)!r}, 'w').close(); time.sleep(0.3); event('finished', iteration=5)"],
                 tmp_path / "b.log")
    out = io.StringIO()
    run_side_by_side([a, b], jobs=2, stream=out, interval_s=3600, command=python)
    lines = out.getvalue().splitlines()
    assert a.returncode == b.returncode == 0 and a.seconds > 0 and b.seconds > 0
    assert "[a] started m at iteration 0/2 on ?: ? labeled, ? unlabeled, ? validation cases" in lines
    # iteration lines within the interval after the last line are not shown; started/finished always are
    assert not any(x.startswith("[a] iteration") for x in lines)
    assert "[a] finished at iteration 2/2 in 1 s" in lines and "[b] finished at iteration 5 in ?" in lines
    log = (tmp_path / "a.log").read_text()
    assert "not an event" in log and "to stderr" in log and '"event"' not in log


def test_one_job_runs_them_one_after_the_other(tmp_path):
    flag = tmp_path / "b-started"
    a = ChildRun("a", [f"""
for _ in range(20):
    if os.path.exists({str(flag)!r}): sys.exit(0)
    time.sleep(0.05)
print("b never started while a ran", file=sys.stderr)
"""], tmp_path / "a.log")
    b = ChildRun("b", [f"open({str(flag)!r}, 'w').close(); [event('iteration', iteration=i, max_iterations=2, "
                       f"loss=1 / i) for i in (1, 2)]"], tmp_path / "b.log")
    out = io.StringIO()
    run_side_by_side([a, b], jobs=1, stream=out, interval_s=0, command=python)
    assert "b never started" in (tmp_path / "a.log").read_text() and flag.exists()
    lines = out.getvalue().splitlines()  # with no interval, every iteration has its line
    assert [x.split(",")[0] for x in lines] == ["[b] iteration 1/2 (50%)", "[b] iteration 2/2 (100%)"]


def test_a_failure_stops_the_others_and_their_children_and_names_the_log(tmp_path):
    pids = tmp_path / "pids.json"
    # a ignores SIGTERM and has a grandchild in its process group: both must be gone after the failure
    a = ChildRun("a", [f"""
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
json.dump([os.getpid(), child.pid], open({str(pids)!r}, "w"))
time.sleep(120)
"""], tmp_path / "a.log")
    b = ChildRun("b", [f"""
while not os.path.exists({str(pids)!r}): time.sleep(0.05)
time.sleep(0.2)
print("Traceback: something broke", file=sys.stderr)
sys.exit(3)
"""], tmp_path / "b.log")
    out = io.StringIO()
    start = time.monotonic()
    with pytest.raises(SemiSupSegError) as err:
        run_side_by_side([a, b], jobs=2, stream=out, grace_s=1.0, command=python)
    assert time.monotonic() - start < 30
    assert str(err.value) == f"b ended with exit code 3; its log: {tmp_path / 'b.log'}"
    assert "[b] Traceback: something broke" in out.getvalue()  # the failed run's last log lines
    for pid in json.loads(pids.read_text()):
        assert gone([pid]), pid


def test_ctrl_c_in_the_parent_stops_every_child(tmp_path):
    pid_file = tmp_path / "pid"

    class Interrupting(io.StringIO):
        def write(self, text):
            raise KeyboardInterrupt

    a = ChildRun("a", [f"""
open({str(pid_file)!r}, "w").write(str(os.getpid()))
event("started")
time.sleep(120)
"""], tmp_path / "a.log")
    with pytest.raises(KeyboardInterrupt):
        run_side_by_side([a], jobs=1, stream=Interrupting(), grace_s=5.0, command=python)
    assert gone([int(pid_file.read_text())])


def test_a_training_child_prints_its_events_on_stdout():
    assert child_command(["train", "--out", "x"])[-4:] == ["--out", "x", "--events", "-"]
    assert child_command(["segment", "a.nii.gz"])[1:] == ["-m", "semisupseg", "segment", "a.nii.gz"]


def test_sigterm_to_the_parent_stops_the_children_too(tmp_path):
    import subprocess

    pid_file = tmp_path / "pid"
    parent = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_side_by_side import python
        from semisupseg.cli.side_by_side import ChildRun, run_side_by_side
        child = "open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
        try:
            run_side_by_side([ChildRun("a", [child], __import__("pathlib").Path({str(tmp_path / 'a.log')!r}))],
                             jobs=1, grace_s=5.0, command=python)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.terminate()
    assert proc.wait(timeout=30) == 130
    assert gone([int(pid_file.read_text())])
