"""DTC: dual-task consistency (Luo et al., AAAI 2021; release ``HiLab-git/DTC`` ``code/train_la_dtc.py``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from semisupseg.losses.consistency import dual_task_consistency
from semisupseg.losses.shape import sdm_mse_loss, sdm_targets
from semisupseg.methods import register
from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult
from semisupseg.methods.mean_teacher import CONSISTENCY_ON, RAMPUPS, _check_choice, labeled_segmentation_terms, \
    ramped_weight
from semisupseg.nets import seg_probabilities


@dataclass
class DTCParams(MethodParams):
    """DTC hyper-parameters (defaults: the release's LA settings).

    ``beta`` 0.3: weight of the SDM regression ``L_LSF`` (``--beta 0.3``). ``consistency`` 1.0 with
    ``consistency_rampup`` ``"sigmoid"``, ``rampup_period`` 150 (the release; 0 = ``t_max / 40``, the same at 6000
    iterations), ``rampup_length`` 40: ``λ_d(t) = 1.0 · sigmoid_rampup(t // P, 40)`` (``--consistency 1.0 --consistency_rampup 40``; ``"gaussian"`` selects the
    paper's ``exp(-5 (1 - t/t_max)^2)`` over the run). ``heaviside_k`` -1500: ``sigmoid(-1500 · SDM)``.
    ``consistency_on``: ``"all"`` (release and paper: labeled and unlabeled) or ``"unlabeled"``.
    ``dice_weight`` 1 / ``ce_weight`` 0: the release's supervised term is Dice only (it computes the BCE but does
    not add it); ``ce_weight=0.5, dice_weight=0.5`` gives the ``(CE + Dice)/2`` of the other baselines.
    """

    beta: float = 0.3
    consistency: float = 1.0
    consistency_rampup: str = "sigmoid"
    rampup_period: int = 150  # the releases; 0: scaled to the run (schedules.ramp_period)
    rampup_length: float = 40.0
    heaviside_k: float = -1500.0
    consistency_on: str = "all"
    dice_weight: float = 1.0
    ce_weight: float = 0.0

    def __post_init__(self) -> None:
        _check_choice(self.consistency_rampup, RAMPUPS, "consistency_rampup")
        _check_choice(self.consistency_on, CONSISTENCY_ON, "consistency_on")
        if self.rampup_period < 0:
            raise ValueError(f"rampup_period must be >= 0 (0: scaled to the run), got {self.rampup_period}")


@register
class DTC(Method):
    """Dual-task consistency between the segmentation head and the Heaviside of the signed-distance head.

    Equations (Luo et al. 2021)::

        T(x) = normalised signed distance to the object surface (negative inside, 0 on it, positive outside)   (1)
        T^-1(z) = sigmoid(k z),  k = -1500 for our sign convention                                         (2)
        L_DTC = mean_{x in labeled ∪ unlabeled} (f_1(x) - T^-1(f_2(x)))^2                                 (3)
        L = Dice(f_1(x_l), y_l) + β · MSE(f_2(x_l), T(y_l)) + λ_d(t) · L_DTC,   β = 0.3                    (4)
        λ_d(t) = 1.0 · sigmoid_rampup(t // P, 40),  P = 150 (0: t_max / 40)

    ``f_1`` are the foreground class probabilities of the segmentation head, ``f_2`` the tanh SDM head (one channel
    per foreground class). The model needs the SDM head (``needs_sdm``); both head forms work: the release's binary
    sigmoid form (one logit, ``p = sigmoid(z)``) and the softmax form (``C`` channels; the multi-class case compares
    each foreground class with its own SDM channel).

    Release behaviours kept: one forward over the two-stream batch; the SDM targets of the labeled patches computed
    on the CPU every step (voxel units, inside and outside normalised separately by their maxima, as
    ``compute_sdf``; shared :func:`semisupseg.losses.shape.sdm_targets`); the supervised term is Dice + 0.3 · SDM
    MSE (no cross-entropy); the consistency covers every voxel of every patch; the V-Net is built with dropout
    (``has_dropout=True`` in the release, hence ``needs_dropout``); weight ramp on ``iter // 150`` (``rampup_period=0``: ``iter // (t_max / 40)``, equal at 6000 iterations).

    Deviations: a labeled patch without a foreground class gets an SDM target of +1 everywhere (the shared
    ``geometry`` convention: its Heaviside is background, as the label says) where the release's ``compute_sdf``
    returns zeros (Heaviside 0.5); a patch filled by one class gets -1 (the release divides 0 by 0). These patches are
    rare with the release's 112x112x80 crops of LA. The multi-class generalisation averages Dice, SDM MSE and
    ``L_DTC`` over the foreground classes (identical to the release for two classes).

    Loss terms: ``dice`` (and ``ce`` when ``ce_weight > 0``), ``sdm`` (weighted β), ``consistency`` (weighted
    λ_d(t)); logs carry the unweighted values (``*_raw``) and ``consistency_weight``.
    """

    name = "dtc"
    description = "DTC: dual-task consistency between segmentation and sigmoid(-1500 SDM), SDM head (Luo 2021)"
    Params = DTCParams
    needs_sdm = True
    needs_dropout = True
    #: the release's binary head form (one sigmoid logit); the engine falls back to softmax for more classes
    seg_form: ClassVar[str] = "sigmoid"

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        p = self.params
        out = model(batch.image)
        if "sdm" not in out:
            raise RuntimeError("method 'dtc' needs a network with the SDM head (sdm_head=True); the model returned "
                               f"only {sorted(out)}")
        lb = batch.labeled_bs
        sdm = out["sdm"]
        losses, logs = labeled_segmentation_terms(out["seg"][:lb], batch.label, ctx.seg_form,
                                                  p.ce_weight, p.dice_weight)
        target = sdm_targets(batch.label, ctx.num_classes)  # (L, C-1, Z, Y, X), eq. (1), no gradient
        sdm_loss = sdm_mse_loss(sdm[:lb], target)
        losses["sdm"] = p.beta * sdm_loss
        prob = seg_probabilities(out["seg"], ctx.seg_form)
        part = slice(0, prob.shape[0]) if p.consistency_on == "all" else slice(lb, prob.shape[0])
        if prob[part].shape[0]:
            dist = dual_task_consistency(prob[part], sdm[part], p.heaviside_k)  # eq. (3)
        else:
            dist = prob.new_zeros(())
        weight = ramped_weight(ctx.iteration, ctx.max_iterations, p.consistency, p.consistency_rampup,
                               p.rampup_period, p.rampup_length)
        losses["consistency"] = weight * dist
        logs.update({"sdm_raw": float(sdm_loss.detach()), "consistency_raw": float(dist.detach()),
                     "consistency_weight": weight})
        return StepResult(losses=losses, logs=logs)
