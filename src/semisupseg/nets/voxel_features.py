"""Voxel-wise feature networks of the voxel-wise adversarial method (Lee, Park, Shin, Chung, "Voxel-wise
Adversarial Semi-supervised Learning for Medical Image Segmentation", arXiv 2205.06987).

* :class:`MultiScaleVoxelFeatures`: multi-resolution feature fusion. Each chosen encoder stage goes through a 1x1
  convolution to a common width, is upsampled (trilinear) to the mask resolution, the stages are added and fused
  by a pointwise (1x1) convolution + ReLU.
* :class:`VoxelDiscriminator`: voxel features → 2 MLP layers → one real/fake logit head per class.
* :class:`MLPHead`: the BYOL projector / predictor (Linear, BatchNorm1d, ReLU, Linear).

Bounded memory: every operation of the fusion is pointwise or linear, so it commutes with sampling.
:meth:`MultiScaleVoxelFeatures.sample` evaluates the fused feature **only at the requested voxels** — the trilinear
upsampling of each stage is evaluated at those voxels with ``grid_sample`` (exactly what ``F.interpolate(...,
mode="trilinear", align_corners=False)`` followed by indexing gives, replicate border) — so no full-resolution fused
map is ever built in training: the cost is O(samples x channels). :meth:`MultiScaleVoxelFeatures.forward` builds the
dense map (tests, visualisation) and is the reference the sampled path is tested against. The fusion convolution
is 1x1 (a 3x3x3 one would need neighbourhoods and defeat the sampling); the paper's figure shows an add followed by a
convolution without fixing its kernel size.

Coordinates are ``(b, z, y, x)`` voxel indices at the mask (input) resolution; tensors are ``(B, C, Z, Y, X)``.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def sample_trilinear(feature: torch.Tensor, index: torch.Tensor, full_shape: Sequence[int]) -> torch.Tensor:
    """Values of ``feature`` ``(B, C, z, y, x)`` trilinearly upsampled to ``full_shape`` (Z, Y, X) at the voxels
    ``index`` ``(N, 4)`` = (b, z, y, x) → ``(N, C)`` (float32), without building the upsampled map.

    Matches ``F.interpolate(feature, size=full_shape, mode="trilinear", align_corners=False)[b, :, z, y, x]``.
    """
    n = index.shape[0]
    channels = feature.shape[1]
    if n == 0:
        return feature.new_zeros((0, channels), dtype=torch.float32)
    feature = feature.float()
    full = torch.tensor([float(s) for s in full_shape], device=feature.device)
    zyx = index[:, 1:].to(device=feature.device, dtype=torch.float32)
    norm = (2.0 * zyx + 1.0) / full - 1.0  # voxel centres in align_corners=False normalised coordinates
    grid_xyz = norm.flip(-1)  # grid_sample wants (x, y, z)
    batch_ids = index[:, 0].to(feature.device)
    order = torch.argsort(batch_ids, stable=True)
    pieces: List[torch.Tensor] = []
    sorted_ids = batch_ids[order]
    for b in torch.unique(sorted_ids).tolist():
        sel = order[sorted_ids == b]
        grid = grid_xyz[sel].view(1, 1, 1, -1, 3)
        vals = F.grid_sample(feature[b:b + 1], grid, mode="bilinear", padding_mode="border", align_corners=False)
        pieces.append(vals.view(channels, -1).t())
    out_sorted = torch.cat(pieces, dim=0)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n, device=order.device)
    return out_sorted[inverse]


class MultiScaleVoxelFeatures(nn.Module):
    """Multi-resolution voxel features from encoder stages (1x1 conv to ``width`` → upsample → add → 1x1 conv, ReLU).

    ``in_channels``: widths of the chosen stages (V-Net stage ``k`` (1-based) has width ``n · 2^(k-1)``).
    """

    def __init__(self, in_channels: Sequence[int], width: int = 64):
        super().__init__()
        if not in_channels:
            raise ValueError("MultiScaleVoxelFeatures needs at least one input stage")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.width = int(width)
        self.lateral = nn.ModuleList([nn.Conv3d(c, self.width, 1) for c in self.in_channels])
        self.fuse = nn.Conv3d(self.width, self.width, 1)

    def _check(self, features: Sequence[torch.Tensor]) -> None:
        if len(features) != len(self.lateral):
            raise ValueError(f"expected {len(self.lateral)} feature maps, got {len(features)}")
        for f, c in zip(features, self.in_channels):
            if f.shape[1] != c:
                raise ValueError(f"feature map with {f.shape[1]} channels where {c} were configured")

    @staticmethod
    def _linear(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, conv.weight.flatten(1).float(), conv.bias.float() if conv.bias is not None else None)

    def sample(self, features: Sequence[torch.Tensor], index: torch.Tensor,
               full_shape: Sequence[int]) -> torch.Tensor:
        """Fused features ``(N, width)`` at the voxels ``index`` ``(N, 4)`` (b, z, y, x) of the ``full_shape`` grid."""
        self._check(features)
        total = None
        for conv, feat in zip(self.lateral, features):
            # 1x1 conv and trilinear upsampling are both linear: sampling the stage first is exact
            term = self._linear(conv, sample_trilinear(feat, index, full_shape))
            total = term if total is None else total + term
        return F.relu(self._linear(self.fuse, total))

    def forward(self, features: Sequence[torch.Tensor], full_shape: Sequence[int]) -> torch.Tensor:
        """Dense fused map ``(B, width, Z, Y, X)`` (reference path; memory O(B · width · Z · Y · X))."""
        self._check(features)
        total = None
        size = tuple(int(s) for s in full_shape)
        for conv, feat in zip(self.lateral, features):
            term = F.interpolate(conv(feat.float()), size=size, mode="trilinear", align_corners=False)
            total = term if total is None else total + term
        return F.relu(self.fuse(total))


class VoxelDiscriminator(nn.Module):
    """Class-specific voxel-wise feature discriminator: ``(N, in_dim)`` features and ``(N,)`` classes → ``(N,)``
    real/fake logits. Two MLP layers (LeakyReLU 0.2) shared by all classes, then one linear head per class
    (implemented as one ``Linear(hidden, C)`` whose column ``c`` is class ``c``'s head). Works on voxels, so any
    patch size works."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 64):
        super().__init__()
        self.num_classes = int(num_classes)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True))
        self.heads = nn.Linear(hidden, self.num_classes)

    def forward(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        if features.shape[0] != classes.shape[0]:
            raise ValueError(f"{features.shape[0]} features but {classes.shape[0]} classes")
        logits = self.heads(self.mlp(features.float()))
        return logits.gather(1, classes.long().view(-1, 1).to(logits.device)).squeeze(1)


class MLPHead(nn.Module):
    """BYOL projector / predictor: ``Linear(in, hidden) → BatchNorm1d → ReLU → Linear(hidden, out)``."""

    def __init__(self, in_dim: int, hidden: int = 64, out_dim: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] < 2 and self.training:
            # BatchNorm1d cannot normalise one sample in training mode: use its running statistics
            self.net[1].eval()
            try:
                return self.net(x.float())
            finally:
                self.net[1].train()
        return self.net(x.float())


def vnet_stage_channels(n_filters: int, stages: Sequence[int], max_filters: Optional[int] = None) -> Tuple[int, ...]:
    """Widths of the V-Net encoder stages ``stages`` (1-based: stage ``k`` has ``n · 2^(k-1)`` channels, at most
    ``max_filters`` when the network caps its widths)."""
    from semisupseg.nets.vnet import VNetConfig

    for s in stages:
        if not 1 <= int(s) <= 5:
            raise ValueError(f"V-Net encoder stages are 1..5, got {s}")
    widths = VNetConfig(n_filters=int(n_filters), max_filters=max_filters).widths
    return tuple(widths[int(s) - 1] for s in stages)


__all__ = ["sample_trilinear", "MultiScaleVoxelFeatures", "VoxelDiscriminator", "MLPHead", "vnet_stage_channels"]
