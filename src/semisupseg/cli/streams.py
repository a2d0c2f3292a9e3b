"""Standard streams that outlive their reader.

A training run started by the Slicer panel (or ``nohup ... | tee``) writes progress lines to a pipe whose reader may
go away — Slicer quits, the terminal closes — while the run must go on writing its checkpoints and event log. Python
ignores SIGPIPE, so the next write raises ``BrokenPipeError`` and, unhandled, ends the run (or makes the interpreter
exit with code 120 while flushing). :class:`PipeSafeStream` catches that once, points the file descriptor at the
null device, and carries on: what the gone reader would have seen is dropped; nothing else changes.
"""
from __future__ import annotations

import errno
import os
from typing import Any, TextIO

__all__ = ["PipeSafeStream"]


class PipeSafeStream:
    """A text stream proxy whose writes and flushes survive a closed pipe (see the module docstring)."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.broken = False

    def _detach(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # no descriptor (an in-memory stream): writes are dropped by the checks below

    def _guard(self, op: str, *args: Any) -> Any:
        if self.broken:
            return len(args[0]) if op == "write" and args else None
        try:
            return getattr(self._stream, op)(*args)
        except BrokenPipeError:
            self._detach()
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EINVAL):
                raise
            self._detach()
        return len(args[0]) if op == "write" and args else None

    def write(self, text: str) -> int:
        return self._guard("write", text)

    def flush(self) -> None:
        self._guard("flush")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
