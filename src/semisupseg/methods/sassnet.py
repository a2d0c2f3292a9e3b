"""SASSNet: shape-aware semi-supervised segmentation (Li, Zhang, He, MICCAI 2020; release kleinzcy/SASSnet).

A V-Net with a segmentation head and a ``tanh`` signed-distance-map head (one channel per foreground class) is trained
with

* the supervised loss on labeled patches ``L_s = Dice(M, Y) + α · MSE(S, SDM(Y))``, ``α = 0.3``;
* an adversarial loss on the predicted SDMs: a discriminator ``D`` (:class:`MapImageDiscriminator`) sees
  ``(S, X)`` pairs and learns to tell labeled (real) from unlabeled (fake) patches (eq. 5); the segmenter minimises
  the non-saturating surrogate ``-log D(S_u, X_u)`` on the **unlabeled** patches only (eq. 6), weighted by
  ``β(t) = 0.001 · exp(-5 (1 - t/t_max)²)`` (paper) or, with ``beta_rampup="sigmoid"``, the release's
  ``β · sigmoid_rampup(t // 150, 40)`` (the release uses ``β = 0.01`` for 16 labeled scans, 0.015 for 8).

``D`` is trained after the segmenter's optimiser step with Adam (lr 1e-4, betas (0.9, 0.99) as in the release).

Implementation notes and deviations:

* **One forward per step.** The segmenter is run once over the whole two-stream batch. The discriminator's update
  (:meth:`after_step`) reuses the SDMs of that forward (detached). The release runs a second, no-grad forward of
  the freshly updated model in eval mode for the discriminator step; ours sees the maps from just before the
  segmenter's update (one step older, train-mode BN). This saves a full forward per step; ``d_fresh_maps=true``
  does as the release does.
* The generator term is computed with ``D`` frozen (its parameters do not require gradients, so the segmenter's
  backward neither computes nor accumulates discriminator gradients) and in eval mode (no dropout), as the release
  does (``D.eval()`` for the segmenter's update).
* Real samples are the *predicted* SDMs of the labeled patches (paper and release), not the ground-truth SDMs.
* ``D`` has a single logit (equivalent to the release's two-way softmax) and global average pooling (any patch size).
* Multi-class: the SDM head and the discriminator's map input have ``C - 1`` channels (one per foreground class); the
  Dice term is the mean over the foreground classes.
* SDM targets of a class absent from a labeled patch are +1 everywhere (``geometry``'s "saturate" convention), not
  the release's zeros, so the target agrees with the empty label (see :func:`semisupseg.losses.shape.sdm_targets`).
* The release builds its V-Net with dropout (``has_dropout=True``), so ``needs_dropout`` is set.
* Losses are computed in float32 (the engine's bf16 autocast covers the network and discriminator convolutions).

Test time: the segmentation output (``out["seg"]``), optionally with largest-component post-processing ("NMS").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

import torch
from torch import nn

from semisupseg.losses.adversarial import (discriminator_accuracy, discriminator_loss, eval_mode, frozen,
                                           generator_loss)
from semisupseg.losses.segmentation import multiclass_dice_loss
from semisupseg.losses.shape import sdm_mse_loss, sdm_targets
from semisupseg.methods import register
from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult
from semisupseg.nets.discriminators import DiscriminatorConfig, MapImageDiscriminator
from semisupseg.nets.vnet import seg_probabilities
from semisupseg.runtime import make_optimizer
from semisupseg.schedules import consistency_weight

RAMPUPS = ("gaussian", "sigmoid", "constant")


@dataclass
class SASSNetParams(MethodParams):
    """SASSNet hyper-parameters (paper defaults).

    ``alpha``: weight of the SDM regression (0.3); ``beta``: amplitude of the adversarial weight (0.001 with the
    paper's Gaussian warm-up; the release uses 0.01/0.015 with ``beta_rampup="sigmoid"``); ``beta_rampup``:
    ``"gaussian"`` (paper, ``β exp(-5 (1 - t/t_max)^2)``), ``"sigmoid"`` (release, ``β sigmoid_rampup(t //
    rampup_period, rampup_length)``) or ``"constant"``; ``d_lr``, ``d_beta1``, ``d_beta2``: the discriminator's Adam;
    ``d_ndf``: discriminator width (64); ``d_dropout``: its Dropout3d probability (0.5); ``d_fresh_maps``: the
    discriminator learns from the maps of a second, no-grad forward of the just-updated segmenter in eval mode, as
    the release does (one more forward per step), instead of the step's own maps.
    """

    alpha: float = 0.3
    beta: float = 0.001
    beta_rampup: str = "gaussian"
    rampup_period: int = 150  # the releases; 0: scaled to the run (schedules.ramp_period)
    rampup_length: float = 40.0
    d_lr: float = 1e-4
    d_beta1: float = 0.9
    d_beta2: float = 0.99
    d_ndf: int = 64
    d_dropout: float = 0.5
    d_fresh_maps: bool = False

    def __post_init__(self) -> None:
        if self.beta_rampup not in RAMPUPS:
            raise ValueError(f"beta_rampup must be one of {RAMPUPS}, got {self.beta_rampup!r}")


def supervised_shape_loss(prob: torch.Tensor, labels: torch.Tensor, sdm: torch.Tensor, sdm_gt: torch.Tensor,
                          alpha: float):
    """SASSNet's supervised loss ``L_s = L_Dice + α L_sdf`` (Sec. 2.2); returns ``(dice, mse)`` unweighted."""
    return multiclass_dice_loss(prob.float(), labels), sdm_mse_loss(sdm, sdm_gt)


class MapDiscriminatorMethod(Method):
    """Base of the methods with a (map, image) discriminator (SASSNet, SB-Net): builds it and its Adam optimiser
    from the params' ``d_ndf``, ``d_dropout``, ``d_lr``, ``d_beta1``, ``d_beta2``; the subclass's ``step`` leaves the
    detached maps in ``self._cache`` for :func:`update_discriminator` in ``after_step``."""

    def __init__(self, params: Optional[MethodParams] = None):
        super().__init__(params)
        self.discriminator: Optional[MapImageDiscriminator] = None
        self._cache: Optional[torch.Tensor] = None
        self._format_checked = False

    def build(self, model: nn.Module, num_classes: int, in_channels: int) -> None:
        p = self.params
        self.discriminator = MapImageDiscriminator(DiscriminatorConfig(
            map_channels=num_classes - 1, image_channels=in_channels, ndf=p.d_ndf, dropout=p.d_dropout))
        self.add_optimizer("discriminator", make_optimizer(
            torch.optim.Adam, self.discriminator.parameters(), lr=p.d_lr, betas=(p.d_beta1, p.d_beta2)))


@register
class SASSNet(MapDiscriminatorMethod):
    name = "sassnet"
    description = ("SASSNet (Li et al. MICCAI 2020): V-Net + SDM head; Dice + 0.3 SDM-MSE on labeled data and an "
                   "adversarial SDM discriminator (labeled real, unlabeled fake)")
    Params = SASSNetParams
    needs_sdm = True
    needs_dropout = True
    #: binary preference of the engine: the release's single foreground logit (multi-class data uses softmax)
    seg_form: ClassVar[str] = "sigmoid"


    def adversarial_weight(self, ctx: StepContext) -> float:
        """β(t) as selected by ``beta_rampup``."""
        p = self.params
        return consistency_weight(ctx.iteration, p.beta, p.beta_rampup, ctx.max_iterations,
                                  rampup_period=p.rampup_period, rampup_length=p.rampup_length)

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        if self.discriminator is None:
            raise RuntimeError("SASSNet.build() must be called before step()")
        p = self.params
        nl = batch.labeled_bs
        if not self._format_checked:
            follow_memory_format(self.discriminator, model)
            self._format_checked = True
        out = model(batch.image)  # the one forward of the step, labeled and unlabeled together
        if "sdm" not in out:
            raise ValueError("SASSNet needs a model with an SDM head (build it with sdm_head=True)")
        seg, sdm = out["seg"], out["sdm"]
        losses: Dict[str, torch.Tensor] = {}
        logs: Dict[str, float] = {}
        if nl > 0:
            prob = seg_probabilities(seg[:nl].float(), ctx.seg_form)
            sdm_gt = sdm_targets(batch.label[:nl], ctx.num_classes)
            dice, mse = supervised_shape_loss(prob, batch.label[:nl], sdm[:nl], sdm_gt, p.alpha)
            losses["dice"] = dice
            losses["sdm"] = p.alpha * mse
            logs.update(dice=float(dice.detach()), sdm_mse=float(mse.detach()))
        beta = self.adversarial_weight(ctx)
        logs["beta"] = beta
        if batch.image.shape[0] > nl:
            with frozen(self.discriminator), eval_mode(self.discriminator):
                fake = self.discriminator(sdm[nl:], batch.image[nl:])
            adv = generator_loss(fake)
            losses["adversarial"] = beta * adv
            logs["adv"] = float(adv.detach())
        self._cache = sdm.detach().float()
        return StepResult(losses=losses, logs=logs)

    def after_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Dict[str, float]:
        """The discriminator's update on the step's (detached) SDMs, or with ``d_fresh_maps`` on those of the
        just-updated segmenter in eval mode (the release): labeled real, unlabeled fake (eq. 5)."""
        maps, self._cache = self._cache, None
        if maps is not None and self.params.d_fresh_maps:
            with torch.no_grad(), eval_mode(model), ctx.autocast():
                maps = model(batch.image)["sdm"].float()
        return update_discriminator(self, maps, batch, ctx)


def follow_memory_format(module: nn.Module, model: nn.Module) -> None:
    """Put ``module`` in ``channels_last_3d`` when the engine put ``model`` there (its bf16 CPU fast path), so the
    discriminator's convolutions take the same fast kernels (about 20% faster here). Decided from a 5-D weight with
    more than one input channel (single-channel tensors look contiguous in both formats)."""
    net = getattr(model, "module", model)  # DDP wraps the network
    weight = next((p for p in net.parameters() if p.dim() == 5 and p.shape[1] > 1), None)
    if weight is not None and not weight.is_contiguous() and weight.is_contiguous(
            memory_format=torch.channels_last_3d):
        module.to(memory_format=torch.channels_last_3d)


def update_discriminator(method: Method, maps: Optional[torch.Tensor], batch: Batch,
                         ctx: StepContext) -> Dict[str, float]:
    """One Adam step of ``method.discriminator`` on detached ``maps`` ``(B, K, ...)`` of a two-stream batch: the
    labeled part is real, the unlabeled part fake. Skipped (empty logs) when either part is missing."""
    nl = batch.labeled_bs
    if maps is None or nl == 0 or maps.shape[0] <= nl:
        return {}
    disc: nn.Module = method.discriminator  # type: ignore[assignment]
    opt = method.optimizers["discriminator"]
    disc.train()
    with ctx.autocast():
        logits = disc(maps, batch.image)
    logits = logits.float()
    loss = discriminator_loss(logits[:nl], logits[nl:])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    ctx.all_reduce_grads(disc)
    opt.step()
    return {"d_loss": float(loss.detach()), "d_acc": discriminator_accuracy(logits[:nl], logits[nl:])}


__all__ = ["SASSNet", "SASSNetParams", "supervised_shape_loss", "update_discriminator", "follow_memory_format"]
