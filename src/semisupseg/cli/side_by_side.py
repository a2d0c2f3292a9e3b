"""Several ``semisupseg`` commands at once, each in its own child process: the demo trains its two methods side by
side, one CPU core each, so that its wall clock is the longer training's rather than their sum.

A child is ``<python> -m semisupseg ARGV`` started in its own process group. For a ``train`` child, ``--events -``
is added: the child prints its events as JSON lines on stdout, which the parent reads and turns into the runs'
plain progress lines (:func:`semisupseg.training.events.progress_line`), prefixed with the run's name: ``started``,
``validation``, ``finished``, ``failed``, ``cancelled`` always, ``iteration`` at most every ``interval_s`` seconds
per run. Everything else a child writes (its own log lines, warnings, a traceback) goes to the run's log file.

At most ``jobs`` children run at a time (``jobs=1``: one after the other). When one fails, the others are stopped
and :class:`~semisupseg.errors.SemiSupSegError` names it, its exit code and its log (whose last lines are printed).
On Ctrl-C, SIGTERM or any error in the parent, every child gets SIGTERM — a training run then saves its state and
ends as ``cancelled`` — and whatever is still alive after ``grace_s`` seconds is killed with its whole process
group.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, List, Optional, Sequence

from semisupseg.errors import SemiSupSegError
from semisupseg.processes import KILL, TERM, group_popen_kwargs, signal_process_tree
from semisupseg.progress import LINE_INTERVAL_S, LineTimer, write_line

#: lines of a failed child's log shown with the error
LOG_TAIL_LINES = 15
_ALWAYS = ("started", "resumed", "validation", "finished", "failed", "cancelled")


@dataclass
class ChildRun:
    """One command to run: ``name`` (the prefix of its lines), ``argv`` (``semisupseg`` arguments) and ``log`` (the
    file that takes the child's stderr and its stdout lines that are not events). After :func:`run_side_by_side`:
    ``returncode`` and ``seconds`` (wall clock from start to exit)."""

    name: str
    argv: List[str]
    log: Path
    returncode: Optional[int] = None
    seconds: float = 0.0
    _proc: Optional[subprocess.Popen] = field(default=None, repr=False)
    _start: float = field(default=0.0, repr=False)
    _log_fh: Optional[IO[str]] = field(default=None, repr=False)
    _lines: Optional[LineTimer] = field(default=None, repr=False)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def child_command(argv: Sequence[str]) -> List[str]:
    """The child's full command line: this Python running the package, with ``--events -`` for ``train``."""
    extra = ["--events", "-"] if argv and argv[0] == "train" else []
    return [sys.executable, "-m", "semisupseg", *argv, *extra]


def _read_stdout(run: ChildRun, lines: "queue.Queue") -> None:
    assert run._proc is not None and run._proc.stdout is not None
    for line in run._proc.stdout:
        lines.put((run, line))
    lines.put((run, None))


def _start(run: ChildRun, lines: "queue.Queue", command: Callable[[Sequence[str]], List[str]]) -> None:
    run.log.parent.mkdir(parents=True, exist_ok=True)
    run._log_fh = open(run.log, "w", encoding="utf-8")
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")  # read as UTF-8 (Windows: not the code page)
    run._proc = subprocess.Popen(command(run.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=run._log_fh, text=True, encoding="utf-8", errors="replace", env=env,
                                 **group_popen_kwargs())
    run._start = time.monotonic()
    threading.Thread(target=_read_stdout, args=(run, lines), daemon=True, name=f"read-{run.name}").start()


def _stop_all(runs: Sequence[ChildRun], grace_s: float) -> None:
    """SIGTERM to every live child, then, after at most ``grace_s`` seconds, SIGKILL to their process groups (what a
    child left behind goes too)."""
    live = [r for r in runs if r._proc is not None and r._proc.poll() is None]
    for r in live:
        signal_process_tree(r._proc, TERM)
    deadline = time.monotonic() + grace_s
    for r in live:
        try:
            r._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for r in live:
        signal_process_tree(r._proc, KILL)
        try:
            r._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _handle_line(run: ChildRun, line: str, stream: IO[str]) -> None:
    from semisupseg.training.events import progress_line

    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "event" not in record:
        if run._log_fh is not None:
            run._log_fh.write(line)
            run._log_fh.flush()
        return
    kind = record.get("event")
    now = time.monotonic()
    if kind not in _ALWAYS and not run._lines.due(now):
        return
    text = progress_line(record)
    if text:
        run._lines.last = now
        write_line(stream, f"[{run.name}] {text}")


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> List[str]:
    """The last ``n`` lines of a log file (none when it cannot be read)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:]
    except OSError:
        return []


def run_side_by_side(runs: Sequence[ChildRun], jobs: int, stream: Optional[IO[str]] = None,
                     interval_s: float = LINE_INTERVAL_S, grace_s: float = 30.0,
                     command: Callable[[Sequence[str]], List[str]] = child_command) -> None:
    """Run every command of ``runs``, at most ``jobs`` at a time, in order of the list; returns when all have
    ended with exit code 0, else raises :class:`SemiSupSegError` (see the module's text). Lines go to ``stream``
    (default: ``sys.stderr``). ``command`` turns a run's ``argv`` into the child's command line
    (:func:`child_command`; tests give their own)."""
    jobs = max(1, int(jobs))
    stream = sys.stderr if stream is None else stream  # looked up now: the caller may have replaced sys.stderr
    previous = _sigterm_interrupts()
    lines: "queue.Queue" = queue.Queue()
    waiting = list(runs)
    running: List[ChildRun] = []
    open_pipes = 0
    try:
        while waiting or running or open_pipes:
            while waiting and len(running) < jobs:
                run = waiting.pop(0)
                run._lines = LineTimer(interval_s, first_at_once=True)
                _start(run, lines, command)
                running.append(run)
                open_pipes += 1
            try:
                run, line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is not None:
                _handle_line(run, line, stream)
                continue
            open_pipes -= 1  # the child's stdout closed: it has ended (or closed it, then it ends soon)
            run.returncode = run._proc.wait()
            run.seconds = time.monotonic() - run._start
            running.remove(run)
            _close_log(run)
            if run.returncode != 0:
                _stop_all(running, grace_s)
                for line in log_tail(run.log):
                    write_line(stream, f"[{run.name}] {line}")
                raise SemiSupSegError(f"{run.name} ended with exit code {run.returncode}; its log: {run.log}")
    except BaseException:
        _stop_all(running, grace_s)
        raise
    finally:
        for run in runs:
            _close_log(run)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sigterm_interrupts():
    """While the children run, SIGTERM to this process acts like Ctrl-C (the children are stopped, not orphaned).
    Returns the handler to restore (``None`` outside the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def _close_log(run: ChildRun) -> None:
    if run._log_fh is not None:
        run._log_fh.close()
        run._log_fh = None


__all__ = ["ChildRun", "child_command", "log_tail", "run_side_by_side", "usable_cores"]
