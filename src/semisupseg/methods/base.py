"""The method plugin API: a method is a small class with its heads, extra networks and the losses of one step.

The training engine (:mod:`semisupseg.training`) owns everything generic: data and two-stream batches, the student
model and its optimiser, learning-rate schedule, autocast, gradient clipping, the EMA teacher, validation,
checkpoints, events, resume and distributed training. A method only says what it needs and computes its loss terms.

One iteration of the engine::

    batch = two_stream_sampler.next()                  # labeled first, then unlabeled
    with autocast: result = method.step(model, batch, ctx)
    loss = sum(result.losses.values())                 # already weighted terms
    optimizer.zero_grad(); loss.backward(); (all-reduce under DDP); clip; optimizer.step()
    if method.uses_teacher: ema_update(teacher, model, decay=min(1 - 1/(t+1), ema_decay))
    logs = method.after_step(model, batch, ctx)        # e.g. the discriminator's own update
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Optional, Type

import numpy as np
import torch
from torch import nn


@dataclass
class Batch:
    """A two-stream batch on the training device.

    ``image``: ``(B, C_in, Z, Y, X)`` float, the first ``labeled_bs`` patches labeled, the rest unlabeled.
    ``label``: ``(labeled_bs, Z, Y, X)`` int64 class indices 0..C-1 of the labeled patches.
    """

    image: torch.Tensor
    label: torch.Tensor
    labeled_bs: int

    @property
    def labeled_image(self) -> torch.Tensor:
        return self.image[: self.labeled_bs]

    @property
    def unlabeled_image(self) -> torch.Tensor:
        return self.image[self.labeled_bs:]


@dataclass
class StepContext:
    """What the engine tells a method at each step.

    ``iteration`` is 0-based (the step being computed); ``teacher`` is the EMA copy of the model (eval-mode BN is
    not forced: the method decides) when the method sets ``uses_teacher``; ``generator`` seeds any randomness the
    method draws (noise, MixUp λ) so runs are reproducible and resumable; ``all_reduce_grads(module)`` averages a
    method-owned module's gradients over distributed processes (a no-op in a single process) and must be called
    before stepping a method-owned optimiser; ``autocast()`` returns the engine's autocast context (use it for
    method-owned forward passes in ``after_step``); ``ema_decay`` is the engine's EMA decay cap (``TrainConfig.
    ema_decay``) for methods that keep EMA copies of their own networks.
    """

    iteration: int
    max_iterations: int
    device: torch.device
    num_classes: int
    seg_form: str
    generator: torch.Generator
    teacher: Optional[nn.Module] = None
    all_reduce_grads: Callable[[nn.Module], None] = lambda module: None
    autocast: Callable[[], Any] = lambda: _null_context()
    ema_decay: float = 0.99


class _null_context:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@dataclass
class StepResult:
    """``losses``: the **weighted** terms the engine sums and back-propagates (names like ``"dice"``,
    ``"consistency"``); ``logs``: extra scalars for the event log (unweighted values, current weights, region
    fractions)."""

    losses: Dict[str, torch.Tensor]
    logs: Dict[str, float] = field(default_factory=dict)


def _type_mismatch(value: Any, tp: Any) -> Optional[str]:
    """What ``value`` should be for a parameter annotated ``tp`` (``"an integer"``...), or ``None`` when it fits (or
    the annotation is one this check does not read). Integers are numbers too; ``True``/``False`` are no numbers."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        wanted = [_type_mismatch(value, a) for a in args if a is not type(None)]
        return None if None in wanted else " or ".join(wanted)
    if tp is bool:
        return None if isinstance(value, bool) else "true or false"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if tp is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if tp is str:
        return None if isinstance(value, str) else "a text"
    if origin in (list, tuple, typing.List, typing.Tuple) or tp in (list, tuple):
        return None if isinstance(value, (list, tuple)) else "a list"
    return None


@dataclass
class MethodParams:
    """Base of each method's hyper-parameter dataclass (paper defaults; overridable from config/CLI)."""


class Method(nn.Module):
    """Base class of a training method. Subclasses set the class attributes and implement :meth:`step`.

    A method is an ``nn.Module`` so its extra networks (discriminators, projection heads) are sub-modules: the
    engine moves them to the device and saves/restores them with the run. The student model and the EMA teacher
    are *not* sub-modules (the engine owns them). Method-owned optimisers are registered with
    :meth:`add_optimizer` in :meth:`build`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[Type[MethodParams]] = MethodParams
    #: the model needs the SDM head (``out["sdm"]``)
    needs_sdm: ClassVar[bool] = False
    #: the engine keeps an EMA teacher and passes it as ``ctx.teacher``
    uses_teacher: ClassVar[bool] = False
    #: the model is built with Dropout3d (UA-MT's Monte-Carlo dropout)
    needs_dropout: ClassVar[bool] = False
    #: some of the network's parameters get no gradient in some steps (a head used only now and then): DDP must
    #: then look for them (``find_unused_parameters``), else it fails at the next step. ``False`` for every built-in
    #: method (``Testing/test_training_engine.py`` checks each registered method)
    ddp_unused_parameters: ClassVar[bool] = False
    #: the method trains on unlabeled patches; ``False`` (supervised baseline): the engine's batches hold only the
    #: ``labeled_batch_size`` labeled patches
    uses_unlabeled: ClassVar[bool] = True
    #: registered network architecture the engine builds for this method (:func:`semisupseg.nets.build_network`);
    #: methods whose final output comes from extra branches (SB-Net) register their own network
    network_arch: ClassVar[str] = "vnet"

    def __init__(self, params: Optional[MethodParams] = None):
        super().__init__()
        self.params = params if params is not None else self.Params()
        self._optimizers: Dict[str, torch.optim.Optimizer] = {}

    # --- set-up -----------------------------------------------------------------------------------------------
    def build(self, model: nn.Module, num_classes: int, in_channels: int) -> None:
        """Create extra networks and their optimisers (called once, before the method is moved to the device)."""

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        self._optimizers[name] = optimizer

    @property
    def optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        return dict(self._optimizers)

    # --- one iteration ----------------------------------------------------------------------------------------
    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        """Forward the student (prefer **one** forward over the whole batch) and return the weighted loss terms."""
        raise NotImplementedError

    def after_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Dict[str, float]:
        """Work after the student's optimiser step (e.g. a discriminator update). Returns scalars to log."""
        return {}

    # --- overlays ---------------------------------------------------------------------------------------------
    def regions(self, model: nn.Module, image: torch.Tensor, ctx: StepContext) -> Optional[np.ndarray]:
        """Optional per-voxel region codes ``(B, Z, Y, X)`` for overlays (SGRS Δ/Ω/Θ); ``None`` if none."""
        return None

    # --- persistence ------------------------------------------------------------------------------------------
    def optimizer_state(self) -> Dict[str, Any]:
        return {name: opt.state_dict() for name, opt in self._optimizers.items()}

    def load_optimizer_state(self, state: Dict[str, Any]) -> None:
        for name, opt in self._optimizers.items():
            if name in state:
                opt.load_state_dict(state[name])

    @classmethod
    def make_params(cls, overrides: Optional[Dict[str, Any]] = None) -> MethodParams:
        """The method's params with ``overrides`` applied; unknown keys raise ``ValueError`` naming them."""
        overrides = dict(overrides or {})
        known = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"method {cls.name!r} has no parameter(s) {unknown}; known: {sorted(known)}")
        hints = typing.get_type_hints(cls.Params)
        for key, value in overrides.items():
            expected = _type_mismatch(value, hints.get(key))
            if expected:
                raise ValueError(f"method {cls.name!r} parameter {key} must be {expected}, got {value!r}")
        return cls.Params(**overrides)
