"""Region-restricted segmentation losses of SGRS-Net (Wang et al., "Synergy-Guided Regional Supervision of Pseudo
Labels for Semi-Supervised Medical Image Segmentation", MICCAI 2025; release ``ortonwang/SGRS-Net``).

The unlabeled voxels are split into regions by :func:`semisupseg.geometry.sgrs_regions` (Δ uncertain, Ω agree,
Θ disagree). Each region gets its own loss against the teacher's pseudo label ``Y``:

* Ω (agree, confident): plain cross-entropy + soft Dice (:func:`consistent_region_loss`, the paper's ``L_con``);
* Θ (disagree, confident): label-smoothed cross-entropy (ε = 0.2) + soft Dice with a large smoothing constant
  η = 20 (:func:`noise_robust_region_loss`, the paper's noise-robust ``L_NR``);
* Δ (uncertain): no loss.

Shapes: logits / probabilities ``(B, C, Z, Y, X)``, labels and region masks ``(B, Z, Y, X)``. Every function computes
in float32 (safe under bf16 autocast) and does not detach anything for the caller.

Normalisation (a point the paper leaves open): the release averages the masked cross-entropy over **every** voxel of
the batch (``mean(ce * mask)``), so a region's CE is weighted by its size; ``normalization="region"`` instead
averages over the region's voxels only. The default follows the release (``"volume"``). The region Dice is the
release's nnU-Net ``SoftDiceLoss`` form (linear denominators, per sample and per class, background included, mean
over both), in which η acts as an additive smoothing of numerator and denominator.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from semisupseg.losses.segmentation import one_hot

NORMALIZATIONS = ("volume", "region")


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor,
                         label_smoothing: float = 0.0, normalization: str = "volume") -> torch.Tensor:
    """Cross-entropy of ``(B, C, ...)`` logits against ``(B, ...)`` labels restricted to ``mask`` ``(B, ...)``.

    ``label_smoothing`` ε replaces the one-hot target by ``(1 - ε) onehot + ε / C`` (PyTorch's definition, as the
    release's ``CrossEntropyLoss(label_smoothing=0.2)``). ``normalization``: ``"volume"`` divides the masked sum by
    the number of voxels of the batch (release), ``"region"`` by the number of masked voxels (0 if the mask is empty).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    ce = F.cross_entropy(logits.float(), labels.long(), reduction="none", label_smoothing=float(label_smoothing))
    mask = mask.float()
    denom = mask.sum().clamp_min(1.0) if normalization == "region" else float(mask.numel())
    return (ce * mask).sum() / denom


def region_soft_dice(prob: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, smooth: float = 1.0,
                     include_background: bool = True) -> torch.Tensor:
    """Soft Dice loss restricted to a region, with an additive smoothing ``smooth`` (SGRS η).

    ``1 - mean_{b,c} (2 Σ m p g + η) / (Σ m p + Σ m g + η)`` with the sums over the voxels of sample ``b``
    (``2 tp + fp + fn`` of the release's nnU-Net ``SoftDiceLoss`` with ``batch_dice=False``). ``prob``
    ``(B, C, ...)`` class probabilities, ``labels`` ``(B, ...)``, ``mask`` ``(B, ...)`` 0/1. With a large η an empty
    or small region contributes a Dice near 1 (loss near 0) and a noisy region is penalised gently — that is the
    "noise-robust" Dice of the Θ region.
    """
    prob = prob.float()
    num_classes = prob.shape[1]
    target = one_hot(labels, num_classes)
    m = mask.float().unsqueeze(1)
    dims = tuple(range(2, prob.dim()))
    tp = (prob * target * m).sum(dims)
    denom = (prob * m).sum(dims) + (target * m).sum(dims)  # 2 tp + fp + fn
    dice = (2.0 * tp + smooth) / (denom + smooth + 1e-8)
    if not include_background:
        dice = dice[:, 1:]
    return 1.0 - dice.mean()


def consistent_region_loss(logits: torch.Tensor, labels: torch.Tensor, omega: torch.Tensor,
                           dice_smooth: float = 1.0, normalization: str = "volume") -> torch.Tensor:
    """SGRS ``L_con`` of one view: ``CE_Ω(logits, Y) + Dice_Ω(softmax(logits), Y)`` (smoothing 1 as the release)."""
    prob = torch.softmax(logits.float(), dim=1)
    return (masked_cross_entropy(logits, labels, omega, 0.0, normalization)
            + region_soft_dice(prob, labels, omega, dice_smooth))


def noise_robust_region_loss(logits: torch.Tensor, labels: torch.Tensor, theta: torch.Tensor,
                             epsilon: float = 0.2, eta: float = 20.0, normalization: str = "volume") -> torch.Tensor:
    """SGRS ``L_NR`` of one view: label-smoothed ``CE_Θ`` (ε) + ``Dice_Θ`` with smoothing η."""
    prob = torch.softmax(logits.float(), dim=1)
    return (masked_cross_entropy(logits, labels, theta, epsilon, normalization)
            + region_soft_dice(prob, labels, theta, eta))


def region_fractions(codes: torch.Tensor, valid_codes: Optional[tuple] = None) -> dict:
    """Fraction of voxels per region code of a code map (for the event log): ``{code: fraction}``."""
    total = max(int(codes.numel()), 1)
    values = valid_codes if valid_codes is not None else tuple(int(v) for v in torch.unique(codes).tolist())
    return {int(v): float((codes == v).sum().item()) / total for v in values}


__all__ = ["NORMALIZATIONS", "masked_cross_entropy", "region_soft_dice", "consistent_region_loss",
           "noise_robust_region_loss", "region_fractions"]
