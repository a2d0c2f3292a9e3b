"""``supervised``: the fully supervised V-Net baseline trained on the labeled cases only.

The papers' lower bound ("V-Net, 16 labeled"): soft Dice on the labeled patches (Milletari et al. 2016) — the
releases' ``dice_loss`` — optionally with voxel cross-entropy (UA-MT's supervised term is ``0.5 (CE + Dice)``;
set ``ce_weight=0.5, dice_weight=0.5`` for it). Unlabeled data are not used: the engine's batches hold only the
``labeled_batch_size`` labeled patches.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from semisupseg.losses.segmentation import cross_entropy, multiclass_dice_loss
from semisupseg.methods import register
from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult
from semisupseg.nets import softmax_logits


@dataclass
class SupervisedParams(MethodParams):
    """``dice_weight``: weight of the soft Dice loss (foreground classes, release ``dice_loss``);
    ``ce_weight``: weight of the voxel-mean cross-entropy (0 = off)."""

    dice_weight: float = 1.0
    ce_weight: float = 0.0


@register
class Supervised(Method):
    name = "supervised"
    description = "V-Net on the labeled cases only: soft Dice (+ optional cross-entropy); the lower bound"
    Params = SupervisedParams
    uses_unlabeled = False

    def step(self, model: torch.nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        p: SupervisedParams = self.params  # type: ignore[assignment]
        out = model(batch.labeled_image)
        logits = softmax_logits(out["seg"], ctx.seg_form).float()
        label = batch.label
        losses = {}
        logs = {}
        if p.dice_weight:
            dice = multiclass_dice_loss(torch.softmax(logits, dim=1), label)
            losses["dice"] = p.dice_weight * dice
            logs["dice_loss"] = float(dice.detach())
        if p.ce_weight:
            ce = cross_entropy(logits, label)
            losses["ce"] = p.ce_weight * ce
            logs["ce_loss"] = float(ce.detach())
        if not losses:
            raise ValueError("supervised: dice_weight and ce_weight are both 0; nothing to train")
        return StepResult(losses=losses, logs=logs)
