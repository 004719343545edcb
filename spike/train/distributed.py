"""Data-parallel helpers for runs launched with ``torchrun`` (``python -m torch.distributed.run``).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``) in each
worker's environment. :func:`init_distributed` turns that into a process group (``gloo`` on CPU,
``nccl`` for CUDA with each rank on GPU ``LOCAL_RANK``); the helpers below then answer "who am I"
with or without a group, so the same training code runs single-process and data-parallel.

:func:`global_batch_norm` makes BatchNorm layers normalise by the statistics of the whole global
batch (all ranks' slices), so a data-parallel step equals the one-process step on that batch.
"""
from __future__ import annotations

import contextlib
import os
import types
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import SyncBatchNorm, _BatchNorm

__all__ = [
    "launched_by_torchrun",
    "default_backend",
    "training_device",
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
    "average_gradients",
    "global_batch_norm",
]

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """True when torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) is present."""
    return all(v in os.environ for v in _TORCHRUN_VARS)


def default_backend(device: torch.device | str) -> str:
    """``"nccl"`` for CUDA tensors when PyTorch has NCCL, else ``"gloo"`` (CPU)."""
    on_cuda = torch.device(device).type == "cuda"
    return "nccl" if on_cuda and dist.is_available() and dist.is_nccl_available() else "gloo"


def training_device(name: str) -> torch.device:
    """The device a training process uses for ``--device name``: ``cpu``, ``cuda`` or ``cuda:N``.

    A bare ``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per rank under torchrun, ``cuda:0``
    alone). Raises ValueError naming ``--device`` for a name torch does not know, another device
    type, or CUDA on a machine without it.
    """
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this PyTorch sees no CUDA device (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'none'})")
        if dev.index is None:
            dev = torch.device("cuda", local_rank())
        elif dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev


def init_distributed(backend: str = "gloo") -> bool:
    """Create the default process group from torchrun's environment.

    Returns True if this call created the group (the caller should later call
    :func:`cleanup_distributed`), False if not under torchrun or a group already exists. With
    ``nccl`` the rank's current CUDA device becomes ``cuda:LOCAL_RANK`` first (one GPU per rank; the
    object collectives and :func:`all_reduce_sum` use it).
    """
    if not launched_by_torchrun() or not dist.is_available() or dist.is_initialized():
        return False
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
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


def _collective_device() -> torch.device:
    """Where tensors of the default group's collectives live: the current GPU for NCCL, else CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum a few floats over all ranks (float64; identity without a process group)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def wrap_model(model: torch.nn.Module, ignore: Sequence[torch.nn.Parameter] = ()) -> torch.nn.Module:
    """Wrap ``model`` in DistributedDataParallel when a process group exists, else return it.

    Parameters on CUDA get ``device_ids=[their device]``; CPU models use none (gloo). DDP leaves
    the parameters in ``ignore`` alone: their gradients are averaged by :func:`average_gradients`.
    (DDP expects every parameter to get a gradient in every step through the module's output;
    ``find_unused_parameters`` cannot help a parameter whose loss term is read beside the output,
    such as an FTWT mask head's logits, which get gradients in some epochs and none in others.)
    """
    if not is_distributed():
        return model
    ddp = torch.nn.parallel.DistributedDataParallel
    if ignore:
        ids = {id(p) for p in ignore}
        ddp._set_params_and_buffers_to_ignore_for_model(model, [n for n, p in model.named_parameters() if id(p) in ids])
    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        return ddp(model, device_ids=[param.device])
    return ddp(model)


def average_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Replace each gradient of ``params`` by its mean over ranks, in one all-reduce (no-op without
    a process group). A parameter with a gradient on no rank keeps ``None`` (as in one process: an
    optimizer skips it); one with a gradient on some ranks only counts zeros for the others."""
    if not is_distributed() or not params:
        return
    like = params[0]
    present = torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float32, device=like.device)
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    flat = torch.cat([present, *grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = len(params)
    for i, p in enumerate(params):
        n = p.numel()
        if flat[i] > 0:
            p.grad = (flat[offset:offset + n] / world_size()).view_as(p).to(p.dtype)
        offset += n


class _AllReduceSum(torch.autograd.Function):
    """``y = sum over ranks of x`` (every rank gets ``y``); the backward sums the gradients over
    ranks too, since every rank's loss depends on ``y``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _AllReduceSum.apply(grad)


def _global_batch_norm_forward(bn: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm of ``x [B_r, C, ...]`` (this rank's slice) over the global batch, in float32.

    Training mode, ``N`` the values per channel on all ranks: ``mean = sum_r sum(x_r) / N``,
    ``var = sum_r sum((x_r - mean)^2) / N`` (sums in float64); ``y = (x - mean) / sqrt(var + eps) *
    weight + bias`` in ``x``'s dtype.
    The running statistics move by ``momentum`` (the cumulative average when None) towards ``mean``
    and the unbiased ``var * N / (N - 1)``, as one process's BatchNorm on the whole batch. Eval
    mode is the layer's own forward (no collective: ranks may evaluate different numbers of batches).
    """
    if not bn.training:
        return type(bn).forward(bn, x)
    bn._check_input_dim(x)
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.float()
    count = torch.tensor([xf.numel() // max(xf.shape[1], 1)], dtype=torch.float64, device=x.device)
    sums = _AllReduceSum.apply(torch.cat([xf.sum(dims, dtype=torch.float64), count]))  # float64: exact counts
    n = sums[-1]
    mean = (sums[:-1] / n).float()
    centered = xf - mean.view(shape)
    var = (_AllReduceSum.apply(centered.square().sum(dims, dtype=torch.float64)) / n).float()
    y = centered * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.float().view(shape) + bn.bias.float().view(shape)
    if bn.track_running_stats and bn.running_mean is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            unbiased = var * (n / (n - 1).clamp_min(1))
            bn.running_mean.mul_(1 - factor).add_(mean.detach().to(bn.running_mean.dtype), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(unbiased.detach().to(bn.running_var.dtype), alpha=factor)
    return y.to(x.dtype)


@contextlib.contextmanager
def global_batch_norm(model: torch.nn.Module) -> Iterator[int]:
    """Within the block, every BatchNorm layer of ``model`` (``torch.nn.SyncBatchNorm`` aside, which
    syncs itself) normalises training batches by the statistics of the global batch, all ranks'
    slices together (:func:`_global_batch_norm_forward`, also on CPU/gloo where SyncBatchNorm does
    not run), when a process group of more than one rank exists; otherwise it changes nothing.
    Every rank must run the same number of forwards (each one is a collective). Yields the number
    of layers switched; the layers (type, state, hooks) are the same objects afterwards.
    """
    layers = []
    if is_distributed() and world_size() > 1:
        layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and not isinstance(m, SyncBatchNorm)]
    for m in layers:
        m.forward = types.MethodType(_global_batch_norm_forward, m)
    try:
        yield len(layers)
    finally:
        for m in layers:
            del m.forward
