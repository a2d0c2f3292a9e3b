"""Voxel-wise adversarial semi-supervised learning (Lee, Park, Shin, Chung, "Voxel-wise Adversarial Semi-supervised
Learning for Medical Image Segmentation", arXiv 2205.06987).

Mean-teacher V-Net (the engine keeps the EMA teacher) plus three voxel-wise parts built on multi-resolution features
(:class:`semisupseg.nets.voxel_features.MultiScaleVoxelFeatures`: encoder stages → 1x1 conv to a common width →
trilinear upsampling to the mask resolution → add → 1x1 conv + ReLU):

* **Pseudo labels** of the unlabeled voxels: the teacher's argmax where its max probability exceeds ``t`` (0.7).
* **Voxel-wise feature discriminator** (:class:`~semisupseg.nets.voxel_features.VoxelDiscriminator`): sampled voxel
  features → 2 MLP layers → the head of the voxel's class (ground truth on labeled, pseudo label on unlabeled);
  labeled voxels are "real", unlabeled "fake". The discriminator is trained in :meth:`VoxelAdversarial.after_step` with
  its own Adam (lr 2e-4, betas (0.5, 0.999)) on the detached features of the step (no second forward) with the mean
  BCE over all sampled voxels (:func:`semisupseg.losses.adversarial.discriminator_loss`); the segmenter's adversarial
  term ``L_adv = -mean log D(f_u)`` on the unlabeled voxels (:func:`~semisupseg.losses.adversarial.generator_loss`,
  through a frozen discriminator), weight α = 0.01.
* **Voxel-wise representation learning** (BYOL): ``K`` voxels per class sampled from the labeled patches by their
  ground truth; student projection ``z_s = g(f_s)`` and prediction ``q(z_s)``, teacher projection ``z_t = g_t(f_t)``
  of the teacher's (noisy-input) features at the same voxels; ``L_feature = mean ||q(z_s)/|q(z_s)| - z_t/|z_t| ||²``
  (= 2 - 2 cos), weight β = 0.1 (LA). The features are upsampled to the mask resolution (never masks downsampled).

``L_total = L_dice + α L_adv + β L_feature + γ(t) L_c`` with ``L_c`` the mean-teacher MSE between the student's and the
teacher's softmax on the unlabeled patches and ``γ(t) = 0.001 · exp(-5 (1 - t / t_max)^2)``
(:func:`semisupseg.schedules.gaussian_warmup`). ``L_dice`` is the foreground soft Dice on the labeled patches.

Design decisions (the paper leaves them open or the engine API shapes them):

* **Bounded memory**: ``samples_per_class`` (256) voxels per class per step for each of the labeled set (GT classes;
  used for BYOL and as the discriminator's real samples) and the unlabeled set (confident pseudo classes; fake
  samples), drawn without replacement (all voxels of a class when it has fewer) with ``ctx.generator``. The fused
  features are evaluated only at those voxels (the fusion is pointwise and linear, so sampling before the 1x1
  convolutions is exact): at most ``2 · C · 256`` feature vectors of width 64 per step, no full-resolution fused map.
* **Encoder stages**: the paper fuses four encoder stages; the V-Net has five. Default stages 2-5 (scales 1/2..1/16,
  the deepest carrying the global context); ``feature_stages`` selects others.
* **Teacher projection head**: the engine's EMA covers only the segmenter, so the method keeps an EMA copy of its
  fusion module and projector (``teacher_fusion``, ``teacher_projector``) updated in :meth:`after_step` with the
  engine's functions and rule (:func:`semisupseg.training.ema.ema_decay_at`: ``min(1 - 1/(t + 1), ema_decay)`` at the
  0-based step t; BN buffers kept as the engine's teacher keeps them). The teacher
  network's features go through this EMA head, as BYOL's target network.
* **Method-owned heads**: the fusion module, projector and predictor receive gradients from the engine's backward (of
  ``α L_adv + β L_feature``) and are stepped in :meth:`after_step` by their own SGD (lr 0.01, momentum 0.9, weight
  decay 1e-4, the V-Net releases' settings, constant lr). ``L_adv`` passes through a frozen discriminator and the
  discriminator's gradients are reset before its own update, so only ``L_D`` trains it; only the segmenter's
  optimiser moves the segmenter.
* Teacher input noise ``clip(N(0, 0.1²), ±0.2)`` as the mean-teacher releases; teacher forward in BN train mode
  (release behaviour; ``teacher_mode="eval"`` selectable).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from semisupseg.losses.adversarial import discriminator_accuracy, discriminator_loss, frozen, generator_loss
from semisupseg.losses.consistency import mean_teacher_consistency
from semisupseg.losses.segmentation import multiclass_dice_loss
from semisupseg.methods import register
from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult
from semisupseg.methods.mean_teacher import teacher_input_noise
from semisupseg.nets.vnet import softmax_logits
from semisupseg.nets.voxel_features import MLPHead, MultiScaleVoxelFeatures, VoxelDiscriminator, vnet_stage_channels
from semisupseg.runtime import make_optimizer
from semisupseg.schedules import consistency_weight
from semisupseg.training.ema import ema_decay_at, ema_update


@dataclass
class VWAdvParams(MethodParams):
    """Voxel-wise adversarial method hyper-parameters (paper defaults for LA)."""

    #: α, weight of the adversarial term
    alpha: float = 0.01
    #: β, weight of the BYOL voxel representation term (LA)
    beta: float = 0.1
    #: amplitude of γ(t)
    consistency: float = 0.001
    #: γ(t) ramp: "gaussian" (0.001·exp(-5(1-t/tmax)^2)), "sigmoid" (release style) or "constant"
    rampup: str = "gaussian"
    rampup_period: int = 150  # the releases; 0: scaled to the run (schedules.ramp_period)
    rampup_length: float = 40.0
    #: pseudo-label confidence threshold t
    confidence: float = 0.7
    #: voxels sampled per class per step (labeled and unlabeled each)
    samples_per_class: int = 256
    #: 1-based V-Net encoder stages fused into voxel features
    feature_stages: Tuple[int, ...] = (2, 3, 4, 5)
    fusion_width: int = 64
    proj_hidden: int = 64
    proj_dim: int = 64
    disc_hidden: int = 64
    disc_lr: float = 2e-4
    disc_beta1: float = 0.5
    disc_beta2: float = 0.999
    head_lr: float = 0.01
    head_momentum: float = 0.9
    head_weight_decay: float = 1e-4
    #: EMA decay cap of the teacher projection head; ``None`` follows the engine's ``ema_decay`` (ctx.ema_decay)
    ema_decay: Optional[float] = None
    #: BN buffers of the EMA head: "keep" (its own, as the engine's teacher), "copy" or "ema"
    ema_buffers: str = "keep"
    noise_std: float = 0.1
    noise_clip: float = 0.2
    teacher_mode: str = "train"

    def __post_init__(self) -> None:
        self.feature_stages = tuple(int(s) for s in self.feature_stages)
        if not self.feature_stages:
            raise ValueError("feature_stages must name at least one encoder stage")
        if self.samples_per_class < 2:
            raise ValueError(f"samples_per_class must be >= 2, got {self.samples_per_class}")
        if not 0.0 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0, 1), got {self.confidence}")
        if self.teacher_mode not in ("train", "eval"):
            raise ValueError(f"teacher_mode must be 'train' or 'eval', got {self.teacher_mode!r}")


# --- the method's equations, each written once ---------------------------------------------------------------------
def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss ``mean_i || p_i/|p_i| - z_i/|z_i| ||²`` (= 2 - 2 cos) of ``(N, D)`` student predictions
    and ``(N, D)`` teacher projections (pass the target detached)."""
    p = F.normalize(prediction.float(), dim=1)
    z = F.normalize(target.float(), dim=1)
    return ((p - z) ** 2).sum(dim=1).mean()


def sample_class_voxels(labels: torch.Tensor, num_classes: int, per_class: int, generator: torch.Generator,
                        valid: Optional[torch.Tensor] = None,
                        batch_offset: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced voxel sample of a ``(B, Z, Y, X)`` label map: up to ``per_class`` voxels of every class (all of
    them when fewer), only where ``valid`` (bool, same shape) is True. Returns ``index`` ``(N, 4)`` = (b + offset,
    z, y, x) int64 and ``classes`` ``(N,)``."""
    idx_parts, cls_parts = [], []
    for c in range(num_classes):
        mask = labels == c
        if valid is not None:
            mask = mask & valid
        where = torch.nonzero(mask)
        n = where.shape[0]
        if n == 0:
            continue
        if n > per_class:
            pick = torch.randperm(n, generator=generator, device=generator.device)[:per_class].to(where.device)
            where = where[pick]
        idx_parts.append(where)
        cls_parts.append(torch.full((where.shape[0],), c, dtype=torch.long, device=where.device))
    if not idx_parts:
        return (torch.zeros((0, 4), dtype=torch.long, device=labels.device),
                torch.zeros((0,), dtype=torch.long, device=labels.device))
    index = torch.cat(idx_parts, dim=0)
    index[:, 0] += batch_offset
    return index, torch.cat(cls_parts, dim=0)


@register
class VoxelAdversarial(Method):
    name = "vwadv"
    description = ("Voxel-wise adversarial semi-supervised learning (Lee et al.): mean teacher + class-specific "
                   "voxel feature discriminator + voxel-wise BYOL on multi-resolution features")
    Params = VWAdvParams
    uses_teacher = True
    network_arch = "vnet"

    def __init__(self, params: Optional[VWAdvParams] = None):
        super().__init__(params)
        self.num_classes = 0
        self._pending: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = None

    def build(self, model: nn.Module, num_classes: int, in_channels: int) -> None:
        p = self.params
        config = getattr(model, "config", None)
        n_filters = getattr(config, "n_filters", None)
        if n_filters is None:
            raise ValueError("vwadv needs a V-Net (model.config.n_filters and forward(features=True))")
        self.num_classes = int(num_classes)
        channels = vnet_stage_channels(n_filters, p.feature_stages, getattr(config, "max_filters", None))
        self.fusion = MultiScaleVoxelFeatures(channels, p.fusion_width)
        self.projector = MLPHead(p.fusion_width, p.proj_hidden, p.proj_dim)
        self.predictor = MLPHead(p.proj_dim, p.proj_hidden, p.proj_dim)
        self.discriminator = VoxelDiscriminator(p.fusion_width, num_classes, p.disc_hidden)
        self.teacher_fusion = copy.deepcopy(self.fusion)
        self.teacher_projector = copy.deepcopy(self.projector)
        for prm in list(self.teacher_fusion.parameters()) + list(self.teacher_projector.parameters()):
            prm.requires_grad_(False)
        self.add_optimizer("discriminator", make_optimizer(
            torch.optim.Adam, self.discriminator.parameters(), lr=p.disc_lr, betas=(p.disc_beta1, p.disc_beta2)))
        self.add_optimizer("heads", make_optimizer(
            torch.optim.SGD, list(self.fusion.parameters()) + list(self.projector.parameters()) + list(self.predictor.parameters()),
            lr=p.head_lr, momentum=p.head_momentum, weight_decay=p.head_weight_decay))

    def _student_heads(self) -> Sequence[nn.Module]:
        return (self.fusion, self.projector, self.predictor)

    def _stage_features(self, encoder: Sequence[torch.Tensor]) -> list:
        return [encoder[s - 1] for s in self.params.feature_stages]

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        p = self.params
        if ctx.teacher is None:
            raise RuntimeError("vwadv needs the engine's EMA teacher (uses_teacher) but ctx.teacher is None")
        if not hasattr(self, "fusion"):
            raise RuntimeError("vwadv: build() was not called")
        n_l = batch.labeled_bs
        x = batch.image
        full_shape = tuple(x.shape[2:])

        out = model(x, features=True)
        logits = softmax_logits(out["seg"], ctx.seg_form)
        prob = torch.softmax(logits.float(), dim=1)
        s_feats = self._stage_features(out["encoder"])

        teacher = ctx.teacher
        was_training = teacher.training
        teacher.train(p.teacher_mode == "train")
        try:
            with torch.no_grad():
                t_in = x + teacher_input_noise(x, ctx.generator, p.noise_std, p.noise_clip) if p.noise_std > 0 else x
                t_out = teacher(t_in, features=True)
                t_prob = torch.softmax(softmax_logits(t_out["seg"], ctx.seg_form).float(), dim=1)
                t_feats = self._stage_features(t_out["encoder"])
        finally:
            teacher.train(was_training)

        loss_dice = multiclass_dice_loss(prob[:n_l], batch.label)
        loss_c = mean_teacher_consistency(prob[n_l:], t_prob[n_l:]) if x.shape[0] > n_l else prob.sum() * 0.0

        # voxel sampling: labeled by ground truth, unlabeled by confident teacher pseudo labels
        with torch.no_grad():
            conf, pseudo = t_prob[n_l:].max(dim=1)
            confident = conf > p.confidence
        idx_l, cls_l = sample_class_voxels(batch.label, self.num_classes, p.samples_per_class, ctx.generator)
        idx_u, cls_u = sample_class_voxels(pseudo, self.num_classes, p.samples_per_class, ctx.generator,
                                           valid=confident, batch_offset=n_l)
        feats = self.fusion.sample(s_feats, torch.cat([idx_l, idx_u], dim=0), full_shape)
        f_l, f_u = feats[:idx_l.shape[0]], feats[idx_l.shape[0]:]

        if f_u.shape[0]:
            with frozen(self.discriminator):  # L_adv reaches the segmenter through D, never D's weights
                loss_adv = generator_loss(self.discriminator(f_u, cls_u))
        else:
            loss_adv = feats.sum() * 0.0  # no confident unlabeled voxel this step

        if f_l.shape[0] >= 2:
            prediction = self.predictor(self.projector(f_l))
            with torch.no_grad():
                t_f = self.teacher_fusion.sample(t_feats, idx_l, full_shape)
                target = self.teacher_projector(t_f)
            loss_feat = byol_loss(prediction, target)
        else:
            loss_feat = feats.sum() * 0.0
        self._pending = (f_l.detach(), cls_l, f_u.detach(), cls_u)

        gamma = consistency_weight(ctx.iteration, p.consistency, p.rampup, ctx.max_iterations,
                                   p.rampup_period, p.rampup_length)
        logs = {
            "dice": float(loss_dice.detach()), "loss_adv": float(loss_adv.detach()),
            "loss_feature": float(loss_feat.detach()), "loss_consistency": float(loss_c.detach()),
            "gamma_t": gamma, "confident_fraction": float(confident.float().mean()) if confident.numel() else 0.0,
            "samples_labeled": float(idx_l.shape[0]), "samples_unlabeled": float(idx_u.shape[0]),
        }
        losses = {"dice": loss_dice, "adversarial": p.alpha * loss_adv, "feature": p.beta * loss_feat,
                  "consistency": gamma * loss_c}
        return StepResult(losses=losses, logs=logs)

    def after_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Dict[str, float]:
        p = self.params
        logs: Dict[str, float] = {}
        # 1) the method-owned feature heads, with the gradients of the engine's backward
        for module in self._student_heads():
            for prm in module.parameters():
                if prm.grad is None:
                    prm.grad = torch.zeros_like(prm)  # every process reduces the same tensors under DDP
            ctx.all_reduce_grads(module)
        heads = self._optimizers["heads"]
        heads.step()
        heads.zero_grad(set_to_none=True)

        # 2) the discriminator, on the step's detached features only (its gradients from L_adv are discarded)
        disc_opt = self._optimizers["discriminator"]
        disc_opt.zero_grad(set_to_none=True)
        if self._pending is not None:
            f_l, cls_l, f_u, cls_u = self._pending
            self._pending = None
            with ctx.autocast():
                real = self.discriminator(f_l, cls_l)
                fake = self.discriminator(f_u, cls_u)
            if real.numel() + fake.numel():
                loss_d = discriminator_loss(real, fake)
                loss_d.backward()
                logs["loss_d"] = float(loss_d.detach())
                logs["d_accuracy"] = discriminator_accuracy(real, fake)
            for prm in self.discriminator.parameters():
                if prm.grad is None:
                    prm.grad = torch.zeros_like(prm)
            ctx.all_reduce_grads(self.discriminator)
            disc_opt.step()

        # 3) EMA of the teacher's projection head (same rule as the engine's teacher)
        decay = ema_decay_at(ctx.iteration, ctx.ema_decay if p.ema_decay is None else p.ema_decay)
        ema_update(self.teacher_fusion, self.fusion, decay, p.ema_buffers)
        ema_update(self.teacher_projector, self.projector, decay, p.ema_buffers)
        return logs


__all__ = ["VoxelAdversarial", "VWAdvParams", "byol_loss", "sample_class_voxels"]
