"""The shape- and boundary-aware multi-branch network of SB-Net (registered as architecture ``"sbnet"``).

A V-Net backbone (:class:`~semisupseg.nets.vnet.VNet` encoder/decoder, same module names under ``backbone.``) with:

* **Branch A** (multi-scale pixel-wise segmentation maps): a 1x1x1 convolution with one channel per foreground class
  on each of three decoder scales -- ``x7`` (1/4), ``x8`` (1/2), ``x9`` (1) -- upsampled trilinearly x4 / x2 / x1 to
  the input size: logits ``F1, F2, F3``; ``PSM_i = sigmoid(F_i)``. ``F4`` is their fusion (concatenation + 1x1x1
  convolution), ``PSM4 = sigmoid(F4)``.
* **Branch B**: SDM regression, ``tanh`` of a 1x1x1 convolution on ``x9`` (one channel per foreground class).
* **FFM** (feature fusion module): ``U = concat(input, SDM, F4)`` → 3x3x3 convolution + norm + ReLU to ``n`` channels
  → ``V``; SE channel attention ``s = sigmoid(W2 ReLU(W1 avgpool(V)))`` (reduction 2) with the residual addition
  ``V' = V ⊙ s + V``; a 1x1x1 convolution gives ``F5``. The final logits fuse ``F4`` and ``F5`` (concatenation +
  1x1x1 convolution): ``PSM5 = sigmoid(F_final)`` -- the network's segmentation output.

Where the paper leaves the design open (kernel sizes of the branch heads, upsampling mode, the FFM's inner width and
SE reduction, "fusion" as concatenation + 1x1x1 convolution) the choices above are ours.

**Multi-class** (``num_classes = C > 2``): every map has ``K = C - 1`` sigmoid channels, one per foreground class
(one-vs-rest). Class probabilities are derived as ``q_0 = Π_k (1 - p_k)`` (background: no foreground class claims
the voxel), ``q_k = p_k``, normalised to sum to 1. ``"seg"`` is returned in the configured ``seg_form``:

* ``"sigmoid"`` (binary only): ``"seg"`` is the PSM5 logit itself, ``probabilities = [1 - p, p]``;
* ``"softmax"``: ``"seg" = [Σ_k log(1 - p_k), log p_1, ..., log p_K]`` (computed with ``logsigmoid``), whose
  softmax is exactly the normalised ``q`` above -- so inference, validation and every softmax-form consumer work
  unchanged. For C = 2 this gives ``[1 - p, p]`` as well.

``forward(x, features=False)`` returns ``{"seg", "sdm" (B, K, ...) tanh, "psm": [F1, F2, F3, F4] logits,
"psm5": F_final logits (B, K, ...)}`` (+ ``"encoder"``/``"decoder"`` lists with ``features=True``).
Tensors are ``(B, C, Z, Y, X)``; every spatial side must be a multiple of 16.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from semisupseg.nets import register_network
from semisupseg.nets.vnet import VNet, VNetConfig, _norm
from semisupseg.runtime import fp32_conv3x3


@dataclass
class SBNetConfig(VNetConfig):
    """Architecture of an :class:`SBNet` (stored in checkpoint metadata).

    The fields of :class:`~semisupseg.nets.vnet.VNetConfig` (``num_classes`` counts the background; ``seg_form``
    ``"sigmoid"`` needs ``num_classes == 2``) — the SDM branch is part of the architecture, so ``sdm_head`` must be
    ``True`` — plus ``se_reduction``, the FFM's squeeze-and-excitation reduction ratio.
    """

    sdm_head: bool = True
    se_reduction: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.sdm_head:
            raise ValueError("the SB-Net network always has its SDM branch: sdm_head must be True")
        if self.se_reduction < 1:
            raise ValueError(f"se_reduction must be >= 1, got {self.se_reduction}")

    @property
    def fg_channels(self) -> int:
        """``K = num_classes - 1``: channels of every PSM/SDM map."""
        return self.num_classes - 1


class FeatureFusionModule(nn.Module):
    """SB-Net's FFM: conv → SE channel attention with residual addition (``V ⊙ s + V``) → 1x1x1 conv to ``K``."""

    def __init__(self, in_channels: int, width: int, out_channels: int, normalization: str, reduction: int = 2):
        super().__init__()
        norm = _norm(normalization, width) if normalization != "groupnorm" or width % 16 == 0 else None
        layers: List[nn.Module] = [nn.Conv3d(in_channels, width, 3, padding=1)]
        if norm is not None:
            layers.append(norm)
        layers.append(nn.ReLU(inplace=True))
        self.embed = nn.Sequential(*layers)
        hidden = max(1, width // reduction)
        self.squeeze = nn.Linear(width, hidden)
        self.excite = nn.Linear(hidden, width)
        self.out = nn.Conv3d(width, out_channels, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        v = fp32_conv3x3(self.embed, u)
        s = torch.sigmoid(self.excite(F.relu(self.squeeze(v.mean(dim=(2, 3, 4))))))
        v = v * s[:, :, None, None, None] + v  # channel attention with the residual addition
        return self.out(v)


class SBNet(nn.Module):
    """The SB-Net multi-branch network (see the module docstring)."""

    def __init__(self, config: SBNetConfig = None, **kwargs):
        super().__init__()
        if config is None:
            config = SBNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either an SBNetConfig or keyword arguments, not both")
        self.config = config
        n, k = config.n_filters, config.fg_channels
        # every V-Net option of the config (widths, cap, depths, residual stages, norm, dropout) reaches the backbone;
        # its own head is removed below, so its head form is the plain one
        trunk = {f.name: getattr(config, f.name) for f in fields(VNetConfig)}
        trunk.update(num_classes=2, seg_form="softmax", sdm_head=False)
        backbone = VNet(VNetConfig(**trunk))
        del backbone.out_conv  # the backbone's own head is replaced by the branches below (no unused parameters)
        self.backbone = backbone
        w = config.widths  # decoder outputs at 1/4, 1/2, 1 have the widths of encoder stages 3, 2, 1
        self.psm_heads = nn.ModuleList([nn.Conv3d(w[2], k, 1), nn.Conv3d(w[1], k, 1), nn.Conv3d(w[0], k, 1)])
        self.psm_scales = (4, 2, 1)
        self.fuse4 = nn.Conv3d(3 * k, k, 1)
        self.sdm_conv = nn.Conv3d(n, k, 1)
        self.ffm = FeatureFusionModule(config.in_channels + 2 * k, n, k, config.normalization, config.se_reduction)
        self.fuse5 = nn.Conv3d(2 * k, k, 1)

    def forward(self, x: torch.Tensor, features: bool = False) -> Dict[str, torch.Tensor]:
        encoder = self.backbone.encode(x)
        decoder = self.backbone.decode(encoder)
        _, x7, x8, x9 = decoder
        size = x.shape[2:]
        maps = []
        for head, scale, feat in zip(self.psm_heads, self.psm_scales, (x7, x8, x9)):
            f = head(feat)
            if scale != 1:
                f = F.interpolate(f, size=size, mode="trilinear", align_corners=False)
            maps.append(f)
        f4 = self.fuse4(torch.cat(maps, dim=1))
        sdm = torch.tanh(self.sdm_conv(x9))
        f5 = self.ffm(torch.cat([x.to(f4.dtype), sdm.to(f4.dtype), f4], dim=1))
        final = self.fuse5(torch.cat([f4, f5], dim=1))
        out: Dict[str, torch.Tensor] = {"seg": self.seg_logits(final), "sdm": sdm,
                                        "psm": maps + [f4], "psm5": final}  # type: ignore[dict-item]
        if features:
            out["encoder"] = encoder  # type: ignore[assignment]
            out["decoder"] = decoder  # type: ignore[assignment]
        return out

    def seg_logits(self, psm_logits: torch.Tensor) -> torch.Tensor:
        """``(B, K, ...)`` one-vs-rest sigmoid logits → ``"seg"`` in the configured ``seg_form``."""
        return multilabel_to_seg_logits(psm_logits, self.config.seg_form)

    def probabilities(self, seg_logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, C, ...)`` from ``out["seg"]``."""
        if self.config.seg_form == "sigmoid":
            p = torch.sigmoid(seg_logits)
            return torch.cat([1 - p, p], dim=1)
        return torch.softmax(seg_logits, dim=1)


def multilabel_to_seg_logits(psm_logits: torch.Tensor, seg_form: str) -> torch.Tensor:
    """One-vs-rest logits ``z`` ``(B, K, ...)`` → segmentation logits of ``seg_form``.

    ``"sigmoid"`` (K = 1): ``z`` unchanged. ``"softmax"``: ``[Σ_k log σ(-z_k), log σ(z_1), ..., log σ(z_K)]``, whose
    softmax is ``q / Σ q`` with ``q_0 = Π_k (1 - σ(z_k))``, ``q_k = σ(z_k)``.
    """
    if seg_form == "sigmoid":
        if psm_logits.shape[1] != 1:
            raise ValueError("seg_form 'sigmoid' needs a single foreground channel")
        return psm_logits
    z = psm_logits.float()
    background = F.logsigmoid(-z).sum(dim=1, keepdim=True)
    return torch.cat([background, F.logsigmoid(z)], dim=1)


register_network("sbnet", SBNet, SBNetConfig)

__all__ = ["SBNet", "SBNetConfig", "FeatureFusionModule", "multilabel_to_seg_logits"]
