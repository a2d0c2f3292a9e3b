"""Process trees (:mod:`semisupseg.processes`): a child started with :func:`group_popen_kwargs` and a grandchild it
spawned both receive a SIGTERM sent to the tree; SIGKILL ends a tree whose members ignore SIGTERM, and also a stray
grandchild after its parent has already exited."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from helpers import alive, gone
from semisupseg.processes import group_popen_kwargs, kill_process_tree, signal_process_tree

pytestmark = pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX here")

#: a child that starts a grandchild (both handling SIGTERM per ``IGNORE``), prints both pids, then sleeps or exits
TREE = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    ignore = sys.argv[1] == "ignore"
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN) if %r else None; time.sleep(120)"
    if ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    g = subprocess.Popen([sys.executable, "-c", code % ignore])
    print(os.getpid(), g.pid, flush=True)
    time.sleep(0.5)  # the grandchild has set its handler
    if sys.argv[2] == "stay":
        time.sleep(120)
""")


@contextlib.contextmanager
def _tree(ignore: bool, stay: bool):
    """A child (own process group) with a grandchild: ``(proc, child pid, grandchild pid)``; the tree is killed and
    reaped on leaving."""
    proc = subprocess.Popen([sys.executable, "-c", TREE, "ignore" if ignore else "obey", "stay" if stay else "exit"],
                            stdout=subprocess.PIPE, text=True, **group_popen_kwargs())
    try:
        child, grandchild = (int(v) for v in proc.stdout.readline().split())
        time.sleep(0.7)
        yield proc, child, grandchild
    finally:
        kill_process_tree(proc)
        proc.wait(timeout=10)
        proc.stdout.close()


def test_sigterm_reaches_the_child_and_the_grandchild():
    with _tree(ignore=False, stay=True) as (proc, child, grandchild):
        assert child == proc.pid and os.getpgid(grandchild) == proc.pid != os.getpgid(0)
        signal_process_tree(proc, signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
        assert gone([grandchild])


def test_kill_ends_a_tree_that_ignores_sigterm():
    with _tree(ignore=True, stay=True) as (proc, _, grandchild):
        signal_process_tree(proc, signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None and alive(grandchild)  # ignored, as asked
        kill_process_tree(proc)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert gone([grandchild])


def test_kill_after_the_leader_exited_still_ends_its_stray():
    with _tree(ignore=True, stay=False) as (proc, _, grandchild):
        assert proc.wait(timeout=10) == 0 and alive(grandchild)
        signal_process_tree(proc, signal.SIGTERM)  # the leader is gone: nothing is sent
        assert alive(grandchild)
        kill_process_tree(proc)
        assert gone([grandchild])


def test_without_sigkill_the_windows_path_stops_and_kills(monkeypatch):
    """Windows has no ``signal.SIGKILL``: the module must import and take its other path there. Loaded as on
    Windows (no SIGKILL, not POSIX; ``taskkill`` recorded instead of run), TERM ends the leader through
    ``Popen.terminate`` and KILL asks ``taskkill /T`` for the tree, then kills the leader itself."""
    import importlib

    import semisupseg.processes as processes

    with monkeypatch.context() as m:  # only while the module loads: Popen.kill needs SIGKILL on this POSIX machine
        m.delattr(signal, "SIGKILL")
        windows = importlib.reload(processes)
    monkeypatch.setattr(windows, "_POSIX", False)
    calls = []
    monkeypatch.setattr(windows.subprocess, "run", lambda argv, **kw: calls.append(argv))
    try:
        assert windows.KILL not in (signal.SIGKILL, windows.TERM) and windows.group_popen_kwargs() == {"creationflags": 0}
        for sig, argv in ((windows.TERM, []), (windows.KILL, [["taskkill", "/F", "/T", "/PID"]])):
            calls.clear()
            proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            windows.signal_process_tree(proc, sig)
            assert proc.wait(timeout=10) != 0 and [c[:4] for c in calls] == argv
            windows.kill_process_tree(proc)  # a finished leader: nothing more to do, no error
    finally:
        monkeypatch.undo()
        importlib.reload(processes)
