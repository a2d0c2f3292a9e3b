"""The typed training configuration: dataclasses loadable from YAML/JSON, overridable with dotted ``key=value`` pairs.

One :class:`TrainConfig` describes a whole run (data, network, optimiser, method, schedule of validation and
checkpoints). It is read with :func:`load_config` (YAML or JSON by suffix), changed with :func:`apply_overrides`
(``["optim.lr=0.001", "data.patch_size=[64,64,48]", "method_params.consistency=0.1"]``, values parsed as YAML
scalars/lists) and written beside the checkpoints with :func:`save_config`, so a run can be reproduced or resumed
from its directory.

Conventions: sizes a user types (``data.patch_size``) are **x, y, z** voxels as in the papers; spacing is **x, y, z**
millimetres. ``batch_size`` and ``labeled_batch_size`` are **global** (summed over distributed processes), so one
config describes the same optimisation whatever the number of processes.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import yaml

from semisupseg.data.augment import augmentation_name
from semisupseg.data.perturb import perturbation_name
from semisupseg.errors import InputError
from semisupseg.fileio import write_text_atomic
from semisupseg.schedules import step_decay_lr

AMP_MODES = ("auto", "bf16", "off")
CHANNELS_LAST_MODES = ("auto", "on", "off")
LR_SCHEDULES = ("step", "poly", "constant")
OPTIMIZERS = ("sgd", "adam", "adamw")
EMA_BUFFER_MODES = ("keep", "copy", "ema")


@dataclass
class DataConfig:
    """Where the training cases come from and how patches are drawn.

    * ``labeled``: a dataset folder (``imagesTr``/``labelsTr`` inside, or the LA ``<id>/mri_norm2.h5`` layout) or,
      with ``labels``, a plain folder of images whose label maps are in ``labels`` (matching names).
      ``unlabeled``: extra folders of unlabeled images.
    * ``split``: JSON split file (default: ``splits.json`` in the dataset folder when present).
      ``split_labeled`` names its list of labeled case ids (``"labeled_16"``) — or ``num_labeled`` takes the first N
      of ``split_all``; the other ids of ``split_all`` (``"train"``) form the unlabeled pool (the papers' protocol).
      A ``split_val`` list (``"val"``), when the split has it, is the validation set.
    * ``validation``: otherwise, held-out **training** cases for model selection — a number N or a list of case ids.
      N takes the last N cases of the unlabeled pool that have label files (so the labeled budget is unchanged,
      e.g. LA: 16 labeled, 64 − N unlabeled, N validation), or the last N labeled cases when the pool has no labels.
      0 disables validation. Never a test set.
    * ``patch_size``: **x, y, z** voxels (each a multiple of 16 for V-Net); ``spacing``: resample to this spacing
      (x, y, z mm) first; ``normalization``: a :class:`semisupseg.data.NormalizationConfig` dict. Left unset
      (``None`` / ``None`` / empty) they are derived from the data at the start of training
      (:func:`semisupseg.data.fingerprint.resolve_plan`: the median scan size, the median spacing when the cases'
      spacings differ (else the files' own grid), z-score for MRI, clipped percentiles for CT).
    * ``augment``: the spatial augmentation policy (:mod:`semisupseg.data.augment`): ``"none"`` (default: the
      network trains on scans in the orientation it segments them in), ``"dihedral"`` (any of the 8 in-plane
      90-degree rotations / flips) or ``"papers"`` (the releases' ``RandomRotFlip``, which shows only reflections —
      kept to reproduce the papers' tables; ``true``/``false`` of older configs mean ``papers``/``none``).
    * ``perturb``: orientation-preserving perturbation of each patch (:mod:`semisupseg.data.perturb`): ``"both"``
      (default since 2026-12-03: rotations of <= 15 degrees and zooms 0.85-1.25 on 30 % of the patches, and noise,
      brightness, contrast, gamma; held out +0.012 Dice on the hippocampus with 20 labels, +0.005 on LA with 16),
      ``"spatial"``, ``"intensity"`` or ``"none"`` (what every run before that date trained with, and the papers;
      a run saved without this key resumes with ``"none"``: :func:`load_run_config`).
    * ``class_names`` / ``label_values``: the classes (else ``dataset.json``, else the values in the labels);
      ``num_classes`` (background included) must match them; ``None`` takes it from the data.
    """

    labeled: Optional[str] = None
    labels: Optional[str] = None
    unlabeled: List[str] = field(default_factory=list)
    split: Optional[str] = None
    split_labeled: Optional[str] = None
    num_labeled: Optional[int] = None
    split_all: str = "train"
    split_val: Optional[str] = "val"
    validation: Union[int, List[str]] = 2
    max_unlabeled: Optional[int] = None
    num_classes: Optional[int] = None
    label_values: Optional[List[int]] = None
    class_names: Optional[List[str]] = None
    in_channels: int = 1
    spacing: Optional[List[float]] = None
    h5_spacing: List[float] = field(default_factory=lambda: [0.625, 0.625, 0.625])
    patch_size: Optional[List[int]] = None
    normalization: Dict[str, Any] = field(default_factory=dict)
    augment: Union[bool, str] = "none"
    perturb: str = "both"
    foreground_prob: float = 0.0

    @property
    def patch_size_zyx(self) -> Tuple[int, int, int]:
        if self.patch_size is None:
            raise InputError("config data.patch_size is not set (it is derived from the data when training starts)")
        x, y, z = (int(v) for v in self.patch_size)
        return (z, y, x)


@dataclass
class ModelConfig:
    """The student network (built with :func:`semisupseg.nets.build_network` for the method's architecture).

    ``seg_form`` ``None`` uses the method's preference (``softmax`` unless the method sets ``seg_form``); the SDM head
    and dropout follow the method's ``needs_sdm`` / ``needs_dropout``. ``max_filters`` caps the V-Net's stage widths
    (``None``: the releases' n..16n; see :class:`semisupseg.nets.vnet.VNetConfig`); ``residual`` (residual stages, the
    original V-Net's) and ``encoder_depths`` (convolutions of encoder stages 1-5, ``None``: 1, 2, 3, 3, 3) likewise.
    ``extra`` is passed on to the network config
    (for architectures with more options).
    """

    n_filters: int = 16
    max_filters: Optional[int] = None
    residual: bool = False
    encoder_depths: Optional[List[int]] = None
    normalization: str = "batchnorm"
    seg_form: Optional[str] = None
    dropout_p: float = 0.5
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """The student's optimiser and learning-rate schedule (papers: SGD 0.01, momentum 0.9, wd 1e-4, x0.1 / 2500 it).

    ``schedule``: ``step`` (``lr * gamma ** (it // step_size)``), ``poly`` (``lr * (1 - it / max_it) ** poly_power``)
    or ``constant``. ``grad_clip``: max global L2 norm of the student's gradients (``None``: no clipping).
    """

    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    schedule: str = "step"
    step_size: int = 2500
    gamma: float = 0.1
    poly_power: float = 0.9
    grad_clip: Optional[float] = None


@dataclass
class OverlayConfig:
    """Training snapshots for overlays (:mod:`semisupseg.training.snapshots`): every ``every`` iterations (and at
    the last) the current model (the EMA teacher where the method has one) predicts each case of ``cases`` (ids of
    the run's labeled, unlabeled or validation cases) and the volumes are written to
    ``RUN_DIR/overlays/<case>/it<NNNNNN>/``; the newest ``keep`` sets per case are kept. No case: no snapshots."""

    cases: List[str] = field(default_factory=list)
    every: int = 100
    keep: int = 3


@dataclass
class TrainConfig:
    """A whole training run.

    * ``method`` / ``method_params``: registered method name and overrides of its ``Params`` dataclass.
    * ``iterations``: total optimiser steps; ``batch_size`` / ``labeled_batch_size``: **global** patches per step
      (labeled first, the rest unlabeled; methods that use no unlabeled data get ``labeled_batch_size`` only).
    * ``amp``: ``auto`` (bf16 autocast where the device supports it), ``bf16`` (required), ``off``;
      ``channels_last``: ``auto`` (with bf16 on CPU), ``on``, ``off``.
    * ``ema_decay``: the EMA teacher's decay cap, ``decay(t) = min(1 - 1/(t+1), ema_decay)``; ``ema_buffers``:
      ``keep`` (the teacher's BN statistics are its own, as in the releases where the teacher runs in train mode),
      ``copy`` (copy the student's), ``ema`` (average them like the weights).
    * ``val_every``: validate every N iterations (and at the end); ``save_every``: write the resume state every N
      iterations (also written at validation, cancellation and the end); ``keep_every``: also keep a copy of the
      model every N iterations as ``kept/it<NNNNNN>.pt`` (0: none) — for scoring a run at several budgets.
    * ``plan``: what was derived from the data for the settings left unset, and the training-data statistics
      (:func:`semisupseg.data.fingerprint.resolve_plan` fills it; the model card records it).
    * ``overlays``: training snapshots of chosen cases for overlays (:class:`OverlayConfig`).
    * ``ddp_find_unused_parameters``: DistributedDataParallel's ``find_unused_parameters`` under ``torchrun``;
      ``None`` (default): the method's ``ddp_unused_parameters`` (``False`` for every built-in method: each uses
      all the network's parameters in every step, which a test checks; ``True`` costs a graph traversal per step
      and a warning from every rank).
    """

    method: str = "supervised"
    method_params: Dict[str, Any] = field(default_factory=dict)
    out: Optional[str] = None
    iterations: int = 6000
    batch_size: int = 4
    labeled_batch_size: int = 2
    seed: int = 1337
    device: str = "auto"
    amp: str = "auto"
    channels_last: str = "auto"
    num_threads: Optional[int] = None
    ema_decay: float = 0.99
    ema_buffers: str = "keep"
    val_every: int = 200
    val_overlap: float = 0.5
    val_blend: str = "gaussian"
    val_batch_size: int = 1
    save_every: int = 100
    keep_every: int = 0
    log_every: int = 1
    stop_on_nonfinite: bool = True
    ddp_find_unused_parameters: Optional[bool] = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    plan: Dict[str, Any] = field(default_factory=dict)
    overlays: OverlayConfig = field(default_factory=OverlayConfig)

    # ---------------------------------------------------------------------------------------------------------
    def validate(self) -> "TrainConfig":
        """Check value ranges and combinations; raise :class:`InputError` naming the key. Returns ``self``."""

        def bad(key: str, msg: str) -> InputError:
            return InputError(f"config {key}: {msg}")

        if self.iterations < 1:
            raise bad("iterations", f"must be >= 1, got {self.iterations}")
        if not 1 <= self.labeled_batch_size <= self.batch_size:
            raise bad("labeled_batch_size", f"must be in [1, batch_size={self.batch_size}], got "
                                            f"{self.labeled_batch_size} (set --labeled-batch-size too)")
        if self.amp not in AMP_MODES:
            raise bad("amp", f"must be one of {AMP_MODES}, got {self.amp!r}")
        if self.channels_last not in CHANNELS_LAST_MODES:
            raise bad("channels_last", f"must be one of {CHANNELS_LAST_MODES}, got {self.channels_last!r}")
        if self.ema_buffers not in EMA_BUFFER_MODES:
            raise bad("ema_buffers", f"must be one of {EMA_BUFFER_MODES}, got {self.ema_buffers!r}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise bad("ema_decay", f"must be in [0, 1], got {self.ema_decay}")
        if self.optim.schedule not in LR_SCHEDULES:
            raise bad("optim.schedule", f"must be one of {LR_SCHEDULES}, got {self.optim.schedule!r}")
        if self.optim.name not in OPTIMIZERS:
            raise bad("optim.name", f"must be one of {OPTIMIZERS}, got {self.optim.name!r}")
        if self.optim.lr <= 0:
            raise bad("optim.lr", f"must be > 0, got {self.optim.lr}")
        if self.data.patch_size is not None and (len(self.data.patch_size) != 3
                                                 or any(int(v) < 1 for v in self.data.patch_size)):
            raise bad("data.patch_size", f"must be 3 positive sizes x y z, got {self.data.patch_size}")
        if self.data.patch_size is not None:
            from semisupseg.data.fingerprint import patch_size_problem

            problem = patch_size_problem(self.data.patch_size)
            if problem:
                raise bad("data.patch_size", problem)
            deepest = math.prod(int(v) // 16 for v in self.data.patch_size)
            from semisupseg.training.distributed import env_world_size

            world = max(1, env_world_size())  # under torchrun each process takes its share of the global batch
            streams = [s for s in (self.labeled_batch_size // world, (self.batch_size - self.labeled_batch_size) //
                                   world) if s > 0]
            if self.model.normalization == "batchnorm" and deepest == 1 and streams and min(streams) == 1:
                # a forward pass of one patch then leaves BatchNorm one value per channel (a ValueError mid-run)
                per = f" per process of the {world} under torchrun" if world > 1 else ""
                raise bad("data.patch_size", f"{' x '.join(str(int(v)) for v in self.data.patch_size)} leaves the "
                          f"V-Net's deepest stage one voxel, and a pass of one patch{per} (labeled or unlabeled) "
                          "then gives BatchNorm a single value: use a patch of at least 32 along one axis, or 2 or "
                          "more patches per stream (--batch-size, --labeled-batch-size)")
        if self.data.spacing is not None and (len(self.data.spacing) != 3 or min(self.data.spacing) <= 0):
            raise bad("data.spacing", f"must be 3 positive values x y z (mm), got {self.data.spacing}")
        if self.data.num_classes is not None and self.data.num_classes < 2:
            raise bad("data.num_classes", f"counts the background and must be >= 2, got {self.data.num_classes}")
        try:
            self.data.augment = augmentation_name(self.data.augment)
        except ValueError as exc:
            raise bad("data.augment", str(exc)) from None
        try:
            self.data.perturb = perturbation_name(self.data.perturb)
        except ValueError as exc:
            raise bad("data.perturb", str(exc)) from None
        if isinstance(self.data.validation, int) and self.data.validation < 0:
            raise bad("data.validation", f"must be >= 0 or a list of case ids, got {self.data.validation}")
        for key in ("val_every", "save_every", "log_every", "val_batch_size"):
            if getattr(self, key) < 1:
                raise bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.keep_every < 0:
            raise bad("keep_every", f"must be >= 0 (0: keep none), got {self.keep_every}")
        for key in ("every", "keep"):
            if getattr(self.overlays, key) < 1:
                raise bad(f"overlays.{key}", f"must be >= 1, got {getattr(self.overlays, key)}")
        if not 0.0 <= self.val_overlap < 1.0:
            raise bad("val_overlap", f"must be in [0, 1), got {self.val_overlap}")
        from semisupseg.inference.sliding_window import BLENDS

        if self.val_blend not in BLENDS:  # else found at the first validation, after training ran
            raise bad("val_blend", f"must be one of {BLENDS}, got {self.val_blend!r}")
        o = self.optim
        if o.grad_clip is not None and not o.grad_clip > 0:  # a negative limit reverses the gradients
            raise bad("optim.grad_clip", f"must be > 0 (the largest gradient norm; null: no clipping), got {o.grad_clip}")
        if not 0.0 <= o.momentum < 1.0:
            raise bad("optim.momentum", f"must be in [0, 1), got {o.momentum}")
        if o.nesterov and o.momentum == 0:
            raise bad("optim.nesterov", "needs optim.momentum > 0")
        if o.weight_decay < 0:
            raise bad("optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
        if o.step_size < 1:
            raise bad("optim.step_size", f"must be >= 1 (iterations between learning-rate steps), got {o.step_size}")
        if not o.gamma > 0 or not o.poly_power > 0:
            key, value = ("optim.gamma", o.gamma) if not o.gamma > 0 else ("optim.poly_power", o.poly_power)
            raise bad(key, f"must be > 0, got {value}")
        if self.num_threads is not None and self.num_threads < 1:
            raise bad("num_threads", f"must be >= 1 (null: the default), got {self.num_threads}")
        for key in ("num_labeled", "max_unlabeled"):
            value = getattr(self.data, key)
            if value is not None and value < 0:
                raise bad(f"data.{key}", f"must be >= 0, got {value}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def schedule_note(config: TrainConfig) -> Optional[str]:
    """One line when the learning rate never decays within the run, else ``None``.

    The papers' ``step`` schedule (x ``gamma`` every ``step_size`` = 2500 iterations) was written for 6000-iteration
    runs; a run of ``iterations <= step_size`` (steps 0 .. iterations-1) trains at ``optim.lr`` to its end. Whether
    that costs accuracy depends on the data (benchmarks/RESULTS.md, hippocampus schedule section), so it is said, not
    changed. The rate of the last step is the schedule's own (:func:`semisupseg.schedules.step_decay_lr`, as the
    engine's), so the note cannot disagree with what the run does; a ``gamma`` of 1 never decays by choice: no note.
    """
    o = config.optim
    if o.schedule != "step" or o.gamma == 1 or step_decay_lr(o.lr, config.iterations - 1, o.step_size, o.gamma) != o.lr:
        return None
    return (f"note: optim.schedule=step lowers the learning rate x{o.gamma:g} every {o.step_size} iterations (the "
            f"papers' schedule, written for 6000); this run of {config.iterations} never reaches a step and trains at "
            f"{o.lr:g} to the end; --set optim.schedule=poly decays it within the run, --set optim.step_size=N "
            f"steps earlier")


# --------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks
# --------------------------------------------------------------------------------------------------------------
def _hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked/converted to the annotated type ``tp``; :class:`InputError` naming ``key`` otherwise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(f"config {key}: {value!r} is not a valid {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise InputError(f"config {key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, List, tuple, Sequence):
        if isinstance(value, (str, Path)) and args and args[0] is str:
            value = [str(value)]  # one folder / id given where a list is expected
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise InputError(f"config {key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise InputError(f"config {key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise InputError(f"config {key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise InputError(f"config {key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise InputError(f"config {key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise InputError(f"config {key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise InputError(f"config {key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads bare on/off/yes/no as booleans (amp: off)
            return "on" if value else "off"
        if isinstance(value, (str, Path)):
            return str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise InputError(f"config {key}: expected a string, got {value!r}")
    return value


def _from_dict(cls: type, data: Dict[str, Any], prefix: str = "") -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=3)
        hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else f"; known: {', '.join(names)}"
        raise InputError(f"config: unknown key {prefix}{key}{hint}")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def config_from_dict(data: Optional[Dict[str, Any]]) -> TrainConfig:
    """A :class:`TrainConfig` from a (nested) dict; unknown keys and wrong types raise :class:`InputError`."""
    return _from_dict(TrainConfig, dict(data or {}))


def _one_line(exc: Exception) -> str:
    """A parser's message on one line: YAML's first line and its position (it adds the offending source lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def load_config(path: Union[str, Path]) -> TrainConfig:
    """Read a config file (``.yaml``/``.yml`` or ``.json``); missing keys keep their defaults."""
    return _config_from_file(path, _read_config_dict(path))


def config_keys(path: Union[str, Path]) -> List[str]:
    """The top-level keys a config file sets (what it leaves to the defaults is absent)."""
    return list(_read_config_dict(path))


def _read_config_dict(path: Union[str, Path]) -> Dict[str, Any]:
    """The mapping a config file holds (an empty file: ``{}``); one clear ``InputError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config: {exc}", path) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise InputError(f"cannot parse config: {_one_line(exc)}", path) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError("config must be a mapping of keys to values", path)
    return data


def _config_from_file(path: Union[str, Path], data: Dict[str, Any]) -> TrainConfig:
    try:
        return config_from_dict(data)
    except InputError as exc:
        raise InputError(str(exc), Path(path)) from exc


def parse_override(text: str) -> Tuple[str, Any]:
    """``"optim.lr=0.001"`` → ``("optim.lr", 0.001)``; the value is parsed as YAML (numbers, lists, true/null)."""
    if "=" not in text:
        raise InputError(f"override {text!r} must look like key=value (e.g. optim.lr=0.001)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise InputError(f"override {text!r} has no key")
    if raw.strip().lower() in ("on", "off", "yes", "no"):
        return key, raw.strip()  # keep words; bool fields accept them, string fields (amp=off) need them
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def set_value(config: TrainConfig, key: str, value: Any) -> None:
    """Set the dotted ``key`` (``"data.patch_size"``; ``"method_params.<name>"`` for a method parameter) with type
    checks; unknown keys raise :class:`InputError` with close matches."""
    parts = key.split(".")
    target: Any = config
    for i, part in enumerate(parts[:-1]):
        if isinstance(target, dict):
            target = target.setdefault(part, {})
            continue
        if not dataclasses.is_dataclass(target) or part not in {f.name for f in dataclasses.fields(target)}:
            raise InputError(f"config: unknown key {'.'.join(parts[:i + 1])}")
        target = getattr(target, part)
    last = parts[-1]
    if isinstance(target, dict):
        target[last] = value
        return
    names = [f.name for f in dataclasses.fields(target)]
    if last not in names:
        close = difflib.get_close_matches(last, names, n=3)
        prefix = ".".join(parts[:-1])
        prefix = prefix + "." if prefix else ""
        hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
        raise InputError(f"config: unknown key {key}{hint}")
    setattr(target, last, _coerce(value, _hints(type(target))[last], key))


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Apply ``key=value`` strings in order (later ones win); returns ``config`` (changed in place)."""
    for text in overrides or ():
        key, value = parse_override(text)
        set_value(config, key, value)
    return config


#: keys a run's saved config lacks when it was written before they existed, with the value that run trained with
#: (its config.yaml had no such key: the behaviour of the time, not today's default)
_BEFORE_THEY_EXISTED = {("data", "perturb"): "none"}


def load_run_config(path: Union[str, Path]) -> TrainConfig:
    """A run's saved ``config.yaml`` (what ``--resume`` reads): like :func:`load_config`, but a key that did not
    exist when the run was saved takes the value the run trained with, not today's default — so a run saved before
    ``data.perturb`` existed resumes with ``"none"`` and draws exactly the patches it would have drawn."""
    data = _read_config_dict(path)
    for (section, key), value in _BEFORE_THEY_EXISTED.items():
        part = data.get(section)
        if isinstance(part, dict) and key not in part:
            data[section] = {**part, key: value}
        elif part is None:
            data[section] = {key: value}
    return _config_from_file(path, data)


def save_config(config: TrainConfig, path: Union[str, Path]) -> Path:
    """Write the resolved config as YAML (or JSON for a ``.json`` path) atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = config.to_dict()
    text = (json.dumps(data, indent=2) + "\n") if path.suffix.lower() == ".json" else \
        yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    write_text_atomic(text, path, overwrite=True, fsync=True)
    return path


__all__ = ["TrainConfig", "DataConfig", "ModelConfig", "OptimConfig", "OverlayConfig", "config_from_dict",
           "config_keys", "load_config", "load_run_config", "save_config", "apply_overrides", "parse_override",
           "schedule_note", "set_value"]
