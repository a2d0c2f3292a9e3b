"""Entropy minimisation (Vu et al., ADVENT, CVPR 2019) as the SSL4MIS 3-D baseline runs it."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from semisupseg.losses.consistency import entropy_minimization_loss
from semisupseg.methods import register
from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult
from semisupseg.methods.mean_teacher import CONSISTENCY_ON, RAMPUPS, _check_choice, labeled_segmentation_terms, \
    ramped_weight
from semisupseg.nets import seg_probabilities


@dataclass
class EntropyMinParams(MethodParams):
    """Entropy-minimisation hyper-parameters.

    ``weight`` / ``rampup`` / ``rampup_period`` / ``rampup_length``: ``λ(t) = 0.1 · sigmoid_rampup(t // P, 40)``
    (SSL4MIS ``--consistency 0.1``; its BraTS run ramps over ``200 · 150 = 30000`` iterations = its whole run, so
    length 40 ramps over the 6000 iterations of the LA runs the same way); ``P`` = ``rampup_period``, 150 (default);
    0 = ``t_max / 40`` ends the ramp with the run at any budget (150 at 6000 iterations). ``normalize``: entropy in base C (divided
    by ``ln C``, release) or nats. ``entropy_on``: ``"unlabeled"`` (default, ADVENT's target-domain term) or
    ``"all"`` (the SSL4MIS release applies it to the whole batch). ``ce_weight``/``dice_weight``: ``0.5 (CE + Dice)``.
    """

    weight: float = 0.1
    rampup: str = "sigmoid"
    rampup_period: int = 150  # the releases; 0: scaled to the run (schedules.ramp_period)
    rampup_length: float = 40.0
    normalize: bool = True
    entropy_on: str = "unlabeled"
    ce_weight: float = 0.5
    dice_weight: float = 0.5

    def __post_init__(self) -> None:
        _check_choice(self.rampup, RAMPUPS, "rampup")
        _check_choice(self.entropy_on, CONSISTENCY_ON, "entropy_on")
        if self.rampup_period < 0:
            raise ValueError(f"rampup_period must be >= 0 (0: scaled to the run), got {self.rampup_period}")


@register
class EntropyMin(Method):
    """Entropy minimisation: push the predictions on unlabeled patches towards confident (low-entropy) ones.

    Objective (ADVENT Sec. 3.1, the direct entropy loss; SSL4MIS ``train_entropy_minimization_3D.py``)::

        L = 0.5 (CE + Dice)(f(x_l), y_l) + λ(t) · mean_v [ -Σ_c p_c(v) ln p_c(v) / ln C ],  p = softmax f(x_u)
        λ(t) = 0.1 · sigmoid_rampup(t // P, 40),  P = 150 (0: t_max / 40)

    Release behaviours kept: one forward over the two-stream batch, entropy normalised by ``ln C`` and averaged over
    voxels (``losses.entropy_loss``), weight ramped on ``iter // 150``, gradients flow through the entropy into the
    network (no detaching).

    Deviations: the release applies the entropy to the **whole** batch (labeled patches included); we default to
    the unlabeled patches, as the method (and the issue) define it — ``entropy_on="all"`` restores the release.
    The release's ``ln(p + 1e-6)`` is computed exactly (difference < ``C · 1e-6``). The ramp length is 40 (periods
    of 150 iterations) rather than SSL4MIS's 200, because both end the ramp at the end of the run (6000 vs 30000
    iterations). The supervised Dice is the UA-MT release's foreground Dice (SSL4MIS's ``DiceLoss`` also averages the
    background class in), so that every baseline shares one supervised term and differs only in its unlabeled term.

    Loss terms: ``ce``, ``dice``, ``entropy`` (weighted λ(t)); logs ``entropy_raw``, ``entropy_weight``.
    """

    name = "entropy-min"
    description = "Entropy minimisation on unlabeled predictions (ADVENT / SSL4MIS baseline)"
    Params = EntropyMinParams

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        p = self.params
        out = model(batch.image)
        lb = batch.labeled_bs
        losses, logs = labeled_segmentation_terms(out["seg"][:lb], batch.label, ctx.seg_form,
                                                  p.ce_weight, p.dice_weight)
        prob = seg_probabilities(out["seg"], ctx.seg_form)
        target = prob if p.entropy_on == "all" else prob[lb:]
        ent = entropy_minimization_loss(target, p.normalize) if target.shape[0] else prob.new_zeros(())
        weight = ramped_weight(ctx.iteration, ctx.max_iterations, p.weight, p.rampup, p.rampup_period,
                               p.rampup_length)
        losses["entropy"] = weight * ent
        logs["entropy_raw"] = float(ent.detach())
        logs["entropy_weight"] = weight
        return StepResult(losses=losses, logs=logs)
