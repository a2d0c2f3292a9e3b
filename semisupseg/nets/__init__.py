"""Networks: the V-Net backbone and its heads (``vnet``); method-specific networks live beside it."""
from semisupseg.nets.vnet import VNet, VNetConfig

__all__ = ["VNet", "VNetConfig"]
