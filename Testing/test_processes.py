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
