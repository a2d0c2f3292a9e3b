"""The 3D V-Net of the reference papers (UA-MT, SASSNet, DTC, SGRS-Net releases).

Widths n, 2n, 4n, 8n, 16n; encoder stage depths 1, 2, 3, 3, 3; decoder depths 3, 3, 2, 1; 2x2x2 strided convolutions
down, transposed convolutions up, additive skip connections. Module names equal those of the public releases, so their
``state_dict`` loads without renaming:

* plain V-Net (UA-MT ``vnet.py``): ``out_conv`` is the segmentation head;
* V-Net with SDM head (SASSNet/DTC ``vnet_sdf.py``): ``out_conv`` (+ tanh) is the **SDM** head and ``out_conv2`` the
  segmentation head.

Tensors are ``(B, C, Z, Y, X)``; every spatial side must be a multiple of 16.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import torch
from torch import nn

NORMALIZATIONS = ("batchnorm", "groupnorm", "instancenorm", "none")
SEG_FORMS = ("softmax", "sigmoid")


@dataclass
class VNetConfig:
    """Architecture of a :class:`VNet`; stored in checkpoint metadata.

    ``num_classes`` counts the background: 2 for a binary task. ``seg_form`` ``"softmax"`` has ``num_classes`` output
    channels; ``"sigmoid"`` (the SASSNet/DTC binary form) has one foreground-logit channel and needs ``num_classes == 2``.
    ``sdm_head`` adds a tanh head with one channel per foreground class (``num_classes - 1``).
    """

    in_channels: int = 1
    num_classes: int = 2
    seg_form: str = "softmax"
    sdm_head: bool = False
    n_filters: int = 16
    normalization: str = "batchnorm"
    dropout: bool = False
    dropout_p: float = 0.5

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.seg_form not in SEG_FORMS:
            raise ValueError(f"seg_form must be one of {SEG_FORMS}, got {self.seg_form!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {self.num_classes}")
        if self.seg_form == "sigmoid" and self.num_classes != 2:
            raise ValueError("seg_form 'sigmoid' is the binary form: num_classes must be 2")

    @property
    def seg_channels(self) -> int:
        return 1 if self.seg_form == "sigmoid" else self.num_classes

    @property
    def sdm_channels(self) -> int:
        return self.num_classes - 1 if self.sdm_head else 0

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(kind: str, channels: int) -> Optional[nn.Module]:
    if kind == "batchnorm":
        return nn.BatchNorm3d(channels)
    if kind == "groupnorm":
        return nn.GroupNorm(num_groups=16, num_channels=channels)
    if kind == "instancenorm":
        return nn.InstanceNorm3d(channels)
    return None


def _conv_norm_relu(conv: nn.Module, channels: int, normalization: str) -> List[nn.Module]:
    norm = _norm(normalization, channels)
    return [conv] + ([norm] if norm is not None else []) + [nn.ReLU(inplace=True)]


class ConvBlock(nn.Module):
    """``n_stages`` x (3x3x3 conv, norm, ReLU); keys ``conv.<i>.*`` as in the releases."""

    def __init__(self, n_stages: int, in_channels: int, out_channels: int, normalization: str):
        super().__init__()
        layers: List[nn.Module] = []
        for i in range(n_stages):
            conv = nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1)
            layers += _conv_norm_relu(conv, out_channels, normalization)
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DownsamplingConvBlock(nn.Module):
    """2x2x2 stride-2 convolution, norm, ReLU (halves each spatial side)."""

    def __init__(self, in_channels: int, out_channels: int, normalization: str):
        super().__init__()
        self.conv = nn.Sequential(
            *_conv_norm_relu(nn.Conv3d(in_channels, out_channels, 2, stride=2), out_channels, normalization)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UpsamplingDeconvBlock(nn.Module):
    """2x2x2 stride-2 transposed convolution, norm, ReLU (doubles each spatial side)."""

    def __init__(self, in_channels: int, out_channels: int, normalization: str):
        super().__init__()
        self.conv = nn.Sequential(
            *_conv_norm_relu(nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2), out_channels, normalization)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class VNet(nn.Module):
    """V-Net with a segmentation head and an optional SDM head.

    ``forward(x, features=False)`` returns a dict:

    * ``"seg"``: segmentation logits ``(B, seg_channels, Z, Y, X)`` (use :meth:`probabilities` for ``(B, C, ...)``);
    * ``"sdm"``: ``tanh`` signed-distance prediction ``(B, C - 1, Z, Y, X)`` in [-1, 1] (only with ``sdm_head``);
    * with ``features=True`` also ``"encoder"``: ``[x1, x2, x3, x4, x5]`` (scales 1, 1/2, 1/4, 1/8, 1/16; widths
      n..16n; ``x5`` after dropout) and ``"decoder"``: ``[x6, x7, x8, x9]`` (block outputs at scales 1/8, 1/4, 1/2, 1;
      widths 8n, 4n, 2n, n; ``x9`` after dropout, as fed to the heads).
    """

    def __init__(self, config: Optional[VNetConfig] = None, **kwargs):
        super().__init__()
        if config is None:
            config = VNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a VNetConfig or keyword arguments, not both")
        self.config = config
        n, norm = config.n_filters, config.normalization
        self.block_one = ConvBlock(1, config.in_channels, n, norm)
        self.block_one_dw = DownsamplingConvBlock(n, 2 * n, norm)
        self.block_two = ConvBlock(2, 2 * n, 2 * n, norm)
        self.block_two_dw = DownsamplingConvBlock(2 * n, 4 * n, norm)
        self.block_three = ConvBlock(3, 4 * n, 4 * n, norm)
        self.block_three_dw = DownsamplingConvBlock(4 * n, 8 * n, norm)
        self.block_four = ConvBlock(3, 8 * n, 8 * n, norm)
        self.block_four_dw = DownsamplingConvBlock(8 * n, 16 * n, norm)
        self.block_five = ConvBlock(3, 16 * n, 16 * n, norm)
        self.block_five_up = UpsamplingDeconvBlock(16 * n, 8 * n, norm)
        self.block_six = ConvBlock(3, 8 * n, 8 * n, norm)
        self.block_six_up = UpsamplingDeconvBlock(8 * n, 4 * n, norm)
        self.block_seven = ConvBlock(3, 4 * n, 4 * n, norm)
        self.block_seven_up = UpsamplingDeconvBlock(4 * n, 2 * n, norm)
        self.block_eight = ConvBlock(2, 2 * n, 2 * n, norm)
        self.block_eight_up = UpsamplingDeconvBlock(2 * n, n, norm)
        self.block_nine = ConvBlock(1, n, n, norm)
        if config.sdm_head:
            self.out_conv = nn.Conv3d(n, config.sdm_channels, 1)  # SDM head (tanh), release layout
            self.out_conv2 = nn.Conv3d(n, config.seg_channels, 1)  # segmentation head
        else:
            self.out_conv = nn.Conv3d(n, config.seg_channels, 1)  # segmentation head
        self.dropout = nn.Dropout3d(p=config.dropout_p, inplace=False)

    @property
    def seg_head(self) -> nn.Conv3d:
        return self.out_conv2 if self.config.sdm_head else self.out_conv

    @property
    def sdm_head(self) -> Optional[nn.Conv3d]:
        return self.out_conv if self.config.sdm_head else None

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        if self.config.dropout:
            x5 = self.dropout(x5)
        return [x1, x2, x3, x4, x5]

    def decode(self, encoder: List[torch.Tensor]) -> List[torch.Tensor]:
        x1, x2, x3, x4, x5 = encoder
        x6 = self.block_six(self.block_five_up(x5) + x4)
        x7 = self.block_seven(self.block_six_up(x6) + x3)
        x8 = self.block_eight(self.block_seven_up(x7) + x2)
        x9 = self.block_nine(self.block_eight_up(x8) + x1)
        if self.config.dropout:
            x9 = self.dropout(x9)
        return [x6, x7, x8, x9]

    def forward(self, x: torch.Tensor, features: bool = False) -> Dict[str, torch.Tensor]:
        encoder = self.encode(x)
        decoder = self.decode(encoder)
        x9 = decoder[-1]
        out: Dict[str, torch.Tensor] = {"seg": self.seg_head(x9)}
        if self.config.sdm_head:
            out["sdm"] = torch.tanh(self.out_conv(x9))
        if features:
            out["encoder"] = encoder  # type: ignore[assignment]
            out["decoder"] = decoder  # type: ignore[assignment]
        return out

    def probabilities(self, seg_logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, C, ...)`` from ``out["seg"]`` (the sigmoid form becomes ``[1 - p, p]``)."""
        return seg_probabilities(seg_logits, self.config.seg_form)


def seg_probabilities(seg_logits: torch.Tensor, seg_form: str) -> torch.Tensor:
    """Class probabilities ``(B, C, ...)`` from segmentation logits of either head form."""
    if seg_form == "sigmoid":
        p = torch.sigmoid(seg_logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(seg_logits, dim=1)


def softmax_logits(seg_logits: torch.Tensor, seg_form: str) -> torch.Tensor:
    """``(B, C, ...)`` logits whose softmax are the class probabilities, for either head form.

    The sigmoid form's foreground logit ``z`` becomes ``[0, z]`` (softmax of which is ``[1 - σ(z), σ(z)]``), so every
    loss can be written once for softmax logits.
    """
    if seg_form == "sigmoid":
        return torch.cat([torch.zeros_like(seg_logits), seg_logits], dim=1)
    return seg_logits
