"""Progress reporting and cancellation shared by inference and training (Qt-free, thread-safe).

The Slicer modules and the CLI both pass a :data:`ProgressCallback` and a :class:`CancelToken` into long work.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Optional, Union

from semisupseg.errors import Cancelled

#: ``callback(fraction, message)``: ``fraction`` in [0, 1] of the whole job, ``message`` a short human text.
ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, message: str = "") -> None:
    """A progress callback that ignores everything (the default)."""


class CancelToken:
    """A flag that long work polls between units of work (windows, iterations).

    It is set by :meth:`cancel` (from another thread, e.g. a signal handler or a GUI button) or, when
    ``stop_file`` is given, by the existence of that file (so another process can ask a run to stop).
    """

    def __init__(self, stop_file: Optional[Union[str, Path]] = None):
        self._event = threading.Event()
        self.stop_file = None if stop_file is None else Path(stop_file)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        if not self._event.is_set() and self.stop_file is not None and self.stop_file.exists():
            self._event.set()
        return self._event.is_set()

    def raise_if_cancelled(self, what: str = "work") -> None:
        """Raise :class:`~semisupseg.errors.Cancelled` if cancellation was requested."""
        if self.cancelled:
            raise Cancelled(f"{what} cancelled")


def scaled(callback: ProgressCallback, start: float, stop: float) -> ProgressCallback:
    """A callback mapping a sub-task's [0, 1] to [start, stop] of the parent's progress."""

    def inner(fraction: float, message: str = "") -> None:
        callback(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return inner
