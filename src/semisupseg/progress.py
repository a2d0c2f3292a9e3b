"""Progress reporting and cancellation shared by inference and training (Qt-free, thread-safe).

The Slicer modules and the CLI both pass a :data:`ProgressCallback` and a :class:`CancelToken` into long work.

Plain progress lines (where no bar is drawn: a log file, a pipe, the Slicer runner's log) follow one rule for every
command and for training: at most one line every :data:`LINE_INTERVAL_S` seconds (:class:`LineTimer`), never a
carriage return, and a line that cannot be written (a closed pipe) is dropped without stopping the work
(:func:`write_line`). :func:`is_terminal` decides between a bar and plain lines; :func:`format_duration` writes the
times in them.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Optional, Union

from semisupseg.errors import Cancelled

#: ``callback(fraction, message)``: ``fraction`` in [0, 1] of the whole job, ``message`` a short human text.
ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, message: str = "") -> None:
    """A progress callback that ignores everything (the default)."""


class CancelToken:
    """A flag that long work polls between units of work (windows, iterations).

    It is set by :meth:`cancel` (from another thread, e.g. a signal handler or a GUI button) or, when
    ``stop_file`` is given, by the existence of that file (so another process can ask a run to stop). With
    ``newer_than`` (a ``time.time()``), only a file made or touched since then counts: one left by an earlier run
    in the same place does not stop this one.
    """

    def __init__(self, stop_file: Optional[Union[str, Path]] = None, newer_than: Optional[float] = None):
        self._event = threading.Event()
        self.stop_file = None if stop_file is None else Path(stop_file)
        self.newer_than = newer_than

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if not self._event.is_set() and self.stop_file is not None and self._stop_file_counts():
            self._event.set()
        return self._event.is_set()

    def _stop_file_counts(self) -> bool:
        try:
            made = self.stop_file.stat().st_mtime  # type: ignore[union-attr]
        except OSError:
            return False
        return self.newer_than is None or made >= self.newer_than - 1.0  # coarse file-system clocks

    def raise_if_cancelled(self, what: str = "work") -> None:
        """Raise :class:`~semisupseg.errors.Cancelled` if cancellation was requested."""
        if self.cancelled:
            raise Cancelled(f"{what} cancelled")


def scaled(callback: ProgressCallback, start: float, stop: float) -> ProgressCallback:
    """A callback mapping a sub-task's [0, 1] to [start, stop] of the parent's progress."""

    def inner(fraction: float, message: str = "") -> None:
        callback(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return inner


# ------------------------------------------------------------------------------------------------- plain lines
#: seconds between two plain progress lines (``semisupseg.cli.console.Progress`` and the training event sink)
LINE_INTERVAL_S = 30.0


def is_terminal(stream: Optional[IO[str]] = None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: Optional[float]) -> str:
    """``"42 s"``, ``"12.5 min"``, ``"3.2 h"`` (``"?"`` for ``None``; negative counts as 0)."""
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class LineTimer:
    """When the next plain progress line is due: at most one every ``interval_s`` seconds after :attr:`last` (the
    ``time.monotonic()`` of the previous line, set by the caller). ``first_at_once``: the first line may come at
    once; otherwise only ``interval_s`` after the timer was made (short work prints none)."""

    def __init__(self, interval_s: float = LINE_INTERVAL_S, first_at_once: bool = False):
        self.interval_s = float(interval_s)
        self.last = -math.inf if first_at_once else time.monotonic()

    def due(self, now: float) -> bool:
        return now - self.last >= self.interval_s


def write_line(stream: IO[str], text: str) -> bool:
    """Write ``text`` and a newline to ``stream`` and flush; ``False`` when that fails (a closed pipe or stream
    must not stop the work)."""
    try:
        stream.write(text + "\n")
        stream.flush()
    except (OSError, ValueError):
        return False
    return True
