"""Multiply-accumulate count of a network's convolutions and linear layers, for turning benchmark times into
achieved throughput (GMAC/s) and comparing it with what the CPU can do at most.

``conv_macs(model, *inputs)`` runs one forward of a copy of the model on the ``meta`` device (shapes only: no
arithmetic, no memory) with hooks on every ``Conv3d``/``ConvTranspose3d``/
``Linear`` and returns the MACs of that forward: output voxels x C_out x C_in / groups x kernel volume for a
convolution, input voxels x C_in x C_out / groups x kernel volume for a transposed one. A training step's backward
costs about twice its forward (input and weight gradients), less for the first layer (no input gradient).
"""
from __future__ import annotations

import math
from typing import Any, List

import torch
from torch import nn


def module_macs(module: nn.Module, inp: torch.Tensor, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of ``module`` (``Conv3d``, ``ConvTranspose3d`` or ``Linear``; 0 for any other
    layer) on input ``inp`` giving ``output``."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if not isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        return 0
    k = math.prod(module.kernel_size)
    if isinstance(module, nn.ConvTranspose3d):
        return inp.numel() * module.out_channels * k // module.groups
    return output.numel() * (module.in_channels // module.groups) * k


def conv_macs(model: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    total = [0]

    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        total[0] += module_macs(module, args[0], output)

    import copy

    model = copy.deepcopy(model).to("meta")
    inputs = tuple(x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs)
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear))]
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def time_matmul(n: int, dtype: torch.dtype, threads: int, repeats: int) -> List[float]:
    """Seconds per ``n x n @ n x n`` product in ``dtype`` on the CPU with ``threads`` threads, one entry per repeat
    (after two warm-up products); the caller's thread setting is restored."""
    import time

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        for _ in range(2):
            a @ b
        out = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            out.append(time.perf_counter() - t)
        return out
    finally:
        torch.set_num_threads(before)


def gemm_peak(dtype: torch.dtype = torch.bfloat16, threads: int = 2, n: int = 4096, repeats: int = 5) -> float:
    """Achieved GMAC/s of a square ``n`` x ``n`` matrix product in ``dtype`` on the CPU with ``threads`` threads:
    the practical ceiling the convolutions (oneDNN GEMM-like kernels) can approach on this machine
    (``benchmarks/ceiling.py`` measures it over sizes and threads, next to a convolution)."""
    return n ** 3 * repeats / sum(time_matmul(n, dtype, threads, repeats)) / 1e9
