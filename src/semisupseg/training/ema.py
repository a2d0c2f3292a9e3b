"""The exponential-moving-average (mean) teacher of Mean Teacher / UA-MT / SASSNet-style methods.

The engine keeps the teacher as a deep copy of the student and updates it after every student step with
:func:`ema_update` at the decay :func:`ema_decay_at` — the releases' ``update_ema_variables``.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay_at(iteration: int, ema_decay: float = 0.99) -> float:
    """The teacher's decay after the student step ``iteration`` (0-based): ``min(1 - 1 / (t + 1), ema_decay)``.

    Mean Teacher (Tarvainen & Valpola 2017) / UA-MT release: early on the teacher follows the student closely
    (decay 0 at ``t = 0``: the teacher becomes the student), later it averages with ``ema_decay``.
    """
    return float(min(1.0 - 1.0 / (float(iteration) + 1.0), float(ema_decay)))


def make_teacher(student: nn.Module) -> nn.Module:
    """A detached deep copy of ``student`` (no gradients)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float, buffers: str = "keep") -> None:
    """``θ'_t = decay · θ'_{t-1} + (1 - decay) · θ_t`` for every parameter (Mean Teacher eq. 1).

    ``buffers``: ``"keep"`` leaves the teacher's buffers (BatchNorm statistics) alone — in the releases the teacher
    runs in train mode and keeps its own statistics; ``"copy"`` copies the student's; ``"ema"`` averages floating
    buffers with the same decay (integer buffers such as ``num_batches_tracked`` are copied).
    """
    t_params = dict(teacher.named_parameters())
    for name, s in student.named_parameters():
        t = t_params[name]
        t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1.0 - decay)
    if buffers == "keep":
        return
    t_bufs = dict(teacher.named_buffers())
    for name, s in student.named_buffers():
        t = t_bufs[name]
        if buffers == "ema" and t.is_floating_point():
            t.mul_(decay).add_(s.to(t.dtype), alpha=1.0 - decay)
        else:
            t.copy_(s)


__all__ = ["ema_decay_at", "ema_update", "make_teacher"]
