"""Background processes for both Slicer modules: a one-shot command runner and a warm segmentation worker.

Long work never runs in Slicer's GUI thread: it runs in a child ``<python> -m semisupseg ...`` where ``<python>``
is Slicer's ``PythonSlicer`` (``sys.executable`` outside Slicer, see :func:`python_command`). The child reports on
stdout as JSON lines (``segment --json-progress``, ``train --events -``, the ``worker`` protocol); reader threads
parse them into a queue and the owner (a GUI timer, or a blocking :meth:`ProcessRunner.wait`) takes them with
``poll()``.

* :class:`ProcessRunner`: one command, one child. Cancel = create the stop file the child was given with
  ``--stop-file``, wait a grace period, then kill the child's whole process tree. A temporary folder per run (holding
  the stop file; the caller may put outputs there) is removed at the end whatever happens.
* :class:`WorkerClient`: a long-lived ``semisupseg worker`` child (started lazily, restarted if it died) that keeps
  models loaded, so that a click on *Segment* costs little more than the inference; :class:`WorkerRequest` is one
  request to it.

Process trees (:mod:`semisupseg.processes`, shared with the demo): on POSIX a child starts in its own session (so its
process group holds it and everything it spawns) and is killed with ``killpg(SIGKILL)``; on Windows it starts with
``CREATE_NEW_PROCESS_GROUP`` and is killed with ``taskkill /F /T`` (falling back to ``Popen.kill``) — that branch is
written for Windows but is not exercised by the test suite, which runs on Linux.

Thread safety: each runner, client and request belongs to one *owner* thread (the GUI thread in Slicer). Its
methods (``start``, ``poll``, ``wait``, ``cancel``, ``submit``...) must be called from that thread, and the
callbacks ``on_event`` / ``on_log`` run in it, from inside ``poll``/``wait``. The reader threads only parse lines and
put them into thread-safe queues (the client's reader also routes events to their request under a lock); they never
call back into user code.

Qt-free: this module imports only the standard library at import time (``semisupseg`` lazily: its process-tree
helpers and volumes).
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Mapping, Optional, Sequence, Union

EventCallback = Callable[[Dict[str, Any]], None]
LogCallback = Callable[[str], None]
PathLike = Union[str, os.PathLike]

#: log lines kept per runner (older ones are dropped)
MAX_LOG_LINES = 5000
#: seconds a finished run waits for its output pipes after the tree was killed (a process that left the tree, e.g.
#: with its own ``setsid``, may still hold them: the run ends anyway)
PIPE_GRACE_S = 5.0
_POSIX = os.name == "posix"

__all__ = ["python_command", "semisupseg_command", "child_environment", "kill_process_tree", "make_temp_dir",
           "wait_until", "ProcessRunner",
           "WorkerClient", "WorkerRequest", "WorkerError", "ProgressTracker"]


# ----------------------------------------------------------------------------------------------------------------------
# Child command and environment
# ----------------------------------------------------------------------------------------------------------------------

def python_command(executable: Optional[PathLike] = None) -> List[str]:
    """The Python that runs the package in a child process, as an argument list.

    Inside Slicer, ``PythonSlicer`` (Slicer's own Python with its environment), looked up next to ``executable``
    (default ``sys.executable``; Slicer sets it to ``PythonSlicer`` itself in recent versions, to the application in
    others), in ``../bin`` of it, and on the ``PATH`` the Slicer launcher sets. Elsewhere ``sys.executable``.
    """
    exe = Path(executable) if executable is not None else Path(sys.executable)
    names = ("PythonSlicer.exe", "PythonSlicer") if os.name == "nt" else ("PythonSlicer",)
    if exe.name in names:
        return [str(exe)]
    for folder in (exe.parent, exe.parent.parent / "bin"):
        for name in names:
            if (folder / name).is_file():
                return [str(folder / name)]
    slicer = sys.modules.get("slicer")
    if slicer is not None and hasattr(slicer, "app"):  # the Slicer application (not the Qt-free core)
        found = shutil.which("PythonSlicer")
        if found:
            return [found]
    return [str(exe)]


def semisupseg_command(args: Sequence[str], python: Optional[Sequence[str]] = None) -> List[str]:
    """``[<python>, "-m", "semisupseg", *args]``."""
    return list(python or python_command()) + ["-m", "semisupseg"] + [str(a) for a in args]


def package_root() -> Path:
    """The folder holding the ``semisupseg`` package this process uses (the extension's install folder inside
    Slicer, the checkout from a source tree), which the child must import too."""
    import semisupseg

    return Path(semisupseg.__file__).resolve().parent.parent


def child_environment(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The child's environment: ``os.environ`` updated with ``env``, ``PYTHONPATH`` starting with
    :func:`package_root` (PythonSlicer does not see the module folders Slicer adds to its own ``sys.path``),
    unbuffered UTF-8 output."""
    out = dict(os.environ)
    out.update(env or {})
    root = str(package_root())
    parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    out["PYTHONPATH"] = os.pathsep.join([root] + parts)
    out["PYTHONUNBUFFERED"] = "1"
    out["PYTHONIOENCODING"] = "utf-8"
    return out


def _popen(command: List[str], cwd: Optional[PathLike], env: Dict[str, str], stdin: Any) -> subprocess.Popen:
    from semisupseg.processes import group_popen_kwargs  # own process group: the whole tree can be killed

    return subprocess.Popen(command, cwd=None if cwd is None else str(cwd), env=env, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace", bufsize=1, **group_popen_kwargs(no_window=True))


def kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every process it started (it must have been started by this module: own process group);
    :func:`semisupseg.processes.kill_process_tree`, shared with the demo's side-by-side trainings."""
    from semisupseg.processes import kill_process_tree as kill

    kill(proc)


def _reader(stream: Any, q: "queue.Queue", name: str, parse_json: bool) -> None:
    """Thread body: each line of ``stream`` → ``("event", dict)`` (JSON object lines when ``parse_json``) or
    ``("log", name, text)``; ``("eof", name)`` at the end."""
    try:
        for line in stream:
            text = line.rstrip("\r\n")
            if parse_json and text.startswith("{"):
                try:
                    record = json.loads(text)
                except ValueError:
                    record = None
                if isinstance(record, dict):
                    q.put(("event", record))
                    continue
            q.put(("log", name, text))
    except (OSError, ValueError):  # stream closed under us (process killed)
        pass
    finally:
        q.put(("eof", name))


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_temp_dir(kind: str) -> Path:
    """A new temporary folder ``semisupseg-<kind>-<pid>-XXXX``, after removing the folders of that naming left by
    processes that no longer exist (killed before they could clean up: SIGKILL, a crash of Slicer). POSIX only for
    the sweep (on Windows ``os.kill`` would terminate the process it tests)."""
    base = Path(tempfile.gettempdir())
    if _POSIX:
        prefix = f"semisupseg-{kind}-"
        try:
            candidates = [p for p in base.iterdir() if p.name.startswith(prefix) and p.is_dir()]
        except OSError:
            candidates = []
        for folder in candidates:
            owner = folder.name[len(prefix):].split("-", 1)[0]
            try:
                if not owner.isdigit() or folder.stat().st_uid != os.getuid() or _pid_alive(int(owner)):
                    continue
            except OSError:
                continue
            _remove_tree(str(folder))
    return Path(tempfile.mkdtemp(prefix=f"semisupseg-{kind}-{os.getpid()}-", dir=str(base)))


def _drain(q: "queue.Queue", block_s: float) -> List[Any]:
    """Everything in ``q`` now, after waiting up to ``block_s`` seconds for the first item (``0``: no wait)."""
    items: List[Any] = []
    try:
        items.append(q.get(timeout=block_s) if block_s > 0 else q.get_nowait())
        while True:
            items.append(q.get_nowait())
    except queue.Empty:
        pass
    return items


def _kill_deadline(current: Optional[float], grace_s: float) -> float:
    """The ``time.monotonic()`` at which a cancelled child is killed: ``grace_s`` seconds from now, or ``current``
    when that is sooner (a second cancel never postpones the kill)."""
    deadline = time.monotonic() + max(0.0, grace_s)
    return deadline if current is None else min(current, deadline)


def wait_until(done: Callable[[], bool], step: Callable[[], Any], timeout: Optional[float], what: str) -> None:
    """Call ``step()`` until ``done()`` is true (checked first). ``TimeoutError("<what> did not finish within
    <timeout> s")`` once ``timeout`` seconds have passed (``None``: no limit); the work goes on then."""
    end = None if timeout is None else time.monotonic() + timeout
    while not done():
        if end is not None and time.monotonic() >= end:
            raise TimeoutError(f"{what} did not finish within {timeout} s")
        step()


# ----------------------------------------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------------------------------------

class ProgressTracker:
    """Overall fraction done, a message and an ETA from the events of ``segment --json-progress`` (``case``,
    ``progress``, ``done``, a case's ``failed``), ``train --events`` (``iteration``/``validation`` with ``max_iterations``, ``eta_s``)
    and the worker (``progress``).

    ``fraction``: 0..1 or ``None`` before the first progress; ``message``: short text; ``eta_s``: seconds left or
    ``None`` (the child's own ``eta_s`` when it gives one, else extrapolated from the fraction's rate since the first
    progress event).
    """

    def __init__(self) -> None:
        self.fraction: Optional[float] = None
        self.message = ""
        self.eta_s: Optional[float] = None
        self._case = 0
        self._cases = 1
        self._t0: Optional[float] = None
        self._f0 = 0.0

    def update(self, event: Mapping[str, Any], now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        kind = event.get("event")
        fraction: Optional[float] = None
        child_eta = event.get("eta_s")
        if kind == "case":
            self._case = int(event.get("index", 0))
            self._cases = max(1, int(event.get("cases", 1)))
            fraction = self._case / self._cases
            self.message = f"case {self._case + 1}/{self._cases}: {event.get('case', '')}".rstrip(": ")
        elif kind == "progress" and event.get("fraction") is not None:
            fraction = (self._case + float(event["fraction"])) / self._cases
            msg = str(event.get("message", ""))
            self.message = f"[{self._case + 1}/{self._cases}] {msg}" if self._cases > 1 else msg
        elif kind == "done":
            fraction = (self._case + 1) / self._cases
        elif kind == "failed" and event.get("cases"):  # one case of a segment batch failed; the others go on
            fraction = (int(event.get("index", self._case)) + 1) / max(1, int(event["cases"]))
            self.message = f"case {event.get('case', '')} failed: {event.get('error', '')}"
        elif event.get("max_iterations") and event.get("iteration") is not None:
            fraction = float(event["iteration"]) / float(event["max_iterations"])
            self.message = f"{kind} {event['iteration']}/{event['max_iterations']}"
        elif kind in ("finished", "result"):
            fraction = 1.0
            self.message = str(kind)
        if fraction is None:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        self.fraction = fraction
        if isinstance(child_eta, (int, float)):
            self.eta_s = max(0.0, float(child_eta))
        elif self._t0 is None:
            self._t0, self._f0 = now, fraction
            self.eta_s = None
        elif fraction >= 1.0:
            self.eta_s = 0.0
        elif fraction > self._f0 and now > self._t0:
            rate = (fraction - self._f0) / (now - self._t0)
            self.eta_s = (1.0 - fraction) / rate


class _TrackedProgress:
    """``progress``, ``message`` and ``eta_s`` read from the object's :class:`ProgressTracker` ``tracker``."""

    tracker: ProgressTracker

    @property
    def progress(self) -> Optional[float]:
        return self.tracker.fraction

    @property
    def message(self) -> str:
        return self.tracker.message

    @property
    def eta_s(self) -> Optional[float]:
        return self.tracker.eta_s


# ----------------------------------------------------------------------------------------------------------------------
# One command in a child process
# ----------------------------------------------------------------------------------------------------------------------

class ProcessRunner(_TrackedProgress):
    """Run ``semisupseg <args>`` in a child process and report its JSON-line events (see the module docstring).

    Args:
        args: the command line after ``-m semisupseg`` (e.g. ``["segment", img, "--model", "left-atrium", "-o",
            out, "--json-progress"]``). The text ``{temp_dir}`` inside an argument is replaced by :attr:`temp_dir`.
        on_event: ``callback(event dict)`` for each JSON object line of the child's stdout, and finally for the
            runner's own ``{"event": "exit", "returncode": int, "cancelled": bool, "error": str or None,
            "seconds": float}``. Called from :meth:`poll`/:meth:`wait` in the owner thread.
        on_log: ``callback(line)`` for each other line (stderr, non-JSON stdout), same thread.
        cwd, env: working folder and extra environment variables of the child (see :func:`child_environment`).
        stop_file_option: the option that gives the child the stop file (``None``: the command has none, and cancel
            kills at once).
        python: the Python command (default :func:`python_command`).

    After :meth:`start`: :attr:`running`, :attr:`returncode` (``None`` until the end has been seen by ``poll``/
    ``wait``), :attr:`log_text`, :attr:`error` (the child's one-line reason on failure), :attr:`progress`,
    :attr:`message`, :attr:`eta_s`, :attr:`pid`. :attr:`temp_dir` exists from ``start()`` until the ``exit`` event has
    been delivered (read outputs you put there in ``on_event``), and is removed then, on :meth:`close`, or at
    interpreter exit, whatever happened.
    """

    def __init__(self, args: Sequence[str], on_event: Optional[EventCallback] = None,
                 on_log: Optional[LogCallback] = None, cwd: Optional[PathLike] = None,
                 env: Optional[Mapping[str, str]] = None, stop_file_option: Optional[str] = "--stop-file",
                 python: Optional[Sequence[str]] = None):
        self.args = [str(a) for a in args]
        self.on_event = on_event
        self.on_log = on_log
        self.cwd = cwd
        self.env = dict(env or {})
        self.stop_file_option = stop_file_option
        self.python = list(python) if python else python_command()
        self.temp_dir: Optional[Path] = None
        self.stop_file: Optional[Path] = None
        self.command: List[str] = []
        self.returncode: Optional[int] = None
        self.error: Optional[str] = None
        self.cancelled = False
        self._proc: Optional[subprocess.Popen] = None
        self._queue: "queue.Queue" = queue.Queue()
        self._threads: List[threading.Thread] = []
        self._open_streams = 0
        self._log: Deque[str] = deque(maxlen=MAX_LOG_LINES)
        self._last_stderr: Optional[str] = None
        self._kill_at: Optional[float] = None
        self._exited_at: Optional[float] = None
        self._t_start = 0.0
        self._finished = False
        self._finalizer: Optional[weakref.finalize] = None
        self.tracker = ProgressTracker()

    # ---------------------------------------------------------------------------------------------- state
    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Started and its end not yet delivered."""
        return self._proc is not None and not self._finished

    @property
    def log_text(self) -> str:
        return "\n".join(self._log)

    # ---------------------------------------------------------------------------------------------- life cycle
    def start(self) -> "ProcessRunner":
        """Create the temporary folder and start the child (returns at once). Raises ``RuntimeError`` when started
        twice and ``OSError`` when the Python cannot be run (the folder is removed then)."""
        if self._proc is not None:
            raise RuntimeError("this runner was already started; make a new one")
        self.temp_dir = make_temp_dir("run")
        self._finalizer = weakref.finalize(self, _remove_tree, str(self.temp_dir))
        self.stop_file = self.temp_dir / "stop"
        args = [a.replace("{temp_dir}", str(self.temp_dir)) for a in self.args]
        if self.stop_file_option:
            args += [self.stop_file_option, str(self.stop_file)]
        self.command = semisupseg_command(args, self.python)
        self._t_start = time.monotonic()
        try:
            self._proc = _popen(self.command, self.cwd, child_environment(self.env), subprocess.DEVNULL)
        except BaseException:
            self._cleanup()
            raise
        for stream, name, parse in ((self._proc.stdout, "stdout", True), (self._proc.stderr, "stderr", False)):
            t = threading.Thread(target=_reader, args=(stream, self._queue, name, parse),
                                 name=f"semisupseg-runner-{name}-{self._proc.pid}", daemon=True)
            t.start()
            self._threads.append(t)
        self._open_streams = 2
        return self

    def cancel(self, grace_s: float = 5.0, block: bool = True) -> None:
        """Ask the child to stop (create the stop file), then kill its whole process tree if it has not ended
        within ``grace_s`` seconds. ``block=True`` waits for the end (and delivers it, like :meth:`wait`);
        ``block=False`` returns at once and :meth:`poll` kills at the deadline (for GUI timers)."""
        if self._proc is None or self._finished:
            return
        self.cancelled = True
        if self.stop_file is not None and self.stop_file_option:
            try:
                self.stop_file.touch()
            except OSError:
                pass
        else:
            grace_s = 0.0
        self._kill_at = _kill_deadline(self._kill_at, grace_s)
        if block:
            self.wait()

    def poll(self) -> List[Dict[str, Any]]:
        """The events that arrived since the last call (``on_event``/``on_log`` are called for them first). The
        last one of a run is the runner's ``exit`` event; the temporary folder is removed right after it."""
        return self._pump(0.0)

    def wait(self, timeout: Optional[float] = None) -> int:
        """Block until the child has ended and its output is delivered; returns the exit code. Raises
        ``TimeoutError`` after ``timeout`` seconds (the child keeps running: :meth:`cancel` it)."""
        if self._proc is None:
            raise RuntimeError("the runner was not started")
        wait_until(lambda: self._finished, lambda: self._pump(0.1), timeout, "the command")
        assert self.returncode is not None
        return self.returncode

    def close(self, grace_s: float = 1.0) -> None:
        """Cancel if still running, and remove the temporary folder."""
        if self.running:
            self.cancel(grace_s=grace_s, block=True)
        self._cleanup()

    def __enter__(self) -> "ProcessRunner":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------- internals
    def _cleanup(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # removes the folder once

    def _deliver_log(self, line: str, stream: str) -> None:
        self._log.append(line)
        if stream == "stderr" and line.strip():
            self._last_stderr = line.strip()
        if self.on_log is not None:
            self.on_log(line)

    def _pump(self, block_s: float) -> List[Dict[str, Any]]:
        if self._proc is None or self._finished:
            return []
        events: List[Dict[str, Any]] = []
        if self._kill_at is not None and time.monotonic() >= self._kill_at:
            kill_process_tree(self._proc)
        for item in _drain(self._queue, block_s):
            if item[0] == "event":
                self.tracker.update(item[1])
                events.append(item[1])
                if self.on_event is not None:
                    self.on_event(item[1])
            elif item[0] == "log":
                self._deliver_log(item[2], item[1])
            else:
                self._open_streams -= 1
        if self._proc.poll() is not None and self._open_streams > 0:
            # the child ended but something it started still holds our pipes: that stray goes too
            kill_process_tree(self._proc)
            now = time.monotonic()
            if self._exited_at is None:
                self._exited_at = now
            elif now - self._exited_at > PIPE_GRACE_S:
                self._deliver_log(f"(the output pipes are still held by a process outside the run's process tree "
                                  f"after {PIPE_GRACE_S:g} s; not waiting for them)", "runner")
                self._open_streams = 0
        if self._open_streams <= 0:
            rc = self._proc.wait()
            kill_process_tree(self._proc)  # nothing it started may outlive it
            for t in self._threads:
                t.join(timeout=1.0)
            events.append(self._finish(rc))
        return events

    def _finish(self, rc: int) -> Dict[str, Any]:
        self.returncode = rc
        if rc != 0 and not self.cancelled:
            if rc < 0:  # killed from outside (the OOM killer, a user): its last line is progress, not a reason
                try:
                    name = signal.Signals(-rc).name
                except ValueError:
                    name = f"signal {-rc}"
                self.error = f"the process was killed ({name})" + (
                    f"; its last line: {self._last_stderr}" if self._last_stderr else "")
            elif self._last_stderr:
                self.error = self._last_stderr
            else:
                self.error = f"the process exited with code {rc}"
        event = {"event": "exit", "returncode": rc, "cancelled": self.cancelled, "error": self.error,
                 "seconds": round(time.monotonic() - self._t_start, 3)}
        try:
            if self.on_event is not None:
                self.on_event(event)
        finally:
            self._finished = True
            self._cleanup()
        return event


# ----------------------------------------------------------------------------------------------------------------------
# The warm worker
# ----------------------------------------------------------------------------------------------------------------------

class WorkerError(RuntimeError):
    """A worker request ended with an error (``kind``: ``input``, ``cancelled``, ``internal`` or ``worker`` when the
    worker process died); the message is the worker's one line naming the file and the problem."""

    def __init__(self, message: str, kind: str = "internal", event: Optional[Dict[str, Any]] = None):
        super().__init__(message)
        self.kind = kind
        self.event = event or {}


#: events that end a worker request successfully (the answers to segment, load, ping and shutdown)
TERMINAL_EVENTS = ("result", "loaded", "pong", "bye")


class WorkerRequest(_TrackedProgress):
    """One request to a :class:`WorkerClient` (made by :meth:`WorkerClient.submit` / :meth:`~WorkerClient.segment`).

    :meth:`poll` returns its new events (calling ``on_event`` for each); :attr:`done` once a ``result`` or ``error``
    arrived; :attr:`result` is the result event, :attr:`error` the one-line error; :attr:`progress`,
    :attr:`message`, :attr:`eta_s` as for :class:`ProcessRunner`. :attr:`output_dir` is where the worker writes; when
    the client made it (no ``output_dir`` given), :meth:`cleanup` (or the client's ``close``) removes it.
    """

    def __init__(self, client: "WorkerClient", request_id: str, request: Dict[str, Any],
                 on_event: Optional[EventCallback], output_dir: Optional[Path], owns_output_dir: bool,
                 stop_file: Path):
        self.client = client
        self.id = request_id
        self.request = request
        self.on_event = on_event
        self.output_dir = output_dir
        self.owns_output_dir = owns_output_dir
        self.stop_file = stop_file
        #: folder of the raw input the client wrote for this request (removed once the request is done)
        self.input_dir: Optional[Path] = None
        self.result: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.error_kind: Optional[str] = None
        self.cancelled = False
        self.tracker = ProgressTracker()
        self._queue: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self._kill_at: Optional[float] = None
        self._final: Dict[str, Any] = {}
        self.done = False

    def poll(self) -> List[Dict[str, Any]]:
        """New events of this request (``on_event`` called for each first)."""
        return self._pump(0.0)

    def wait(self, timeout: Optional[float] = None, check: bool = True) -> Dict[str, Any]:
        """Block until the request ends; returns its ``result`` event (or, with ``check=False``, its ``error``
        event). Raises :class:`WorkerError` on an error when ``check``, ``TimeoutError`` after ``timeout`` s."""
        wait_until(lambda: self.done, lambda: self._pump(0.1), timeout, f"worker request {self.id}")
        if self.result is not None:
            return self.result
        if check:
            raise WorkerError(self.error or "failed", self.error_kind or "internal", self._final)
        return self._final

    def cancel(self, grace_s: float = 5.0, block: bool = True) -> None:
        """Ask the worker to stop this request (its stop file); the worker answers with a ``cancelled`` error and
        stays alive. If it has not answered within ``grace_s`` seconds the worker process tree is killed (the client
        starts a new one for the next request). ``block=False``: return at once, :meth:`poll` enforces the deadline."""
        if self.done:
            return
        self.cancelled = True
        try:
            self.stop_file.touch()
        except OSError:
            pass
        self._kill_at = _kill_deadline(self._kill_at, grace_s)
        if block:
            self.wait(check=False)

    def volumes(self) -> Dict[str, Any]:
        """The result's ``npy`` outputs as :class:`semisupseg.volume.Volume` (kind → Volume, the input's geometry)."""
        from semisupseg.worker import volume_from_npy

        if self.result is None:
            raise WorkerError(self.error or "the request has no result yet", self.error_kind or "internal")
        return {kind: volume_from_npy(path, self.result["geometry"]) for kind, path in self.result["outputs"].items()
                if str(path).endswith(".npy")}

    def cleanup(self) -> None:
        """Remove the stop file, the raw input the client wrote, and the output folder when the client made it."""
        self._drop_scratch()
        if self.owns_output_dir and self.output_dir is not None:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    # internals --------------------------------------------------------------------------------------------------
    def _drop_scratch(self) -> None:
        try:
            self.stop_file.unlink()
        except OSError:
            pass
        if self.input_dir is not None:
            shutil.rmtree(self.input_dir, ignore_errors=True)

    def _put(self, event: Dict[str, Any]) -> None:  # reader thread
        self._queue.put(event)

    def _pump(self, block_s: float) -> List[Dict[str, Any]]:
        if self.done:
            return []
        if self._kill_at is not None and time.monotonic() >= self._kill_at:
            self.client._kill()
        items = _drain(self._queue, block_s)
        for event in items:
            self.tracker.update(event)
            kind = event.get("event")
            if kind in TERMINAL_EVENTS:
                self.result = event
                self.done = True
            elif kind == "error":
                self.error = str(event.get("error"))
                # a worker killed because it did not stop in time still ends a *cancelled* request
                self.error_kind = "cancelled" if self.cancelled else str(event.get("kind", "internal"))
                self.done = True
            if self.done:
                self._final = event
                self.client._forget(self.id)
                self._drop_scratch()
            if self.on_event is not None:
                self.on_event(event)
        return items


class WorkerClient:
    """A ``semisupseg worker`` child that keeps models loaded between requests (see :mod:`semisupseg.worker`).

    The process is started on first use (or by :meth:`start`), restarted when a request finds it dead, and ends when
    :meth:`close` is called, when this client is garbage-collected or the interpreter exits (its stdin closes), or
    when Slicer dies (same). Requests are answered one at a time, in the order they were submitted.

    Args:
        python, env: as for :class:`ProcessRunner`; cache_size: models the worker keeps; threads: torch threads
        in the worker (``None``: torch's default); start_timeout: seconds to wait for the worker's ``ready``.
    """

    def __init__(self, python: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None,
                 cache_size: int = 2, threads: Optional[int] = None, start_timeout: float = 120.0):
        self.python = list(python) if python else python_command()
        self.env = dict(env or {})
        self.cache_size = int(cache_size)
        self.threads = threads
        self.start_timeout = float(start_timeout)
        self.starts = 0
        self.temp_dir = make_temp_dir("worker")
        self._finalizer = weakref.finalize(self, _remove_tree, str(self.temp_dir))
        self._proc: Optional[subprocess.Popen] = None
        self._stdin_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: Dict[str, WorkerRequest] = {}
        self._ready = threading.Event()
        self._eof = threading.Event()
        self._log: Deque[str] = deque(maxlen=MAX_LOG_LINES)
        self._last_stderr: Optional[str] = None
        self._threads: List[threading.Thread] = []
        self._ids = itertools.count(1)
        self.ready_event: Dict[str, Any] = {}
        self._started_at = 0.0
        #: set (under the lock) by the stdout reader when the current worker process has ended
        self._exit_message: Optional[str] = None

    # ---------------------------------------------------------------------------------------------- state
    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and not self._eof.is_set()

    @property
    def log_text(self) -> str:
        with self._lock:
            return "\n".join(self._log)

    # ---------------------------------------------------------------------------------------------- process
    def start(self, wait: bool = True) -> None:
        """Start the worker if it is not running. ``wait=True`` then waits for its ``ready`` line (imports done;
        ``RuntimeError`` with its last stderr line if it dies or does not answer within ``start_timeout``);
        ``wait=False`` returns at once (a GUI can start it early, e.g. when the panel opens: requests sent before
        it is ready wait in its stdin, and if it fails to start they end with its error)."""
        if not self.alive:
            if self._proc is not None:
                self._kill()
            if not self._finalizer.alive:  # used again after close(): a new temporary folder
                self.temp_dir = make_temp_dir("worker")
                self._finalizer = weakref.finalize(self, _remove_tree, str(self.temp_dir))
            self._ready.clear()
            self._eof.clear()
            with self._lock:
                self._last_stderr = None
                self._exit_message = None
            args = ["worker", "--cache-size", str(self.cache_size)]
            if self.threads:
                args += ["--threads", str(int(self.threads))]
            proc = _popen(semisupseg_command(args, self.python), None, child_environment(self.env),
                          subprocess.PIPE)
            self._proc = proc
            self._started_at = time.monotonic()
            self.starts += 1
            err = threading.Thread(target=self._read_stderr, args=(proc,), daemon=True,
                                   name=f"semisupseg-worker-stderr-{proc.pid}")
            out = threading.Thread(target=self._read_stdout, args=(proc, err), daemon=True,
                                   name=f"semisupseg-worker-stdout-{proc.pid}")
            self._threads = [err, out]
            for t in self._threads:
                t.start()
        if not wait:
            return
        proc = self._proc
        assert proc is not None
        end = self._started_at + self.start_timeout
        while not self._ready.wait(0.05):
            if self._eof.is_set() or proc.poll() is not None or time.monotonic() > end:
                self._kill()
                with self._lock:
                    why = self._last_stderr or (f"exited with code {proc.poll()}" if proc.poll() is not None
                                                else f"no answer within {self.start_timeout:g} s")
                raise RuntimeError(f"the segmentation worker did not start: {why}")

    def _read_stdout(self, proc: subprocess.Popen, stderr_thread: threading.Thread) -> None:  # reader thread
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                text = line.rstrip("\r\n")
                try:
                    event = json.loads(text) if text.startswith("{") else None
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    with self._lock:
                        self._log.append(text)
                    continue
                if event.get("event") == "ready":
                    self.ready_event = event
                    self._ready.set()
                    continue
                rid = event.get("id")
                with self._lock:
                    request = self._pending.get(str(rid)) if rid is not None else None
                    if request is None:
                        self._log.append(text)
                if request is not None:
                    request._put(event)
        except (OSError, ValueError):
            pass
        finally:
            self._fail_pending(proc, stderr_thread)
            self._eof.set()

    def _read_stderr(self, proc: subprocess.Popen) -> None:  # reader thread
        assert proc.stderr is not None
        try:
            for line in proc.stderr:
                text = line.rstrip("\r\n")
                with self._lock:
                    self._log.append(text)
                    if text.strip():
                        self._last_stderr = text.strip()
        except (OSError, ValueError):
            pass

    def _fail_pending(self, proc: subprocess.Popen, stderr_thread: threading.Thread) -> None:
        """Reader thread, at the end of the worker's stdout: every unanswered request gets a ``worker`` error with
        the worker's exit code and last stderr line."""
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        stderr_thread.join(timeout=2.0)  # its last line says why
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            why = self._last_stderr or ""
            self._exit_message = f"the segmentation worker exited (code {rc})" + (f": {why}" if why else "")
        for request in pending:
            request._put({"event": "error", "id": request.id, "error": self._exit_message, "kind": "worker"})

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        kill_process_tree(proc)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._eof.wait(timeout=5)
        for t in self._threads:
            t.join(timeout=2.0)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def _send(self, request: Dict[str, Any]) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        with self._stdin_lock:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()

    # ---------------------------------------------------------------------------------------------- requests
    def submit(self, request: Mapping[str, Any], on_event: Optional[EventCallback] = None,
               output_dir: Optional[PathLike] = None) -> WorkerRequest:
        """Send a protocol request (its ``id`` and ``stop_file`` are set here; for ``segment``, ``output_dir``
        defaults to a fresh folder under the client's temporary folder, removed by :meth:`WorkerRequest.cleanup`).
        Starts or restarts the worker when needed (without waiting for it). Returns at once."""
        self.start(wait=False)
        rid = str(next(self._ids))
        req = dict(request)
        req["id"] = rid
        stop_file = self.temp_dir / f"request-{rid}.stop"
        req["stop_file"] = str(stop_file)
        owns = False
        out: Optional[Path] = None
        if req.get("op") == "segment":
            if output_dir is None and not req.get("output_dir"):
                out = self.temp_dir / f"request-{rid}"
                owns = True
            else:
                out = Path(output_dir if output_dir is not None else req["output_dir"])
            req["output_dir"] = str(out)
        handle = WorkerRequest(self, rid, req, on_event, out, owns, stop_file)
        with self._lock:  # registered before the reader can fail pending requests, or told the worker has ended
            ended = self._exit_message
            if ended is None:
                self._pending[rid] = handle
        if ended is not None:
            handle._put({"event": "error", "id": rid, "error": ended, "kind": "worker"})
            return handle
        try:
            self._send(req)
        except (OSError, ValueError):
            pass  # the worker died since start(): its stdout reader fails this request with the worker's reason
        return handle

    def segment(self, image: Any, model: PathLike, outputs: Sequence[str] = ("labels",),
                options: Optional[Mapping[str, Any]] = None, output_dir: Optional[PathLike] = None,
                fmt: str = "npy", on_event: Optional[EventCallback] = None, overwrite: bool = False,
                h5_spacing: Optional[float] = None) -> WorkerRequest:
        """Segment ``image`` — a volume file path, or a :class:`semisupseg.volume.Volume` (handed over as a raw
        ``.npy`` plus its geometry, the fastest way) — with ``model`` (file or catalogue name). ``outputs``, ``fmt``,
        ``options`` (:class:`~semisupseg.inference.SegmentOptions` fields) as in :mod:`semisupseg.worker`.
        Returns the :class:`WorkerRequest` at once."""
        self.start(wait=False)
        request: Dict[str, Any] = {"op": "segment", "model": os.fspath(model), "outputs": list(outputs),
                                   "format": fmt, "options": dict(options or {}), "overwrite": bool(overwrite)}
        if h5_spacing is not None:
            request["h5_spacing"] = float(h5_spacing)
        if isinstance(image, (str, os.PathLike)):
            request["input"] = os.fspath(image)
        else:
            from semisupseg.worker import geometry_of, save_volume_npy

            inputs = Path(tempfile.mkdtemp(prefix="input-", dir=self.temp_dir))
            request["input"] = str(save_volume_npy(image.array, inputs / "image.npy"))
            request["geometry"] = geometry_of(image)
        handle = self.submit(request, on_event=on_event, output_dir=output_dir)
        if "geometry" in request:
            handle.input_dir = Path(request["input"]).parent
        return handle

    def preload(self, model: PathLike, on_event: Optional[EventCallback] = None) -> WorkerRequest:
        """Load ``model`` (file or catalogue name) into the worker's cache ahead of the first *Segment* (e.g. when
        the user picks it); returns at once. The request ends with a ``loaded`` event."""
        return self.submit({"op": "load", "model": os.fspath(model)}, on_event=on_event)

    def ping(self, timeout: float = 30.0) -> Dict[str, Any]:
        """Round trip to the worker (starting it if needed); returns its ``pong`` event."""
        return self.submit({"op": "ping"}).wait(timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to exit (``shutdown``, then its stdin closes), kill its tree if it has not within
        ``timeout`` s, and remove the temporary folder (outputs of requests made without ``output_dir`` too)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                self._send({"op": "shutdown", "id": "shutdown"})
            except (OSError, ValueError):
                pass
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            self._kill()
        self._finalizer()

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # the worker's stdin closes with this client: it exits by itself
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
