"""An ensemble of segmentation networks as one network: the mean of its members' class probabilities.

One model file can hold several trained networks (nnU-Net ships its five folds the same way); inference, the CLI and
the Slicer modules use it like any other model, because it keeps the network contract (``semisupseg.nets``):

* ``forward(x)`` returns ``{"seg": log(mean_k p_k)}``, where ``p_k`` ``(B, C, Z, Y, X)`` are member ``k``'s class
  probabilities (float32, whatever the autocast precision of the members). Softmax of these "logits" gives back the
  mean probabilities exactly up to rounding (``softmax(log p) = p / sum(p)`` and ``sum(p) = 1``), so
  :meth:`probabilities`, entropy maps and argmax labels are those of the averaged probabilities;
* ``"sdm"``: the mean of the members' SDM heads when every member has one (else no SDM output);
* ``features=True`` is not supported (an ensemble is for inference; training builds single networks).

Members may differ in architecture and width; they must agree on input channels and classes. Their weights live
under ``members.<k>.`` in the state dict. The preprocessing they share (spacing, normalisation, patch) is the model
card's business: :func:`semisupseg.ensembles.combine_models` checks it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch
from torch import nn

#: at most this many members (an ensemble's inference time is the sum of its members')
MAX_MEMBERS = 8
#: probabilities are clamped here before the log, so a class no member predicts anywhere stays finite
_TINY = 1e-12


@dataclass
class EnsembleConfig:
    """Members as ``[{"arch": name, "config": {...}}, ...]`` (each rebuilt with
    :func:`semisupseg.nets.build_network`); ``in_channels``, ``num_classes`` and ``sdm_head`` (every member has an SDM
    head) describe the whole and must agree with the members. The output is always the softmax form."""

    members: List[Dict[str, Any]] = field(default_factory=list)
    in_channels: int = 1
    num_classes: int = 2
    seg_form: str = "softmax"
    sdm_head: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.members, list) or not 2 <= len(self.members) <= MAX_MEMBERS:
            raise ValueError(f"an ensemble needs 2-{MAX_MEMBERS} members, got "
                             f"{len(self.members) if isinstance(self.members, list) else self.members!r}")
        for i, m in enumerate(self.members):
            if not isinstance(m, dict) or not isinstance(m.get("arch"), str) or not isinstance(m.get("config"), dict):
                raise ValueError(f"ensemble member {i} must be {{'arch': name, 'config': {{...}}}}, got {m!r}")
            if m["arch"] == "ensemble":
                raise ValueError(f"ensemble member {i} is itself an ensemble: list its members instead")
        if self.seg_form != "softmax":
            raise ValueError(f"an ensemble's output is the softmax form, got seg_form {self.seg_form!r}")

    @property
    def seg_channels(self) -> int:
        return self.num_classes

    def to_dict(self) -> dict:
        return {"members": [{"arch": m["arch"], "config": dict(m["config"])} for m in self.members],
                "in_channels": self.in_channels, "num_classes": self.num_classes, "seg_form": self.seg_form,
                "sdm_head": self.sdm_head}


class EnsembleNet(nn.Module):
    """Mean class probabilities of ``config.members`` (see the module docstring)."""

    def __init__(self, config: EnsembleConfig):
        super().__init__()
        from semisupseg.nets import build_network

        self.config = config
        self.members = nn.ModuleList(build_network(m["arch"], m["config"]) for m in config.members)
        for i, member in enumerate(self.members):
            c = member.config
            if int(c.in_channels) != config.in_channels or int(c.num_classes) != config.num_classes:
                raise ValueError(f"ensemble member {i} takes {c.in_channels} channel(s) and has {c.num_classes} "
                                 f"classes; the ensemble says {config.in_channels} and {config.num_classes}")
            if config.sdm_head and not getattr(c, "sdm_head", False):
                raise ValueError(f"the ensemble declares an SDM head but member {i} has none")

    def forward(self, x: torch.Tensor, features: bool = False) -> Dict[str, torch.Tensor]:
        if features:
            raise NotImplementedError("an ensemble has no single feature pyramid (it is for inference)")
        prob_sum = None
        sdm_sum = None
        for member in self.members:
            out = member(x)
            prob = member.probabilities(out["seg"].float())
            prob_sum = prob if prob_sum is None else prob_sum + prob
            if self.config.sdm_head:
                sdm = out["sdm"].float()
                sdm_sum = sdm if sdm_sum is None else sdm_sum + sdm
        n = float(len(self.members))
        result = {"seg": torch.log((prob_sum / n).clamp_min(_TINY))}
        if sdm_sum is not None:
            result["sdm"] = sdm_sum / n
        return result

    def probabilities(self, seg_logits: torch.Tensor) -> torch.Tensor:
        """The members' mean class probabilities ``(B, C, ...)`` from ``forward(x)["seg"]``."""
        return torch.softmax(seg_logits.float(), dim=1)


__all__ = ["EnsembleConfig", "EnsembleNet", "MAX_MEMBERS"]
