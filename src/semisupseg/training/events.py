"""Machine-readable training events (JSON lines) plus a tqdm bar in a terminal.

One :class:`Events` sink receives everything the trainer reports. Each event is one JSON object on one line::

    {"event": "iteration", "time": 1700000000.1, "iteration": 10, "max_iterations": 6000, "loss": 0.71,
     "losses": {"dice": 0.71}, "logs": {...}, "lr": 0.01, "it_per_s": 1.9, "eta_s": 3150.2}

Kinds: ``started``, ``resumed``, ``iteration``, ``validation`` (``metrics``), ``checkpoint`` (``name``: last|best, ``path``),
``overlays`` (a training snapshot: ``case``, ``dir``, ``files``; see :mod:`semisupseg.training.snapshots`),
``finished``, ``failed`` (``message``), ``cancelled``. Lines are flushed one by one, so a reader (the Slicer module
parsing the child process's output) sees whole lines, and a killed run leaves a valid file (possibly without a
final event; a line cut by the kill is removed by the next run appending to the file, see
:func:`drop_partial_line`). Non-finite floats are written as ``null``.

For people: a tqdm bar on stderr when it is a terminal; otherwise (a log file, a pipe, the Slicer runner's log)
plain progress lines on stderr — the start, then an iteration line at most every ``line_interval_s`` seconds
(iteration, loss, it/s, ETA), each validation, each failed training snapshot (``overlays`` with ``error``), and the
end — never carriage returns.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Union

from semisupseg.progress import (LINE_INTERVAL_S, LineTimer, ProgressCallback, format_duration, is_terminal,
                                 write_line)

EVENT_KINDS = ("started", "resumed", "iteration", "validation", "checkpoint", "overlays", "finished", "failed",
               "cancelled")


def jsonable(value: Any) -> Any:
    """``value`` made JSON-safe: tensors/numpy scalars → numbers, arrays → lists, paths → str, NaN/inf → None."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)
    tolist = getattr(value, "tolist", None)
    if tolist is not None and getattr(value, "ndim", 0) > 0:
        return jsonable(tolist())
    if item is not None:
        return jsonable(item())
    return str(value)


class Events:
    """The sink of training events.

    ``path``: JSON-lines file (appended to, so a resumed run continues its log); ``stream``: also write the lines to
    this text stream (``sys.stdout`` for ``--events -``); ``bar``: show a tqdm progress bar on stderr (``None`` =
    only when stderr is a terminal); ``lines``: plain progress lines on ``line_stream`` (default stderr) at most
    every ``line_interval_s`` seconds (``None`` = when no bar is shown); ``progress``: ``callback(fraction,
    message)`` for GUIs; ``listeners``: callables receiving each event dict. ``enabled=False`` drops everything
    (non-zero ranks of a distributed run).
    """

    def __init__(self, path: Optional[Union[str, Path]] = None, stream: Optional[IO[str]] = None,
                 bar: Optional[bool] = None, progress: Optional[ProgressCallback] = None,
                 listeners: Optional[List[Callable[[Dict[str, Any]], None]]] = None, enabled: bool = True,
                 lines: Optional[bool] = None, line_interval_s: float = LINE_INTERVAL_S,
                 line_stream: Optional[IO[str]] = None):
        self.lines = lines
        self.line_stream = line_stream
        self._line_timer = LineTimer(line_interval_s, first_at_once=True)
        self.path = None if path is None else Path(path)
        self.stream = stream
        self.enabled = enabled
        self.progress = progress
        self.listeners = list(listeners or [])
        self._bar_wanted = bar
        self._bar = None
        self._file: Optional[IO[str]] = None
        self._lock = threading.Lock()
        self.history: List[Dict[str, Any]] = []
        self.keep_history = False

    # ---------------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._file is None and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            drop_partial_line(self.path)
            self._file = open(self.path, "a", encoding="utf-8")

    def set_path(self, path: Optional[Union[str, Path]]) -> None:
        """Direct the JSON lines to ``path`` from now on (the trainer sets ``RUN_DIR/events.jsonl``)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self.path = None if path is None else Path(path)

    def emit(self, kind: str, /, **fields: Any) -> Dict[str, Any]:
        """Write one event; returns the dict written."""
        record = {"event": kind, "time": round(time.time(), 3)}
        record.update(jsonable(fields))
        if not self.enabled:
            return record
        line = json.dumps(record, allow_nan=False)
        with self._lock:
            self._open()
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()
            if self.stream is not None:
                self.stream.write(line + "\n")
                self.stream.flush()
            if self.keep_history:
                self.history.append(record)
        self._update_bar(record)
        self._update_lines(record)
        self._update_progress(record)
        for listener in self.listeners:
            listener(record)
        return record

    # ---------------------------------------------------------------------------------------------------------
    def _use_bar(self) -> bool:
        return bool(self._bar_wanted) if self._bar_wanted is not None else is_terminal(sys.stderr)

    def _update_bar(self, record: Dict[str, Any]) -> None:
        kind = record["event"]
        if kind in ("started", "resumed") and self._use_bar():
            from tqdm import tqdm

            if self._bar is not None:
                self._bar.close()
            self._bar = tqdm(total=record.get("max_iterations"), initial=record.get("iteration", 0),
                             desc=str(record.get("method", "train")), unit="it", dynamic_ncols=True)
        elif self._bar is not None and kind == "iteration":
            self._bar.n = record.get("iteration", self._bar.n)
            post = {"loss": f"{record.get('loss') or float('nan'):.4f}"}
            if record.get("lr") is not None:
                post["lr"] = f"{record['lr']:.2g}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.refresh()
        elif self._bar is not None and kind == "validation":
            self._bar.write(f"validation @ {record.get('iteration')}: " + ", ".join(
                f"{k}={v:.4f}" for k, v in (record.get("metrics") or {}).items() if isinstance(v, (int, float))))
        elif self._bar is not None and kind == "overlays" and record.get("error"):
            self._bar.write(progress_line(record))
        elif self._bar is not None and kind in ("finished", "failed", "cancelled"):
            self._bar.close()
            self._bar = None

    def _update_lines(self, record: Dict[str, Any]) -> None:
        """Plain progress lines (no carriage returns) when no bar is shown."""
        wanted = self.lines if self.lines is not None else not self._use_bar()
        if not wanted or record["event"] in ("finished", "failed", "cancelled"):
            return  # the end is said once, by the caller (the CLI's last line, the raised error)
        text = progress_line(record)
        if text is None:
            return
        now = time.monotonic()
        kind = record["event"]
        if kind == "iteration":
            last = record.get("iteration") == record.get("max_iterations")
            if not self._line_timer.due(now) and not last:
                return
        if not write_line(self.line_stream if self.line_stream is not None else sys.stderr, text):
            return
        if kind in ("iteration", "validation"):  # the first iteration line follows the start at once
            self._line_timer.last = now

    def _update_progress(self, record: Dict[str, Any]) -> None:
        if self.progress is None:
            return
        kind = record["event"]
        total = record.get("max_iterations") or 0
        it = record.get("iteration", 0) or 0
        if kind == "iteration" and total:
            eta = record.get("eta_s")
            msg = f"iteration {it}/{total}, loss {record.get('loss') or float('nan'):.4f}"
            if eta is not None:
                msg += f", ETA {eta / 60:.1f} min"
            self.progress(min(it / total, 1.0), msg)
        elif kind == "validation" and total:
            self.progress(min(it / total, 1.0), f"validation at {it}: dice {record.get('metrics', {}).get('dice')}")
        elif kind == "finished":
            self.progress(1.0, "finished")
        elif kind in ("failed", "cancelled"):
            self.progress(min(it / total, 1.0) if total else 0.0, f"{kind}: {record.get('message', '')}")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_line(record: Dict[str, Any]) -> Optional[str]:
    """The one plain line a person reads for an event (``None`` for events not worth a line)."""
    kind = record.get("event")
    it, total = record.get("iteration"), record.get("max_iterations")
    where = f"{it}/{total}" if total else f"{it}"
    if kind in ("started", "resumed"):
        return (f"{kind} {record.get('method', '')} at iteration {where} on {record.get('device', '?')}: "
                f"{record.get('labeled_cases', '?')} labeled, {record.get('unlabeled_cases', '?')} unlabeled, "
                f"{record.get('validation_cases', '?')} validation cases")
    if kind == "iteration":
        pct = f" ({100.0 * it / total:.0f}%)" if total and it is not None else ""
        loss = record.get("loss")
        rate = record.get("it_per_s")
        parts = [f"iteration {where}{pct}", f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "loss ?"]
        if isinstance(record.get("lr"), (int, float)):
            parts.append(f"lr {record['lr']:.3g}")
        if isinstance(rate, (int, float)):
            parts.append(f"{rate:.2f} it/s" if rate >= 1 else f"{1.0 / rate:.1f} s/it" if rate > 0 else "")
        parts.append(f"ETA {format_duration(record.get('eta_s'))}")
        return ", ".join(p for p in parts if p)
    if kind == "validation":
        m = record.get("metrics") or {}
        vals = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, (int, float)) and k != "hd95_undefined")
        return f"validation at iteration {where}: {vals}"
    if kind == "finished":
        best = record.get("best_val_dice")
        extra = f", best validation Dice {best:.4f} at iteration {record.get('best_iteration')}" \
            if isinstance(best, (int, float)) else ""
        return f"finished at iteration {where} in {format_duration(record.get('elapsed_s'))}{extra}"
    if kind in ("failed", "cancelled"):
        msg = str(record.get("message") or "").splitlines()
        return f"{kind} at iteration {where}" + (f": {msg[0]}" if msg else "")
    if kind == "overlays" and record.get("error"):
        return f"overlays at iteration {where} failed: {record['error']}"
    return None


def drop_partial_line(path: Union[str, Path]) -> int:
    """Cut the unfinished last line a killed writer left at the end of the JSON-lines file ``path`` (a fragment of
    an event that can never be completed), so that the next line appended (``resumed``) starts a line of its own
    instead of being glued to the fragment and lost to every reader. Returns the bytes removed (0 when the file
    is missing, empty or ends with a newline)."""
    try:
        with open(path, "rb+") as fh:
            size = fh.seek(0, 2)
            if size == 0:
                return 0
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return 0
            keep = 0
            pos = size
            while pos > 0:  # find the last newline, reading backwards in blocks
                step = min(65536, pos)
                pos -= step
                fh.seek(pos)
                block = fh.read(step)
                i = block.rfind(b"\n")
                if i >= 0:
                    keep = pos + i + 1
                    break
            fh.truncate(keep)
            return size - keep
    except FileNotFoundError:
        return 0


def read_events(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """All complete events of a JSON-lines file (a truncated last line from a killed process is skipped)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


__all__ = ["Events", "EVENT_KINDS", "LINE_INTERVAL_S", "drop_partial_line", "jsonable", "progress_line", "read_events"]
