"""SGRS-Net: Synergy-Guided Regional Supervision of pseudo labels (Wang, Zhang, Chen, Zhou, Zhao, Tan, Tong,
MICCAI 2025; release ``ortonwang/SGRS-Net`` ``code/train.py``).

One step (labeled ``L``, unlabeled ``U``; the engine keeps the EMA teacher):

1. Pseudo labels ``Y = argmax teacher(Ũ)`` with ``Ũ = U + clip(N(0, σ²), ±c)`` (σ = 0.1, c = 0.2 as the release).
2. Mix augmentation: ``U_M = λ Ũ + (1 - λ) L̃_π``, ``λ = max(b, 1 - b)``, ``b ~ Beta(α, α)`` (α = 0.75), one λ per
   unlabeled patch, partner ``π`` a labeled patch chosen by a random permutation (release ``mix_match_just_k1``
   with mode ``"_x"``; ``L̃`` is ``L`` with the same clipped noise). ``Y`` also labels ``U_M`` (λ ≥ 0.5: ``U``
   dominates the mixture). λ and the noise are drawn from ``ctx.generator`` (inverse-CDF Beta sampling), so runs are
   reproducible and resumable.
3. **One** student forward over ``concat([L, U, U_M])`` (one set of BN statistics, one DDP forward).
4. Regions from the student's softmax on ``U`` and ``U_M`` (:func:`semisupseg.geometry.sgrs_regions`, base-10
   entropy, τ = 0.296): Δ uncertain in either view, Ω confident and argmax agree, Θ confident and disagree.
5. ``L = L_sup + λ(t) (L_con + L_NR)``: ``L_sup = CE + Dice`` on ``L``; ``L_con`` = CE + Dice restricted to Ω and
   ``L_NR`` = label-smoothed CE (ε = 0.2) + Dice with smoothing η = 20 restricted to Θ, each the mean of the ``U``
   and ``U_M`` views; Δ gets no loss. λ(t) = ``exp(-5 (1 - t / t_max)^2)`` (paper eq. 20); the release's
   ``sigmoid_rampup(iter // 150, 40)`` is selectable with ``rampup="sigmoid"``.

Deviations from the release (the paper is followed where they differ) — documented, each a parameter or a comment:

* The release's Ω cross-entropy multiplies by the *agree* mask without removing Δ (``consis_pre`` instead of
  ``consis_pre1``); here Δ is excluded from every term, as the paper states.
* The release updates the EMA teacher twice per step (``WeightEMA.step()`` — which also decays the *student's*
  weights by ``1 - 2e-4`` — and ``update_ema_variables``); here the engine updates it once with the usual
  ``min(1 - 1/(t+1), decay)`` rule and the student is not decayed.
* The release trains its V-Net with dropout (``net_factory(mode="train")``: ``has_dropout=True``, student and
  teacher); here SGRS trains without (``needs_dropout`` is not set: the project's measured recipe and the shipped
  models). ``--set 'model.extra={dropout: true}'`` restores the release's network.
* The release trains at a constant learning rate (0.01, 15000 iterations on LA); here the engine's step schedule
  (× 0.1 every 2500 iterations) applies. ``--set optim.schedule=constant`` restores the release's.
* Not a deviation: the release's Δ test uses the background probability in ``(τ_p, 1 - τ_p)`` with τ_p = 0.425
  (``--tau``), which for two classes is the base-10 entropy > 0.296 test used here (multi-class safe), each view
  from its own prediction (its first commit had τ_p = 0.41 and read the mixed view's Δ from the unmixed one).
* The release scales ``L_sup`` and the pseudo-label loss by 0.5, averages its four region Dice terms (so the Dice
  parts weigh half the CE parts) and its supervised Dice (``DiceLoss``) has no factor 2 and includes the background;
  here ``L_sup = CE + Dice`` (foreground soft Dice of :mod:`semisupseg.losses.segmentation`) and
  ``L_con``/``L_NR`` are CE + Dice per view, averaged over the two views, as written in the paper.
* Region CE normalisation: the release divides the masked CE sum by all voxels (``"volume"``, default); the
  alternative ``"region"`` averages over the region's voxels.

Region overlay (:meth:`SGRS.regions`): for an arbitrary case the student (in eval mode, so BN running statistics are
not touched) predicts the image and its MixUp with a partner at a fixed λ (``overlay_lambda`` = 0.8, near the mean
of ``max(b, 1 - b)`` for α = 0.75): the partner is the caller's ``partner`` if given, else the last labeled training
patch when the shapes match, else the image mirrored along x (a whole case has no labeled partner of its size; the
mirror image is a deterministic, anatomically plausible stand-in). An image larger than the training patch is
predicted by sliding windows of the patch size (:func:`semisupseg.inference.sliding_window_inference`); a smaller
one in one forward, zero-padded to multiples of 16 and cropped back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semisupseg.geometry import REGION_AGREE, REGION_DISAGREE, REGION_UNCERTAIN, SGRS_TAU, sgrs_regions
from semisupseg.losses.regional import consistent_region_loss, noise_robust_region_loss
from semisupseg.losses.segmentation import cross_entropy, multiclass_dice_loss
from semisupseg.methods import register
from semisupseg.methods.base import Batch, Method, MethodParams, StepContext, StepResult
from semisupseg.methods.mean_teacher import teacher_input_noise
from semisupseg.nets.vnet import softmax_logits
from semisupseg.schedules import consistency_weight


@dataclass
class SGRSParams(MethodParams):
    """SGRS-Net hyper-parameters (paper/release defaults for LA)."""

    #: Δ threshold on the base-``entropy_base`` entropy (0.296 ≈ background probability in (0.425, 0.575))
    tau: float = SGRS_TAU
    entropy_base: float = 10.0
    #: MixUp Beta(α, α)
    mixup_alpha: float = 0.75
    #: ε of the label-smoothed CE on Θ
    label_smoothing: float = 0.2
    #: η, the Dice smoothing on Θ
    nr_dice_smooth: float = 20.0
    #: Dice smoothing on Ω (release: 1)
    con_dice_smooth: float = 1.0
    #: amplitude of λ(t)
    consistency: float = 1.0
    #: "gaussian" (paper eq. 20), "sigmoid" (release: sigmoid_rampup(it // period, length)) or "constant"
    rampup: str = "gaussian"
    rampup_period: int = 150  # the releases; 0: scaled to the run (schedules.ramp_period)
    rampup_length: float = 40.0
    #: clipped Gaussian input noise of the teacher's view and the MixUp inputs (release: 0.1, clip 0.2)
    noise_std: float = 0.1
    noise_clip: float = 0.2
    #: "volume" (release) or "region" normalisation of the region CE terms
    ce_normalization: str = "volume"
    #: BN mode of the teacher's forward: "train" (batch statistics, as the release) or "eval"
    teacher_mode: str = "train"
    #: fixed MixUp λ of the region overlay (:meth:`SGRS.regions`)
    overlay_lambda: float = 0.8

    def __post_init__(self) -> None:
        if self.mixup_alpha <= 0:
            raise ValueError(f"mixup_alpha must be > 0, got {self.mixup_alpha}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.teacher_mode not in ("train", "eval"):
            raise ValueError(f"teacher_mode must be 'train' or 'eval', got {self.teacher_mode!r}")
        if not 0.5 <= self.overlay_lambda <= 1.0:
            raise ValueError(f"overlay_lambda must be in [0.5, 1], got {self.overlay_lambda}")


def mixup_lambda(b: torch.Tensor) -> torch.Tensor:
    """``λ = max(b, 1 - b)`` (MixMatch eq. 9, used by SGRS's Mix Augmentation): the first input dominates."""
    return torch.maximum(b, 1.0 - b)


def sample_beta(n: int, alpha: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws of ``Beta(alpha, alpha)`` (float32, CPU) by inverse-CDF sampling of uniforms from ``generator``.

    ``torch.distributions.Beta`` cannot take a generator; the inverse regularised incomplete beta function
    (``scipy.special.betaincinv``) turns seeded uniforms into exact Beta draws.
    """
    from scipy.special import betaincinv

    u = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64).cpu().numpy()
    return torch.from_numpy(np.asarray(betaincinv(alpha, alpha, u), dtype=np.float32))


def mix_images(u: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``U_M = λ U + (1 - λ) P`` per patch; ``lam`` ``(B,)``, images ``(B, C, Z, Y, X)``."""
    lam = lam.to(device=u.device, dtype=u.dtype).view(-1, *([1] * (u.dim() - 1)))
    return lam * u + (1.0 - lam) * partner


@register
class SGRS(Method):
    name = "sgrs"
    description = ("SGRS-Net (MICCAI 2025): mean teacher pseudo labels, MixUp with labeled patches, "
                   "entropy/agreement regions with region-specific (noise-robust) losses")
    Params = SGRSParams
    uses_teacher = True
    network_arch = "vnet"

    def __init__(self, params: Optional[SGRSParams] = None):
        super().__init__(params)
        self._last_labeled: Optional[torch.Tensor] = None
        self._patch_zyx: Optional[Tuple[int, int, int]] = None

    # ------------------------------------------------------------------------------------------------------------
    def _noisy(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        p = self.params
        if p.noise_std <= 0:
            return x
        return x + teacher_input_noise(x, generator, p.noise_std, p.noise_clip)

    def pseudo_labels(self, teacher: nn.Module, u_noisy: torch.Tensor, seg_form: str) -> torch.Tensor:
        """``Y = argmax teacher(Ũ)`` ``(B, Z, Y, X)`` int64, computed without gradients."""
        was_training = teacher.training
        teacher.train(self.params.teacher_mode == "train")
        try:
            with torch.no_grad():
                logits = softmax_logits(teacher(u_noisy)["seg"], seg_form)
        finally:
            teacher.train(was_training)
        return logits.argmax(dim=1)

    def mixup(self, u_noisy: torch.Tensor, l_noisy: torch.Tensor,
              generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(U_M, λ (B_u,), partner index (B_u,))`` — λ ~ max(b, 1-b), b ~ Beta(α, α); partners by permutation."""
        n_u, n_l = u_noisy.shape[0], l_noisy.shape[0]
        lam = mixup_lambda(sample_beta(n_u, self.params.mixup_alpha, generator))
        partner = torch.randperm(n_u, generator=generator, device=generator.device).cpu() % n_l
        return mix_images(u_noisy, l_noisy[partner.to(l_noisy.device)], lam), lam, partner

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> StepResult:
        p = self.params
        if ctx.teacher is None:
            raise RuntimeError("sgrs needs the engine's EMA teacher (uses_teacher) but ctx.teacher is None")
        n_l = batch.labeled_bs
        l_img, u_img = batch.labeled_image, batch.unlabeled_image
        n_u = u_img.shape[0]
        if n_u == 0 or n_l == 0:
            raise ValueError("sgrs needs labeled and unlabeled patches in every batch")
        self._last_labeled = l_img[:1].detach().cpu().clone()
        self._patch_zyx = tuple(int(v) for v in l_img.shape[2:])

        u_noisy = self._noisy(u_img, ctx.generator)
        l_noisy = self._noisy(l_img, ctx.generator)
        y = self.pseudo_labels(ctx.teacher, u_noisy, ctx.seg_form)
        u_mix, lam, _ = self.mixup(u_noisy, l_noisy, ctx.generator)

        out = model(torch.cat([l_img, u_img, u_mix], dim=0))
        logits = softmax_logits(out["seg"], ctx.seg_form)
        logits_l, logits_u, logits_m = logits[:n_l], logits[n_l:n_l + n_u], logits[n_l + n_u:]

        # supervised: CE + Dice on the labeled patches
        prob_l = torch.softmax(logits_l.float(), dim=1)
        ce_sup = cross_entropy(logits_l, batch.label)
        dice_sup = multiclass_dice_loss(prob_l, batch.label)
        loss_sup = ce_sup + dice_sup

        # regions from the student's two views (no gradient through the partition)
        with torch.no_grad():
            prob_u = torch.softmax(logits_u.float(), dim=1)
            prob_m = torch.softmax(logits_m.float(), dim=1)
            codes = sgrs_regions(prob_u, prob_m, tau=p.tau, base=p.entropy_base)
            omega = codes == REGION_AGREE
            theta = codes == REGION_DISAGREE
            delta = codes == REGION_UNCERTAIN

        l_con = 0.5 * (consistent_region_loss(logits_u, y, omega, p.con_dice_smooth, p.ce_normalization)
                       + consistent_region_loss(logits_m, y, omega, p.con_dice_smooth, p.ce_normalization))
        l_nr = 0.5 * (noise_robust_region_loss(logits_u, y, theta, p.label_smoothing, p.nr_dice_smooth,
                                               p.ce_normalization)
                      + noise_robust_region_loss(logits_m, y, theta, p.label_smoothing, p.nr_dice_smooth,
                                                 p.ce_normalization))
        weight = consistency_weight(ctx.iteration, p.consistency, p.rampup, ctx.max_iterations,
                                    p.rampup_period, p.rampup_length)
        total = float(codes.numel())
        logs = {
            "ce_sup": float(ce_sup.detach()), "dice_sup": float(dice_sup.detach()),
            "loss_con": float(l_con.detach()), "loss_nr": float(l_nr.detach()),
            "lambda_t": weight, "mixup_lambda": float(lam.mean()),
            "region_delta": float(delta.sum()) / total, "region_omega": float(omega.sum()) / total,
            "region_theta": float(theta.sum()) / total,
            "pseudo_fg": float((y > 0).float().mean()),
        }
        return StepResult(losses={"supervised": loss_sup, "consistent": weight * l_con, "noise_robust": weight * l_nr},
                          logs=logs)

    # ------------------------------------------------------------------------------------------------------------
    def regions(self, model: nn.Module, image: torch.Tensor, ctx: StepContext,
                partner: Optional[torch.Tensor] = None,
                patch_zyx: Optional[Tuple[int, int, int]] = None) -> Optional[np.ndarray]:
        """Region codes ``(B, Z, Y, X)`` uint8 (``semisupseg.geometry.REGION_*``) of ``image`` ``(B, C, Z, Y, X)``
        (or ``(C, Z, Y, X)``) as ``model`` sees them now (see the module docstring for the partner and λ).
        ``patch_zyx``: the sliding-window size for images larger than it (default: the training patch seen last) —
        the training snapshots apply this partition to any method's model with the run's patch size."""
        p = self.params
        image = torch.as_tensor(image)
        if image.dim() == 4:
            image = image.unsqueeze(0)
        if image.dim() != 5:
            raise ValueError(f"regions() expects a (B, C, Z, Y, X) or (C, Z, Y, X) image, got {tuple(image.shape)}")
        device = ctx.device
        image = image.to(device=device, dtype=torch.float32)
        if partner is None:
            last = self._last_labeled
            if last is not None and tuple(last.shape[1:]) == tuple(image.shape[1:]):
                partner = last.to(device).expand_as(image)
            else:
                partner = torch.flip(image, dims=[-1])
        partner = torch.as_tensor(partner).to(device=device, dtype=torch.float32)
        if partner.dim() == 4:
            partner = partner.unsqueeze(0)
        if tuple(partner.shape[1:]) != tuple(image.shape[1:]):
            raise ValueError(f"partner shape {tuple(partner.shape)} does not match image {tuple(image.shape)}")
        partner = partner.expand_as(image)
        lam = torch.full((image.shape[0],), p.overlay_lambda)
        mixed = mix_images(image, partner, lam)

        prob = self._student_probabilities(model, torch.cat([image, mixed], dim=0), ctx, patch_zyx)
        b = image.shape[0]
        codes = sgrs_regions(prob[:b], prob[b:], tau=p.tau, base=p.entropy_base)
        return codes.cpu().numpy()

    def _student_probabilities(self, model: nn.Module, x: torch.Tensor, ctx: StepContext,
                               patch_zyx: Optional[Tuple[int, int, int]] = None) -> torch.Tensor:
        """Student class probabilities ``(B, C, Z, Y, X)`` float32 in eval mode (BN running statistics untouched):
        sliding windows of the training patch size when the image is larger than a training patch, otherwise one
        forward of the image zero-padded to multiples of 16 (padding cropped away)."""
        spatial = tuple(int(s) for s in x.shape[2:])
        was_training = model.training
        model.eval()
        try:
            patch = tuple(patch_zyx) if patch_zyx is not None else self._patch_zyx
            if patch is not None and any(s > q for s, q in zip(spatial, patch)):
                from semisupseg.inference import sliding_window_inference

                probs = [torch.from_numpy(np.ascontiguousarray(sliding_window_inference(
                    model, xi, patch, overlap=0.5, device=ctx.device, fast=False)["prob"])) for xi in x]
                return torch.stack(probs).to(ctx.device).float()
            pads = [(-s) % 16 for s in spatial]
            with torch.no_grad():
                out = model(F.pad(x, [0, pads[2], 0, pads[1], 0, pads[0]]))
            logits = softmax_logits(out["seg"], ctx.seg_form)[..., :spatial[0], :spatial[1], :spatial[2]]
            return torch.softmax(logits.float(), dim=1)
        finally:
            model.train(was_training)


def partition(model: nn.Module, image, patch_zyx: Tuple[int, int, int], device="cpu", seg_form: str = "softmax",
              num_classes: int = 2, method: Optional[Method] = None) -> Tuple[np.ndarray, str]:
    """SGRS-Net's Δ/Ω/Θ partition of what ``model`` predicts for ``image`` — any method's model, so that methods
    can be compared (training snapshots, ``semisupseg rank``).

    ``image``: the normalised image on the model's grid, ``(C, Z, Y, X)`` or ``(Z, Y, X)``; ``patch_zyx``: the
    sliding-window size. With an :class:`SGRS` ``method`` its own parameters are used, otherwise SGRS-Net's
    defaults (:class:`SGRSParams`). Returns ``(codes (Z, Y, X) uint8, source)`` — codes
    ``semisupseg.geometry.REGION_*``, ``source`` a short text saying which rule was used."""
    x = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))
    if x.dim() == 3:
        x = x[None]
    ctx = StepContext(iteration=0, max_iterations=1, device=torch.device(device), num_classes=int(num_classes),
                      seg_form=seg_form, generator=torch.Generator())
    if isinstance(method, SGRS):
        rule, source = method, "sgrs (the method's own partition)"
    else:
        rule, source = SGRS(), "sgrs partition with default parameters applied to this model"
    codes = rule.regions(model, x, ctx, patch_zyx=tuple(int(v) for v in patch_zyx))
    return np.asarray(codes)[0].astype(np.uint8), source


__all__ = ["SGRS", "SGRSParams", "mixup_lambda", "sample_beta", "mix_images", "partition"]
