"""SB-Net: shape- and boundary-aware multi-branch consistency (the boundary-aware seed paper).

The network is :class:`semisupseg.nets.sbnet.SBNet` (architecture ``"sbnet"``; see its docstring for branches A/B,
the FFM and the multi-class probability form). Per step, with ``P1..P5`` the sigmoid PSMs (``P5`` the final output),
``S`` the predicted SDM, ``Y`` the labels (one-vs-rest masks per foreground class), on the labeled patches:

* ``L_PSM = Σ_{i=1..5} Dice(P_i, Y)`` (eq. 6-7);
* ``L_SDM = mean |S - SDM(Y)| + product(S, SDM(Y))`` (eq. 3);
* ``L_boundary`` (eq. 8-11) inside the ring M_bound of :func:`semisupseg.geometry.boundary_ring` (``W_max = 20``):
  Dice restricted to the ring + the gradient-magnitude hinge with contrast factor ``κ`` (``boundary_contrast``,
  default 0.5, our choice -- the paper gives no value; see
  :func:`semisupseg.losses.shape.boundary_gradient_hinge_loss`);

on all patches (labeled and unlabeled):

* ``L_cl = ||P5 - P4||² + ||sigmoid(-1500 S) - P4||²`` (eq. 12-15, voxel means);

on the unlabeled patches:

* ``L_adv = -log D(P5_u, X_u)`` (eq. 16) with a :class:`MapImageDiscriminator` on ``(P5, image)`` trained after the
  step on the detached maps (labeled real, unlabeled fake; Adam lr 1e-4, betas (0.9, 0.99) as SASSNet's release);

and the hybrid loss ``(1 - γ)(L_PSM + 0.02 L_SDM + 0.5 L_boundary) + γ (L_cl + L_adv)`` (eq. 17),
``γ(t) = γ_max · exp(-5 (1 - t/t_max)²)``; the paper's ``γ_max = 1``, our default 0.5 (below).

Decisions where the paper is ambiguous (also listed in the docs):

* Every map is one-vs-rest sigmoid per foreground class; multi-class losses are means over the classes.
* The L1 part of eq. 3 is a voxel mean (not a sum), so the weight 0.02 does not depend on the patch size.
* The boundary loss is applied to the final map P5 only; the ring is the union of the outer and inner bands.
* The consistency terms are symmetric (no stop-gradient) and use all patches of the batch.
* The discriminator's real samples are the predicted P5 of labeled patches (as SASSNet), not ground-truth masks;
  it is frozen and in eval mode for the generator term, and its update reuses the step's maps (one forward/step).
* **Default ``γ_max = 0.5``, not the paper's 1.** With ``γ_max = 1`` the supervised part's weight ``1 - γ`` falls to 0
  at ``t = t_max``: the last tenth of the run is steered by the consistency and adversarial terms alone, and on LA
  (``labeled_16``, 1000 iterations, seed 2) the network collapsed there (labeled Dice loss 0.12 → 4.7 of 5 between
  iterations 850 and 1000, supervised weight 0.11 → 0; held-out Dice 0.024; ``benchmarks/RESULTS.md``). With 0.5
  both halves keep at least half their weight to the end. ``--set method_params.gamma_max=1`` reproduces the paper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

import torch
from torch import nn

from semisupseg.losses.adversarial import eval_mode, frozen, generator_loss
from semisupseg.losses.shape import (BOUNDARY_CONTRAST, HEAVISIDE_K, W_MAX, boundary_loss, boundary_masks,
                                     foreground_one_hot, multiscale_psm_dice_loss, psm_consistency_loss,
                                     sdm_l1_product_loss, sdm_psm_consistency_loss, sdm_targets)
from semisupseg.methods import register
from semisupseg.methods.base import Batch, MethodParams, StepContext, StepResult
from semisupseg.methods.sassnet import MapDiscriminatorMethod, follow_memory_format, update_discriminator
from semisupseg.nets.sbnet import SBNet, SBNetConfig  # noqa: F401 - importing registers the "sbnet" network
from semisupseg.schedules import gaussian_warmup


@dataclass
class SBNetParams(MethodParams):
    """SB-Net hyper-parameters (paper defaults; ``boundary_contrast`` is ours).

    ``sdm_weight`` 0.02 and ``boundary_weight`` 0.5 inside the supervised part; ``gamma_max``: amplitude of γ(t)
    (0.5; the paper's 1 lets the supervised weight reach 0 -- see the module docstring);
    ``boundary_contrast``: κ of the gradient hinge; ``w_max``: ring width bound; ``heaviside_k``: -1500;
    discriminator: ``d_lr``, ``d_beta1``, ``d_beta2``, ``d_ndf``, ``d_dropout``.
    """

    sdm_weight: float = 0.02
    boundary_weight: float = 0.5
    gamma_max: float = 0.5
    boundary_contrast: float = BOUNDARY_CONTRAST
    w_max: int = W_MAX
    heaviside_k: float = HEAVISIDE_K
    d_lr: float = 1e-4
    d_beta1: float = 0.9
    d_beta2: float = 0.99
    d_ndf: int = 64
    d_dropout: float = 0.5


def hybrid_loss_terms(gamma: float, l_psm: Optional[torch.Tensor], l_sdm: Optional[torch.Tensor],
                      l_boundary: Optional[torch.Tensor], l_cl: Optional[torch.Tensor],
                      l_adv: Optional[torch.Tensor], sdm_weight: float = 0.02,
                      boundary_weight: float = 0.5) -> Dict[str, torch.Tensor]:
    """The weighted terms of the hybrid loss ``(1-γ)(L_PSM + 0.02 L_SDM + 0.5 L_boundary) + γ(L_cl + L_adv)``;
    ``None`` terms (no labeled / no unlabeled patch in the batch) are left out."""
    sup = 1.0 - gamma
    weighted = {"psm": (sup, l_psm), "sdm": (sup * sdm_weight, l_sdm),
                "boundary": (sup * boundary_weight, l_boundary), "consistency": (gamma, l_cl),
                "adversarial": (gamma, l_adv)}
    return {k: w * v for k, (w, v) in weighted.items() if v is not None}


@register
class SBNetMethod(MapDiscriminatorMethod):
    name = "sbnet"
    description = ("SB-Net (shape- and boundary-aware multi-branch): multi-scale PSMs + SDM + feature fusion; "
                   "Dice, SDM, boundary-ring, task-consistency and adversarial losses, hybrid γ(t) weighting")
    Params = SBNetParams
    needs_sdm = True
    network_arch = "sbnet"
    #: binary preference of the engine: ``"seg"`` is the PSM5 logit itself (multi-class data uses softmax)
    seg_form: ClassVar[str] = "sigmoid"


    def gamma(self, ctx: StepContext) -> float:
        return gaussian_warmup(ctx.iteration, ctx.max_iterations, self.params.gamma_max)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        if self.discriminator is None:
            raise RuntimeError("SBNetMethod.build() must be called before step()")
        p = self.params
        nl = batch.labeled_bs
        if not self._format_checked:
            follow_memory_format(self.discriminator, model)
            self._format_checked = True
        out = model(batch.image)  # the one forward of the step
        if "psm" not in out or "psm5" not in out:
            raise ValueError("the sbnet method needs the 'sbnet' network (outputs 'psm', 'psm5', 'sdm')")
        probs = [torch.sigmoid(z.float()) for z in list(out["psm"]) + [out["psm5"]]]
        sdm = out["sdm"].float()
        p4, p5 = probs[3], probs[4]
        logs: Dict[str, float] = {}
        l_psm = l_sdm = l_bd = l_adv = None
        if nl > 0:
            labels = batch.label[:nl]
            target = foreground_one_hot(labels, ctx.num_classes)
            l_psm = multiscale_psm_dice_loss([q[:nl] for q in probs], target)
            l_sdm = sdm_l1_product_loss(sdm[:nl], sdm_targets(labels, ctx.num_classes))
            ring = boundary_masks(labels, ctx.num_classes, p.w_max)
            l_bd = boundary_loss(p5[:nl], target, ring, p.boundary_contrast)
        l_cl = psm_consistency_loss(p5, p4) + sdm_psm_consistency_loss(sdm, p4, p.heaviside_k)  # eq. 12-15
        if batch.image.shape[0] > nl:
            with frozen(self.discriminator), eval_mode(self.discriminator):
                fake = self.discriminator(p5[nl:], batch.image[nl:])
            l_adv = generator_loss(fake)
        gamma = self.gamma(ctx)
        losses = hybrid_loss_terms(gamma, l_psm, l_sdm, l_bd, l_cl, l_adv, p.sdm_weight, p.boundary_weight)
        logs["gamma"] = gamma
        for key, value in (("l_psm", l_psm), ("l_sdm", l_sdm), ("l_boundary", l_bd), ("l_cl", l_cl),
                           ("l_adv", l_adv)):
            if value is not None:
                logs[key] = float(value.detach())
        self._cache = p5.detach()
        return StepResult(losses=losses, logs=logs)

    def after_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Dict[str, float]:
        """The discriminator's update on the step's detached PSM5 maps (labeled real, unlabeled fake)."""
        maps, self._cache = self._cache, None
        return update_discriminator(self, maps, batch, ctx)


__all__ = ["SBNetMethod", "SBNetParams", "hybrid_loss_terms"]
