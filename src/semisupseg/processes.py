"""Child processes whose whole tree can be stopped: how they are started and how they are signalled.

Used by the demo's side-by-side trainings (:mod:`semisupseg.cli.side_by_side`) and by the Slicer modules' background
runner (``SemiSupSeg/SemiSupSegLib/runner.py``), so both stop a child and everything it spawned the same way.

* POSIX: the child starts in its own session (:func:`group_popen_kwargs`), so its process group holds it and all it
  starts; :func:`signal_process_tree` sends a signal to that group (``SIGTERM`` asks a training run to save its state
  and end as ``cancelled``; ``SIGKILL`` ends everything, also strays left behind after the leader exited).
* Windows: the child starts with ``CREATE_NEW_PROCESS_GROUP``; ``SIGTERM`` becomes ``Popen.terminate`` and a kill is
  ``taskkill /F /T /PID`` (falling back to ``Popen.kill``). Written for Windows, not exercised by the test suite.

Standard library only: the Slicer modules import it before torch is known to be installed.
"""
from __future__ import annotations

import os
import signal
import subprocess
from typing import Any, Dict, Optional

_POSIX = os.name == "posix"
#: what :func:`signal_process_tree` takes: ask the tree to stop (a training run saves its state and ends as
#: ``cancelled``) ...
TERM = signal.SIGTERM
#: ... or end it outright. Windows has no ``signal.SIGKILL``; there the value only selects the kill path.
KILL = getattr(signal, "SIGKILL", -9)


def group_popen_kwargs(no_window: bool = False) -> Dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that start the child in its own process group (POSIX: its own
    session). ``no_window``: on Windows, also no console window (the Slicer modules' children)."""
    if _POSIX:
        return {"start_new_session": True}
    flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)  # pragma: no cover - Windows
    if no_window:  # pragma: no cover - Windows
        flags |= getattr(subprocess, "CREATE_NO_WINDOW", 0)
    return {"creationflags": flags}  # pragma: no cover - Windows


def signal_process_tree(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` (:data:`TERM` or :data:`KILL`) to ``proc``'s process group, started with
    :func:`group_popen_kwargs`. ``SIGTERM`` goes only to a live leader; ``SIGKILL`` goes to the group even after the
    leader exited (children still holding its pipes go too), and then to the leader itself."""
    if sig != KILL:
        if proc.poll() is not None:
            return
        try:
            if _POSIX:
                os.killpg(proc.pid, sig)
            else:  # pragma: no cover - Windows
                proc.terminate()
        except (ProcessLookupError, PermissionError, OSError):
            pass
        return
    if _POSIX:
        try:
            os.killpg(proc.pid, KILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
    elif proc.poll() is None:  # pragma: no cover - Windows
        try:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, timeout=30,
                           creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except (OSError, subprocess.SubprocessError):
            pass
    if proc.poll() is None:  # the leader itself, whatever the group kill did
        try:
            proc.kill()
        except OSError:
            pass


def kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every process it started (``SIGKILL`` to its process group, see
    :func:`signal_process_tree`)."""
    signal_process_tree(proc, KILL)


#: ``prctl`` option: the signal this process gets when the thread that started it ends (Linux)
_PR_SET_PDEATHSIG = 1
#: the signal :func:`end_with_parent` asks for: not ``SIGTERM``, because the kernel sends it once per exiting thread
#: of a multi-threaded parent (torchrun's), and a second ``SIGTERM`` means "stop now, without saving" to a training
#: run; its handler (``semisupseg.training.engine``) only ever asks the run to stop. ``None`` where there is none.
PARENT_DIED = getattr(signal, "SIGUSR2", None)


def end_with_parent(sig: Optional[int] = PARENT_DIED) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux ``PR_SET_PDEATHSIG``; elsewhere
    nothing, ``False``). For the workers of a launcher such as ``torchrun``: a launcher killed with ``SIGKILL``
    cannot pass its own signals on, and its workers went on training as orphans; with :data:`PARENT_DIED` a training
    run saves its state and ends as ``cancelled`` (before its handler is installed, the signal's default action ends
    the process). A parent already gone (this process adopted by init) gets ``sig`` at once. Returns whether the
    request was made."""
    import sys

    if sig is None or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1:  # the parent died before the request: nothing would ever be sent
        os.kill(os.getpid(), sig)
    return True


__all__ = ["KILL", "PARENT_DIED", "TERM", "end_with_parent", "group_popen_kwargs", "signal_process_tree", "kill_process_tree"]
