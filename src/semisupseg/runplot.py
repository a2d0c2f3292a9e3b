"""A chart of a training run from its ``events.jsonl``: loss terms, validation Dice and HD95, learning rate.

:func:`read_run` reads the JSON-lines log the engine writes (:mod:`semisupseg.training.events`) into a
:class:`RunSeries`, the way the Slicer panel's live charts read it: a ``resumed`` event at iteration k drops what the
log holds after k (the resumed run computes those iterations again), a ``started`` event after rows starts afresh
(a new run in the folder), and a line that is not a JSON object (a partial last line of a running or killed run) is
skipped. :func:`render_run_chart` draws it with numpy alone into one RGB picture (``(H, W, 3)`` uint8, row 0 at
the top) with the 5x7 font of :mod:`semisupseg.preview`:

* a title line: the run folder's name, the method, the iteration reached out of the run's total, the run's state,
  and the best validation Dice with its iteration;
* **Loss** (full width): the total loss and each loss term of the method, smoothed by a centred moving average
  over ``smooth`` iterations (said in the panel's title), with the raw total in a faint colour behind;
* **Validation Dice** (0 to 1) with the best point ringed and a dashed line at its iteration, and **Validation HD95
  (mm)** (the same iteration ringed) — one marker per validation;
* **Learning rate**, and **Method figures** when the method logs any (SGRS's region fractions ``region_*``, the
  adversarial discriminator's accuracy ``d_acc``, the pseudo-label foreground share ``pseudo_fg``).

Every panel has axes with tick labels, grid lines, a legend above its plot area and iteration on the x axis (from 0
to the run's total, so an unfinished run shows how far it is). :class:`RunChart` keeps, with the picture, each
panel's plot box and data ranges (:meth:`Panel.to_pixel`), which the tests use to find the curves.
The command line is ``semisupseg plot-run RUN_DIR -o chart.png`` (:mod:`semisupseg.cli.plot_run`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from semisupseg.errors import InputError, OutputExistsError
from semisupseg.preview import draw_text, text_size, write_png

__all__ = ["RunSeries", "Panel", "RunChart", "read_run", "render_run_chart", "plot_run", "smooth", "nice_ticks",
           "default_smoothing", "FIGURE_KEYS", "PALETTE", "parse_event_lines", "event_number", "is_figure_key"]

PathLike = Union[str, Path]

#: log keys drawn in the *Method figures* panel: exact names, or prefixes ending in ``*`` (as the Slicer panel)
FIGURE_KEYS = ("region_*", "d_acc", "d_accuracy", "pseudo_fg")
#: line colours (RGB) in the order series appear (Tableau 10)
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
#: legend names of the SGRS region fractions (the letters of the paper)
_FIGURE_LABELS = {"region_delta": "Δ region_delta", "region_omega": "Ω region_omega", "region_theta": "Θ region_theta"}
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
AXIS = (60, 60, 60)
GRID = (225, 225, 225)
#: text scale (pixels per font pixel): 12 px per character, 16 px per line
SCALE = 2
_LINE_W = 2


# ----------------------------------------------------------------------------------------------------------------------
# reading the log
# ----------------------------------------------------------------------------------------------------------------------

@dataclass
class RunSeries:
    """What a run's log holds, as arrays (NaN where an iteration has no value for a column).

    ``iterations``: iteration numbers of the ``iteration`` events; ``losses``: ``"loss"`` (the total) and each term
    of ``losses`` (name -> array over ``iterations``); ``lr``; ``figures``: the method's logged numbers that
    :data:`FIGURE_KEYS` select; ``val_iterations``, ``dice``, ``hd95`` (mm, NaN where undefined): one entry per
    ``validation`` event. ``status``: ``finished``/``failed``/``cancelled`` from the last event; without a
    final event, for a run folder the heartbeat's verdict (``running`` or ``crashed``,
    :func:`semisupseg.training.heartbeat.run_state`), for a log file alone ``unfinished``."""

    name: str
    method: Optional[str] = None
    max_iterations: Optional[int] = None
    iterations: np.ndarray = field(default_factory=lambda: np.zeros(0))
    losses: Dict[str, np.ndarray] = field(default_factory=dict)
    lr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    figures: Dict[str, np.ndarray] = field(default_factory=dict)
    val_iterations: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dice: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hd95: np.ndarray = field(default_factory=lambda: np.zeros(0))
    status: str = "running"
    message: Optional[str] = None
    skipped_lines: int = 0

    @property
    def last_iteration(self) -> Optional[int]:
        its = [a.max() for a in (self.iterations, self.val_iterations) if a.size]
        return int(max(its)) if its else None

    @property
    def best(self) -> Optional[Tuple[int, float]]:
        """``(iteration, dice)`` of the best validation (the first of equal ones, as the engine keeps its best)."""
        ok = np.isfinite(self.dice)
        if not ok.any():
            return None
        i = int(np.flatnonzero(ok)[np.argmax(self.dice[ok])])
        return int(self.val_iterations[i]), float(self.dice[i])


def parse_event_lines(lines: Iterable[bytes]) -> Tuple[List[Dict[str, Any]], int]:
    """The events among complete lines of an events log, and how many lines were not events (not UTF-8 JSON, or
    not an object with ``event``: e.g. a line cut by a killed writer and continued by the next run); blank lines
    are neither. The Slicer panel's incremental reader (``SemiSupSegLib.live.EventLogReader``) reads by this rule
    too."""
    events: List[Dict[str, Any]] = []
    skipped = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if isinstance(record, dict) and "event" in record:
            events.append(record)
        else:
            skipped += 1
    return events, skipped


def event_number(value: Any) -> float:
    """A number of an event as a float: NaN for ``None`` (non-finite values are logged as null), booleans and
    anything that is not a number."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def is_figure_key(key: str) -> bool:
    """Whether a method log key is drawn in the *Method figures* panel (:data:`FIGURE_KEYS`)."""
    return any(key == k or (k.endswith("*") and key.startswith(k[:-1])) for k in FIGURE_KEYS)


def _columns(rows: List[Dict[str, float]]) -> Dict[str, np.ndarray]:
    names: List[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    return {k: np.array([row.get(k, math.nan) for row in rows], dtype=np.float64) for k in names}


def read_run(path: PathLike) -> RunSeries:
    """Read a run folder's ``events.jsonl`` (``path``: the run folder or the log file itself). Raises
    :class:`InputError` naming the file when there is no log or it holds no training event."""
    path = Path(path)
    log = path / "events.jsonl" if path.is_dir() else path
    if not log.is_file():
        raise InputError("no events log here (a training run folder holds events.jsonl)", log)
    try:
        raw = log.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the events log ({exc.strerror or exc})", log) from None
    in_run_dir = log.name == "events.jsonl"
    series = RunSeries(name=log.parent.resolve().name if in_run_dir else log.name)
    its: List[int] = []
    loss_rows: List[Dict[str, float]] = []
    lr: List[float] = []
    fig_rows: List[Dict[str, float]] = []
    val: List[Tuple[int, float, float]] = []
    events, series.skipped_lines = parse_event_lines(raw.split(b"\n"))
    for e in events:
        kind = e["event"]
        if e.get("max_iterations"):
            series.max_iterations = int(e["max_iterations"])
        if kind in ("started", "resumed"):
            series.method = e.get("method") or series.method
            series.status, series.message = "running", None
            if kind == "started" and (its or val):  # a new run in the folder: what came before is another run's
                its, loss_rows, lr, fig_rows, val = [], [], [], [], []
            if kind == "resumed" and e.get("iteration") is not None:
                k = int(e["iteration"])
                keep = [i for i, it in enumerate(its) if it <= k]
                its = [its[i] for i in keep]
                loss_rows = [loss_rows[i] for i in keep]
                lr = [lr[i] for i in keep]
                fig_rows = [fig_rows[i] for i in keep]
                val = [v for v in val if v[0] <= k]
        elif kind == "iteration" and e.get("iteration") is not None:
            its.append(int(e["iteration"]))
            row = {"loss": event_number(e.get("loss"))}
            row.update({str(k): event_number(v) for k, v in (e.get("losses") or {}).items()})
            loss_rows.append(row)
            lr.append(event_number(e.get("lr")))
            fig_rows.append({str(k): event_number(v) for k, v in (e.get("logs") or {}).items()
                             if is_figure_key(str(k))})
        elif kind == "validation" and e.get("iteration") is not None:
            m = e.get("metrics") or {}
            val.append((int(e["iteration"]), event_number(m.get("dice")), event_number(m.get("hd95"))))
        elif kind in ("finished", "failed", "cancelled"):
            series.status = kind
            series.message = e.get("message")
    if not events:
        raise InputError("the events log holds no training event yet", log)
    if series.status == "running":  # no final event: alive, or killed (the heartbeat tells)
        if in_run_dir:
            from semisupseg.training.heartbeat import run_state

            series.status = run_state(log.parent).status
        else:
            series.status = "unfinished"
    series.iterations = np.array(its, dtype=np.int64)
    series.losses = _columns(loss_rows)
    series.lr = np.array(lr, dtype=np.float64)
    series.figures = _columns(fig_rows)
    series.val_iterations = np.array([v[0] for v in val], dtype=np.int64)
    series.dice = np.array([v[1] for v in val], dtype=np.float64)
    series.hd95 = np.array([v[2] for v in val], dtype=np.float64)
    return series


# ----------------------------------------------------------------------------------------------------------------------
# numbers
# ----------------------------------------------------------------------------------------------------------------------

def default_smoothing(n: int) -> int:
    """The moving-average window for ``n`` logged iterations: about a 25th of them, odd, 1 to 201."""
    w = int(round(n / 25.0))
    w = max(1, min(201, w))
    return w if w % 2 else w + 1 if w > 1 else 1


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` samples (NaNs ignored; near the ends the window is cut to the samples
    there are); NaN where the window holds no number."""
    v = np.asarray(values, dtype=np.float64)
    window = max(1, int(window))
    if window == 1 or v.size == 0:
        return v.copy()
    ok = np.isfinite(v)
    s = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    c = np.concatenate([[0], np.cumsum(ok)])
    half = window // 2
    idx = np.arange(v.size)
    lo = np.clip(idx - half, 0, v.size)
    hi = np.clip(idx + window - half, 0, v.size)
    count = c[hi] - c[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (s[hi] - s[lo]) / np.maximum(count, 1), np.nan)


def nice_ticks(lo: float, hi: float, target: int = 5) -> Tuple[float, float, np.ndarray]:
    """An axis range widened to round numbers and its ticks: steps 1, 2, 2.5 or 5 times a power of ten, about
    ``target`` of them. Returns ``(lo, hi, ticks)``."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad if lo < 0 else max(0.0, lo - pad), hi + pad
    raw = (hi - lo) / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw * 0.999)
    lo_n = math.floor(lo / step + 1e-9) * step
    hi_n = math.ceil(hi / step - 1e-9) * step
    ticks = lo_n + step * np.arange(int(round((hi_n - lo_n) / step)) + 1)
    return lo_n, hi_n, ticks


def _fmt(value: float, step: float) -> str:
    """A tick label with the decimals the step needs (``0.25``, ``0.002``), scientific below 1e-3 (``5e-4``)."""
    if abs(value) < abs(step) * 1e-6:
        return "0"
    if step >= 1e-3:
        decimals = next(d for d in range(12) if abs(round(step, d) - step) <= step * 1e-6)
        return f"{value:.{decimals}f}"
    mant, exp = f"{value:.1e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


# ----------------------------------------------------------------------------------------------------------------------
# drawing
# ----------------------------------------------------------------------------------------------------------------------

def _stamp(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, color, width: int,
           box: Tuple[int, int, int, int]) -> None:
    """Squares of ``width`` pixels centred on the points (x right, y down), kept inside ``box`` = x0, y0, x1, y1
    (half-open)."""
    if xs.size == 0:
        return
    x0, y0, x1, y1 = box
    off = np.arange(width) - (width - 1) // 2
    px = (np.round(xs).astype(np.int64)[:, None] + off[None, :])
    py = (np.round(ys).astype(np.int64)[:, None] + off[None, :])
    gx = np.repeat(px, width, axis=1).ravel()
    gy = np.tile(py, (1, width)).ravel()
    keep = (gx >= x0) & (gx < x1) & (gy >= y0) & (gy < y1)
    canvas[gy[keep], gx[keep]] = color


def _polyline(canvas: np.ndarray, xs: np.ndarray, ys: np.ndarray, color, width: int,
              box: Tuple[int, int, int, int], dash: int = 0) -> None:
    """Line through the points in order, broken where a coordinate is NaN; ``dash`` > 0: dashes that long."""
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        return
    # single finite points between NaNs: a dot
    seg = ok[:-1] & ok[1:]
    lonely = ok & ~np.concatenate([[False], seg]) & ~np.concatenate([seg, [False]])
    _stamp(canvas, xs[lonely], ys[lonely], color, width, box)
    if not seg.any():
        return
    a = np.flatnonzero(seg)
    dx, dy = xs[a + 1] - xs[a], ys[a + 1] - ys[a]
    n = np.maximum(1, np.ceil(np.maximum(np.abs(dx), np.abs(dy)) * 2).astype(np.int64))  # half-pixel steps
    rep = np.repeat(np.arange(a.size), n + 1)
    t = np.concatenate([np.arange(k + 1) / k for k in n])
    px, py = xs[a][rep] + dx[rep] * t, ys[a][rep] + dy[rep] * t
    if dash:
        along = np.concatenate([np.arange(k + 1) / k * math.hypot(u, v) for k, u, v in zip(n, dx, dy)])
        start = np.concatenate([[0.0], np.cumsum(np.hypot(dx, dy))[:-1]])[rep]
        on = ((start + along) // dash) % 2 == 0
        px, py = px[on], py[on]
    _stamp(canvas, px, py, color, width, box)


def _disc(canvas: np.ndarray, x: float, y: float, radius: float, color, ring: float = 0.0) -> None:
    """A filled disc (``ring`` > 0: only a ring that thick) centred on ``(x, y)``."""
    h, w = canvas.shape[:2]
    r = int(math.ceil(radius)) + 1
    yy, xx = np.mgrid[int(y) - r:int(y) + r + 1, int(x) - r:int(x) + r + 1]
    d = np.hypot(xx - x, yy - y)
    mask = d <= radius
    if ring:
        mask &= d > radius - ring
    keep = mask & (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
    canvas[yy[keep], xx[keep]] = color


def _faint(color, amount: float = 0.3) -> Tuple[int, int, int]:
    return tuple(int(round(c * amount + b * (1 - amount))) for c, b in zip(color, BACKGROUND))  # type: ignore


@dataclass
class Panel:
    """One plot of the chart: its title, plot box in picture pixels (``x0, y0, x1, y1``, half-open, y down) and
    data ranges; :meth:`to_pixel` maps data to picture pixels."""

    title: str
    box: Tuple[int, int, int, int]
    xlim: Tuple[float, float]
    ylim: Tuple[float, float]
    legend: List[Tuple[str, Tuple[int, int, int]]] = field(default_factory=list)
    legend_box: Tuple[int, int, int, int] = (0, 0, 0, 0)

    def to_pixel(self, x, y) -> Tuple[np.ndarray, np.ndarray]:
        """Picture column and row (floats) of data points ``(x, y)``."""
        x0, y0, x1, y1 = self.box
        fx = (np.asarray(x, dtype=np.float64) - self.xlim[0]) / (self.xlim[1] - self.xlim[0])
        fy = (np.asarray(y, dtype=np.float64) - self.ylim[0]) / (self.ylim[1] - self.ylim[0])
        return x0 + fx * (x1 - 1 - x0), (y1 - 1) - fy * (y1 - 1 - y0)


@dataclass
class RunChart:
    """The picture (``(H, W, 3)`` uint8) and its panels by key (``loss``, ``dice``, ``hd95``, ``lr``,
    ``figures``), the smoothing window used and the title line."""

    image: np.ndarray
    panels: Dict[str, Panel]
    smoothing: int
    title: str


@dataclass
class _Spec:
    key: str
    title: str
    ylim: Tuple[float, float]
    lines: List[Tuple[str, np.ndarray, np.ndarray, Tuple[int, int, int], int]]  # name, x, y, colour, width
    markers: List[Tuple[np.ndarray, np.ndarray, Tuple[int, int, int]]] = field(default_factory=list)
    best: Optional[Tuple[float, float]] = None
    best_label: Optional[str] = None
    note: Optional[str] = None


def _range(arrays: Sequence[np.ndarray], include_zero: bool = True, unit: bool = False) -> Tuple[float, float]:
    vals = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if unit and (vals.size == 0 or (vals.min() >= 0 and vals.max() <= 1)):
        return 0.0, 1.0
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = float(vals.min()), float(vals.max())
    if include_zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    return lo, hi


def _specs(run: RunSeries, window: int) -> List[_Spec]:
    it = run.iterations.astype(np.float64)
    specs: List[_Spec] = []
    # loss: raw total behind, then the smoothed total and terms
    lines = []
    colours = iter(PALETTE)
    total = run.losses.get("loss", np.full(it.shape, np.nan))
    total_colour = next(colours)
    smoothed = {k: smooth(v, window) for k, v in run.losses.items()}
    if window > 1:
        lines.append(("total, raw", it, total, _faint(total_colour), 1))
    lines.append(("total" if len(run.losses) > 1 else "loss", it, smoothed.get("loss", total), total_colour, _LINE_W))
    for k, v in smoothed.items():
        if k != "loss":
            lines.append((k, it, v, next(colours), _LINE_W))
    # the range follows the smoothed curves (and most of the raw one): a single spike does not flatten them
    raw_top = np.nanpercentile(total, 99) if np.isfinite(total).any() else np.nan
    ylo, yhi = _range([v for _, _, v, _, w in lines if w == _LINE_W] + [np.array([raw_top])])
    title = "Loss" + (f" (moving average over {window} iterations)" if window > 1 else "")
    specs.append(_Spec("loss", title, (ylo, yhi), lines,
                       note=None if it.size else "no iteration logged yet"))
    # validation
    vit = run.val_iterations.astype(np.float64)
    best = run.best
    dice_colour, hd_colour = PALETTE[0], PALETTE[1]
    best_label = f"best {best[1]:.3f} at {best[0]}" if best else None
    note = None if vit.size else "no validation in this run yet"
    specs.append(_Spec("dice", "Validation Dice", (0.0, 1.0), [("Dice", vit, run.dice, dice_colour, _LINE_W)],
                       markers=[(vit, run.dice, dice_colour)],
                       best=(best[0], best[1]) if best else None, best_label=best_label, note=note))
    hd_best = None
    if best is not None:
        j = np.flatnonzero(run.val_iterations == best[0])
        if j.size and np.isfinite(run.hd95[j[0]]):
            hd_best = (float(best[0]), float(run.hd95[j[0]]))
    hd_note = note
    if vit.size and not np.isfinite(run.hd95).any():
        hd_note = "no HD95 yet (empty predictions)"
    specs.append(_Spec("hd95", "Validation HD95 (mm)", _range([run.hd95]),
                       [("HD95", vit, run.hd95, hd_colour, _LINE_W)], markers=[(vit, run.hd95, hd_colour)],
                       best=hd_best, best_label=f"at best Dice ({best[0]})" if hd_best else None, note=hd_note))
    specs.append(_Spec("lr", "Learning rate", _range([run.lr]), [("lr", it, run.lr, PALETTE[2], _LINE_W)],
                       note=None if it.size else "no iteration logged yet"))
    if run.figures:
        colours = iter(PALETTE * 2)
        figs = [(_FIGURE_LABELS.get(k, k), it, smooth(v, window), next(colours), _LINE_W)
                for k, v in run.figures.items()]
        title = "Method figures" + (f" (moving average over {window})" if window > 1 else "")
        specs.append(_Spec("figures", title, _range([f[2] for f in figs], unit=True), figs))
    return specs


def _legend_layout(entries: Sequence[Tuple[str, Tuple[int, int, int]]], x0: int, x1: int
                   ) -> List[List[Tuple[int, str, Tuple[int, int, int]]]]:
    """Entries placed left to right, wrapped at ``x1``: rows of ``(x, text, colour)``."""
    rows: List[List[Tuple[int, str, Tuple[int, int, int]]]] = [[]]
    x = x0
    for text, colour in entries:
        w = 24 + 6 + text_size(text, SCALE)[1] + 18
        if rows[-1] and x + w > x1:
            rows.append([])
            x = x0
        rows[-1].append((x, text, colour))
        x += w
    return rows if rows[0] else []


def _panel_layout(spec: _Spec, frame: Tuple[int, int, int, int]):
    """The legend entries, y axis ticks and labels, left edge of the plot box and legend rows of a panel."""
    fx0, _, fx1, _ = frame
    legend = [(name, colour) for name, _, _, colour, _ in spec.lines]
    if spec.best_label:
        legend.append((spec.best_label, PALETTE[3]))
    ylo, yhi, yticks = nice_ticks(*spec.ylim)
    ystep = float(yticks[1] - yticks[0]) if len(yticks) > 1 else 1.0
    labels = [_fmt(v, ystep) for v in yticks]
    left = fx0 + max(text_size(t, SCALE)[1] for t in labels) + 10
    return legend, (ylo, yhi), yticks, labels, left, _legend_layout(legend, left, fx1)


def _draw_panel(canvas: np.ndarray, spec: _Spec, frame: Tuple[int, int, int, int], xlim: Tuple[float, float],
                legend_rows: int = 1) -> Panel:
    """Draw a panel into ``frame``; ``legend_rows``: the legend lines to make room for (the panels of one row
    keep their plot boxes level)."""
    fx0, fy0, fx1, fy1 = frame
    th, cw = 8 * SCALE, 6 * SCALE
    draw_text(canvas, fy0, fx0, spec.title[: max(1, (fx1 - fx0) // cw)], TEXT, SCALE)
    legend, (ylo, yhi), yticks, labels, left, rows = _panel_layout(spec, frame)
    legend_top = fy0 + th + 8
    for r, row in enumerate(rows):
        ly = legend_top + r * (th + 6)
        for x, text, colour in row:
            is_best = spec.best_label is not None and text == spec.best_label
            if is_best:
                _disc(canvas, x + 12, ly + th / 2 - 1, 7, colour, ring=2.5)
            else:
                canvas[ly + th // 2 - 2: ly + th // 2 + 1, x:x + 24] = colour
            draw_text(canvas, ly, x + 30, text, TEXT, SCALE)
    legend_box = (left, legend_top, fx1, legend_top + len(rows) * (th + 6))
    top = legend_top + max(1, len(rows), legend_rows) * (th + 6) + 6
    bottom = fy1 - 2 * th - 14  # x tick labels and the axis title below
    box = (left + 1, top, fx1 - cw, bottom)
    panel = Panel(spec.title, box, xlim, (ylo, yhi), legend, legend_box)
    bx0, by0, bx1, by1 = box
    _, _, xticks = nice_ticks(*xlim, target=max(2, min(8, (bx1 - bx0) // 110)))
    xticks = xticks[(xticks >= xlim[0] - 1e-9) & (xticks <= xlim[1] + 1e-9)]
    xstep = float(xticks[1] - xticks[0]) if len(xticks) > 1 else 1.0
    # grid, axes, ticks
    for v, text in zip(yticks, labels):
        _, py = panel.to_pixel(xlim[0], v)
        py = int(round(float(py)))
        canvas[py, bx0:bx1] = GRID
        canvas[py, bx0 - 5:bx0] = AXIS
        tw = text_size(text, SCALE)[1]
        draw_text(canvas, py - th // 2 + 1, bx0 - 8 - tw, text, TEXT, SCALE)
    for v in xticks:
        px, _ = panel.to_pixel(v, ylo)
        px = int(round(float(px)))
        canvas[by0:by1, px] = GRID
        canvas[by1:by1 + 5, px] = AXIS
        text = _fmt(v, xstep)
        tw = text_size(text, SCALE)[1]
        draw_text(canvas, by1 + 8, min(max(px - tw // 2, fx0), fx1 - tw), text, TEXT, SCALE)
    xt = "iteration"
    draw_text(canvas, by1 + 8 + th + 4, (bx0 + bx1) // 2 - text_size(xt, SCALE)[1] // 2, xt, AXIS, SCALE)
    canvas[by0:by1, bx0 - 1] = AXIS
    canvas[by1, bx0 - 1:bx1] = AXIS
    clip = (bx0, by0, bx1, by1)
    if spec.best is not None:
        px, py = panel.to_pixel(spec.best[0], spec.best[1])
        _polyline(canvas, np.array([px, px]), np.array([by0, by1 - 1], dtype=np.float64), PALETTE[3], 1, clip, dash=5)
    for name, xs, ys, colour, width in spec.lines:
        px, py = panel.to_pixel(xs, ys)
        _polyline(canvas, px, py, colour, width, clip)
    for xs, ys, colour in spec.markers:
        px, py = panel.to_pixel(xs, ys)
        for x, y in zip(px, py):
            if np.isfinite(x) and np.isfinite(y):
                _disc(canvas, float(x), float(y), 3.5, colour)
    if spec.best is not None:
        px, py = panel.to_pixel(spec.best[0], spec.best[1])
        _disc(canvas, float(px), float(py), 8, PALETTE[3], ring=2.5)
    if spec.note:
        note = spec.note[: max(1, (bx1 - bx0 - 8) // cw)]
        tw = text_size(note, SCALE)[1]
        draw_text(canvas, (by0 + by1) // 2 - th // 2, max(bx0 + 4, (bx0 + bx1) // 2 - tw // 2), note, AXIS, SCALE)
    return panel


def _wrap(text: str, chars: int) -> List[str]:
    """``text`` in lines of at most ``chars`` characters, broken after ``, `` or ``: `` where possible."""
    lines: List[str] = []
    while len(text) > chars:
        cut = max(text.rfind(", ", 0, chars), text.rfind(": ", 0, chars))
        cut = cut + 1 if cut > 0 else chars
        lines.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    return lines + [text]


def render_run_chart(run: RunSeries, width: int = 1200, smoothing: Optional[int] = None,
                     title: Optional[str] = None) -> RunChart:
    """Draw ``run`` (see the module docstring); ``width`` in pixels (at least 640), ``smoothing``: the moving-average
    window in logged iterations (default :func:`default_smoothing`), ``title``: replaces the title line."""
    width = max(640, int(width))
    window = default_smoothing(run.iterations.size) if smoothing is None else max(1, int(smoothing))
    specs = _specs(run, window)
    th = 8 * SCALE
    if title is None:
        total = run.max_iterations or run.last_iteration
        parts = [run.name, run.method or "unknown method",
                 f"iteration {run.last_iteration if run.last_iteration is not None else 0}/{total or '?'} "
                 f"({run.status})"]
        if run.best is not None:
            parts.append(f"best validation Dice {run.best[1]:.3f} at iteration {run.best[0]}")
        title = ", ".join(parts[:2]) + ": " + ", ".join(parts[2:])
    margin, gap = 16, 28
    cw = 6 * SCALE
    title_lines = _wrap(title, (width - 2 * margin) // cw)
    half = (width - 2 * margin - gap) // 2
    full_h, half_h = 340, 300
    by_key = {s.key: s for s in specs}
    layout: List[List[str]] = [["loss"], ["dice", "hd95"], ["lr", "figures"] if "figures" in by_key else ["lr"]]
    head = margin + len(title_lines) * (th + 6) + 8
    height = head + sum(full_h if len(r) == 1 else half_h for r in layout) + gap * (len(layout) - 1) + margin
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    for i, line in enumerate(title_lines):
        draw_text(canvas, margin + i * (th + 6), margin, line, TEXT, SCALE)
    last = max(1.0, float(run.max_iterations or 0), float(run.last_iteration or 0))
    xlim = (0.0, last)
    y = head
    panels: Dict[str, Panel] = {}
    for row in layout:
        h = full_h if len(row) == 1 else half_h
        frames = []
        for i, key in enumerate(row):
            x0 = margin + i * (half + gap)
            frames.append((margin, y, width - margin, y + h) if len(row) == 1 else (x0, y, x0 + half, y + h))
        rows = max(len(_panel_layout(by_key[k], f)[-1]) for k, f in zip(row, frames))
        for key, frame in zip(row, frames):
            panels[key] = _draw_panel(canvas, by_key[key], frame, xlim, legend_rows=rows)
        y += h + gap
    return RunChart(canvas, panels, window, title)


def plot_run(run: PathLike, output: PathLike, overwrite: bool = False, width: int = 1200,
             smoothing: Optional[int] = None, title: Optional[str] = None) -> Path:
    """Read a run (folder or ``events.jsonl``), draw its chart and write it to the PNG ``output`` (atomically; an
    existing file only with ``overwrite``). Returns the path written."""
    out = Path(output)
    if out.suffix.lower() != ".png":
        raise InputError("the chart is written as PNG: give a file name ending in .png", out)
    if out.exists() and not overwrite:  # before any reading
        raise OutputExistsError("output exists; pass --overwrite to replace it", out)
    chart = render_run_chart(read_run(run), width=width, smoothing=smoothing, title=title)
    return write_png(chart.image, out, overwrite=overwrite)
