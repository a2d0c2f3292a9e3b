"""Image-conditioned shape discriminators for adversarial semi-supervised segmentation (SASSNet, SB-Net).

:class:`MapImageDiscriminator` tells whether a dense map (a predicted SDM for SASSNet, a predicted probability map for
SB-Net) comes from a *labeled* image (real) or an *unlabeled* one (fake), looking at the map together with its image.

Architecture (SASSNet, Li et al. MICCAI 2020, Sec. 2.2 and the authors' ``FC3DDiscriminator``): five 4x4x4 stride-2
convolutions -- one on the map and one on the image, summed, then three more -- with LeakyReLU(0.2) and Dropout3d
between them, widths ``ndf, ndf, 2ndf, 4ndf, 8ndf``, then global average pooling and the classifier (a linear layer
on the pooled ``8ndf`` features). The release averages a fixed ``(7, 7, 5)`` window, which is global pooling only for
its 112x112x80 patches; here the pooling is adaptive (global), so any patch size works, and inputs smaller than 16
voxels along a side are zero-padded up to 16 so that the four halvings never reach an empty grid.

The classifier has **one** output logit ``l`` (``D = sigmoid(l)`` = probability of "labeled"), instead of the
release's two logits ``(l0, l1)`` with softmax: the two are equivalent (``l = l1 - l0``), and one logit lets the
losses be the standard binary ones of :mod:`semisupseg.losses.adversarial`.

Tensors are ``(B, C, Z, Y, X)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: every side is padded to at least this many voxels (4 stride-2 stages with kernel 4, padding 1)
MIN_SIDE = 16


@dataclass
class DiscriminatorConfig:
    """``map_channels``: channels of the judged map (foreground classes: C - 1); ``image_channels``: image
    modalities; ``ndf``: width of the first layer (64 in the paper); ``dropout``: Dropout3d probability (0.5)."""

    map_channels: int = 1
    image_channels: int = 1
    ndf: int = 64
    dropout: float = 0.5
    negative_slope: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class MapImageDiscriminator(nn.Module):
    """``forward(map, image) -> (B,)`` logits of "this map comes from a labeled image".

    ``map`` ``(B, map_channels, Z, Y, X)`` and ``image`` ``(B, image_channels, Z, Y, X)`` share their spatial size,
    which may be anything (odd, not a multiple of 16, smaller than 16).
    """

    def __init__(self, config: DiscriminatorConfig = None, **kwargs):
        super().__init__()
        if config is None:
            config = DiscriminatorConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a DiscriminatorConfig or keyword arguments, not both")
        if config.map_channels < 1 or config.image_channels < 1:
            raise ValueError(f"map_channels and image_channels must be >= 1, got {config}")
        self.config = config
        ndf = config.ndf
        conv = dict(kernel_size=4, stride=2, padding=1)
        self.conv_map = nn.Conv3d(config.map_channels, ndf, **conv)      # layer 1a (the map)
        self.conv_image = nn.Conv3d(config.image_channels, ndf, **conv)  # layer 1b (the image), summed with 1a
        self.conv2 = nn.Conv3d(ndf, 2 * ndf, **conv)
        self.conv3 = nn.Conv3d(2 * ndf, 4 * ndf, **conv)
        self.conv4 = nn.Conv3d(4 * ndf, 8 * ndf, **conv)
        self.classifier = nn.Linear(8 * ndf, 1)
        self.act = nn.LeakyReLU(negative_slope=config.negative_slope)
        self.dropout = nn.Dropout3d(config.dropout)

    @staticmethod
    def _pad_to_min(x: torch.Tensor) -> torch.Tensor:
        pads = []
        for side in reversed(x.shape[2:]):  # F.pad wants the last dim first
            missing = max(0, MIN_SIDE - int(side))
            pads += [missing // 2, missing - missing // 2]
        return F.pad(x, pads) if any(pads) else x

    def forward(self, map: torch.Tensor, image: torch.Tensor) -> torch.Tensor:  # noqa: A002 - paper's name
        if map.shape[0] != image.shape[0] or map.shape[2:] != image.shape[2:]:
            raise ValueError(f"map {tuple(map.shape)} and image {tuple(image.shape)} must share batch and spatial size")
        map, image = self._pad_to_min(map), self._pad_to_min(image.to(map.dtype))
        x = self.dropout(self.act(self.conv_map(map) + self.conv_image(image)))
        x = self.dropout(self.act(self.conv2(x)))
        x = self.dropout(self.act(self.conv3(x)))
        x = self.act(self.conv4(x))
        x = torch.flatten(F.adaptive_avg_pool3d(x, 1), 1)
        return self.classifier(x).squeeze(1)


__all__ = ["DiscriminatorConfig", "MapImageDiscriminator", "MIN_SIDE"]
