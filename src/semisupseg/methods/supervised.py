"""``supervised``: the fully supervised V-Net baseline trained on the labeled cases only.

The papers' lower bound ("V-Net, 16 labeled"). Here: soft Dice on the labeled patches (Milletari et al. 2016;
foreground classes, as the releases' ``dice_loss``), optionally with voxel cross-entropy, a V-Net without dropout,
and ``labeled_batch_size`` labeled patches per step (unlabeled data are not used). The releases' supervised V-Net
(UA-MT ``code/train_LA.py``, which DTC and SASSNet quote) differs in three settings, each a flag:
``0.5 (CE + Dice)`` (``--set method_params.ce_weight=0.5 --set method_params.dice_weight=0.5``), dropout
(``--set 'model.extra={dropout: true}'``) and 4 labeled patches per step (``--batch-size 4
--labeled-batch-size 4``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from semisupseg.methods import register
from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult
from semisupseg.methods.mean_teacher import labeled_segmentation_terms


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
        if not (p.dice_weight or p.ce_weight):
            raise ValueError("supervised: dice_weight and ce_weight are both 0; nothing to train")
        out = model(batch.labeled_image)
        # the same labeled term (and the same ``dice_raw``/``ce_raw`` logs) as every semi-supervised baseline
        losses, logs = labeled_segmentation_terms(out["seg"], batch.label, ctx.seg_form,
                                                  ce_weight=p.ce_weight, dice_weight=p.dice_weight)
        return StepResult(losses=losses, logs=logs)
