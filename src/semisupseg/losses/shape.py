"""Shape losses: signed-distance-map regression (SASSNet, SB-Net), the product loss, the boundary-ring loss and the
SB-Net task-consistency terms.

Shapes: per-class maps are ``(B, K, Z, Y, X)`` with ``K = C - 1`` foreground classes (one channel per foreground
class, as the SDM heads and SB-Net's sigmoid PSMs are); integer labels ``(B, Z, Y, X)``. Distances, rings and
gradients are in **voxel** units (the batch carries no spacing; the SDMs are normalised to [-1, 1] anyway, as in the
releases). Every loss is computed in float32.

Targets (SDMs, boundary rings) are computed on the CPU with :mod:`semisupseg.geometry` (exact Euclidean distance
transforms) and moved to the labels' device.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from semisupseg.losses.segmentation import one_hot, soft_dice

#: SB-Net eq. 14: the smooth Heaviside sharpness, ``sigmoid(K · SDM)`` with ``K = -1500`` (negative: SDM < 0 inside)
HEAVISIDE_K = -1500.0
#: SB-Net boundary ring half-width W_max (voxels)
W_MAX = 20
#: contrast factor κ of the boundary gradient hinge (our choice; the paper gives no value): see
#: :func:`boundary_gradient_hinge_loss`
BOUNDARY_CONTRAST = 0.5


# --- targets ----------------------------------------------------------------------------------------------------
def foreground_one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(B, Z, Y, X)`` integer labels → ``(B, C - 1, Z, Y, X)`` float masks of the foreground classes 1..C-1."""
    return one_hot(labels, num_classes)[:, 1:]


def sdm_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Ground-truth signed distance maps ``(B, C - 1, Z, Y, X)`` float32 in [-1, 1] (negative inside, 0 on the
    surface, positive outside), one per foreground class, via :func:`semisupseg.geometry.class_sdm` (voxel units).

    A class absent from a patch gets **+1 everywhere** (and a class filling the patch -1): the geometry module's
    ``degenerate="saturate"`` convention, so that ``sigmoid(-1500 · SDM)`` equals the (empty) label. The releases'
    ``compute_sdf`` gives zeros there (whose Heaviside is 0.5); this is a documented deviation.
    """
    from semisupseg.geometry import class_sdm

    maps = class_sdm(labels.detach().cpu().numpy(), num_classes)  # (B, C-1, Z, Y, X)
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).to(labels.device)


def boundary_masks(labels: torch.Tensor, num_classes: int, w_max: int = W_MAX) -> torch.Tensor:
    """SB-Net's ring M_bound per case and foreground class: ``(B, C - 1, Z, Y, X)`` bool, the union of the outer and
    inner bands of :func:`semisupseg.geometry.boundary_ring` -- ``it = max(1, round(A_target / A_whole · w_max))``
    voxels (eq. 8, city-block) on each side of the class surface, ``A`` counted per case and class; empty for a
    class absent from the patch."""
    from semisupseg.geometry import boundary_ring

    lab = labels.detach().cpu().numpy()
    out = np.zeros((lab.shape[0], num_classes - 1) + lab.shape[1:], dtype=bool)
    for c in range(1, num_classes):
        mask = lab == c
        if mask.any():
            out[:, c - 1] = np.asarray(boundary_ring(mask, w_max=w_max).ring, dtype=bool)  # eq. 8-9, per case
    return torch.from_numpy(out).to(labels.device)


# --- SDM regression ---------------------------------------------------------------------------------------------
def sdm_mse_loss(pred_sdm: torch.Tensor, target_sdm: torch.Tensor) -> torch.Tensor:
    """SASSNet's ``L_sdf``: voxel-mean squared error between predicted and ground-truth SDMs (Sec. 2.2, L_s)."""
    return F.mse_loss(pred_sdm.float(), target_sdm.float())


def product_loss(pred_sdm: torch.Tensor, target_sdm: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """The product term of SB-Net eq. 3 (Xue et al. AAAI 2020): ``-Σ p g / (Σ p g + Σ p² + Σ g²)`` per class
    channel (sums over batch and space), averaged over the channels. It is -1/3 at ``p = g`` and penalises sign errors
    (``p g < 0``) most. A channel whose maps are all zero contributes 0."""
    p, g = pred_sdm.float().transpose(0, 1).flatten(1), target_sdm.float().transpose(0, 1).flatten(1)
    pg = (p * g).sum(1)
    terms = -pg / (pg + (p * p).sum(1) + (g * g).sum(1) + eps)
    return terms.mean()


def sdm_l1_product_loss(pred_sdm: torch.Tensor, target_sdm: torch.Tensor) -> torch.Tensor:
    """SB-Net's ``L_SDM`` (eq. 3): voxel-mean L1 + :func:`product_loss`.

    The paper writes the L1 part as a sum over voxels; we use the mean so the weight 0.02 of the hybrid loss does not
    depend on the patch size (a documented deviation).
    """
    return (pred_sdm.float() - target_sdm.float()).abs().mean() + product_loss(pred_sdm, target_sdm)  # eq. 3


# --- PSM Dice and the boundary loss -----------------------------------------------------------------------------
def class_dice_loss(prob: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over the channels of ``(B, K, ...)`` probabilities of :func:`soft_dice` against ``(B, K, ...)`` masks
    (sums over batch and space per channel); ``mask`` ``(B, K, ...)`` restricts the sums."""
    terms = [soft_dice(prob[:, k], target[:, k], mask=None if mask is None else mask[:, k])
             for k in range(prob.shape[1])]
    return torch.stack(terms).mean()


def multiscale_psm_dice_loss(probs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """SB-Net's ``L_PSM`` (eq. 6-7): the Dice losses of PSM1..PSM5 against the labels, summed over the maps."""
    return torch.stack([class_dice_loss(p, target) for p in probs]).sum()  # eq. 6-7


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """``|∇x|`` of ``(B, K, Z, Y, X)`` maps by central differences (one-sided at the patch faces), voxel units.

    A tiny epsilon inside the square root keeps the gradient finite where the map is flat; sides of one voxel
    contribute nothing."""
    x = x.float()
    squared = torch.zeros_like(x)
    for dim in (2, 3, 4):
        if x.shape[dim] >= 2:  # a side of one voxel has no gradient along it
            g = torch.gradient(x, dim=dim)[0]
            squared = squared + g * g
    return torch.sqrt(squared + 1e-12)


def boundary_gradient_hinge_loss(prob: torch.Tensor, target: torch.Tensor, ring: torch.Tensor,
                                 contrast: float = BOUNDARY_CONTRAST) -> torch.Tensor:
    """The gradient-magnitude hinge of SB-Net's boundary loss (eq. 10, our reading):

    ``Σ_{v ∈ M_bound} max(0, κ |∇Y|(v) - |∇P|(v)) / #{v ∈ M_bound : |∇Y|(v) > 0}``

    where ``Y`` is the reference mask, ``P`` the predicted probability map and ``κ`` the contrast factor (the paper
    names it without a value). Only the voxels where the reference has an edge contribute: there the prediction must
    rise at least ``κ`` times as steeply as the reference's step. ``κ = 0.5`` (default) asks for a probability change
    of at least 0.5 across the two voxels around the surface (a reference step has central-difference magnitude 0.5
    per crossing axis); ``κ = 1`` asks for a perfectly sharp prediction; ``κ = 0`` switches the term off.
    """
    ring = ring.float()
    g_ref = gradient_magnitude(target)
    g_pred = gradient_magnitude(prob)
    edge = (g_ref > 1e-3).float() * ring
    hinge = torch.clamp(contrast * g_ref - g_pred, min=0.0) * edge
    return hinge.sum() / edge.sum().clamp_min(1.0)  # eq. 10


def boundary_loss(prob: torch.Tensor, target: torch.Tensor, ring: torch.Tensor,
                  contrast: float = BOUNDARY_CONTRAST) -> torch.Tensor:
    """SB-Net's ``L_boundary`` (eq. 8-11): Dice restricted to the ring M_bound (eq. 9) + the gradient hinge (eq. 10).

    ``prob``, ``target`` and ``ring`` are ``(B, K, Z, Y, X)`` (PSM5 probabilities, reference masks, ring masks).
    """
    return class_dice_loss(prob, target, mask=ring) + boundary_gradient_hinge_loss(prob, target, ring, contrast)


# --- SB-Net task consistency ------------------------------------------------------------------------------------
def smooth_heaviside(sdm: torch.Tensor, k: float = HEAVISIDE_K) -> torch.Tensor:
    """``sigmoid(k · SDM)``, the SDM turned into a soft mask (SB-Net eq. 14, DTC); uses
    :func:`semisupseg.geometry.smooth_heaviside` (computed in float32)."""
    from semisupseg import geometry

    return geometry.smooth_heaviside(sdm.float(), k=k)


def psm_consistency_loss(psm5: torch.Tensor, psm4: torch.Tensor) -> torch.Tensor:
    """SB-Net ``L_cl1 = ||PSM5 - PSM4||²`` (eq. 13), voxel mean; both maps receive gradients."""
    return F.mse_loss(psm5.float(), psm4.float())  # eq. 13


def sdm_psm_consistency_loss(sdm: torch.Tensor, psm4: torch.Tensor, k: float = HEAVISIDE_K) -> torch.Tensor:
    """SB-Net ``L_cl2 = ||sigmoid(-1500 · SDM) - PSM4||²`` (eq. 14), voxel mean; both branches receive gradients."""
    return F.mse_loss(smooth_heaviside(sdm, k), psm4.float())  # eq. 14


__all__ = [
    "HEAVISIDE_K", "W_MAX", "BOUNDARY_CONTRAST", "foreground_one_hot", "sdm_targets", "boundary_masks",
    "sdm_mse_loss", "product_loss", "sdm_l1_product_loss", "class_dice_loss", "multiscale_psm_dice_loss",
    "gradient_magnitude", "boundary_gradient_hinge_loss", "boundary_loss", "smooth_heaviside",
    "psm_consistency_loss", "sdm_psm_consistency_loss",
]
