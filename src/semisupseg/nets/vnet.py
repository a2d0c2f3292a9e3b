"""The 3D V-Net of the reference papers (UA-MT, SASSNet, DTC, SGRS-Net releases).

Widths n, 2n, 4n, 8n, 16n (optionally capped at ``max_filters``); encoder stage depths 1, 2, 3, 3, 3 (optionally
``encoder_depths``); decoder depths 3, 3, 2, 1; plain stages (optionally ``residual``, the original V-Net's); 2x2x2 strided convolutions down, transposed convolutions up, additive skip connections. Module names equal those of the public releases, so their
``state_dict`` loads without renaming:

* plain V-Net (UA-MT ``vnet.py``): ``out_conv`` is the segmentation head;
* V-Net with SDM head (SASSNet/DTC ``vnet_sdf.py``): ``out_conv`` (+ tanh) is the **SDM** head and ``out_conv2`` the
  segmentation head.

Tensors are ``(B, C, Z, Y, X)``; every spatial side must be a multiple of 16.

The MC-Net and SGRS-Net releases split the same network into ``encoder.`` and ``decoder.``/``decoder1.`` modules;
:func:`map_state_dict` renames their keys (and :func:`infer_vnet_config` reads the architecture off a state_dict), see
the section "Peer release layouts" at the end of this module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import math
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from semisupseg.runtime import fp32_conv3x3

NORMALIZATIONS = ("batchnorm", "groupnorm", "instancenorm", "none")
SEG_FORMS = ("softmax", "sigmoid")
#: convolutions of the releases' encoder stages 1-5
RELEASE_ENCODER_DEPTHS = (1, 2, 3, 3, 3)


@dataclass
class VNetConfig:
    """Architecture of a :class:`VNet`; stored in checkpoint metadata.

    ``num_classes`` counts the background: 2 for a binary task. ``seg_form`` ``"softmax"`` has ``num_classes`` output
    channels; ``"sigmoid"`` (the SASSNet/DTC binary form) has one foreground-logit channel and needs ``num_classes == 2``.
    ``sdm_head`` adds a tanh head with one channel per foreground class (``num_classes - 1``).
    ``max_filters`` caps the stage widths: stage ``k`` (1-5) has ``min(n_filters * 2^(k-1), max_filters)`` channels.
    ``None`` (the default) is the releases' network, widths n..16n. A cap keeps the full-resolution width and sheds
    most weights from the 1/8 and 1/16 stages (n_filters 16 capped at 64: 1.95 M weights instead of 9.45 M, 13 % fewer
    multiply-adds), as nnU-Net caps its 3D feature maps; checkpoints record it, the releases' never have one.
    ``residual`` makes every stage a residual one, as in the original V-Net (Milletari et al. 2016, Fig. 1; the
    releases' ``ResidualConvBlock``): the stage adds its input to the output of its last convolution before the last
    ReLU; a one-channel input is broadcast over the first stage's channels, as in the paper; a stage whose input
    width differs from its own otherwise stays plain. Same parameters and keys (a state_dict cannot tell it).
    ``encoder_depths``: convolutions of encoder stages 1-5 (``None``: the releases' 1, 2, 3, 3, 3).
    ``None``/``False`` options are left out of :meth:`to_dict`, so a release-shaped network's metadata is unchanged.
    """

    in_channels: int = 1
    num_classes: int = 2
    seg_form: str = "softmax"
    sdm_head: bool = False
    n_filters: int = 16
    normalization: str = "batchnorm"
    dropout: bool = False
    dropout_p: float = 0.5
    max_filters: Optional[int] = None
    residual: bool = False
    encoder_depths: Optional[Tuple[int, int, int, int, int]] = None

    def __post_init__(self) -> None:
        for name in ("in_channels", "n_filters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("sdm_head", "dropout"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.dropout_p, bool) or not isinstance(self.dropout_p, (int, float)) \
                or not 0.0 <= self.dropout_p < 1.0:
            raise ValueError(f"dropout_p must be a number in [0, 1), got {self.dropout_p!r}")
        if self.encoder_depths is not None:
            depths = tuple(self.encoder_depths)
            if len(depths) != 5 or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 16
                                       for d in depths):
                raise ValueError(f"encoder_depths must be 5 integers 1-16 (convolutions of stages 1-5), "
                                 f"got {self.encoder_depths!r}")
            self.encoder_depths = depths  # type: ignore[assignment]  # a JSON list becomes a tuple
        if not isinstance(self.residual, bool):
            raise ValueError(f"residual must be true or false, got {self.residual!r}")
        if self.max_filters is not None and (isinstance(self.max_filters, bool) or not isinstance(self.max_filters, int)
                                             or self.max_filters < self.n_filters):
            raise ValueError(f"max_filters must be an integer >= n_filters ({self.n_filters}) or None, "
                             f"got {self.max_filters!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.seg_form not in SEG_FORMS:
            raise ValueError(f"seg_form must be one of {SEG_FORMS}, got {self.seg_form!r}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {self.num_classes}")
        if self.seg_form == "sigmoid" and self.num_classes != 2:
            raise ValueError("seg_form 'sigmoid' is the binary form: num_classes must be 2")

    @property
    def widths(self) -> Tuple[int, int, int, int, int]:
        """Channels of encoder stages 1-5 (scales 1 .. 1/16); the decoder mirrors stages 4-1."""
        cap = self.max_filters
        return tuple(self.n_filters * 2 ** k if cap is None else min(self.n_filters * 2 ** k, cap)
                     for k in range(5))  # type: ignore[return-value]

    @property
    def depths(self) -> Tuple[int, int, int, int, int]:
        """Convolutions of encoder stages 1-5 (the decoder's stages 6-9 have 3, 3, 2, 1)."""
        return self.encoder_depths if self.encoder_depths is not None else RELEASE_ENCODER_DEPTHS  # type: ignore

    @property
    def seg_channels(self) -> int:
        return 1 if self.seg_form == "sigmoid" else self.num_classes

    @property
    def sdm_channels(self) -> int:
        return self.num_classes - 1 if self.sdm_head else 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("max_filters", "encoder_depths", "residual"):  # the releases' network: metadata as before the
            if d[key] is None or d[key] is False:                   # options existed
                del d[key]
        if "encoder_depths" in d:
            d["encoder_depths"] = list(d["encoder_depths"])  # JSON has lists
        return d


def group_norm_groups(channels: int) -> int:
    """Number of groups of the ``"groupnorm"`` option: 16 as in the releases (which need ``channels % 16 == 0``);
    for narrower layers (``n_filters < 16``, only used in tests and tiny models) the largest divisor of 16 that
    divides ``channels``. Identical to the releases wherever they can be built."""
    return math.gcd(16, channels)


def _norm(kind: str, channels: int) -> Optional[nn.Module]:
    if kind == "batchnorm":
        return nn.BatchNorm3d(channels)
    if kind == "groupnorm":
        return nn.GroupNorm(num_groups=group_norm_groups(channels), num_channels=channels)
    if kind == "instancenorm":
        return nn.InstanceNorm3d(channels)
    return None


def _conv_norm_relu(conv: nn.Module, channels: int, normalization: str) -> List[nn.Module]:
    norm = _norm(normalization, channels)
    return [conv] + ([norm] if norm is not None else []) + [nn.ReLU(inplace=True)]


class ConvBlock(nn.Module):
    """``n_stages`` x (3x3x3 conv, norm, ReLU); keys ``conv.<i>.*`` as in the releases.

    ``residual``: ``ReLU(convs(x) + x)`` with the last ReLU moved after the addition (the original V-Net's stage);
    only where ``x`` fits: the same width, or one channel (broadcast). Elsewhere the block stays plain."""

    def __init__(self, n_stages: int, in_channels: int, out_channels: int, normalization: str,
                 residual: bool = False):
        super().__init__()
        layers: List[nn.Module] = []
        for i in range(n_stages):
            conv = nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1)
            layers += _conv_norm_relu(conv, out_channels, normalization)
        self.residual = residual and in_channels in (out_channels, 1)
        if self.residual:
            layers.pop()  # the last ReLU follows the addition; it has no parameters, so the keys stay the same
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # all stages keep the spatial size: one check covers them (CPU bf16 depth-2 gradient bug, see runtime)
        y = fp32_conv3x3(self.conv, x)
        if self.residual:
            y = torch.relu(y + x.to(y.dtype))
        return y


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


def _skip_add(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """The decoder's additive skip ``up + skip``; in place into ``up`` (the upsampling block's fresh output, used
    nowhere else) when no graph is recorded: one full-size feature map less per level (measured on a full-res LA
    scan, default layout: peak memory 743-744 MB instead of 795-817 MB; time unchanged)."""
    if torch.is_grad_enabled() or up.dtype != torch.promote_types(up.dtype, skip.dtype):
        return up + skip
    return up.add_(skip)


class VNet(nn.Module):
    """V-Net with a segmentation head and an optional SDM head.

    ``forward(x, features=False)`` returns a dict:

    * ``"seg"``: segmentation logits ``(B, seg_channels, Z, Y, X)`` (use :meth:`probabilities` for ``(B, C, ...)``);
    * ``"sdm"``: ``tanh`` signed-distance prediction ``(B, C - 1, Z, Y, X)`` in [-1, 1] (only with ``sdm_head``);
    * with ``features=True`` also ``"encoder"``: ``[x1, x2, x3, x4, x5]`` (scales 1, 1/2, 1/4, 1/8, 1/16; widths
      ``config.widths``, n..16n without a cap; ``x5`` after dropout) and ``"decoder"``: ``[x6, x7, x8, x9]`` (block
      outputs at scales 1/8, 1/4, 1/2, 1; widths of stages 4, 3, 2, 1; ``x9`` after dropout, as fed to the heads).
    """

    def __init__(self, config: Optional[VNetConfig] = None, **kwargs):
        super().__init__()
        if config is None:
            config = VNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a VNetConfig or keyword arguments, not both")
        self.config = config
        (w1, w2, w3, w4, w5), norm, res = config.widths, config.normalization, config.residual
        (d1, d2, d3, d4, d5) = config.depths
        self.block_one = ConvBlock(d1, config.in_channels, w1, norm, res)
        self.block_one_dw = DownsamplingConvBlock(w1, w2, norm)
        self.block_two = ConvBlock(d2, w2, w2, norm, res)
        self.block_two_dw = DownsamplingConvBlock(w2, w3, norm)
        self.block_three = ConvBlock(d3, w3, w3, norm, res)
        self.block_three_dw = DownsamplingConvBlock(w3, w4, norm)
        self.block_four = ConvBlock(d4, w4, w4, norm, res)
        self.block_four_dw = DownsamplingConvBlock(w4, w5, norm)
        self.block_five = ConvBlock(d5, w5, w5, norm, res)
        self.block_five_up = UpsamplingDeconvBlock(w5, w4, norm)
        self.block_six = ConvBlock(3, w4, w4, norm, res)
        self.block_six_up = UpsamplingDeconvBlock(w4, w3, norm)
        self.block_seven = ConvBlock(3, w3, w3, norm, res)
        self.block_seven_up = UpsamplingDeconvBlock(w3, w2, norm)
        self.block_eight = ConvBlock(2, w2, w2, norm, res)
        self.block_eight_up = UpsamplingDeconvBlock(w2, w1, norm)
        self.block_nine = ConvBlock(1, w1, w1, norm, res)
        if config.sdm_head:
            self.out_conv = nn.Conv3d(w1, config.sdm_channels, 1)  # SDM head (tanh), release layout
            self.out_conv2 = nn.Conv3d(w1, config.seg_channels, 1)  # segmentation head
        else:
            self.out_conv = nn.Conv3d(w1, config.seg_channels, 1)  # segmentation head
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
        x6 = self.block_six(_skip_add(self.block_five_up(x5), x4))
        x7 = self.block_seven(_skip_add(self.block_six_up(x6), x3))
        x8 = self.block_eight(_skip_add(self.block_seven_up(x7), x2))
        x9 = self.block_nine(_skip_add(self.block_eight_up(x8), x1))
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


# ----------------------------------------------------------------------------------------------------------------------
# Peer release layouts
# ----------------------------------------------------------------------------------------------------------------------
#
# Our module names are those of the single-module V-Net of the UA-MT / SASSNet / DTC releases, so for those
# ``map_state_dict`` only checks the heads. The MC-Net and SGRS-Net releases build the same network from an
# ``Encoder`` (``block_one`` … ``block_five``, with the four ``*_dw`` blocks) and one or more ``Decoder``s
# (``block_five_up`` … ``block_nine`` and the segmentation head ``out_conv``):
#
# =====================================  ======================================  ==================================
# release key                            our key                                 where
# =====================================  ======================================  ==================================
# ``encoder.block_one.conv.0.weight``    ``block_one.conv.0.weight``             MC-Net, SGRS-Net (every encoder key)
# ``decoder1.block_five_up.conv.0.*``    ``block_five_up.conv.0.*``              MCNet3d_v1/v2/v3, SGRS-Net ``VNet``
# ``decoder1.out_conv.weight``           ``out_conv.weight``                     segmentation head (softmax)
# ``decoder.block_six.conv.3.weight``    ``block_six.conv.3.weight``             MC-Net's single-decoder ``VNet``
# ``decoder2.*``, ``decoder3.*``         dropped (reported)                      MC-Net's auxiliary decoders
# ``module.<key>``                       ``<key>``                               ``nn.DataParallel`` wrappers (any layout)
# =====================================  ======================================  ==================================
#
# Only a decoder built with transposed-convolution upsampling (MC-Net ``mode_interpolation=0``, SGRS-Net
# ``up_type=0``: ``decoder``, ``decoder1``, MC-Net v3's ``decoder4``) is our V-Net's decoder; MC-Net's ``decoder2``
# (trilinear upsampling + 3x3x3 conv) and ``decoder3`` (nearest + conv) are different networks and cannot be mapped.

#: supported peer layouts (``import-checkpoint --layout``)
LAYOUTS = ("sassnet", "uamt", "mcnet")

ENCODER_BLOCKS = ("block_one", "block_one_dw", "block_two", "block_two_dw", "block_three", "block_three_dw",
                  "block_four", "block_four_dw", "block_five")
DECODER_BLOCKS = ("block_five_up", "block_six", "block_six_up", "block_seven", "block_seven_up", "block_eight",
                  "block_eight_up", "block_nine", "out_conv")
#: decoders of the MC-Net/SGRS-Net releases that use transposed convolutions, in order of preference
MCNET_DECODERS = ("decoder1", "decoder", "decoder4")


class LayoutError(ValueError):
    """A state_dict that does not fit the stated peer layout (the message says what is wrong)."""


def _strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _few(keys, n: int = 5) -> str:
    keys = sorted(keys)
    more = f" … (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def map_state_dict(state_dict: Mapping[str, torch.Tensor], layout: str,
                   decoder: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a peer release's V-Net ``state_dict`` to our :class:`VNet` keys.

    ``layout``: ``"uamt"`` (plain V-Net, ``out_conv`` = segmentation head), ``"sassnet"`` (SASSNet/DTC V-Net with SDM
    head: ``out_conv`` = SDM head, ``out_conv2`` = segmentation head) or ``"mcnet"`` (MC-Net/SGRS-Net
    ``encoder.``/``decoderK.`` split, see the table above). ``decoder`` picks the MC-Net decoder to keep (default: the
    first present of ``decoder1``, ``decoder``, ``decoder4``). A ``module.`` prefix (``nn.DataParallel``) is removed.

    Returns ``(mapped_state_dict, dropped_keys)``; raises :class:`LayoutError` when the keys do not fit the layout.
    Tensors are not copied.
    """
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    sd = _strip_prefix(state_dict, "module.")
    if not sd:
        raise LayoutError("the state_dict is empty")
    dropped: List[str] = []
    if layout in ("uamt", "sassnet"):
        if any(k.startswith("encoder.") for k in sd):
            raise LayoutError("keys start with 'encoder.': this is the MC-Net/SGRS-Net split layout, use --layout mcnet")
        has_sdm = "out_conv2.weight" in sd
        if layout == "sassnet" and not has_sdm:
            raise LayoutError("layout 'sassnet' needs the two heads out_conv (SDM) and out_conv2 (segmentation), "
                              "but there is no out_conv2: a plain V-Net is --layout uamt")
        if layout == "uamt" and has_sdm:
            raise LayoutError("the state_dict has out_conv2 (a second head): a SASSNet/DTC V-Net with SDM head is "
                              "--layout sassnet")
        return sd, dropped
    # mcnet
    decoders = sorted({k.split(".", 1)[0] for k in sd if k.startswith("decoder")})
    if not any(k.startswith("encoder.") for k in sd) or not decoders:
        raise LayoutError("layout 'mcnet' expects keys 'encoder.…' and 'decoder1.…' (or 'decoder.…'); found e.g. "
                          + _few(sd))
    if decoder is None:
        candidates = [d for d in MCNET_DECODERS if d in decoders]
        decoder = candidates[0] if candidates else decoders[0]
    if decoder not in decoders:
        raise LayoutError(f"no decoder {decoder!r}; the state_dict has {', '.join(decoders)}")
    up = sd.get(f"{decoder}.block_five_up.conv.0.weight")
    if up is None or up.ndim != 5 or up.shape[2:] != (2, 2, 2):
        raise LayoutError(f"{decoder} does not upsample with 2x2x2 transposed convolutions (MC-Net's decoder2/decoder3 "
                          "use interpolation + 3x3x3 conv, a different network); pick another decoder")
    out: Dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        head, rest = key.split(".", 1) if "." in key else (key, "")
        if head == "encoder":
            out[rest] = value
        elif head == decoder:
            out[rest] = value
        else:
            dropped.append(key)
    return out, dropped


def to_layout(state_dict: Mapping[str, torch.Tensor], layout: str, decoder: str = "decoder1") -> Dict[str, torch.Tensor]:
    """Inverse of :func:`map_state_dict`: our keys → the peer layout's keys (for exporting and for tests)."""
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    sd = dict(state_dict)
    has_sdm = "out_conv2.weight" in sd
    if layout == "sassnet" and not has_sdm:
        raise LayoutError("layout 'sassnet' needs an SDM head")
    if layout in ("uamt", "mcnet") and has_sdm:
        raise LayoutError(f"layout {layout!r} has no SDM head; this model has one (use 'sassnet')")
    if layout != "mcnet":
        return sd
    out: Dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        block = key.split(".", 1)[0]
        if block in ENCODER_BLOCKS:
            out["encoder." + key] = value
        elif block in DECODER_BLOCKS:
            out[f"{decoder}.{key}"] = value
        else:
            raise LayoutError(f"key {key!r} has no place in the mcnet layout")
    return out


def infer_vnet_config(state_dict: Mapping[str, torch.Tensor]) -> VNetConfig:
    """Read a :class:`VNetConfig` off a state_dict in our key layout (e.g. the output of :func:`map_state_dict`).

    ``in_channels`` and ``n_filters`` come from the first convolution, a width cap (``max_filters``) from
    ``block_five``'s when it is narrower than 16 x ``n_filters``; the normalisation from ``block_two``'s layers
    (``running_mean`` → batch norm; affine weights without running statistics → group norm; a parameter-free layer
    between the two convolutions, i.e. the second convolution at index 3 instead of 2 → instance norm (the releases'
    ``InstanceNorm3d`` is not affine); no layer in between → none); the heads from ``out_conv``/``out_conv2``: one
    segmentation channel is the sigmoid form (2 classes), more are softmax classes; an ``out_conv2`` makes
    ``out_conv`` the SDM head. ``dropout`` is not recorded in a state_dict and is set False (it only acts in training).
    """
    try:
        first = state_dict["block_one.conv.0.weight"]
    except KeyError:
        raise LayoutError("no 'block_one.conv.0.weight': not a V-Net state_dict in this layout (keys: "
                          + _few(state_dict) + ")") from None
    if first.ndim != 5:
        raise LayoutError(f"block_one.conv.0.weight has shape {tuple(first.shape)}, expected a 3D convolution")
    n_filters, in_channels = int(first.shape[0]), int(first.shape[1])
    max_filters = None
    bottom = state_dict.get("block_five.conv.0.weight")
    if bottom is not None and bottom.ndim == 5 and int(bottom.shape[0]) != 16 * n_filters:
        max_filters = int(bottom.shape[0])
        if max_filters < n_filters:
            raise LayoutError(f"block_five has {max_filters} channels, fewer than the first block's {n_filters}")
    if "block_two.conv.1.running_mean" in state_dict:
        normalization = "batchnorm"
    elif "block_two.conv.1.weight" in state_dict and state_dict["block_two.conv.1.weight"].ndim == 1:
        normalization = "groupnorm"
    elif "block_two.conv.3.weight" in state_dict:
        normalization = "instancenorm"
    elif "block_two.conv.2.weight" in state_dict:
        normalization = "none"
    else:
        raise LayoutError("cannot tell the normalisation: block_two's second convolution is missing")
    if "out_conv.weight" not in state_dict:
        raise LayoutError("no segmentation head 'out_conv.weight'")
    sdm_head = "out_conv2.weight" in state_dict
    seg = state_dict["out_conv2.weight" if sdm_head else "out_conv.weight"]
    seg_channels = int(seg.shape[0])
    if seg_channels == 1:
        seg_form, num_classes = "sigmoid", 2
    else:
        seg_form, num_classes = "softmax", seg_channels
    if sdm_head:
        sdm_channels = int(state_dict["out_conv.weight"].shape[0])
        if sdm_channels != num_classes - 1:
            raise LayoutError(f"the SDM head has {sdm_channels} channels but the segmentation head implies "
                              f"{num_classes} classes (expected {num_classes - 1} SDM channels)")
    return VNetConfig(in_channels=in_channels, num_classes=num_classes, seg_form=seg_form, sdm_head=sdm_head,
                      n_filters=n_filters, normalization=normalization, dropout=False, max_filters=max_filters)
