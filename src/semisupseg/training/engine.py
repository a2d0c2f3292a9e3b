"""The training engine: one loop for every method (see :mod:`semisupseg.methods.base` for the plugin API).

:class:`Trainer` owns data and two-stream batches, the student network and its optimiser, the learning-rate
schedule, bf16 autocast / channels_last_3d, gradient clipping, the EMA teacher, validation with sliding-window
inference (Dice, HD95), ``last``/``best`` model files with model cards, an atomic resume state, events, cancellation
and distributed data parallel training (``torchrun``).

Run directory layout (``config.out``)::

    config.yaml      the resolved config (written at start; ``--resume`` reads it back)
    data.json        which cases were labeled / unlabeled / validation
    events.jsonl     JSON-lines events (appended across resumes)
    resume.pt        resume state (weights_only): model, optimisers, teacher, method modules, sampler + RNG states
    last.pt/.json    the latest model file (our format) — written at each validation, cancellation and the end
    kept/itNNNNNN.pt copies of the model every ``keep_every`` iterations (when set; it001000.pt, ...)
    best.pt/.json    the model with the best validation Dice so far
    heartbeat.json   the training process (pid, host) and its last beat (:mod:`semisupseg.training.heartbeat`)
    overlays/        training snapshots of ``overlays.cases`` (:mod:`semisupseg.training.snapshots`)
"""
from __future__ import annotations

import dataclasses
import gc
import math
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from semisupseg import runtime
from semisupseg.checkpoint import RESUME_FORMAT
from semisupseg.errors import (Cancelled, CheckpointError, InputError, OutOfMemoryError, OutputExistsError, PeerFailed,
                               SemiSupSegError, is_out_of_memory, out_of_memory_detail)
from semisupseg.fileio import write_text_atomic
from semisupseg.methods import Batch, Method, StepContext, get_method
from semisupseg.processes import PARENT_DIED
from semisupseg.progress import CancelToken, ProgressCallback
from semisupseg.schedules import poly_lr, step_decay_lr
from semisupseg.training import distributed as dist_utils
from semisupseg.training.batches import (TwoStreamBatcher, from_json_text, merge_shard_states, to_json_text)
from semisupseg.training.config import TrainConfig, save_config
from semisupseg.training.data import TrainData
from semisupseg.training.ema import ema_decay_at, ema_update, make_teacher
from semisupseg.training.events import Events
from semisupseg.training.heartbeat import KEPT_DIR

RESUME_VERSION = 1


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: method parameters written to YAML/JSON read back equal."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def method_class(name: str):
    """The registered method ``name``; :class:`InputError` listing the known ones otherwise."""
    try:
        return get_method(name)
    except KeyError as exc:
        raise InputError(f"config method: {exc.args[0]}") from None


def learning_rate(cfg: TrainConfig, iteration: int) -> float:
    """The student's learning rate for the step ``iteration`` (0-based) under ``cfg.optim.schedule``."""
    o = cfg.optim
    if o.schedule == "step":
        return step_decay_lr(o.lr, iteration, o.step_size, o.gamma)
    if o.schedule == "poly":
        return poly_lr(o.lr, iteration, cfg.iterations, o.poly_power)
    return float(o.lr)


def build_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return runtime.make_optimizer(torch.optim.SGD, params, lr=o.lr, momentum=o.momentum,
                                      weight_decay=o.weight_decay, nesterov=o.nesterov)
    if o.name == "adam":
        return runtime.make_optimizer(torch.optim.Adam, params, lr=o.lr, weight_decay=o.weight_decay)
    return runtime.make_optimizer(torch.optim.AdamW, params, lr=o.lr, weight_decay=o.weight_decay)


def network_config(cfg: TrainConfig, method_cls) -> Dict[str, Any]:
    """The network config dict for :func:`semisupseg.nets.build_network` (SDM head and dropout from the method)."""
    seg_form = cfg.model.seg_form
    if seg_form is None:
        seg_form = getattr(method_cls, "seg_form", None) or "softmax"
        if seg_form == "sigmoid" and cfg.data.num_classes != 2:
            seg_form = "softmax"  # the method's binary preference; multi-class data needs softmax
    net = {"in_channels": cfg.data.in_channels, "num_classes": cfg.data.num_classes, "seg_form": seg_form,
           "sdm_head": bool(method_cls.needs_sdm), "n_filters": cfg.model.n_filters,
           "normalization": cfg.model.normalization, "dropout": bool(method_cls.needs_dropout),
           "dropout_p": cfg.model.dropout_p}
    if cfg.model.max_filters is not None:  # only then: other architectures' configs have no such field
        net["max_filters"] = cfg.model.max_filters
    if cfg.model.residual:
        net["residual"] = True
    if cfg.model.encoder_depths is not None:
        net["encoder_depths"] = list(cfg.model.encoder_depths)
    net.update(cfg.model.extra)
    return net


def validation_scores(pred: np.ndarray, label: np.ndarray, num_classes: int,
                      spacing_zyx: Sequence[float]) -> Tuple[float, float, int]:
    """One validation case: ``(dice, hd95, undefined)`` — the mean Dice over the foreground classes, the mean HD95
    (mm) over the classes where it is defined (NaN when none is), and the number of classes where it is not (an
    empty prediction or reference). ``pred``/``label``: label arrays (z, y, x); ``spacing_zyx`` in mm."""
    from semisupseg import metrics

    dices, hds = [], []
    for c in range(1, num_classes):
        dices.append(metrics.dice(pred == c, label == c))
        hds.append(metrics.hd95(pred == c, label == c, spacing_zyx))
    defined = [v for v in hds if not math.isnan(v)]
    return float(np.mean(dices)), (float(np.mean(defined)) if defined else math.nan), len(hds) - len(defined)


def saved_iteration(run_dir: Path) -> Optional[int]:
    """The iteration of the resume state in ``run_dir`` (``resume.pt``), ``None`` when there is none; an unreadable
    state raises :class:`CheckpointError` naming it."""
    from semisupseg.checkpoint import load_state

    state = Path(run_dir) / "resume.pt"
    return int(load_state(state)["iteration"]) if state.is_file() else None


def method_params(cfg: TrainConfig):
    """The method's parameter dataclass with ``cfg.method_params`` applied: an unknown parameter, a value of the wrong
    type or out of range is one :class:`InputError` naming it (the CLI asks before reading any data)."""
    try:
        return method_class(cfg.method).make_params(cfg.method_params)
    except (TypeError, ValueError) as exc:
        raise InputError(f"config method_params: {exc}") from None


def check_model_options(cfg: TrainConfig) -> None:
    """``model.*`` of ``cfg`` as the method's network will read them, checked before any data is read: an unknown
    option (``model.extra``) or a bad value is one :class:`InputError` naming it. The classes and channels, known
    only from the data, are taken as 2 and 1 when the config leaves them to the data."""
    from semisupseg.nets import check_network_config

    method_cls = method_class(cfg.method)
    net = network_config(cfg, method_cls)
    net["num_classes"] = net["num_classes"] or 2
    net["in_channels"] = net["in_channels"] or 1
    try:
        check_network_config(method_cls.network_arch, net)
    except (TypeError, ValueError) as exc:
        raise InputError(f"config model: {exc}") from None


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process in MiB: ``ru_maxrss`` is KiB on Linux, bytes on macOS; ``None`` on
    Windows, which has no ``resource`` module (imported here: at module level it stopped every import of the
    training package there)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


class _DDP(nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that exposes the wrapped network's attributes (``config``, ``probabilities``)."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` returns. ``status``: ``finished`` or ``cancelled``."""

    status: str
    iteration: int
    run_dir: Path
    best_metric: Optional[float] = None
    best_iteration: Optional[int] = None
    last_path: Optional[Path] = None
    best_path: Optional[Path] = None
    losses: List[float] = field(default_factory=list)
    seconds_per_iteration: List[float] = field(default_factory=list)
    #: a second interrupt stopped the run without its cancel save; ``saved_iteration``: the iteration of the state
    #: that is kept (``None``: none was saved)
    interrupted: bool = False
    saved_iteration: Optional[int] = None


class Trainer:
    """Train ``config.method`` as configured; :meth:`run` does it.

    Args:
        config: the run (``config.out`` is the run directory).
        events: the event sink (default: ``RUN_DIR/events.jsonl`` only); the trainer points its file at the run
            directory unless it already has a path.
        cancel: polled every iteration; set by SIGINT/SIGTERM (installed while running in the main thread) or by its
            stop file. Cancelling saves the resume state and a ``last`` model, emits ``cancelled`` and returns.
        progress: ``callback(fraction, message)`` for a GUI (added to the events sink).
        data: preloaded :class:`TrainData` (otherwise read from ``config.data``).
        resume: continue from ``RUN_DIR/resume.pt`` (starts fresh when there is none yet).
        overwrite: start afresh in a run directory that holds a previous run (its engine files are removed).
    """

    def __init__(self, config: TrainConfig, events: Optional[Events] = None, cancel: Optional[CancelToken] = None,
                 progress: Optional[ProgressCallback] = None, data: Optional[TrainData] = None,
                 resume: bool = False, overwrite: bool = False, handle_signals: bool = True):
        self.cfg = config.validate()
        if not config.out:
            raise InputError("config out (the run directory) is not set")
        self.run_dir = Path(config.out)
        self.events = events if events is not None else Events()
        if progress is not None:
            self.events.progress = progress
        self.cancel = cancel if cancel is not None else CancelToken()
        self.data = data
        self.resume = resume
        self._saving_on_cancel = self._interrupted = False
        self.overwrite = overwrite
        self.handle_signals = handle_signals
        self.iteration = 0
        self.best_metric: Optional[float] = None
        self.best_iteration: Optional[int] = None
        self._durations: List[float] = []
        self._losses: List[float] = []
        self.heartbeat = None
        self.snapshots = None

    # ------------------------------------------------------------------------------------------------- set-up
    def _prepare_run_dir(self) -> None:
        """Check the run directory and take it: refuse a folder where another training process is alive (its
        heartbeat), and a fresh start in a folder holding a run's state (resume state or model files) unless
        ``overwrite``. Leftovers of a start that failed before training (a log without any state) are removed, so
        that rerunning the corrected command works. Then the heartbeat starts."""
        from semisupseg.fileio import remove_stale_temps
        from semisupseg.training.heartbeat import (ENGINE_ENTRIES, Heartbeat, clear_engine_files, describe_process,
                                                   heartbeat_alive, read_heartbeat, resume_refusal, start_refusal)

        d = self.run_dir
        if d.exists() and not d.is_dir():
            raise InputError("the run directory is a file", d)
        other = read_heartbeat(d)
        if heartbeat_alive(other):
            raise InputError(describe_process(other), d)
        if d.is_dir():  # no process writes here now: temporary files of writes a kill cut short go
            remove_stale_temps(d, ENGINE_ENTRIES)
        if self.resume:
            refusal = resume_refusal(d)
            if refusal is not None:
                raise InputError(refusal, d)
        if not self.resume and d.exists():
            refusal = start_refusal(d, self.overwrite)
            if refusal is not None:
                raise OutputExistsError(refusal, d)
            clear_engine_files(d)
        d.mkdir(parents=True, exist_ok=True)
        self.heartbeat = Heartbeat(d, max_iterations=self.cfg.iterations)
        self.heartbeat.iteration = self.iteration
        self.heartbeat.start()

    def _stop_heartbeat(self, status: str) -> None:
        hb = getattr(self, "heartbeat", None)
        if hb is not None:
            hb.iteration = self.iteration
            hb.stop(status)
            self.heartbeat = None

    def _setup(self) -> None:
        cfg = self.cfg
        device = runtime.resolve_device(cfg.device)
        # joining blocks inside C++ until every rank has come (Python handlers never run there): if one rank refused
        # to start, torchrun's SIGTERM must end this process at once, as the default action does
        plain_term = dist_utils.env_world_size() > 1 and threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.SIG_DFL) if plain_term else None
        try:
            self.dist = dist_utils.init_distributed(device)
        finally:
            if plain_term:
                signal.signal(signal.SIGTERM, previous)
        self.device = dist_utils.local_device(device, self.dist)
        if not self.dist.is_main:
            self.events.enabled = False
        if cfg.num_threads:
            torch.set_num_threads(int(cfg.num_threads))
        # AMP / memory format
        if cfg.amp == "bf16" and not runtime.bf16_supported(self.device):
            raise InputError(f"amp=bf16 requested but {self.device} has no bf16 support (use amp=auto or off)")
        # every patch size: the one CPU bf16 kernel fault known here (3x3x3 weight gradients at depth 2) is
        # routed around inside the networks (runtime.fp32_conv3x3)
        self.use_bf16 = cfg.amp != "off" and runtime.bf16_supported(self.device)
        if cfg.channels_last == "auto":
            self.channels_last = self.use_bf16 and self.device.type == "cpu"
        else:
            self.channels_last = cfg.channels_last == "on"
        # seeds (per rank: the global RNG drives dropout; sampling has its own per-slot seeds)
        seed = int(cfg.seed)
        torch.manual_seed(seed + 1000 * self.dist.rank)
        np.random.seed((seed + 1000 * self.dist.rank) % (2 ** 32))
        random.seed(seed + 1000 * self.dist.rank)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed + 7 + 1000 * self.dist.rank)

        # settings left to the data (patch size, spacing, normalisation) and the statistics the model card records
        if cfg.data.patch_size is None or (not cfg.plan and self.data is None):
            from semisupseg.data.fingerprint import resolve_plan

            resolve_plan(cfg, data=self.data, cancel=self.cancel)
        # data
        if self.data is None:
            from semisupseg.training.loading import load_train_data

            report = self.events.progress
            self.data = load_train_data(
                cfg.data, progress=(lambda f, m="": report(0.0, m)) if report is not None else (lambda f, m="": None),
                cancel=self.cancel, with_unlabeled=getattr(method_class(cfg.method), "uses_unlabeled", True))
        if cfg.data.num_classes is None:
            cfg.data.num_classes = self.data.infer_num_classes()
        self.data.check(cfg.data.num_classes, cfg.data.in_channels)

        # method and networks
        method_cls = method_class(cfg.method)
        params = method_params(cfg)
        # record every resolved parameter, not only the overrides: config.yaml and the card then pin the run even
        # if a later version changes a default (a resumed run keeps the values it started with)
        cfg.method_params = _plain(dataclasses.asdict(params))  # make_params always returns its Params dataclass
        self.method: Method = method_cls(params)
        from semisupseg.nets import build_network

        self.net_config = network_config(cfg, method_cls)
        torch.manual_seed(seed)  # identical initial weights on every rank (DDP also broadcasts them)
        try:
            model = build_network(method_cls.network_arch, self.net_config)
        except (TypeError, ValueError) as exc:  # a config that bypassed check_model_options: still one line
            raise InputError(f"config model: {exc}") from None
        self.method.build(model, cfg.data.num_classes, cfg.data.in_channels)
        torch.manual_seed(seed + 1000 * self.dist.rank)
        model = dist_utils.convert_sync_batchnorm(model, self.dist, self.device)
        model.to(self.device)
        self.method.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last_3d)
        self.model = model  # the plain network (state dicts, EMA, checkpoints)
        self.teacher = make_teacher(model) if method_cls.uses_teacher else None
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            unused = cfg.ddp_find_unused_parameters
            self.step_model: nn.Module = _DDP(model, device_ids=ids, find_unused_parameters=bool(
                method_cls.ddp_unused_parameters if unused is None else unused))
        else:
            self.step_model = model
        self.optimizer = build_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])

        # batches
        uses_unlabeled = getattr(method_cls, "uses_unlabeled", True)
        unlabeled_bs = cfg.batch_size - cfg.labeled_batch_size if uses_unlabeled else 0
        self.batcher = TwoStreamBatcher(
            [c.pair for c in self.data.labeled], [c.pair for c in self.data.unlabeled],
            cfg.labeled_batch_size, unlabeled_bs, cfg.data.patch_size_zyx, seed,
            rank=self.dist.rank, world_size=self.dist.world_size, augment=cfg.data.augment,
            foreground_prob=cfg.data.foreground_prob, perturb=cfg.data.perturb)
        self.seg_form = self.net_config["seg_form"]
        self.snapshots = self._snapshot_writer()

    def _snapshot_writer(self):
        """The training snapshots' writer when ``overlays.cases`` names cases (rank 0 only); the cases are read
        now, so a wrong id or a bad file stops the run before it trains."""
        cfg = self.cfg
        if not cfg.overlays.cases or not self.dist.is_main:
            return None
        from semisupseg.training.snapshots import SnapshotWriter

        data = self.data
        cases = SnapshotWriter.resolve(cfg.overlays.cases, data.sources, [c.case_id for c in data.labeled],
                                       [c.case_id for c in data.validation])
        writer = SnapshotWriter(self.run_dir, cases, data.class_names, data.label_values, data.normalization,
                                data.spacing_xyz, cfg.data.patch_size_zyx, keep=cfg.overlays.keep,
                                w_max=getattr(self.method.params, "w_max", None),
                                h5_spacing=cfg.data.h5_spacing)
        writer.prepare()
        return writer

    def _write_snapshots(self) -> None:
        """One overlay set per snapshot case from the teacher (or the student), each announced by an event. A
        failure is reported by an ``overlays`` event with ``error`` (which the event sink also shows people: a
        progress line, or a line above the bar) and training goes on; cancelling stops."""
        model = self.teacher if self.teacher is not None else self.model
        name = "teacher" if self.teacher is not None else "student"
        try:
            records = self.snapshots.write(self.iteration, model, self._card({}), self.method,
                                           self._context(self.iteration), device=str(self.device),
                                           fast=self.use_bf16, model_name=name, cancel=self.cancel)
        except Cancelled:
            raise
        except Exception as exc:  # a picture must not end a long run
            message = f"{type(exc).__name__}: {exc}"
            self.events.emit("overlays", iteration=self.iteration, max_iterations=self.cfg.iterations,
                             error=message)
            return
        for record in records:
            self.events.emit("overlays", max_iterations=self.cfg.iterations, **record)

    # ------------------------------------------------------------------------------------------------- context
    def _autocast(self):
        return runtime.autocast(self.device, enabled=self.use_bf16)

    def _all_reduce_grads(self, module: nn.Module) -> None:
        dist_utils.all_reduce_grads(module, self.dist)

    def _context(self, iteration: int) -> StepContext:
        return StepContext(iteration=iteration, max_iterations=self.cfg.iterations, device=self.device,
                           num_classes=self.cfg.data.num_classes, seg_form=self.seg_form, generator=self.generator,
                           teacher=self.teacher, all_reduce_grads=self._all_reduce_grads, autocast=self._autocast,
                           ema_decay=self.cfg.ema_decay)

    def _to_batch(self, image: np.ndarray, label: np.ndarray) -> Batch:
        x = torch.from_numpy(image).to(self.device)
        if self.channels_last:
            x = runtime.to_channels_last(x)
        y = torch.from_numpy(label).to(self.device)
        return Batch(image=x, label=y, labeled_bs=self.batcher.local_labeled_bs)

    # ------------------------------------------------------------------------------------------------- one step
    def _train_step(self) -> Tuple[float, Dict[str, float], Dict[str, float]]:
        t = self.iteration
        lr = learning_rate(self.cfg, t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        self.method.train()
        image, label = self.batcher.next()
        batch = self._to_batch(image, label)
        ctx = self._context(t)
        with self._autocast():
            result = self.method.step(self.step_model, batch, ctx)
        if not result.losses:
            raise RuntimeError(f"method {self.cfg.method!r} returned no loss terms")
        loss = sum(v.float() for v in result.losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.cfg.optim.grad_clip))
        self.optimizer.step()
        logs = dict(result.logs)
        if self.teacher is not None:
            decay = ema_decay_at(t, self.cfg.ema_decay)
            ema_update(self.teacher, self.model, decay, self.cfg.ema_buffers)
            logs["ema_decay"] = decay
        logs.update(self.method.after_step(self.step_model, batch, ctx) or {})
        terms = {k: float(v.detach().float().item()) for k, v in result.losses.items()}
        return float(loss.detach().item()), terms, logs

    # ------------------------------------------------------------------------------------------------- validation
    def _validate(self) -> Optional[Dict[str, Any]]:
        """Dice / HD95 of the student on the validation cases (rank 0 only; ``None`` elsewhere or without cases)."""
        if not self.dist.is_main or not self.data.validation:
            return None
        from semisupseg.inference import sliding_window_inference

        model = self.model
        was_training = model.training
        model.eval()
        per_case = []
        dices: List[float] = []
        hds: List[float] = []
        undefined = 0
        try:
            for case in self.data.validation:
                out = sliding_window_inference(model, case.image, self.cfg.data.patch_size_zyx,
                                               overlap=self.cfg.val_overlap, blend=self.cfg.val_blend,
                                               batch_size=self.cfg.val_batch_size, device=self.device,
                                               fast=self.use_bf16,
                                               cancel=None if self.dist.distributed else self.cancel)
                pred = np.argmax(out["prob"], axis=0)
                d, h, n_undefined = validation_scores(pred, case.label, self.cfg.data.num_classes,
                                                      tuple(reversed(case.spacing_xyz)))
                dices.append(d)
                hds.append(h)
                undefined += n_undefined
                per_case.append({"case": case.case_id, "dice": d, "hd95": h})
        finally:
            model.train(was_training)
        finite_hd = [h for h in hds if not math.isnan(h)]
        # hd95: the mean over cases of each case's mean over the classes where it is defined; hd95_undefined: the
        # case-class pairs where it is not (an empty prediction or reference), not only the cases with none defined
        return {"dice": float(np.mean(dices)), "hd95": float(np.mean(finite_hd)) if finite_hd else math.nan,
                "hd95_undefined": int(undefined), "cases": per_case}

    # ------------------------------------------------------------------------------------------------- files
    def _card(self, extra_training: Dict[str, Any]):
        from semisupseg.checkpoint import make_card

        cfg = self.cfg
        data = self.data
        training = {
            "method_params": dict(cfg.method_params), "iterations": self.iteration,
            "max_iterations": cfg.iterations, "batch_size": cfg.batch_size,
            "labeled_batch_size": cfg.labeled_batch_size, "seed": cfg.seed, "augmentation": cfg.data.augment,
            "perturb": cfg.data.perturb,
            "labeled_cases": len(data.labeled), "unlabeled_cases": len(data.unlabeled),
            "validation_cases": [c.case_id for c in data.validation],
            "best_val_dice": self.best_metric, "best_iteration": self.best_iteration,
        }
        if cfg.plan:  # what was derived from the data, and the training data's statistics (out-of-domain checks)
            training["plan"] = {k: cfg.plan.get(k) for k in ("from_data", "reasons", "plan")}
            training["data_statistics"] = cfg.plan.get("statistics") or {}
        training.update(extra_training)
        training = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in training.items()}
        return make_card(self.model, method=cfg.method, spacing_xyz=data.spacing_xyz,
                         patch_size_xyz=[int(v) for v in cfg.data.patch_size], class_names=data.class_names,
                         label_values=data.label_values, normalization=data.normalization, training=training,
                         inference={"orientation": data.orientation} if data.orientation else None)

    def _save_model(self, name: str, extra: Dict[str, Any]) -> Path:
        from semisupseg.checkpoint import save_model

        path = self.run_dir / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_model(path, self.model, self._card(extra), overwrite=True)
        self.events.emit("checkpoint", name=name, path=str(path), iteration=self.iteration)
        return path

    def _rng_state(self) -> Dict[str, Any]:
        state = {"torch": torch.get_rng_state(), "generator": self.generator.get_state(),
                 "numpy": to_json_text(np.random.get_state()), "python": to_json_text(random.getstate())}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: Dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        self.generator.set_state(state["generator"])
        np_state = from_json_text(state["numpy"])
        np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
        py = from_json_text(state["python"])
        random.setstate((py[0], tuple(py[1]), py[2]))
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _save_resume(self) -> None:
        """Gather per-rank sampler/RNG states; rank 0 writes ``resume.pt`` atomically (weights_only-loadable)."""
        from semisupseg.checkpoint import save_state

        shards = dist_utils.all_gather_object(self.batcher.state_dict(), self.dist)
        rngs = dist_utils.all_gather_object(
            {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in self._rng_state().items()}, self.dist)
        if not self.dist.is_main:
            return
        state = {
            "format": RESUME_FORMAT, "version": RESUME_VERSION, "iteration": self.iteration,
            "world_size": self.dist.world_size, "method": self.cfg.method,
            "model": {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "teacher": None if self.teacher is None else {k: v.detach().cpu().contiguous()
                                                          for k, v in self.teacher.state_dict().items()},
            "method_modules": {k: v.detach().cpu().contiguous() for k, v in self.method.state_dict().items()},
            "method_optimizers": self.method.optimizer_state(),
            "batcher": to_json_text(merge_shard_states(shards)),
            "rng": rngs,
            "best_metric": self.best_metric, "best_iteration": self.best_iteration,
            "elapsed_s": self._elapsed(),
        }
        save_state(self.run_dir / "resume.pt", state, overwrite=True)

    def _load_resume(self) -> bool:
        from semisupseg.checkpoint import load_state, read_card

        path = self.run_dir / "resume.pt"
        if not path.exists():
            return False
        state = load_state(path)
        if state.get("format") != RESUME_FORMAT:
            raise CheckpointError("is not a SemiSupSeg resume state", path)
        if state.get("method") != self.cfg.method:
            raise CheckpointError(f"was written by method {state.get('method')!r}, the config says "
                                  f"{self.cfg.method!r}", path)
        try:  # the CLI refuses changed network or case settings first; a state of another shape ends here
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"holds a network of another shape than this run's ({str(exc).splitlines()[0]}): "
                                  "resume with the run's own model settings", path) from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.teacher is not None:
            if state.get("teacher") is None:
                raise CheckpointError("has no EMA teacher but the method needs one", path)
            self.teacher.load_state_dict(state["teacher"])
        self.method.load_state_dict(state["method_modules"])
        self.method.load_optimizer_state(state["method_optimizers"])
        self.iteration = int(state["iteration"])
        self.best_metric = state.get("best_metric")
        self.best_iteration = state.get("best_iteration")
        self._elapsed_before = float(state.get("elapsed_s") or 0.0)
        same_world = int(state.get("world_size", 1)) == self.dist.world_size
        try:
            self.batcher.load_state_dict(from_json_text(state["batcher"]))
        except ValueError as exc:
            raise CheckpointError(f"was written for other cases ({exc}): resume with the run's own data settings",
                                  path) from None
        if same_world:
            self._set_rng_state(state["rng"][self.dist.rank])
        else:  # different number of processes: the index streams continue, the RNGs are re-seeded
            torch.manual_seed(self.cfg.seed + 1000 * self.dist.rank + self.iteration)
        # a best model written after the last resume state (killed in between) still counts
        best = self.run_dir / "best.pt"
        if best.exists():
            try:
                saved = read_card(best).training.get("best_val_dice")
                if saved is not None and (self.best_metric is None or saved > self.best_metric):
                    self.best_metric = float(saved)
                    self.best_iteration = read_card(best).training.get("best_iteration")
            except CheckpointError:
                pass
        return True

    # ------------------------------------------------------------------------------------------------- loop
    def _elapsed(self) -> float:
        return getattr(self, "_elapsed_before", 0.0) + (time.perf_counter() - self._t0)

    def _check_cancel(self) -> bool:
        return dist_utils.any_flag(self.cancel.cancelled, self.dist)

    def _validate_and_save(self) -> Optional[Dict[str, Any]]:
        self._phase = "validation"
        metrics = self._validate()
        self._phase = "saving"
        metrics = dist_utils.broadcast_object(metrics, self.dist)
        if self.dist.is_main:
            extra: Dict[str, Any] = {}
            if metrics is not None:
                self.events.emit("validation", iteration=self.iteration, max_iterations=self.cfg.iterations,
                                 metrics=metrics)
                extra = {"val_dice": metrics["dice"], "val_hd95": metrics["hd95"]}
                improved = self.best_metric is None or metrics["dice"] > self.best_metric
                if improved:
                    self.best_metric, self.best_iteration = metrics["dice"], self.iteration
                    self._save_model("best", extra)
            self._save_model("last", extra)
        self._save_resume()
        return metrics

    def run(self) -> TrainResult:
        """Train to ``config.iterations`` (or until cancelled). Raises on failure after emitting ``failed``."""
        old_handlers = self._install_signals()
        threads = torch.get_num_threads()
        try:
            return self._run()
        finally:
            self._restore_signals(old_handlers)
            torch.set_num_threads(threads)  # num_threads is a per-run setting, not a process-wide change

    def _install_signals(self):
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return None
        old = {}

        def handler(signum, frame):
            if not self.cancel.cancelled:  # the first: finish the step, save, end as cancelled
                self.cancel.cancel()
                return
            if self._saving_on_cancel:  # the cancel's own save is being written: stopping it would lose it
                print("saving the training state, a moment...", file=sys.stderr, flush=True)
                return
            self._interrupted = True  # a second one before that: stop now, without saving
            raise KeyboardInterrupt

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass
        if PARENT_DIED is not None:  # the launcher died (processes.end_with_parent): stop and save, never more
            try:
                old[PARENT_DIED] = signal.signal(PARENT_DIED, lambda signum, frame: self.cancel.cancel())
            except (ValueError, OSError):
                pass
        return old

    @staticmethod
    def _restore_signals(old) -> None:
        for sig, h in (old or {}).items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError):
                pass

    def _run(self) -> TrainResult:
        cfg = self.cfg
        self._t0 = time.perf_counter()
        self.dist = dist_utils.DistInfo()
        if not dist_utils.env_is_main():
            self.events.enabled = False  # only rank 0 reports and writes files
        try:
            if dist_utils.env_is_main():
                self._prepare_run_dir()
            if self.events.path is None:
                self.events.set_path(self.run_dir / "events.jsonl")
            self._setup()
            resumed = self._load_resume() if self.resume else False
            if self.heartbeat is not None:
                self.heartbeat.iteration = self.iteration
            if self.dist.is_main:
                save_config(cfg, self.run_dir / "config.yaml")
                import json

                write_text_atomic(json.dumps(self.data.summary(), indent=1), self.run_dir / "data.json",
                                  overwrite=True)
            common = dict(iteration=self.iteration, max_iterations=cfg.iterations, method=cfg.method,
                          run_dir=str(self.run_dir), device=str(self.device), world_size=self.dist.world_size,
                          bf16=self.use_bf16, channels_last=self.channels_last,
                          labeled_cases=len(self.data.labeled), unlabeled_cases=len(self.data.unlabeled),
                          validation_cases=len(self.data.validation))
            self.events.emit("resumed" if resumed else "started", **common)
        except Cancelled as exc:  # while reading the data: nothing trained, nothing to save
            self.events.emit("cancelled", iteration=self.iteration, max_iterations=cfg.iterations, message=str(exc))
            self.events.close()
            self._stop_heartbeat("cancelled")
            self._leave_process_group()
            return self._result("cancelled")
        except BaseException as exc:
            return self._ended_by(exc)

        try:
            window: List[float] = []
            while self.iteration < cfg.iterations:
                if self._check_cancel():
                    raise Cancelled("training cancelled")
                t_start = time.perf_counter()
                self._phase = "training step"
                loss, terms, logs = self._train_step()
                if not math.isfinite(loss) and cfg.stop_on_nonfinite:
                    raise FloatingPointError(f"non-finite loss {loss} at iteration {self.iteration} (terms {terms}); "
                                             "lower optim.lr, enable optim.grad_clip or set amp=off")
                self.iteration += 1
                if self.heartbeat is not None:
                    self.heartbeat.iteration = self.iteration
                dt = time.perf_counter() - t_start
                self._durations.append(dt)
                self._losses.append(loss)
                window = (window + [dt])[-20:]
                if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations:
                    if self.dist.distributed:
                        loss = dist_utils.all_reduce_mean(loss, self.dist)
                        terms = {k: dist_utils.all_reduce_mean(v, self.dist) for k, v in terms.items()}
                    s_per_it = float(np.mean(window))
                    self.events.emit("iteration", iteration=self.iteration, max_iterations=cfg.iterations,
                                     loss=loss, losses=terms, logs=logs, lr=self.optimizer.param_groups[0]["lr"],
                                     it_per_s=1.0 / s_per_it if s_per_it > 0 else None, s_per_it=s_per_it,
                                     eta_s=s_per_it * (cfg.iterations - self.iteration),
                                     elapsed_s=self._elapsed())
                if self.iteration % cfg.val_every == 0 or self.iteration == cfg.iterations:
                    self._validate_and_save()
                elif self.iteration % cfg.save_every == 0:
                    self._phase = "saving"
                    self._save_resume()
                if cfg.keep_every and self.iteration % cfg.keep_every == 0 and self.dist.is_main:
                    self._phase = "saving"
                    self._save_model(f"{KEPT_DIR}/it{self.iteration:06d}", {})
                if self.snapshots is not None and (self.iteration % cfg.overlays.every == 0
                                                   or self.iteration == cfg.iterations):
                    self._write_snapshots()
        except Cancelled as exc:
            try:
                self._save_on_cancel()
            finally:
                self.events.emit("cancelled", iteration=self.iteration, max_iterations=cfg.iterations,
                                 message=str(exc) or "cancelled")
                self._stop_heartbeat("cancelled")
                self._leave_process_group()
            return self._result("cancelled")
        except BaseException as exc:
            return self._ended_by(exc)
        durations = sorted(self._durations[1:] or self._durations)
        self.events.emit("finished", iteration=self.iteration, max_iterations=cfg.iterations,
                         best_val_dice=self.best_metric, best_iteration=self.best_iteration,
                         s_per_it_median=float(np.median(durations)) if durations else None,
                         peak_rss_mb=peak_rss_mb(), elapsed_s=self._elapsed(),
                         last=str(self.run_dir / "last.pt"),
                         best=str(self.run_dir / "best.pt") if (self.run_dir / "best.pt").exists() else None)
        self.events.close()
        self._stop_heartbeat("finished")
        self._leave_process_group(synchronize=True)
        return self._result("finished")

    def _leave_process_group(self, synchronize: bool = False) -> None:
        """End of a distributed run: drop the DistributedDataParallel wrapper (its reducer holds the process group)
        and collect it, then leave the group (:func:`semisupseg.training.distributed.cleanup`). While the wrapper
        lived on to interpreter exit, gloo's worker threads were torn down during finalisation and one 2-process CPU
        run in ~10 aborted after finishing ("terminate called without an active exception")."""
        if not self.dist.distributed:
            return
        if getattr(self, "step_model", None) is not None and self.step_model is not self.model:
            self.step_model = self.model
            gc.collect()
        dist_utils.cleanup(self.dist, synchronize=synchronize)

    def _ended_by(self, exc: BaseException) -> TrainResult:
        """The end of a run an exception stopped: after a second interrupt (whatever error it caused inside a
        write) a cancel, whose result is returned; anything else a failure, reported and raised (running out of
        memory as one line naming the options that lower it)."""
        if self._interrupted:
            self._leave_process_group()
            return self._interrupted_result()
        oom = self._out_of_memory(exc)
        if self.dist.distributed and not self.dist.is_main:  # rank 0 reports the run: hand it this cause first
            self._hand_failure_to_rank0(oom or exc)
        peer = self._peer_failure() if self.dist.distributed and self.dist.is_main else None
        self._fail(peer or oom or exc)
        self._leave_process_group()
        if peer is not None:
            raise peer from exc
        if oom is not None:
            raise oom from exc
        raise exc

    #: a failing non-zero rank's error for rank 0 (which only sees the connection close): ``.failed_rank<N>.txt``
    PEER_FAILURE_GLOB = ".failed_rank*.txt"

    def _hand_failure_to_rank0(self, exc: BaseException) -> None:
        line = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, SemiSupSegError):
            line = f"{type(exc).__name__}: {line}"
        try:  # written before this process leaves the group, i.e. before rank 0 sees the connection close
            write_text_atomic(line + "\n", self.run_dir / f".failed_rank{self.dist.rank}.txt", overwrite=True)
        except OSError:
            pass

    def _peer_failure(self, wait_s: float = 2.0) -> Optional[PeerFailed]:
        """The error another rank handed over (:meth:`_hand_failure_to_rank0`), waiting ``wait_s`` for it; the
        files are removed once read."""
        deadline = time.monotonic() + wait_s
        while True:
            files = sorted(self.run_dir.glob(self.PEER_FAILURE_GLOB))
            if files or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        lines = []
        for f in files:
            try:
                lines.append(f"rank {f.name[len('.failed_rank'):-len('.txt')]}: {f.read_text(encoding='utf-8').strip()}")
                f.unlink()
            except OSError:
                continue
        return PeerFailed("another process of the run failed: " + "; ".join(lines)) if lines else None

    def _save_on_cancel(self) -> None:
        """On cancellation: keep what was trained (``last`` model + resume state), no validation (be quick). Further
        interrupts wait for it (the signal handler ignores them while this runs)."""
        self._saving_on_cancel = True
        try:
            if self.dist.is_main:
                self._save_model("last", {"cancelled_at": self.iteration})
            self._save_resume()
        finally:
            self._saving_on_cancel = False

    def _saved_iteration(self) -> Optional[int]:
        """:func:`saved_iteration` of this run, ``None`` also when the state cannot be read (a message about it
        must not fail; ``--resume`` checks the file again)."""
        try:
            return saved_iteration(self.run_dir)
        except Exception:
            return None

    def _interrupted_result(self) -> TrainResult:
        """A second interrupt stopped the run before its cancel could save: nothing more is written but the
        ``cancelled`` event naming the state that is kept (the last periodic save, or none)."""
        saved = self._saved_iteration()
        kept = (f"the state saved at iteration {saved} is kept" if saved is not None
                else "no training state had been saved yet")
        try:
            self.events.emit("cancelled", iteration=self.iteration, max_iterations=self.cfg.iterations,
                             message=f"stopped by a second interrupt without saving; {kept}", saved_iteration=saved)
            self.events.close()
        finally:
            self._stop_heartbeat("cancelled")
        result = self._result("cancelled")
        result.interrupted, result.saved_iteration = True, saved
        return result

    def _out_of_memory(self, exc: BaseException) -> Optional[OutOfMemoryError]:
        """``exc`` as an :class:`OutOfMemoryError` whose one line says where memory ran out, which options lower
        it, and which saved state ``--resume`` continues from; ``None`` when ``exc`` is not a failed allocation."""
        if isinstance(exc, OutOfMemoryError) or not is_out_of_memory(exc):
            return exc if isinstance(exc, OutOfMemoryError) else None
        cfg = self.cfg
        phase = getattr(self, "_phase", None) or "setting up (reading the data, building the network)"
        patch = cfg.data.patch_size
        patch_text = "x".join(str(int(v)) for v in patch) + " voxels (x y z)" if patch else "from the data"
        if phase == "validation":
            advice = (f"use a smaller patch (--patch-size X Y Z; the validation window is the patch) or fewer "
                      f"windows per pass (--set val_batch_size=1, now {cfg.val_batch_size})")
        else:
            advice = (f"use a smaller patch (--patch-size X Y Z, now {patch_text}), batch (--batch-size B, now "
                      f"{cfg.batch_size}) or network (--set model.n_filters=N, now {cfg.model.n_filters})")
        saved = self._saved_iteration()
        kept = (f"the last saved state (iteration {saved}) is kept: continue with --resume {self.run_dir}"
                if saved is not None else "no training state was saved yet")
        detail = out_of_memory_detail(exc)
        return OutOfMemoryError(f"out of memory during {phase} at iteration {self.iteration} ({detail}): {advice}; "
                                f"{kept}")

    def _fail(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, (InputError, CheckpointError, FloatingPointError, OutOfMemoryError, PeerFailed)):
            message += "\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        try:
            self.events.emit("failed", iteration=self.iteration, max_iterations=self.cfg.iterations,
                             message=message)
            self.events.close()
        except Exception:  # never hide the original error
            pass
        try:
            self._stop_heartbeat("failed")
        except Exception:
            pass

    def _result(self, status: str) -> TrainResult:
        last = self.run_dir / "last.pt"
        best = self.run_dir / "best.pt"
        return TrainResult(status=status, iteration=self.iteration, run_dir=self.run_dir,
                           best_metric=self.best_metric, best_iteration=self.best_iteration,
                           last_path=last if last.exists() else None, best_path=best if best.exists() else None,
                           losses=list(self._losses), seconds_per_iteration=list(self._durations))


__all__ = ["Trainer", "TrainResult", "learning_rate", "build_optimizer", "check_model_options", "method_params",
           "network_config", "peak_rss_mb", "saved_iteration"]
