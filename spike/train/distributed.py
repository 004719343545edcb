"""Data-parallel helpers for runs launched with ``torchrun`` (``python -m torch.distributed.run``).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``) in each
worker's environment. :func:`init_distributed` turns that into a process group (``gloo`` on CPU);
the helpers below then answer "who am I" with or without a group, so the same training code runs
single-process and data-parallel.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "launched_by_torchrun",
    "default_backend",
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "rank",
    "local_rank",
    "world_size",
    "is_main_process",
    "barrier",
    "shard_bounds",
    "all_reduce_sum",
    "all_gather_objects",
    "wrap_model",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """True when torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) is present."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def default_backend(device: torch.device | str) -> str:
    """``"nccl"`` for CUDA tensors when PyTorch has NCCL, else ``"gloo"`` (CPU)."""
    on_cuda = torch.device(device).type == "cuda"
    return "nccl" if on_cuda and dist.is_available() and dist.is_nccl_available() else "gloo"


def init_distributed(backend: str = "gloo") -> bool:
    """Create the default process group from torchrun's environment.

    Returns True if this call created the group (the caller should later call
    :func:`cleanup_distributed`), False if not under torchrun or a group already exists.
    """
    if not launched_by_torchrun() or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank: from the process group, else ``$RANK``, else 0."""
    if is_distributed():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def local_rank() -> int:
    """Rank within this node: ``$LOCAL_RANK``, else 0."""
    return int(os.environ.get("LOCAL_RANK", 0))


def world_size() -> int:
    """Number of processes: from the process group, else ``$WORLD_SIZE``, else 1."""
    if is_distributed():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs)."""
    return rank() == 0


def barrier() -> None:
    """Synchronise all ranks (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def shard_bounds(n: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Contiguous ``[start, stop)`` of shard ``shard`` when ``n`` items are split ``num_shards`` ways.

    Sizes differ by at most one; earlier shards get the extra items (like ``torch.tensor_split``).
    """
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} out of range for {num_shards} shards")
    base, extra = divmod(n, num_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a group."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum a few floats over all ranks (float64; identity without a process group)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def wrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Wrap ``model`` in DistributedDataParallel when a process group exists, else return it.

    Parameters on CUDA get ``device_ids=[their device]``; CPU models use none (gloo).
    """
    if not is_distributed():
        return model
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[param.device])
    return torch.nn.parallel.DistributedDataParallel(model)
