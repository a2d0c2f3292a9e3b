"""Progress for people, one rule for every command: a bar on a terminal, plain lines anywhere else.

When stderr is a terminal, long work shows a tqdm bar (redrawn in place with carriage returns). When it is not — a
log file, a pipe, the Slicer runner's log — no bar is drawn: :class:`Progress` writes a plain line at most every
``interval_s`` seconds (what is being done, percent, elapsed time and an estimate of the rest), so such a log holds
readable lines and no carriage returns. ``semisupseg train`` follows the same rule through its event sink
(:class:`semisupseg.training.events.Events`); both take the rule's pieces from :mod:`semisupseg.progress`.
"""
from __future__ import annotations

import sys
import time
from typing import IO, Optional

from semisupseg.progress import LINE_INTERVAL_S, LineTimer, format_duration, is_terminal, write_line


class Progress:
    """A ``progress(fraction, message)`` callback for one piece of long work named ``desc``.

    ``bar``: ``None`` = a tqdm bar exactly when ``stream`` (default stderr) is a terminal; ``False`` = plain lines.
    Plain lines: at most one every ``interval_s`` seconds, the first after ``interval_s`` (short work prints none);
    :meth:`close` ends the bar (``leave``: keep its last state on screen)."""

    def __init__(self, desc: str, stream: Optional[IO[str]] = None, bar: Optional[bool] = None,
                 interval_s: float = LINE_INTERVAL_S, leave: bool = True,
                 bar_format: str = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}"):
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        self._lines = LineTimer(interval_s)  # the first line after interval_s: short work prints none
        self._t0 = self._lines.last
        self._bar = None
        if bar if bar is not None else is_terminal(self.stream):
            from tqdm import tqdm

            # dynamic_ncols: a line longer than the terminal would wrap, and clearing it would leave a stray line
            self._bar = tqdm(total=100, desc=desc, unit="%", file=self.stream, leave=leave, bar_format=bar_format,
                             dynamic_ncols=True)

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self._bar is not None:
            self._bar.n = int(round(100 * fraction))
            self._bar.set_postfix_str(message, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if not self._lines.due(now):
            return
        self._lines.last = now
        elapsed = now - self._t0
        rest = f", about {format_duration(elapsed * (1 - fraction) / fraction)} left" if fraction > 0.01 else ""
        text = f"{self.desc}: {100 * fraction:.0f}%" + (f" {message}" if message else "") + \
            f" ({format_duration(elapsed)} elapsed{rest})"
        write_line(self.stream, text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["Progress", "is_terminal", "LINE_INTERVAL_S"]
