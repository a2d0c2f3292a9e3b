"""Networks, registered by architecture name so checkpoints can rebuild them from JSON metadata.

A segmentation network's contract (what inference, the engine and the methods rely on):

* ``forward(x, features=False)`` with ``x`` ``(B, C_in, Z, Y, X)`` returns a dict with ``"seg"`` (segmentation
  logits ``(B, seg_channels, Z, Y, X)``), ``"sdm"`` when it has an SDM head, and the method-specific extras;
* ``config``: a dataclass with at least ``in_channels``, ``num_classes``, ``seg_form`` and ``to_dict()``;
* ``probabilities(seg_logits)`` → ``(B, C, Z, Y, X)`` class probabilities.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple, Type

from torch import nn

from semisupseg.nets.ensemble import EnsembleConfig, EnsembleNet
from semisupseg.nets.vnet import VNet, VNetConfig, seg_probabilities, softmax_logits

#: arch name → (network class, config class)
_ARCHS: Dict[str, Tuple[Type[nn.Module], type]] = {"vnet": (VNet, VNetConfig),
                                                   "ensemble": (EnsembleNet, EnsembleConfig)}


def register_network(arch: str, network_cls: Type[nn.Module], config_cls: type) -> None:
    """Register a network class (constructor takes one config instance) under ``arch``."""
    if arch in _ARCHS and _ARCHS[arch][0] is not network_cls:
        raise ValueError(f"network {arch!r} registered twice")
    _ARCHS[arch] = (network_cls, config_cls)


def _registered(arch: str) -> Tuple[Type[nn.Module], type]:
    """``(network class, config class)`` of ``arch``; ``KeyError`` listing the known ones."""
    if arch not in _ARCHS:
        import semisupseg.methods as _methods  # method modules register their networks on import

        _methods.list_methods()
    if arch not in _ARCHS:
        raise KeyError(f"unknown network architecture {arch!r}; known: {sorted(_ARCHS)}")
    return _ARCHS[arch]


def build_network(arch: str, config: Dict[str, Any]) -> nn.Module:
    """Build the network ``arch`` from a config dict (as stored in checkpoint metadata)."""
    network_cls, config_cls = _registered(arch)
    return network_cls(config_cls(**config))


def check_network_config(arch: str, config: Dict[str, Any]) -> None:
    """Build only the config of network ``arch`` from ``config`` (no weights): ``ValueError`` naming the option
    when one is unknown to the architecture or has a bad value (what :func:`build_network` would meet later)."""
    config_cls = _registered(arch)[1]
    known = {f.name for f in dataclasses.fields(config_cls)} if dataclasses.is_dataclass(config_cls) else None
    unknown = sorted(set(config) - known) if known is not None else []
    if unknown:
        hint = " (YAML needs a space after a key's colon: {dropout: false})" if any(":" in k for k in unknown) else ""
        raise ValueError(f"unknown network option(s) {', '.join(map(repr, unknown))} for {arch!r}{hint}; known: "
                         f"{', '.join(sorted(known))}")
    config_cls(**config)


def network_arch(model: nn.Module) -> str:
    """The registered name of ``model``'s class."""
    for name, (cls, _) in _ARCHS.items():
        if type(model) is cls:
            return name
    raise KeyError(f"{type(model).__name__} is not a registered network")


__all__ = ["VNet", "VNetConfig", "EnsembleNet", "EnsembleConfig", "seg_probabilities", "softmax_logits",
           "register_network", "build_network", "check_network_config", "network_arch"]
