"""Data-parallel training over processes started by ``torchrun`` (NCCL on GPU, gloo on CPU).

``torchrun --nproc_per_node 2 -m semisupseg train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group. In a plain
process (no ``WORLD_SIZE`` > 1) everything here is a no-op, so the same engine code runs in both cases.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """This process's place in the run: ``rank`` of ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def env_is_main() -> bool:
    """Whether this process is rank 0 of the launch (``torchrun`` sets ``RANK``/``WORLD_SIZE``), or not distributed:
    the one process that owns the run directory (checks it, writes its files and heartbeat)."""
    return env_world_size() <= 1 or int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by ``torchrun`` with ``WORLD_SIZE > 1`` (NCCL for CUDA where the build
    has it, gloo otherwise).

    For CUDA the process uses ``cuda:LOCAL_RANK``; the caller should build its device from :func:`local_device`.
    """
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    # NCCL for CUDA where the build has it (PyTorch's Windows builds do not): gloo otherwise
    backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        # generous timeout: the other ranks wait in a collective while rank 0 validates and writes checkpoints
        timeout_s = float(os.environ.get("SEMISUPSEG_DIST_TIMEOUT_S", 7200))
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """``cuda:LOCAL_RANK`` for a distributed CUDA run, ``device`` otherwise."""
    if info.distributed and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def cleanup(info: DistInfo, synchronize: bool = False) -> None:
    """Leave the process group. ``synchronize`` (the normal end of a run, where every rank arrives): wait for the
    other ranks first, so no rank closes its connections while a peer is still in a collective. Not on errors or
    cancellation, where a peer may never arrive. Drop any DistributedDataParallel wrapper before calling this (its
    reducer keeps the group alive to interpreter exit; see ``Trainer._leave_process_group``)."""
    if info.distributed and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_grads(module: nn.Module, info: DistInfo) -> None:
    """Average the gradients of ``module``'s parameters over the processes (no-op in one process).

    For method-owned networks (discriminators) that are not wrapped in DistributedDataParallel; call it after
    ``backward`` and before the optimiser step. Parameters without a gradient on this rank get a zero gradient in
    the sum, so every rank must call it for the same module at the same point.
    """
    if not info.distributed:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def all_reduce_mean(value: float, info: DistInfo, device: Optional[torch.device] = None) -> float:
    """The mean of a scalar over the processes (for logging losses)."""
    if not info.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device or torch.device("cpu"))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def any_flag(flag: bool, info: DistInfo, device: Optional[torch.device] = None) -> bool:
    """True on every process when ``flag`` is true on any of them (cancellation agreement)."""
    if not info.distributed:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device or torch.device("cpu"))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_object(obj: Any, info: DistInfo) -> List[Any]:
    """Every process's ``obj`` (by rank); ``[obj]`` in one process."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def convert_sync_batchnorm(module: nn.Module, info: DistInfo, device: Optional[torch.device] = None) -> nn.Module:
    """BatchNorm → SyncBatchNorm when distributed on CUDA, so batch statistics cover the global batch.

    On CPU (gloo) torch's DistributedDataParallel refuses SyncBatchNorm ("only work with GPU modules"): BatchNorm
    then normalises each process's half of the batch with its own statistics (running statistics are broadcast from
    rank 0), which is close to but not exactly the single-process computation.
    """
    if not info.distributed or (device is not None and device.type != "cuda"):
        return module
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


__all__ = ["DistInfo", "init_distributed", "local_device", "cleanup", "barrier", "all_reduce_grads",
           "all_reduce_mean", "any_flag", "all_gather_object", "broadcast_object", "convert_sync_batchnorm",
           "env_world_size"]
