"""The run folder's heartbeat, and what state a run folder is in.

While :class:`~semisupseg.training.Trainer` runs, it keeps ``RUN_DIR/heartbeat.json`` up to date from a background
thread (every :data:`DEFAULT_INTERVAL_S` seconds, written atomically: a reader never sees half a file)::

    {"format": "semisupseg-heartbeat", "version": 1, "pid": 4242, "host": "ws1", "pid_start": 123456,
     "started": 1700000000.0, "beat": 1700000042.0, "interval_s": 2.0, "iteration": 130, "max_iterations": 6000,
     "status": "running", "ended": null}

``pid_start`` is the process's start time (Linux ``/proc/PID/stat``, clock ticks since boot), so that a pid reused
by another process is not mistaken for the run. At the end the engine writes the final ``status`` (``finished``,
``failed``, ``cancelled``) and ``ended``. A process killed outright (SIGKILL, power loss) leaves ``"running"`` with a
dead pid and a beat that stops advancing.

:func:`run_status` combines the heartbeat with the events log (``events.jsonl``) into one word —
``running`` / ``finished`` / ``failed`` / ``cancelled`` / ``crashed`` / ``empty`` — which the CLI uses to refuse a
second process in a live run folder and the Slicer training module uses to re-attach to a run (that one keeps a
:class:`LogSummary` of the events it has read, so a poll never reads the whole log again). The heartbeat also
serves as the folder's lock: :meth:`Heartbeat.start` refuses a folder whose heartbeat is alive.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

from semisupseg.errors import InputError
from semisupseg.fileio import write_text_atomic

HEARTBEAT_FILE = "heartbeat.json"
HEARTBEAT_FORMAT = "semisupseg-heartbeat"
#: seconds between beats
DEFAULT_INTERVAL_S = 2.0
#: a beat older than this (seconds) — and older than 10 intervals — means the process is gone or stuck
STALE_AFTER_S = 60.0
#: files the engine writes in a run directory (besides the heartbeat and the overlays folder)
RUN_FILES = ("config.yaml", "data.json", "events.jsonl", "resume.pt", "last.pt", "last.json", "best.pt", "best.json")
#: folder of the training snapshots (:mod:`semisupseg.training.snapshots`)
OVERLAY_DIR = "overlays"
#: folder of the model copies kept every ``keep_every`` iterations (``RUN/kept/it001000.pt``)
KEPT_DIR = "kept"
#: everything the engine may leave in a run directory (``--overwrite`` removes exactly these: a new start must not
#: leave the old run's kept copies beside its own)
ENGINE_ENTRIES = RUN_FILES + (HEARTBEAT_FILE, OVERLAY_DIR, KEPT_DIR)
#: the model files of a run (``semisupseg segment --model RUN/last.pt``)
RUN_MODEL_FILES = ("last.pt", "best.pt")
#: files that hold a run's state: a folder with none of them can take a new start
RUN_STATE_FILES = ("resume.pt",) + RUN_MODEL_FILES
#: the words :func:`run_status` returns
STATUSES = ("running", "finished", "failed", "cancelled", "crashed", "empty")
_TERMINAL = ("finished", "failed", "cancelled")

PathLike = Union[str, Path]


def _process_start(pid: int) -> Optional[int]:
    """Start time of process ``pid`` in clock ticks since boot (Linux), or ``None`` where unknown."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        return int(text[text.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> Optional[bool]:
    """Whether a process ``pid`` exists on this machine (``None``: cannot tell on this platform)."""
    if os.name != "posix":
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except (OSError, ValueError, OverflowError):
        return False
    return True


def read_heartbeat(run_dir: PathLike) -> Optional[Dict[str, Any]]:
    """The heartbeat record of ``run_dir`` (``None`` when absent or unreadable)."""
    path = Path(run_dir) / HEARTBEAT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == HEARTBEAT_FORMAT else None


def heartbeat_alive(record: Optional[Dict[str, Any]], now: Optional[float] = None) -> bool:
    """Whether the process that wrote ``record`` is still running and beating.

    On the same host: its pid exists, is the same process (``pid_start``, where the platform tells) and the beat
    is fresh. On another host (a shared run folder): the beat is fresh. Fresh = younger than
    ``max(STALE_AFTER_S, 10 * interval_s)``."""
    if not record or record.get("status") != "running":
        return False
    now = time.time() if now is None else now
    interval = float(record.get("interval_s") or DEFAULT_INTERVAL_S)
    fresh = now - float(record.get("beat") or 0.0) <= max(STALE_AFTER_S, 10.0 * interval)
    if record.get("host") != socket.gethostname():
        return fresh
    pid = record.get("pid")
    if not isinstance(pid, int):
        return fresh
    alive = _pid_alive(pid)
    if alive is False:
        return False
    start = record.get("pid_start")
    if alive and start is not None:
        current = _process_start(pid)
        if current is not None and current != int(start):
            return False  # the pid now belongs to another process
    return fresh


class Heartbeat:
    """Writes ``RUN_DIR/heartbeat.json`` every ``interval_s`` seconds from a daemon thread.

    ``start()`` refuses (:class:`InputError`) when another live process beats in the folder; set
    :attr:`iteration` from the training loop (read by the thread); ``stop(status)`` writes the final status and
    ends the thread. Usable as a context manager (``stop("failed")`` if the block raises)."""

    def __init__(self, run_dir: PathLike, interval_s: float = DEFAULT_INTERVAL_S,
                 max_iterations: Optional[int] = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / HEARTBEAT_FILE
        self.interval_s = float(interval_s)
        self.iteration: Optional[int] = None
        self.max_iterations = max_iterations
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._record: Dict[str, Any] = {}

    def start(self) -> "Heartbeat":
        other = read_heartbeat(self.run_dir)
        if heartbeat_alive(other):
            raise InputError(describe_process(other), self.run_dir)
        pid = os.getpid()
        now = time.time()
        self._record = {"format": HEARTBEAT_FORMAT, "version": 1, "pid": pid, "host": socket.gethostname(),
                        "pid_start": _process_start(pid), "started": now, "beat": now,
                        "interval_s": self.interval_s, "iteration": self.iteration,
                        "max_iterations": self.max_iterations, "status": "running", "ended": None}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="semisupseg-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _write(self) -> None:
        with self._lock:
            self._record["beat"] = time.time()
            self._record["iteration"] = self.iteration
            text = json.dumps(self._record) + "\n"
            try:
                write_text_atomic(text, self.path, overwrite=True)
            except OSError:
                pass  # a full disk must not kill the training; the beat just goes stale

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._write()

    def beat(self) -> None:
        """Write a beat now (the thread also does, every ``interval_s``)."""
        if self._record:
            self._write()

    def stop(self, status: str) -> None:
        """End the thread and record the final ``status`` (``finished``/``failed``/``cancelled``)."""
        if status not in _TERMINAL:
            raise ValueError(f"final heartbeat status must be one of {_TERMINAL}, got {status!r}")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._record:
            self._record["status"] = status
            self._record["ended"] = time.time()
            self._write()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def __enter__(self) -> "Heartbeat":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.stop("failed" if exc_type is not None else "finished")
        return False


def describe_process(record: Optional[Dict[str, Any]]) -> str:
    """"a training process is running in this folder (pid 4242 on ws1, last beat 1 s ago, iteration 130)"."""
    if not record:
        return "a training process is running in this folder"
    age = max(0.0, time.time() - float(record.get("beat") or 0.0))
    it = record.get("iteration")
    at = f", iteration {it}" if it is not None else ""
    return (f"a training process is running in this folder (pid {record.get('pid')} on {record.get('host')}, "
            f"last beat {age:.0f} s ago{at}); cancel it or wait for it to end")


def has_run_state(run_dir: PathLike) -> bool:
    """Whether ``run_dir`` holds what a run leaves to continue or to use (resume state, model files). A folder
    with only the log of a failed start does not."""
    d = Path(run_dir)
    return any((d / name).exists() for name in RUN_STATE_FILES)


def start_refusal(run_dir: PathLike, overwrite: bool = False) -> Optional[str]:
    """Why a fresh start in ``run_dir`` is refused, or ``None`` when it may start.

    Refused: a folder holding a run's state (:data:`RUN_STATE_FILES`) unless ``overwrite``; a folder holding other
    files than a run's unless ``overwrite`` (it is someone's folder). Not refused: a missing or empty folder, and
    one holding only what a start that failed before training leaves (its log, its heartbeat) — rerunning the
    corrected command must work. (A live run is refused earlier, by its heartbeat.)"""
    d = Path(run_dir)
    if not d.exists():
        return None
    if not d.is_dir():
        return "the run directory is a file"
    if overwrite:
        return None
    if has_run_state(d):
        return "run directory holds a run; use --resume to continue it or --overwrite to start again"
    others = sorted(p.name for p in d.iterdir() if p.name not in ENGINE_ENTRIES and not p.name.startswith("."))
    if others:
        return (f"run directory is not empty and holds no run ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); choose another folder or pass --overwrite")
    return None


def resume_refusal(run_dir: PathLike) -> Optional[str]:
    """Why ``--resume`` must not go on in ``run_dir``, or ``None``. Refused: a folder with a trained model but no
    resume state (the state removed, or a kill between a model's save and the state's): continuing would train
    again from iteration 0 and replace the model without being asked. A folder with neither starts from 0."""
    d = Path(run_dir)
    if not d.is_dir() or (d / "resume.pt").exists():
        return None
    models = [name for name in RUN_MODEL_FILES if (d / name).exists()]
    if not models:
        return None
    return (f"nothing to resume: the run holds {' and '.join(models)} but no resume state (resume.pt); resuming "
            "would train again from iteration 0 and replace them: use --overwrite to start afresh, or another folder")


def clear_engine_files(run_dir: PathLike) -> None:
    """Remove what the engine wrote in ``run_dir`` (:data:`ENGINE_ENTRIES`); other files stay."""
    import shutil

    d = Path(run_dir)
    for name in ENGINE_ENTRIES:
        p = d / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


@dataclass
class RunState:
    """What :func:`run_state` found: ``status`` (one of :data:`STATUSES`), the last known ``iteration`` and
    ``max_iterations``, the process (``pid``, ``host``, ``beat_age_s``, from the heartbeat) and the ``message`` of
    a failed/cancelled run; ``last_event`` is the newest event of the log."""

    status: str
    iteration: Optional[int] = None
    max_iterations: Optional[int] = None
    pid: Optional[int] = None
    host: Optional[str] = None
    beat_age_s: Optional[float] = None
    message: Optional[str] = None
    last_event: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class LogSummary:
    """What :func:`run_state` needs of a run's events log, kept up to date as events arrive, so that a reader who
    follows the log incrementally (the Slicer training panel) never reads it again: ``count`` (events seen),
    ``last`` (the newest event), ``final`` (the ``finished``/``failed``/``cancelled`` event that ends the last session,
    ``None`` while it has none; a session starts at ``started``/``resumed``) and ``with_iteration`` (the newest event
    carrying an ``iteration``). Feed it the events in log order with :meth:`add`; start a new one when the log is
    replaced."""

    def __init__(self, events: Iterable[Dict[str, Any]] = ()):
        self.count = 0
        self.last: Optional[Dict[str, Any]] = None
        self.final: Optional[Dict[str, Any]] = None
        self.with_iteration: Optional[Dict[str, Any]] = None
        self.add(events)

    def add(self, events: Iterable[Dict[str, Any]]) -> "LogSummary":
        for e in events:
            self.count += 1
            self.last = e
            kind = e.get("event")
            if kind in ("started", "resumed"):
                self.final = None
            elif kind in _TERMINAL:
                self.final = e
            if e.get("iteration") is not None:
                self.with_iteration = e
        return self


def run_state(run_dir: PathLike, now: Optional[float] = None, log: Optional[LogSummary] = None) -> RunState:
    """The state of the run folder ``run_dir``, from its heartbeat and its events log (``log``: the log's
    :class:`LogSummary` when the caller keeps one; else the log file is read).

    * ``running``: the heartbeat's process is alive (see :func:`heartbeat_alive`);
    * ``finished`` / ``failed`` / ``cancelled``: the last session of the log ended with that event (a session
      starts at ``started``/``resumed``; a start that failed before training logs ``failed`` alone);
    * ``crashed``: the last session has no final event and its process is dead or its beat stale (killed, power
      loss, out of memory);
    * ``empty``: neither heartbeat nor events (a new or unrelated folder)."""
    d = Path(run_dir)
    now = time.time() if now is None else now
    record = read_heartbeat(d)
    if log is None:
        from semisupseg.training.events import read_events

        events_path = d / "events.jsonl"
        log = LogSummary(read_events(events_path) if events_path.is_file() else [])
    state = RunState("empty", last_event=log.last)
    if record is not None:
        state.pid, state.host = record.get("pid"), record.get("host")
        state.beat_age_s = max(0.0, now - float(record.get("beat") or 0.0))
        state.iteration, state.max_iterations = record.get("iteration"), record.get("max_iterations")
    if log.with_iteration is not None:
        state.iteration = log.with_iteration.get("iteration")
        state.max_iterations = log.with_iteration.get("max_iterations", state.max_iterations)
    if record is None and not log.count:
        return state
    if heartbeat_alive(record, now):
        state.status = "running"
        return state
    final = log.final
    if final is not None:
        state.status = final["event"]
        state.message = final.get("message")
    elif record is not None and record.get("status") in _TERMINAL and not log.count:
        state.status = record["status"]
    else:
        state.status = "crashed"
    return state


def run_status(run_dir: PathLike) -> str:
    """``"running"`` | ``"finished"`` | ``"failed"`` | ``"cancelled"`` | ``"crashed"`` | ``"empty"`` — see
    :func:`run_state`."""
    return run_state(run_dir).status


__all__ = ["Heartbeat", "HEARTBEAT_FILE", "ENGINE_ENTRIES", "KEPT_DIR", "LogSummary", "OVERLAY_DIR", "RUN_FILES",
           "RUN_MODEL_FILES", "RUN_STATE_FILES", "RunState", "STATUSES", "clear_engine_files", "describe_process",
           "has_run_state", "heartbeat_alive", "read_heartbeat", "resume_refusal", "run_state", "run_status",
           "start_refusal"]
