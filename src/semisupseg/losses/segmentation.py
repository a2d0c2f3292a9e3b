"""Supervised segmentation losses on ``(B, C, Z, Y, X)`` probabilities / ``(B, Z, Y, X)`` integer labels."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, Z, Y, X)`` integer labels → ``(B, C, Z, Y, X)`` float one-hot."""
    return F.one_hot(labels.long(), num_classes).movedim(-1, 1).float()


def soft_dice(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
              mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Soft Dice loss of one class map: ``1 - (2 Σ p g + s) / (Σ p² + Σ g² + s)`` (the releases' ``dice_loss``).

    ``prob`` and ``target`` have the same shape (any), ``target`` in {0, 1} (or soft); ``mask`` (same shape, 0/1)
    restricts the sums to a region. Sums run over every element (batch included), as in the releases.
    """
    prob = prob.float()
    target = target.float()
    if mask is not None:
        mask = mask.float()
        prob, target = prob * mask, target * mask
    intersect = torch.sum(prob * target)
    return 1.0 - (2.0 * intersect + smooth) / (torch.sum(prob * prob) + torch.sum(target * target) + smooth)


def multiclass_dice_loss(prob: torch.Tensor, labels: torch.Tensor, smooth: float = 1e-5,
                         mask: Optional[torch.Tensor] = None, include_background: bool = False) -> torch.Tensor:
    """Mean :func:`soft_dice` over the classes of ``prob`` ``(B, C, ...)`` against integer ``labels`` ``(B, ...)``.

    The foreground classes only by default (for C = 2 this is exactly the releases' foreground Dice);
    ``mask`` ``(B, ...)`` restricts every class's sums to a region.
    """
    num_classes = prob.shape[1]
    target = one_hot(labels, num_classes)
    start = 0 if include_background else 1
    m = None if mask is None else mask.unsqueeze(1).expand_as(prob)
    terms = [soft_dice(prob[:, c], target[:, c], smooth, None if m is None else m[:, c])
             for c in range(start, num_classes)]
    return torch.stack(terms).mean()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """Voxel-mean cross-entropy of ``(B, C, ...)`` logits against ``(B, ...)`` integer labels.

    With ``mask`` ``(B, ...)`` 0/1 the mean runs over the masked voxels only (0 when the mask is empty).
    """
    ce = F.cross_entropy(logits.float(), labels.long(), reduction="none", label_smoothing=label_smoothing)
    if mask is None:
        return ce.mean()
    mask = mask.float()
    return (ce * mask).sum() / mask.sum().clamp_min(1.0)
