"""The training panel's actions, Qt-free: check data, start / cancel / resume a run, follow a run folder, hand the
model to the SemiSupSeg module.

A run is a ``semisupseg train`` child process of Slicer's Python (``PythonSlicer -m semisupseg train ...``, started
through :class:`SemiSupSegLib.runner.ProcessRunner`) writing into its run folder. Everything the panel shows comes
from that folder, never from the process's pipes, so that a run started here, a run started by another Slicer
session or by the CLI, and a finished or crashed run are all followed the same way:

* ``RUN/events.jsonl`` (the engine's JSON-line event log, always written) read incrementally with
  ``SemiSupSegLib.live.EventLogReader`` — progress, ETA, learning rate, losses, validation, overlay sets;
* ``RUN/heartbeat.json`` (``semisupseg.training.heartbeat``) — whether the process is alive: a process killed outright
  shows as ``crashed``, not as running forever.

The child is not given ``--events -``: the run must outlive the pipe to Slicer (closing the module or the scene never
stops it, and a run keeps going after Slicer exits — its stderr progress lines tolerate a closed pipe). Its stop file
is ``RUN/.stop`` (:func:`stop_file`), so any session can ask any run started by the panel to stop cleanly.

* :class:`TrainingSettings` → the ``semisupseg train`` argument list (:func:`train_arguments`), main settings as CLI
  options, the Advanced ones as ``--set KEY=VALUE`` (``SemiSupSegLib.method_form``).
* :class:`TrainingSession`: one run folder being followed — ``owned`` when this process started the child. Call
  :meth:`~TrainingSession.poll` from a GUI timer (or :meth:`~TrainingSession.wait` to block).
  :meth:`~TrainingSession.cancel`: the stop file (the engine saves ``resume.pt`` and exits), then, for an owned run
  that has not ended within the grace period, the whole process tree is killed (the last saved state stays; writes
  are atomic). A run owned by another process gets the stop file and, on the same machine, ``SIGTERM`` (which the CLI
  also handles as a clean cancel) — never a kill.
* :class:`TrainingLogic`: :meth:`~TrainingLogic.start`, :meth:`~TrainingLogic.resume`, :meth:`~TrainingLogic.attach`
  (a session of this process for that folder if there is one, else a follower), :meth:`~TrainingLogic.check_data`
  (:class:`DataCheckJob`, the checks of ``semisupseg train`` in a child process), :meth:`~TrainingLogic.use_in_segment`
  (registers the run's best model in the shared catalogue and returns its name), :meth:`~TrainingLogic.rank`
  (:class:`RankJob`: ``semisupseg rank`` of the unlabeled scans by the model's uncertainty — *Annotate next*).
* :class:`RunView`: a session's events in the scene (``SemiSupSegLib.live``: tables, plot charts, overlay sets).
* :class:`TrainingPanel`: the panel's state between timer ticks (followed session and its view, data check,
  ranking); :meth:`~TrainingPanel.tick` says what to show (:class:`PanelUpdate`). Helpers: :func:`settings_from_panel`
  (editor texts → settings, one line per bad entry), :data:`PANEL_WIDGETS`, :func:`status_line`, :func:`run_model`,
  :func:`run_model_classes`.

Sessions this process started are kept in a module-level registry, so that closing and reopening the panel (a new
widget and logic) finds them again with their process.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

PathLike = Union[str, os.PathLike]
LogCallback = Callable[[str], None]

#: the stop file of a run started by the panel, inside its run folder (hidden: a run folder may hold it)
STOP_FILE = ".stop"
#: seconds between two heartbeat reads of a run followed without owning its process
HEARTBEAT_POLL_S = 1.0
#: what a session's ``status`` can be: ``starting`` (owned, no event yet) and the words of ``run_status``
STATUSES = ("starting", "running", "finished", "failed", "cancelled", "crashed", "empty")
ENDED = ("finished", "failed", "cancelled", "crashed")

#: sessions started in this process, by resolved run folder (closing the panel must not lose them)
_OWNED: Dict[str, "TrainingSession"] = {}


def stop_file(run_dir: PathLike) -> Path:
    """The stop file of a run started by the panel: ``RUN/.stop``."""
    return Path(run_dir) / STOP_FILE


def _key(run_dir: PathLike) -> str:
    return str(Path(run_dir).expanduser().resolve())


# ----------------------------------------------------------------------------------------------------------------------
# settings -> command line
# ----------------------------------------------------------------------------------------------------------------------

@dataclass
class TrainingSettings:
    """What the panel's main settings say; ``None`` leaves a setting to the engine (its default, or derived from the
    data: patch size, spacing, normalisation).

    * ``method``: registered method name; ``labeled``: dataset folder (``imagesTr``/``labelsTr``) or images folder;
      ``labels``: labels folder for an images folder; ``unlabeled``: folders of unlabeled images; ``run_dir``.
    * ``iterations``, ``batch_size``, ``labeled_batch_size`` (global patches per step), ``lr`` (``optim.lr``),
      ``seed``, ``device`` (``auto``/``cpu``/``cuda``/``cuda:N``);
    * ``patch_size``: **x, y, z** voxels (multiples of 16);
    * ``validation``: number of held-out validation cases or ``"id,id"`` (``0``: none);
    * ``overlay_cases``: case ids to snapshot for overlays, every ``overlay_every`` iterations;
    * ``overrides``: further ``KEY=VALUE`` strings (the Advanced section: ``method_params.NAME=...``, engine keys);
    * ``overwrite``: start afresh in a folder that holds a run (its engine files are removed).
    """

    method: str
    labeled: str
    run_dir: str
    labels: Optional[str] = None
    unlabeled: Tuple[str, ...] = ()
    iterations: Optional[int] = None
    patch_size: Optional[Tuple[int, int, int]] = None
    batch_size: Optional[int] = None
    labeled_batch_size: Optional[int] = None
    lr: Optional[float] = None
    validation: Optional[Union[int, str]] = None
    seed: Optional[int] = None
    device: Optional[str] = None
    overlay_cases: Tuple[str, ...] = ()
    overlay_every: Optional[int] = None
    overrides: Tuple[str, ...] = ()
    overwrite: bool = False

    def __post_init__(self) -> None:
        # "~/runs/r1" typed in the panel: the child would take it literally (under Slicer's working folder)
        self.run_dir = str(Path(str(self.run_dir)).expanduser()) if str(self.run_dir).strip() else self.run_dir
        self.labeled = str(Path(self.labeled).expanduser()) if self.labeled else self.labeled
        self.labels = str(Path(self.labels).expanduser()) if self.labels else self.labels
        self.unlabeled = tuple(str(Path(str(u).strip()).expanduser()) for u in self.unlabeled if str(u).strip())
        self.overlay_cases = tuple(str(c) for c in self.overlay_cases if str(c).strip())
        self.overrides = tuple(self.overrides)
        if self.patch_size is not None:
            self.patch_size = tuple(int(v) for v in self.patch_size)  # type: ignore[assignment]
            if len(self.patch_size) != 3:
                raise ValueError(f"patch_size must be 3 sizes x, y, z, got {self.patch_size}")


def defaults() -> Dict[str, Any]:
    """The engine's defaults of the main settings (``semisupseg.training.TrainConfig``), for the panel's editors:
    ``iterations``, ``batch_size``, ``labeled_batch_size``, ``lr``, ``validation``, ``seed``, ``device``,
    ``overlay_every``; ``patch_size`` is ``None`` (derived from the data)."""
    from semisupseg.training import TrainConfig

    cfg = TrainConfig()
    return {"iterations": cfg.iterations, "batch_size": cfg.batch_size, "labeled_batch_size": cfg.labeled_batch_size,
            "lr": cfg.optim.lr, "validation": cfg.data.validation, "seed": cfg.seed, "device": cfg.device,
            "overlay_every": cfg.overlays.every, "patch_size": cfg.data.patch_size}


def _validation_text(value: Union[int, str]) -> str:
    text = str(value).strip()
    return ",".join(p.strip() for p in text.split(",") if p.strip())


def data_arguments(settings: TrainingSettings) -> List[str]:
    """The data options shared by ``train`` and ``check-data``: ``--method``, ``--labeled``, ``--labels``,
    ``--unlabeled``..., ``--validation``."""
    args = ["--method", settings.method, "--labeled", str(settings.labeled)]
    if settings.labels:
        args += ["--labels", str(settings.labels)]
    for folder in settings.unlabeled:
        args += ["--unlabeled", str(folder)]
    if settings.validation is not None and str(settings.validation).strip() != "":
        args += ["--validation", _validation_text(settings.validation)]
    return args


def train_arguments(settings: TrainingSettings) -> List[str]:
    """The ``semisupseg train`` arguments (after ``-m semisupseg``) for ``settings``, with the run's stop file and
    without a progress bar."""
    from SemiSupSegLib.method_form import _float_text, set_arguments

    args = ["train"] + data_arguments(settings) + ["--out", str(settings.run_dir)]
    for option, value in (("--iterations", settings.iterations), ("--batch-size", settings.batch_size),
                          ("--labeled-batch-size", settings.labeled_batch_size), ("--seed", settings.seed),
                          ("--device", settings.device or None)):
        if value is not None:
            args += [option, str(value)]
    if settings.patch_size is not None:
        args += ["--patch-size"] + [str(v) for v in settings.patch_size]
    for case in settings.overlay_cases:
        args += ["--overlay-case", case]
    if settings.overlay_cases and settings.overlay_every is not None:
        args += ["--overlay-every", str(int(settings.overlay_every))]
    if settings.overwrite:
        args.append("--overwrite")
    sets = ([f"optim.lr={_float_text(settings.lr)}"] if settings.lr is not None else []) + list(settings.overrides)
    args += set_arguments(sets)
    return args + ["--stop-file", str(stop_file(settings.run_dir)), "--no-bar"]


def resume_arguments(run_dir: PathLike, iterations: Optional[int] = None,
                     overrides: Sequence[str] = ()) -> List[str]:
    """``semisupseg train --resume RUN`` (optionally with a new total of ``iterations`` and ``--set`` overrides)."""
    from SemiSupSegLib.method_form import set_arguments

    run_dir = Path(run_dir).expanduser()
    args = ["train", "--resume", str(run_dir)]
    if iterations is not None:
        args += ["--iterations", str(int(iterations))]
    args += set_arguments(overrides)
    return args + ["--stop-file", str(stop_file(run_dir)), "--no-bar"]


def check_data_arguments(settings: TrainingSettings) -> List[str]:
    """The ``semisupseg check-data`` arguments for ``settings``: the data options, the settings that change what is
    derived from the data (patch size, batch sizes) and the Advanced overrides, as ``--set``."""
    from SemiSupSegLib.method_form import set_arguments

    sets = []
    if settings.patch_size is not None:
        sets.append("data.patch_size=[" + ", ".join(str(v) for v in settings.patch_size) + "]")
    for key in ("batch_size", "labeled_batch_size"):
        if getattr(settings, key) is not None:
            sets.append(f"{key}={int(getattr(settings, key))}")
    return ["check-data"] + data_arguments(settings) + set_arguments(sets + list(settings.overrides))


def data_config(settings: TrainingSettings):
    """The ``semisupseg.training.TrainConfig`` that ``check-data`` (and ``train``) would build from ``settings`` (by
    the CLI's own option handling), for the data check."""
    from semisupseg.cli import build_parser
    from semisupseg.cli.train import explicit_overrides
    from semisupseg.training import TrainConfig, apply_overrides

    args = build_parser().parse_args(check_data_arguments(settings))
    cfg = TrainConfig()
    apply_overrides(cfg, explicit_overrides(args))
    apply_overrides(cfg, args.overrides)
    return cfg


# ----------------------------------------------------------------------------------------------------------------------
# a saved run -> the panel, and the panel -> what a resume changes
# ----------------------------------------------------------------------------------------------------------------------

#: config keys holding folders or files (compared as absolute paths: the run saved them so)
_PATH_KEYS = ("data.labeled", "data.labels", "data.split")


def _config_value(cfg, key: str, default: Any = None) -> Any:
    """The value of the dotted ``key`` in ``cfg`` (``method_params.NAME``: the method's saved parameter, else
    ``default``)."""
    if key.startswith("method_params."):
        return (cfg.method_params or {}).get(key.split(".", 1)[1], default)
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _comparable(key: str, value: Any) -> Any:
    import json

    if value is not None and (key in _PATH_KEYS or key == "data.unlabeled"):
        absolute = [str(Path(str(v)).expanduser().absolute()) for v in (value if key == "data.unlabeled" else [value])]
        value = absolute if key == "data.unlabeled" else absolute[0]
    return json.loads(json.dumps(value))  # tuples as lists; 1 == 1.0 then compares equal


def _run_config(run_dir: PathLike):
    from semisupseg.training import load_run_config

    return load_run_config(Path(run_dir).expanduser() / "config.yaml")


def run_panel_settings(run_dir: PathLike) -> Optional[Tuple[Dict[str, Any], Dict[str, Any]]]:
    """What the panel shows for the run saved in ``run_dir``, from its ``config.yaml``: ``(texts, advanced)``, the
    editor texts of the main settings by :data:`PANEL_WIDGETS` name (not ``run_dir``) and the Advanced section's
    values by ``--set`` key. ``None`` when the folder holds no readable run config.

    Choosing a run folder fills the form with these, so that Resume continues the run as it was saved and changes
    only what the user then edits (:func:`resume_changes`). The validation entry is left empty when the run's
    validation cases came from its split file (typed, it would replace that list)."""
    from SemiSupSegLib.method_form import _float_text, engine_fields, method_fields

    from semisupseg.errors import SemiSupSegError

    if not (Path(run_dir).expanduser() / "config.yaml").is_file():
        return None
    try:
        cfg = _run_config(run_dir)
        fields = method_fields(cfg.method) + engine_fields()
    except (SemiSupSegError, OSError, ValueError, KeyError):
        return None  # a damaged or foreign config: the form keeps what it shows; Resume names the problem
    d = cfg.data
    validation = "" if d.split_val is not None else \
        (",".join(d.validation) if isinstance(d.validation, list) else str(d.validation))
    texts: Dict[str, Any] = {
        "method": cfg.method, "labeled": d.labeled or "", "labels": d.labels or "", "unlabeled": ";".join(d.unlabeled),
        "iterations": cfg.iterations, "patch_size": " ".join(str(v) for v in d.patch_size) if d.patch_size else "",
        "batch_size": cfg.batch_size, "labeled_batch_size": cfg.labeled_batch_size, "lr": _float_text(cfg.optim.lr),
        "validation": validation, "seed": cfg.seed, "device": cfg.device,
        "overlay_cases": ";".join(cfg.overlays.cases), "overlay_every": cfg.overlays.every}
    advanced = {}
    for f in fields:
        value = _config_value(cfg, f.key, f.default)
        advanced[f.key] = str(value) if f.kind == "choice" else (tuple(value) if isinstance(value, list) else value)
    return texts, advanced


def show_run_settings(saved: Tuple[Dict[str, Any], Dict[str, Any]], widgets: Dict[str, Any], fields: Sequence[Any],
                      editors: Dict[str, Any]) -> None:
    """Show :func:`run_panel_settings`' ``(texts, advanced)`` in the panel: ``widgets`` are the main editors by
    :data:`PANEL_WIDGETS` name (``run_dir`` is left alone), ``fields`` and ``editors`` the Advanced section's
    (``method_form.FormField`` objects and their editors by key) for the run's method."""
    from SemiSupSegLib.method_form import set_editor_value

    texts, advanced = saved
    for name, widget in widgets.items():
        if name in texts and name != "run_dir":
            set_editor_value(widget, texts[name])
    for f in fields:
        if f.key in advanced and f.key in editors:
            set_editor_value(editors[f.key], advanced[f.key] if f.kind == "bool" else f.format(advanced[f.key]))


def resume_changes(run_dir: PathLike, settings: TrainingSettings) -> List[str]:
    """The ``KEY=VALUE`` overrides that turn the run saved in ``run_dir`` into what the panel's ``settings`` say (its
    main settings and every Advanced field, a field not in ``settings.overrides`` at its default): ``[]`` when the
    form shows the run as saved. Settings the panel does not show (a split file's lists, the derived spacing) keep
    their saved values. Raises :class:`semisupseg.errors.InputError` for a change a resume cannot make (the method,
    the network, the cases: ``semisupseg.cli.train.RESUME_FIXED``), naming each."""
    import dataclasses
    import json

    from semisupseg.cli import build_parser
    from semisupseg.cli.train import RESUME_FIXED, explicit_overrides
    from semisupseg.errors import InputError
    from semisupseg.training.config import parse_override
    from SemiSupSegLib.method_form import engine_fields, method_fields

    run_dir = Path(run_dir).expanduser()
    saved = _run_config(run_dir)
    args = build_parser().parse_args(train_arguments(dataclasses.replace(settings, run_dir=str(run_dir),
                                                                         overwrite=False)))
    wanted = dict(parse_override(o) for o in explicit_overrides(args) + list(args.overrides or ()))
    defaults = {f.key: f.default for f in (method_fields(settings.method) if settings.method == saved.method else [])
                + engine_fields()}
    for key, value in defaults.items():
        wanted.setdefault(key, value)  # an Advanced field at its default: the form says so
    changed = [(k, _config_value(saved, k, defaults.get(k)), v) for k, v in wanted.items()
               if _comparable(k, _config_value(saved, k, defaults.get(k))) != _comparable(k, v)]
    fixed = [c for c in changed if any(c[0] == f or (f.endswith(".") and c[0].startswith(f)) for f in RESUME_FIXED)]
    if fixed:
        raise InputError("Resume cannot change " + ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in fixed) +
                         ": the saved state is for the run's own network and cases; to train with them, choose a "
                         "new run folder and Start", run_dir)
    return [f"{k}={json.dumps(_comparable(k, v))}" for k, _, v in changed]


def settings_from_panel(texts: Dict[str, Any], overrides: Sequence[str] = (),
                        require: Sequence[str] = ("method", "labeled", "run_dir")) -> TrainingSettings:
    """:class:`TrainingSettings` from the panel's editors: ``texts`` maps the field names of
    :class:`TrainingSettings` to editor text (numbers may also come as numbers from spin boxes). Empty text leaves
    the setting to the engine; ``patch_size`` is ``"x y z"`` (commas allowed); ``unlabeled`` and ``overlay_cases``
    take one folder / id or several separated by ``;``. ``overrides``: the Advanced section's ``KEY=VALUE``
    strings; ``require``: the entries that must not be empty (the data check needs no run folder). Raises
    :class:`semisupseg.errors.InputError` naming the first bad entry."""
    from semisupseg.errors import InputError

    def text(name: str) -> str:
        value = texts.get(name)
        return "" if value is None else str(value).strip()

    def number(name: str, kind: type, minimum: Optional[float] = None):
        raw = text(name)
        if not raw:
            return None
        try:
            value = float(raw) if kind is float else int(float(raw))
            if kind is int and float(raw) != int(float(raw)):
                raise ValueError(raw)
        except ValueError:
            what = "a number" if kind is float else "a whole number"
            raise InputError(f"{name.replace('_', ' ')}: {raw!r} is not {what}") from None
        if minimum is not None and value < minimum:
            raise InputError(f"{name.replace('_', ' ')}: must be at least {minimum:g}, got {raw}")
        return value

    for required in require:
        if not text(required):
            raise InputError({"method": "choose a method", "labeled": "choose the labeled folder",
                              "run_dir": "choose a run folder"}[required])
    patch = None
    if text("patch_size"):
        parts = [p for p in re.split(r"[\s,x]+", text("patch_size")) if p]
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise InputError(f"patch size: {text('patch_size')!r} is not three sizes x y z (e.g. 96 96 96)")
        patch = tuple(int(p) for p in parts)
    validation: Optional[Union[int, str]] = None
    if text("validation"):
        validation = int(text("validation")) if text("validation").isdigit() else _validation_text(text("validation"))
    batch, labeled_batch = number("batch_size", int, 1), number("labeled_batch_size", int, 1)
    if batch is not None and labeled_batch is not None and labeled_batch > batch:
        raise InputError(f"labeled batch ({labeled_batch}) cannot be larger than the batch ({batch})")
    lr = number("lr", float)
    if lr is not None and lr <= 0:
        raise InputError(f"learning rate must be > 0, got {text('lr')}")
    return TrainingSettings(
        method=text("method"), labeled=text("labeled"), run_dir=text("run_dir"), labels=text("labels") or None,
        unlabeled=tuple(unlabeled_folders(text("unlabeled"))),
        iterations=number("iterations", int, 1), patch_size=patch, batch_size=batch, labeled_batch_size=labeled_batch,
        lr=lr, validation=validation, seed=number("seed", int), device=text("device") or None,
        overlay_cases=tuple(c.strip() for c in text("overlay_cases").split(";") if c.strip()),
        overlay_every=number("overlay_every", int, 1), overrides=tuple(overrides),
        overwrite=bool(texts.get("overwrite")))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_line(session: Optional["TrainingSession"]) -> str:
    """The line under the progress bar: status, iteration, time left and learning rate; why a run ended badly and
    what to do about it."""
    if session is None:
        return "no run"
    it, total = session.iteration, session.max_iterations
    where = f"iteration {it}/{total}" if it is not None and total else (f"iteration {it}" if it is not None else "")
    if session.status == "starting":
        return "starting (loading the data)"
    gone = f"; its events log is gone ({session.run_dir / 'events.jsonl'}: the run folder deleted or renamed?)" \
        if session.log_missing else ""
    if session.status == "running":
        parts = ["running" + ("" if session.owned else " (started elsewhere)") + gone, where]
        if session.eta_s is not None:
            parts.append(f"about {_duration(session.eta_s)} left")
        if session.lr is not None:
            parts.append(f"lr {session.lr:.3g}")
        return ", ".join(p for p in parts if p)
    if session.status == "finished":
        best = next((e.get("best_val_dice") for e in reversed(session.events) if e.get("event") == "finished"), None)
        return f"finished at {where}" + (f", best validation Dice {best:.3f}" if isinstance(best, (int, float)) else "")
    saved = (session.run_dir / "resume.pt").is_file() and (session.run_dir / "config.yaml").is_file()
    then = "Resume continues from the saved state" if saved else "nothing was saved yet: Start again"
    if session.status == "cancelled":
        return f"cancelled at {where}: {then}" + \
            (f" ({session.message})" if session.message and "killed" in session.message else "")
    if session.status == "crashed":
        return f"crashed at {where}: the training process is gone ({session.message or 'no final event'}); {then}"
    if session.status == "failed":
        return f"failed: {session.message or 'see the log'}"
    return "no run in this folder yet"


def unlabeled_folders(text: str) -> List[str]:
    """The unlabeled folders of the panel's field: several separated by ``;``, blanks dropped."""
    return [u.strip() for u in str(text or "").split(";") if u.strip()]


def run_model(run_dir: PathLike) -> Optional[Path]:
    """The run's model file: ``best.pt``, else ``last.pt`` (what the catalogue gives for a run), else ``None``."""
    from semisupseg.catalogue import RUN_MODEL_FILES

    if not str(run_dir).strip():
        return None
    return next((Path(run_dir) / f for f in RUN_MODEL_FILES if (Path(run_dir) / f).is_file()), None)


def run_model_classes(run_dir: PathLike) -> Tuple[Optional[List[str]], Optional[List[int]]]:
    """``(class names, label values)`` of the run's model (:func:`run_model`), ``(None, None)`` when it has none
    (yet) — the classes to write a new labeled case with when the set has no ``dataset.json``."""
    from semisupseg.checkpoint import read_card
    from semisupseg.errors import SemiSupSegError

    path = run_model(run_dir)
    if path is None:
        return None, None
    try:
        card = read_card(path)
    except SemiSupSegError:
        return None, None
    return list(card.class_names), list(card.label_values)


# ----------------------------------------------------------------------------------------------------------------------
# following a run
# ----------------------------------------------------------------------------------------------------------------------

class TrainingSession:
    """One run folder being followed (see the module docstring). Made by :class:`TrainingLogic`.

    State, updated by :meth:`poll`: ``status`` (one of :data:`STATUSES`), ``events`` (every event of the log read
    so far, oldest first), ``iteration``, ``max_iterations``, ``progress`` (0..1 or ``None``), ``eta_s``, ``lr``,
    ``message`` (the reason of a failed/cancelled/crashed run), ``returncode`` (owned runs, once ended).
    """

    def __init__(self, run_dir: PathLike, runner: Any = None, on_log: Optional[LogCallback] = None,
                 reader: Any = None):
        from semisupseg.training.heartbeat import LogSummary
        from SemiSupSegLib.live import EventLogReader
        from SemiSupSegLib.runner import ProgressTracker

        self.run_dir = Path(run_dir).expanduser().resolve()
        self.runner = runner
        self.on_log = on_log
        self.events: List[Dict[str, Any]] = []
        self.status = "starting" if runner is not None else "empty"
        self.message: Optional[str] = None
        self.returncode: Optional[int] = None
        self.iteration: Optional[int] = None
        self.max_iterations: Optional[int] = None
        self.lr: Optional[float] = None
        self.tracker = ProgressTracker()
        #: ``reader``: an ``EventLogReader`` already positioned (a fresh start over an old run skips the old log)
        self._reader = reader if reader is not None else EventLogReader(self.run_dir / "events.jsonl")
        #: what the run's state needs of the events read so far (the status never reads the whole log again)
        self._summary = LogSummary()
        self._next_beat_check = 0.0
        self._kill_at: Optional[float] = None
        self._term_at: Optional[float] = None
        self._cancel_requested = False
        #: the last :meth:`poll` found the log replaced (a new run in the folder): views must start over
        self.restarted = False
        if runner is None:  # a follower shows the run's history and state at once
            self._read_events()
            self._refresh_status(force=True)

    # -------------------------------------------------------------------------------------------------- state
    @property
    def owned(self) -> bool:
        """This process started the run's child (and can kill its process tree)."""
        return self.runner is not None

    @property
    def running(self) -> bool:
        return self.status in ("starting", "running")

    @property
    def log_missing(self) -> bool:
        """The run's events log was read and is gone now (its folder deleted or renamed): the plots keep what
        was read."""
        return bool(getattr(self._reader, "missing", False))

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def progress(self) -> Optional[float]:
        return self.tracker.fraction

    @property
    def eta_s(self) -> Optional[float]:
        return self.tracker.eta_s if self.running else None

    @property
    def log_text(self) -> str:
        """The child's output (owned runs; empty otherwise)."""
        return self.runner.log_text if self.runner is not None else ""

    def overlay_events(self, events: Optional[Sequence[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
        """The ``overlays`` events (written sets, not failures) among ``events`` (default: all read so far)."""
        return [e for e in (self.events if events is None else events)
                if e.get("event") == "overlays" and not e.get("error") and e.get("dir")]

    # -------------------------------------------------------------------------------------------------- polling
    def poll(self) -> List[Dict[str, Any]]:
        """Read what is new: the child's output (owned), new events of the log, the process's state. Returns the new
        events (oldest first). Cheap enough for a GUI timer every 100-500 ms."""
        if self.runner is not None and self.runner.running:
            self._enforce_cancel_deadline()
            for event in self.runner.poll():
                if event.get("event") == "exit":
                    self._child_exited(event)
        elif self._term_at is not None and time.monotonic() >= self._term_at:
            self._terminate_foreign()
        new = self._read_events()
        self._refresh_status(force=bool(new) and any(e.get("event") in ENDED for e in new))
        return new

    def wait(self, timeout: Optional[float] = None, interval: float = 0.2) -> str:
        """Block until the run has ended (owned: until the child's exit has been seen); returns ``status``.
        ``TimeoutError`` after ``timeout`` seconds (the run goes on)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if self.ended and (self.runner is None or not self.runner.running):
                return self.status
            if end is not None and time.monotonic() >= end:
                raise TimeoutError(f"the training run in {self.run_dir} did not end within {timeout} s "
                                   f"(status {self.status})")
            time.sleep(interval)

    def _read_events(self) -> List[Dict[str, Any]]:
        new = self._reader.read_new()
        self.restarted = bool(self._reader.restarted)
        if self.restarted:  # the log was replaced (a run started afresh in the folder): start over
            from semisupseg.training.heartbeat import LogSummary
            from SemiSupSegLib.runner import ProgressTracker

            self.events, self.tracker, self._summary = [], ProgressTracker(), LogSummary()
            self.iteration = self.max_iterations = self.lr = None
            if self.runner is not None and self.returncode is None:
                self.status = "starting"
        self._summary.add(new)
        for event in new:
            self.events.append(event)
            self.tracker.update(event)
            if event.get("iteration") is not None:
                self.iteration = int(event["iteration"])
            if event.get("max_iterations"):
                self.max_iterations = int(event["max_iterations"])
            if event.get("event") == "iteration" and isinstance(event.get("lr"), (int, float)):
                self.lr = float(event["lr"])
            if event.get("event") in ("started", "resumed") and self.status == "starting":
                self.status = "running"
        return new

    def _refresh_status(self, force: bool = False) -> None:
        """The status from the run folder (heartbeat, then the log), at most every :data:`HEARTBEAT_POLL_S` seconds
        unless ``force``. An owned run's status follows its process until the child's exit has been seen. The log is
        not read again: ``run_state`` gets the summary of the events already read, so a poll costs the new bytes of
        the log and one read of the heartbeat."""
        from semisupseg.training.heartbeat import heartbeat_alive, read_heartbeat, run_state

        if self.runner is not None and (self.returncode is None or self.ended):
            return  # owned: 'starting' until 'started' is read, 'running' until the exit, then final
        now = time.monotonic()
        if not force and now < self._next_beat_check:
            return
        self._next_beat_check = now + HEARTBEAT_POLL_S
        if self.runner is None:
            if heartbeat_alive(read_heartbeat(self.run_dir)):
                self.status = "running"
                return
            if self.ended and not force:
                return  # still over; nothing new
        state = run_state(self.run_dir, log=self._summary)
        status, message = state.status, state.message
        if self.runner is not None:  # owned, ended
            status, message = self._owned_outcome(status, message)
        self.status, self.message = status, message
        if state.iteration is not None and self.iteration is None:
            self.iteration, self.max_iterations = state.iteration, state.max_iterations

    def _owned_outcome(self, status: str, message: Optional[str]) -> Tuple[str, Optional[str]]:
        runner = self.runner
        if runner.cancelled and status in ("crashed", "running", "cancelled"):
            # killed after the grace period (no final event) or stopped cleanly: both are a cancel
            if status != "cancelled":
                message = "killed: it did not stop within the grace period; the last saved state is kept"
            return "cancelled", message
        if status in ("crashed", "running") and self.returncode is not None and self.returncode < 0:
            return "crashed", f"the training process was killed (signal {-self.returncode}) without a final event"
        if self.returncode not in (0, 130) and status in ("empty", "crashed", "running"):
            return "failed", runner.error or message or f"the process exited with code {self.returncode}"
        if status == "failed" and not message:
            message = runner.error
        return status, message

    def _child_exited(self, event: Dict[str, Any]) -> None:
        self.returncode = int(event.get("returncode", -1))
        self._kill_at = None
        try:
            stop_file(self.run_dir).unlink()
        except OSError:
            pass

    # -------------------------------------------------------------------------------------------------- cancel
    def cancel(self, grace_s: float = 15.0, block: bool = False, timeout: Optional[float] = None) -> None:
        """Ask the run to stop: create its stop file (the engine saves ``resume.pt`` and exits with "cancelled").
        An owned child still running after ``grace_s`` seconds is killed with its process tree; a run of another
        process gets ``SIGTERM`` then (same machine only). ``block``: wait for the end (``timeout`` s)."""
        if self.ended and (self.runner is None or not self.runner.running):
            return
        self._cancel_requested = True
        try:  # the child may not have made the folder yet (a cancel right after Start): the stop file is awaited
            self.run_dir.mkdir(parents=True, exist_ok=True)
            stop_file(self.run_dir).touch()
        except OSError as exc:
            if self.on_log is not None:
                self.on_log(f"could not create the stop file: {exc}")
        deadline = time.monotonic() + max(0.0, grace_s)
        if self.runner is not None:
            self.runner.cancelled = True
            self._kill_at = deadline
        else:
            self._term_at = deadline
        if block:
            self.wait(timeout=timeout)

    def _enforce_cancel_deadline(self) -> None:
        if self._kill_at is not None and time.monotonic() >= self._kill_at:
            self._kill_at = None
            self.runner.cancel(grace_s=0.0, block=False)  # kills the whole process tree at the next poll

    def _terminate_foreign(self) -> None:
        """SIGTERM to the process of a run this process does not own, when it is on this machine and still the run's
        process (``heartbeat_alive`` checks pid and start time)."""
        from semisupseg.training.heartbeat import heartbeat_alive, read_heartbeat

        self._term_at = None
        record = read_heartbeat(self.run_dir)
        if not heartbeat_alive(record) or record.get("host") != socket.gethostname() or os.name != "posix":
            return
        try:
            os.kill(int(record["pid"]), signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            pass

    def close(self) -> None:
        """Stop following (the training goes on; an owned child keeps running and stays in the registry)."""
        self.on_log = None


# ----------------------------------------------------------------------------------------------------------------------
# the session in the scene
# ----------------------------------------------------------------------------------------------------------------------

class RunView:
    """A session's events in the scene: the tables and plot charts of ``SemiSupSegLib.live.TrainingPlots`` and the
    newest overlay set of each case the run snapshots (``SemiSupSegLib.live.OverlayLoader``: a subject-hierarchy
    folder of the run, one sub-folder per case), fed by the session's events — the log is read once, by the
    session. Made with the events read so far (re-attaching draws the whole history); call :meth:`update` with what
    each :meth:`TrainingSession.poll` returns."""

    def __init__(self, scene, session: TrainingSession, load_overlays: bool = True):
        from SemiSupSegLib.live import OverlayLoader, TrainingPlots

        self.scene = scene
        self.session = session
        self.load_overlays = load_overlays
        name = session.run_dir.name
        self.plots = TrainingPlots(scene, name, key=str(session.run_dir))
        self.overlays = OverlayLoader(scene, session.run_dir, f"Training run {name}")
        self.plots.clear()
        self.update(session.events)
        if load_overlays:
            for case in self.overlays.cases():  # sets written before the log says so (or pruned events)
                self.overlays.load(case)

    @property
    def charts(self) -> Dict[str, Any]:
        """Chart nodes by kind: ``loss``, ``dice``, ``hd95``, ``lr``, ``figures``."""
        return self.plots.charts

    def update(self, events: Sequence[Dict[str, Any]]) -> List[str]:
        """Add ``events`` to the plots and load the overlay sets they announce; returns the cases loaded."""
        if self.session.restarted:  # a new run in the folder: its plots and overlay sets start over
            self.plots.clear()
            self.overlays.loaded.clear()
        self.plots.add_events(events)
        loaded = []
        if self.load_overlays:
            for case in dict.fromkeys(e["case"] for e in self.session.overlay_events(events) if e.get("case")):
                if self.overlays.load(case) is not None:
                    loaded.append(case)
        return loaded


# ----------------------------------------------------------------------------------------------------------------------
# data check on a thread
# ----------------------------------------------------------------------------------------------------------------------

class _ChildJob:
    """A ``semisupseg`` command in a child process (:class:`SemiSupSegLib.runner.ProcessRunner`) that leaves its
    result in a file of the runner's temporary folder (``{temp_dir}`` in ``args``), read by :meth:`_exited` when
    the child has ended, before the folder goes. :meth:`poll` → ``True`` once done; :meth:`_result` (``None``:
    none) or ``error`` (one line); ``runner`` for the log; :meth:`cancel` kills the process tree."""

    #: the error when the child ended with neither a result nor a reason of its own
    failed = "the command failed"

    def __init__(self, args: Sequence[str], python: Optional[Sequence[str]] = None,
                 env: Optional[Dict[str, str]] = None, on_log: Optional[LogCallback] = None):
        from SemiSupSegLib.runner import ProcessRunner

        self.error: Optional[str] = None
        self.runner = ProcessRunner(args, on_event=self._on_event, on_log=on_log, env=env, stop_file_option=None,
                                    python=python)

    def start(self):
        self.runner.start()
        return self

    def _on_event(self, event: Dict[str, Any]) -> None:
        if event.get("event") == "exit":
            self._exited(event, Path(self.runner.temp_dir))  # read before the runner removes its folder

    def _exited(self, event: Dict[str, Any], temp_dir: Path) -> None:
        raise NotImplementedError

    def _result(self) -> Any:
        raise NotImplementedError

    def poll(self) -> bool:
        self.runner.poll()
        return not self.runner.running

    def wait(self, timeout: Optional[float] = None) -> Any:
        """Block until done; returns the result (``InputError`` with the error otherwise)."""
        from semisupseg.errors import InputError

        self.runner.wait(timeout)
        if self._result() is None:
            raise InputError(self.error or self.failed)
        return self._result()

    def cancel(self, block: bool = False) -> None:
        """Kill the child's process tree (nothing of it is worth keeping); ``block``: wait until it is gone."""
        self.runner.cancel(grace_s=0.0, block=block)


class DataCheckJob(_ChildJob):
    """``semisupseg check-data`` — the checks ``semisupseg train`` runs, and for usable data the settings training
    would derive from it — in a child process (it reads every file once: in Slicer a Python thread would run only
    while the GUI thread runs Python, and a crash in a reader would take Slicer with it). ``report`` (a
    ``semisupseg.training.datacheck.DataReport``, read back from the child's ``--report`` file) or ``error``."""

    failed = "the data check failed"

    def __init__(self, settings: TrainingSettings, python: Optional[Sequence[str]] = None,
                 env: Optional[Dict[str, str]] = None, on_log: Optional[LogCallback] = None):
        self.settings = settings
        self.report: Any = None
        self.fraction = 0.0
        self.message = "checking (reading every file)"
        super().__init__(check_data_arguments(settings) + ["--report", "{temp_dir}/report.json"], python, env,
                         on_log)

    def _exited(self, event: Dict[str, Any], temp_dir: Path) -> None:
        import json

        from semisupseg.training.datacheck import DataReport

        report = temp_dir / "report.json"
        if event.get("cancelled"):
            self.error = "data check cancelled"
        elif report.is_file():  # exit 2 with a report: the data cannot be used, and the report says why
            try:
                self.report = DataReport.from_dict(json.loads(report.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.error = f"the data check's report cannot be read: {exc}"
        else:
            self.error = event.get("error") or self.failed
        self.fraction, self.message = 1.0, ""

    def _result(self) -> Any:
        return self.report

    def lines(self) -> List[str]:
        """The result list: the report as ``semisupseg check-data`` prints it, or the error."""
        if self.report is not None:
            return self.report.text().splitlines()
        return [f"error: {self.error}"] if self.error else []


# ----------------------------------------------------------------------------------------------------------------------
# annotate next: the uncertainty ranking in a child process
# ----------------------------------------------------------------------------------------------------------------------

class RankJob(_ChildJob):
    """``semisupseg rank --model M FOLDER... -o CSV`` in a child process (it segments every scan). ``rows``
    (``semisupseg.ranking.read_ranking_csv``: dicts with ``rank``, ``case``, ``score``, the measures, ``image``;
    least sure first) and/or ``error`` (both when some scans could not be read: the others are ranked, the error
    names the skipped ones); ``runner`` for the log and progress."""

    failed = "the ranking failed"

    def __init__(self, model: str, inputs: Sequence[PathLike], python: Optional[Sequence[str]] = None,
                 env: Optional[Dict[str, str]] = None, on_log: Optional[LogCallback] = None):
        self.rows: Optional[List[Dict[str, str]]] = None
        super().__init__(["rank"] + [str(i) for i in inputs] + ["--model", str(model), "-o", "{temp_dir}/ranking.csv"],
                         python, env, on_log)

    def _exited(self, event: Dict[str, Any], temp_dir: Path) -> None:
        from semisupseg.ranking import read_ranking_csv

        csv_path = temp_dir / "ranking.csv"
        if not event.get("cancelled") and csv_path.is_file():  # also when some scans could not be read (exit 2)
            self.rows = read_ranking_csv(csv_path)
        if event.get("returncode") != 0:
            self.error = "cancelled" if event.get("cancelled") else (event.get("error") or self.failed)

    def _result(self) -> Any:
        return self.rows


# ----------------------------------------------------------------------------------------------------------------------
# the logic
# ----------------------------------------------------------------------------------------------------------------------

class TrainingLogic:
    """The training panel's actions (see the module docstring).

    Args:
        catalogue: a ``semisupseg.catalogue.ModelCatalogue`` (default: the user's: ``SEMISUPSEG_HOME`` or
            ``~/.semisupseg``), where :meth:`use_in_segment` registers runs.
        python: the Python command of the children (default ``SemiSupSegLib.runner.python_command()``:
            PythonSlicer inside Slicer); env: extra environment variables of the children.
    """

    def __init__(self, catalogue: Any = None, python: Optional[Sequence[str]] = None,
                 env: Optional[Dict[str, str]] = None):
        self._catalogue = catalogue
        self.python = list(python) if python else None
        self.env = dict(env or {})

    @property
    def catalogue(self):
        if self._catalogue is None:
            from semisupseg.catalogue import ModelCatalogue

            self._catalogue = ModelCatalogue()
        return self._catalogue

    # ---------------------------------------------------------------------------------------------- runs
    def start(self, settings: TrainingSettings, on_log: Optional[LogCallback] = None) -> TrainingSession:
        """Start ``semisupseg train`` for ``settings`` in the background; returns the session at once. Raises
        :class:`semisupseg.errors.InputError` (one line) when it cannot start: unknown method, missing folder, a
        live run in the folder, a folder holding a run (without ``overwrite``) or other files."""
        from semisupseg.errors import InputError
        from semisupseg.training.heartbeat import start_refusal
        from SemiSupSegLib.method_form import method_fields

        method_fields(settings.method)  # unknown method: one line now
        for folder in (settings.labeled, settings.labels, *settings.unlabeled):
            if folder and not Path(folder).is_dir():
                raise InputError("folder not found" if not Path(folder).exists() else "not a folder", folder)
        if not str(settings.run_dir).strip():
            raise InputError("choose a run folder")
        run_dir = Path(settings.run_dir).expanduser()
        self._refuse_live(run_dir)
        refusal = start_refusal(run_dir, settings.overwrite)
        if refusal is not None:
            raise InputError(refusal, run_dir)
        return self._launch(run_dir, train_arguments(settings), on_log, skip_old_log=settings.overwrite)

    def resume(self, run_dir: PathLike, iterations: Optional[int] = None, overrides: Sequence[str] = (),
               on_log: Optional[LogCallback] = None, settings: Optional[TrainingSettings] = None) -> TrainingSession:
        """Continue the run in ``run_dir`` from its saved state (``resume.pt``), optionally to a new total of
        ``iterations`` and with ``overrides``; with the panel's ``settings``, with what they change
        (:func:`resume_changes`: the iterations, batch, learning rate, Advanced fields; the child's log names each
        change). Raises :class:`semisupseg.errors.InputError` when it is running, has nothing to resume, or the
        settings change what a resume cannot."""
        from semisupseg.errors import InputError

        run_dir = Path(run_dir).expanduser()
        self._refuse_live(run_dir)
        if not (run_dir / "config.yaml").is_file() or not (run_dir / "resume.pt").is_file():
            raise InputError("nothing to resume: the folder holds no saved training state (config.yaml and "
                             "resume.pt)", run_dir)
        if settings is not None:
            overrides = resume_changes(run_dir, settings) + list(overrides)
        return self._launch(run_dir, resume_arguments(run_dir, iterations, overrides), on_log)

    def attach(self, run_dir: PathLike, on_log: Optional[LogCallback] = None) -> TrainingSession:
        """Follow the run in ``run_dir``: this process's session for it when it started one (with its process), else
        a follower reading its log and heartbeat (a run of another session, of the CLI, finished or crashed)."""
        session = _OWNED.get(_key(run_dir))
        if session is not None and session.runner is not None and not session.runner.running:
            del _OWNED[_key(run_dir)]  # its child ended: the folder may hold a later run (the CLI's, another's)
            session = None
        if session is not None:
            if on_log is not None:
                session.on_log = on_log
            return session
        return TrainingSession(run_dir, on_log=on_log)

    def _refuse_live(self, run_dir: Path) -> None:
        from semisupseg.errors import InputError
        from semisupseg.training.heartbeat import describe_process, heartbeat_alive, read_heartbeat

        owned = _OWNED.get(_key(run_dir))
        if owned is not None and owned.runner is not None and owned.runner.running:
            raise InputError("a training started from this panel is still running in this folder; cancel it or wait "
                             "for it to end", run_dir)
        record = read_heartbeat(run_dir)
        if heartbeat_alive(record):
            raise InputError(describe_process(record), run_dir)

    def _launch(self, run_dir: Path, args: List[str], on_log: Optional[LogCallback],
                skip_old_log: bool = False) -> TrainingSession:
        from SemiSupSegLib.live import EventLogReader
        from SemiSupSegLib.runner import ProcessRunner

        reader = EventLogReader(run_dir / "events.jsonl")
        if skip_old_log:  # --overwrite: the old run's log is replaced by the child; never show it as the new run's
            reader.read_new()

        try:
            stop_file(run_dir).unlink()  # a stop file left by an earlier cancel would stop the run at once
        except OSError:
            pass
        session_box: List[TrainingSession] = []

        def log(line: str) -> None:
            if session_box and session_box[0].on_log is not None:
                session_box[0].on_log(line)

        runner = ProcessRunner(args, on_log=log, env=self.env, stop_file_option=None, python=self.python)
        runner.start()
        session = TrainingSession(run_dir, runner=runner, on_log=on_log, reader=reader)
        session_box.append(session)
        _OWNED[_key(run_dir)] = session
        return session

    # ---------------------------------------------------------------------------------------------- data, models
    def check_data(self, settings: TrainingSettings, on_log: Optional[LogCallback] = None) -> DataCheckJob:
        """Start the data check of ``settings`` in a child process; returns the job (:meth:`DataCheckJob.poll` /
        :meth:`~DataCheckJob.wait`)."""
        return DataCheckJob(settings, python=self.python, env=self.env, on_log=on_log).start()

    def rank(self, model: str, inputs: Sequence[PathLike], on_log: Optional[LogCallback] = None) -> RankJob:
        """Start ranking the scans of ``inputs`` (folders or files; the unlabeled folders) by ``model``'s uncertainty
        (a path, e.g. the run's ``best.pt``, or a catalogue name); returns the :class:`RankJob` at once."""
        from semisupseg.errors import InputError

        if not inputs:
            raise InputError("choose the unlabeled folder whose scans to rank")
        return RankJob(model, inputs, python=self.python, env=self.env, on_log=on_log).start()

    def use_in_segment(self, run_dir: PathLike, name: Optional[str] = None) -> str:
        """Register the run's best model (``best.pt``, else ``last.pt``) in the model catalogue shared with the
        SemiSupSeg module and the CLI (``semisupseg models``); returns its catalogue name. Raises
        :class:`semisupseg.errors.InputError` when the run has no model yet."""
        from semisupseg.catalogue import RUN_MODEL_FILES
        from semisupseg.errors import InputError

        run_dir = Path(run_dir).expanduser()
        if not any((run_dir / f).is_file() for f in RUN_MODEL_FILES):
            raise InputError(f"the run has no model yet ({' or '.join(RUN_MODEL_FILES)}): train it first", run_dir)
        entry = self.catalogue.register_run(run_dir, name=name or None)
        if entry.error:
            raise InputError(entry.error)
        return entry.name


# ----------------------------------------------------------------------------------------------------------------------
# the panel between two timer ticks
# ----------------------------------------------------------------------------------------------------------------------

#: the panel's editors of :class:`TrainingSettings` fields: ``(setting, widget name in SemiSupSegTraining.ui)``
PANEL_WIDGETS = (("method", "methodComboBox"), ("labeled", "labeledPathLineEdit"), ("labels", "labelsPathLineEdit"),
                 ("unlabeled", "unlabeledPathLineEdit"), ("run_dir", "runFolderPathLineEdit"),
                 ("iterations", "iterationsSpinBox"), ("patch_size", "patchSizeLineEdit"),
                 ("batch_size", "batchSizeSpinBox"), ("labeled_batch_size", "labeledBatchSizeSpinBox"),
                 ("lr", "learningRateLineEdit"), ("validation", "validationLineEdit"), ("seed", "seedSpinBox"),
                 ("device", "deviceComboBox"), ("overlay_cases", "overlayCaseComboBox"),
                 ("overlay_every", "overlayEverySpinBox"))


@dataclass
class PanelUpdate:
    """What changed at one :meth:`TrainingPanel.tick`; ``None`` fields: nothing new to show there.

    ``status``: the line under the progress bar; ``percent``: 0..100; ``running``: a run is going (Cancel on,
    Start/Resume off); ``chart_changed``: the chart nodes are new (point the plot view at them); ``check_lines`` and
    ``cases``: the data check's result list and the case ids it found (the overlay case selector); ``ranking``: rows
    of the uncertainty ranking; ``annotated``: the outcome of an Annotate-next segmentation that finished (show its
    segmentation and entropy); ``errors``: messages for the user (a failed ranking or Annotate-next segmentation)."""

    status: str = "no run"
    percent: int = 0
    running: bool = False
    chart_changed: bool = False
    check_lines: Optional[List[str]] = None
    cases: Optional[List[str]] = None
    ranking: Optional[List[Dict[str, str]]] = None
    annotated: Any = None
    errors: List[str] = field(default_factory=list)


class TrainingPanel:
    """The training panel's state, Qt-free: the followed :class:`TrainingSession` and its :class:`RunView` in the
    scene, the running data check and ranking. The widget calls the actions and, from its timer, :meth:`tick`,
    which returns a :class:`PanelUpdate` to show. Closing the scene drops the views (:meth:`scene_closed`): the run
    goes on and is drawn again at the next tick."""

    def __init__(self, logic: TrainingLogic, scene, load_overlays: bool = True):
        self.logic = logic
        self.scene = scene
        self.load_overlays = load_overlays
        self.session: Optional[TrainingSession] = None
        self.view: Optional[RunView] = None
        self.check: Optional[DataCheckJob] = None
        self.ranking: Optional[RankJob] = None
        self.annotating: Any = None  # the Annotate-next SegmentJob

    def follow(self, session: Optional[TrainingSession]) -> Optional[TrainingSession]:
        self.session, self.view = session, None
        return session

    def follow_folder(self, run_dir: PathLike, on_log: Optional[LogCallback] = None) -> Optional[TrainingSession]:
        """Re-attach to the run in ``run_dir`` when the folder holds one (its log or heartbeat), else follow none."""
        folder = Path(str(run_dir).strip() or ".")
        if str(run_dir).strip() and any((folder / f).exists() for f in ("events.jsonl", "heartbeat.json")):
            return self.follow(self.logic.attach(folder, on_log=on_log))
        return self.follow(None)

    def check_data(self, settings: TrainingSettings) -> DataCheckJob:
        if self.check is not None:  # a new check replaces the running one
            self.check.cancel(block=True)
        self.check = self.logic.check_data(settings)
        return self.check

    def rank(self, run_dir: PathLike, folders: Sequence[PathLike]) -> RankJob:
        """Rank the scans of ``folders`` by the uncertainty of the run's model."""
        from semisupseg.errors import InputError

        model = run_model(run_dir)
        if model is None:
            raise InputError("the run folder holds no model yet: train first", run_dir)
        if self.ranking is not None:  # a new ranking replaces the running one: that one's process must not go on
            self.ranking.cancel(block=True)
        self.ranking = self.logic.rank(str(model), [f for f in folders if str(f).strip()])
        return self.ranking

    def annotate(self, segment_logic, load_volume: Callable[[str], Any], image: PathLike, run_dir: PathLike) -> Any:
        """Annotate next: load the ranked scan ``image`` (``load_volume(path) -> node``: Slicer's loader) and start
        segmenting it with the run's model and its entropy overlay (``segment_logic``: a ``SegmentLogic``); returns
        the volume node at once, the outcome comes in a tick's ``annotated`` (a failure in its ``errors``). Refused
        while a scan is being segmented, before loading (a refused click must not add another copy of the scan); a
        scan whose segmentation cannot start is removed from the scene again."""
        from semisupseg.errors import InputError
        from SemiSupSegLib.segment_logic import SegmentRequest

        if self.annotating is not None:
            raise InputError("a scan is being segmented: wait for it, then click again")
        model = run_model(run_dir)
        if model is None:
            raise InputError("the run folder holds no model yet: train first", run_dir)
        node = load_volume(str(image))
        try:
            self.annotating = segment_logic.start(SegmentRequest(node, str(model), overlays=("entropy",)))
        except BaseException:
            if node is not None and node.GetScene() is not None:
                node.GetScene().RemoveNode(node)
            raise
        return node

    def close(self) -> None:
        """The panel goes (module reload, Slicer closes): a running ranking or data check is killed with its
        process tree. Training runs go on: they are the user's long work, and the panel re-attaches to them from
        their folder."""
        if self.ranking is not None:
            self.ranking.cancel(block=True)
            self.ranking = None
        if self.check is not None:
            self.check.cancel(block=True)
            self.check = None

    def chart(self, kind: str):
        """The chart node of ``kind`` (``loss``, ``dice``, ``hd95``, ``lr``, ``figures``) of the followed run."""
        return None if self.view is None else self.view.charts.get(kind)

    def scene_closed(self) -> None:
        self.view = None

    def tick(self) -> PanelUpdate:
        update = PanelUpdate()
        if self.check is not None and self.check.poll():
            update.check_lines = self.check.lines()
            if self.check.report is not None:
                update.cases = [c.case_id for c in self.check.report.cases]
            self.check = None
        if self.ranking is not None and self.ranking.poll():
            update.ranking = self.ranking.rows or []
            if self.ranking.error:  # with rows: some scans were skipped (the message names them)
                what = "ranking incomplete" if self.ranking.rows else "ranking failed"
                update.errors.append(f"{what}: {self.ranking.error}")
            self.ranking = None
        if self.annotating is not None and self.annotating.poll():
            if self.annotating.state == "done":
                update.annotated = self.annotating.outcome
            elif self.annotating.state == "failed":
                update.errors.append(f"the scan could not be segmented: {self.annotating.error}")
            self.annotating = None
        session = self.session
        if session is not None:
            new = session.poll()
            if self.view is None:
                self.view = RunView(self.scene, session, load_overlays=self.load_overlays)
                update.chart_changed = True
            else:
                self.view.update(new)
        update.status = status_line(session)
        update.percent = int(round(100 * (session.progress or 0))) if session is not None else 0
        update.running = session is not None and session.running
        return update


__all__ = ["DataCheckJob", "ENDED", "PANEL_WIDGETS", "PanelUpdate", "RankJob", "RunView", "STATUSES", "STOP_FILE",
           "TrainingLogic", "TrainingPanel", "TrainingSession", "TrainingSettings", "data_arguments", "data_config",
           "defaults", "resume_arguments", "resume_changes", "run_model", "run_model_classes", "run_panel_settings",
           "settings_from_panel", "show_run_settings", "status_line", "stop_file", "train_arguments",
           "unlabeled_folders"]
