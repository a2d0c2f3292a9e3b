"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017) as the UA-MT/SSL4MIS releases run it on 3-D volumes.

Also home of the building blocks the other baselines share: the supervised term of the releases
(:func:`labeled_segmentation_terms`), the teacher input noise (:func:`teacher_input_noise`), the no-grad teacher
forward (:func:`teacher_probabilities`) and the selectable consistency ramp (:func:`ramped_weight`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
from torch import nn

from semisupseg.losses.consistency import mean_teacher_consistency
from semisupseg.losses.segmentation import cross_entropy, multiclass_dice_loss
from semisupseg.methods import register
from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult
from semisupseg.nets import seg_probabilities, softmax_logits
from semisupseg.schedules import consistency_weight

RAMPUPS = ("sigmoid", "gaussian", "constant")
CONSISTENCY_ON = ("unlabeled", "all")


# ----------------------------------------------------------------------------------------------------------------
# shared building blocks of the baselines


def labeled_segmentation_terms(seg_logits: torch.Tensor, labels: torch.Tensor, seg_form: str,
                               ce_weight: float = 0.5, dice_weight: float = 0.5
                               ) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
    """The releases' supervised term on the labeled patches: ``ce_weight · CE + dice_weight · Dice``.

    ``seg_logits``: the labeled part of ``out["seg"]`` ``(L, seg_channels, Z, Y, X)`` of either head form;
    ``labels``: ``(L, Z, Y, X)`` int64. CE is the voxel-mean cross-entropy of the softmax logits (for the sigmoid
    form it equals ``BCEWithLogitsLoss``), Dice the mean foreground soft Dice (for two classes exactly the
    releases' ``dice_loss(outputs_soft[:, 1], label == 1)``). UA-MT/SSL4MIS: ``0.5 · (CE + Dice)``; DTC: Dice only.

    Returns the **weighted** terms ``{"ce", "dice"}`` (a term whose weight is 0 is left out) and the unweighted
    values as logs ``{"ce_raw", "dice_raw"}``.
    """
    logits = softmax_logits(seg_logits, seg_form)
    ce = cross_entropy(logits, labels)
    dice = multiclass_dice_loss(torch.softmax(logits.float(), dim=1), labels)
    losses: Dict[str, torch.Tensor] = {}
    if ce_weight:
        losses["ce"] = ce_weight * ce
    if dice_weight:
        losses["dice"] = dice_weight * dice
    return losses, {"ce_raw": float(ce.detach()), "dice_raw": float(dice.detach())}


def teacher_input_noise(x: torch.Tensor, generator: torch.Generator, std: float = 0.1,
                        clip: float = 0.2) -> torch.Tensor:
    """Noise ``clamp(N(0, std^2), -clip, clip)`` of the shape of ``x`` (the releases' ``torch.clamp(torch.randn_like(
    x) * 0.1, -0.2, 0.2)`` added to the teacher's input), drawn from ``generator`` for reproducible, resumable runs.

    The noise is drawn on the generator's device in float32 and moved to ``x``'s device and dtype.
    """
    noise = torch.randn(tuple(x.shape), generator=generator, device=generator.device, dtype=torch.float32)
    return torch.clamp(noise * std, -clip, clip).to(device=x.device, dtype=x.dtype)


def teacher_probabilities(teacher: nn.Module, image: torch.Tensor, seg_form: str,
                          train_mode: bool = True) -> torch.Tensor:
    """Class probabilities ``(B, C, Z, Y, X)`` float32 of the teacher on ``image``, without gradients.

    ``train_mode`` (release: ``ema_model.train()``) runs the teacher with batch-statistics normalisation and active
    dropout; ``False`` uses its running statistics and no dropout.
    """
    teacher.train(train_mode)
    with torch.no_grad():
        out = teacher(image)
        return seg_probabilities(out["seg"], seg_form).float()


def ramped_weight(iteration: int, max_iterations: int, amplitude: float, rampup: str,
                  rampup_period: int, rampup_length: float) -> float:
    """A consistency weight at ``iteration`` (0-based) — see :func:`semisupseg.schedules.consistency_weight`.

    ``"sigmoid"``: ``amplitude · sigmoid_rampup(iteration // rampup_period, rampup_length)`` (releases and default: period 150; 0 = scaled to the run,
    length 40, so the ramp ends at iteration 6000 = the LA runs' length); ``"gaussian"``: the papers'
    ``amplitude · exp(-5 (1 - t / t_max)^2)`` over the whole run; ``"constant"``.
    """
    return consistency_weight(iteration, amplitude, rampup, max_iterations, rampup_period, rampup_length)


def _check_choice(value: str, choices: Tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")


def _require_teacher(ctx: StepContext, name: str) -> nn.Module:
    if ctx.teacher is None:
        raise RuntimeError(f"method {name!r} needs the EMA teacher (uses_teacher) but the engine passed none")
    return ctx.teacher


# ----------------------------------------------------------------------------------------------------------------


@dataclass
class MeanTeacherParams(MethodParams):
    """Mean Teacher hyper-parameters (defaults: the UA-MT release's LA settings).

    ``consistency`` / ``consistency_rampup`` / ``rampup_period`` / ``rampup_length``: the consistency weight
    ``λ(t) = consistency · sigmoid_rampup(t // P, 40)`` (release ``--consistency 0.1 --consistency_rampup 40``,
    called with ``iter_num // 150``). ``rampup_period`` ``P``: 150 (default, the release); 0 scales the ramp to
    the run, ``P = max_iterations / 40`` (equal at 6000 iterations; at 1000 iterations the release's weight never
    exceeds 0.003, the scaled one reaches 0.1 — which measured worse on LA: :func:`semisupseg.schedules.ramp_period`). ``"gaussian"`` selects the papers' ``0.1 · exp(-5 (1 - t/t_max)^2)``.
    The teacher's EMA decay α is the engine's ``ema_decay`` config key (``min(1 - 1/(t+1), α)``, release 0.99).
    ``noise_std`` / ``noise_clip``: teacher input noise ``clamp(N(0, 0.1^2), ±0.2)``.
    ``consistency_on``: ``"unlabeled"`` (release: only the unlabeled patches) or ``"all"`` (the paper's sum over
    labeled and unlabeled data). ``teacher_train_mode``: the release keeps the teacher in train mode.
    ``ce_weight`` / ``dice_weight``: supervised ``0.5 · (CE + Dice)`` on the labeled patches.
    """

    consistency: float = 0.1
    consistency_rampup: str = "sigmoid"
    rampup_period: int = 150  # the releases; 0: scaled to the run (schedules.ramp_period)
    rampup_length: float = 40.0
    noise_std: float = 0.1
    noise_clip: float = 0.2
    consistency_on: str = "unlabeled"
    teacher_train_mode: bool = True
    ce_weight: float = 0.5
    dice_weight: float = 0.5

    def __post_init__(self) -> None:
        _check_choice(self.consistency_rampup, RAMPUPS, "consistency_rampup")
        _check_choice(self.consistency_on, CONSISTENCY_ON, "consistency_on")
        if self.rampup_period < 0:
            raise ValueError(f"rampup_period must be >= 0 (0: scaled to the run), got {self.rampup_period}")
        if self.noise_std < 0 or self.noise_clip < 0:
            raise ValueError("noise_std and noise_clip must be >= 0")


@register
class MeanTeacher(Method):
    """Mean Teacher: MSE between the student's and the EMA teacher's class probabilities on noisy inputs.

    Objective (Tarvainen & Valpola 2017; UA-MT eq. (1) with the plain consistency)::

        L = 0.5 (CE + Dice)(student(x_l), y_l)  +  λ(t) · mean (softmax f(x_u; θ) - softmax f(x_u + ξ; θ'))^2
        θ'_t = α θ'_{t-1} + (1 - α) θ_t,  α = min(1 - 1/(t+1), 0.99)          (EMA, done by the engine)
        ξ = clamp(N(0, 0.1^2), -0.2, 0.2),  λ(t) = 0.1 · sigmoid_rampup(t // P, 40),  P = 150 (0: t_max / 40)

    Release behaviours kept. The UA-MT repository has no separate Mean Teacher script; its LA baseline is
    ``train_LA_meanteacher_certainty_unlabel.py`` without the uncertainty mask, and SSL4MIS's
    ``train_mean_teacher_3D.py`` computes the same loss: one student forward over the whole two-stream batch; the
    noise is added to the teacher's input only; the consistency covers the unlabeled patches and is the mean of the
    squared probability differences over batch, classes and voxels; the teacher runs in train mode (batch statistics,
    dropout active); ``0.5 (CE + Dice)`` supervised. As in the UA-MT script, the V-Net is built with dropout
    (``has_dropout=True``) for student and teacher, hence ``needs_dropout`` (SSL4MIS's default 3-D U-Net has none).

    Deviations: none in the defaults. Options: ``consistency_on="all"``; ``consistency_rampup="gaussian"``; the
    multi-class case uses the mean foreground Dice (identical to the release for two classes).

    Loss terms returned: ``ce``, ``dice`` (weighted 0.5 each) and ``consistency`` (weighted λ(t)); logs carry the
    unweighted values (``*_raw``) and ``consistency_weight``.
    """

    name = "mean-teacher"
    description = "Mean Teacher: EMA teacher, noisy-input MSE consistency on unlabeled patches (Tarvainen 2017)"
    Params = MeanTeacherParams
    uses_teacher = True
    needs_dropout = True

    def consistency_targets(self, batch: Batch) -> Tuple[torch.Tensor, slice]:
        """The images the consistency acts on and their slice in the batch."""
        if self.params.consistency_on == "all":
            return batch.image, slice(0, batch.image.shape[0])
        return batch.unlabeled_image, slice(batch.labeled_bs, batch.image.shape[0])

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        p = self.params
        out = model(batch.image)
        lb = batch.labeled_bs
        losses, logs = labeled_segmentation_terms(out["seg"][:lb], batch.label, ctx.seg_form,
                                                  p.ce_weight, p.dice_weight)
        prob = seg_probabilities(out["seg"], ctx.seg_form)
        weight = ramped_weight(ctx.iteration, ctx.max_iterations, p.consistency, p.consistency_rampup,
                               p.rampup_period, p.rampup_length)
        images, part = self.consistency_targets(batch)
        if images.shape[0] == 0:  # a batch without unlabeled patches: nothing to be consistent about
            dist = prob.new_zeros(())
            extra: Dict[str, float] = {}
        else:
            dist, extra = self.consistency_distance(prob[part], images, ctx)
        losses["consistency"] = weight * dist
        logs.update(extra)
        logs["consistency_raw"] = float(dist.detach())
        logs["consistency_weight"] = weight
        return StepResult(losses=losses, logs=logs)

    def consistency_distance(self, student_prob: torch.Tensor, images: torch.Tensor,
                             ctx: StepContext) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Unweighted consistency between ``student_prob`` and the teacher on ``images`` (+ extra logs)."""
        p = self.params
        teacher = _require_teacher(ctx, self.name)
        noisy = images + teacher_input_noise(images, ctx.generator, p.noise_std, p.noise_clip)
        teacher_prob = teacher_probabilities(teacher, noisy, ctx.seg_form, p.teacher_train_mode)
        return mean_teacher_consistency(student_prob, teacher_prob), {}
