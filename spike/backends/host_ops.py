"""Host-op kernels in torch, one per ``HostOp.op`` (``spike.compiler.ir.hostops``), shared by every
backend: the numba and torch backends run them on CPU tensors (zero-copy views of their arrays),
the cuda backend on GPU tensors, the lava backend inside its host process.

A kernel computes a chunk of steps, ``fn(node, xs, state) -> out``: ``xs`` are the sources'
values ``[n, B, size]`` for those steps, ``state`` a dict the caller keeps for the whole run
(empty at step 0). Each kernel does exactly what the PyTorch model does for one token (the same
torch calls, on the same shapes when called one step at a time), so a program run step by step
equals token-by-token (RNN-mode) inference bit for bit.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spike.compiler.ir.hostops import HOST_OPS
from spike.compiler.ir.nodes import HostOp
from spike.kernels.wkv import NEG, WKVState, wkv_with_state

__all__ = ["HOST_KERNELS", "fresh_input", "run_host_op", "host_op_counts", "host_op_kernel", "SUPPORTED"]

HostKernel = Callable[[HostOp, Sequence[torch.Tensor], dict], torch.Tensor]
HOST_KERNELS: dict[str, HostKernel] = {}


def _kernel(op: str) -> Callable[[HostKernel], HostKernel]:
    def register(fn: HostKernel) -> HostKernel:
        HOST_KERNELS[op] = fn
        return fn

    return register


def _param(node: HostOp, field: str, state: dict, like: torch.Tensor) -> torch.Tensor | None:
    """``node.<field>`` as a tensor on ``like``'s device (converted once per run)."""
    key = f"param.{field}"
    if key not in state:
        value = getattr(node, field)
        state[key] = None if value is None else torch.as_tensor(np.asarray(value, np.float32), device=like.device)
    return state[key]


@_kernel("add")
def _add(node, xs, state):
    acc = xs[0].clone()
    for x in xs[1:]:
        acc = acc + x
    return acc


_KERNEL_FNS = {
    "sub": lambda xs: xs[0] - xs[1],
    "mul": lambda xs: xs[0] * xs[1],
    "neg": lambda xs: -xs[0],
    "exp": lambda xs: torch.exp(xs[0]),
    "relu": lambda xs: torch.relu(xs[0]),
    "tanh": lambda xs: torch.tanh(xs[0]),
    "sigmoid": lambda xs: torch.sigmoid(xs[0]),
    "squared_relu": lambda xs: torch.square(torch.relu(xs[0])),  # as models.spikegpt.SquaredReLU
    "identity": lambda xs: xs[0].clone(),
}
for _op, _fn in _KERNEL_FNS.items():
    _kernel(_op)(lambda node, xs, state, _fn=_fn: _fn(xs))


@_kernel("layernorm")
def _layernorm(node, xs, state):
    x = xs[0]
    return F.layer_norm(x, (x.shape[-1],), _param(node, "weight", state, x), _param(node, "bias", state, x),
                        float(node.eps))


@_kernel("token_mix")
def _token_mix(node, xs, state):
    x = xs[0]
    prev = state.get("prev")
    first = torch.zeros_like(x[:1]) if prev is None else prev[None]
    xx = torch.cat([first, x[:-1]], 0)  # models.spikegpt.TokenShift
    state["prev"] = x[-1].clone()
    return torch.lerp(xx, x, _param(node, "weight", state, x))


@_kernel("matmul")
def _matmul(node, xs, state):
    x = xs[0]
    return F.linear(x, _param(node, "weight", state, x), _param(node, "bias", state, x))


@_kernel("wkv")
def _wkv(node, xs, state):
    k, v = xs
    if "wkv" not in state:  # the state before the first token, as SpikeGPT.init_state
        z = torch.zeros(k.shape[1:], dtype=k.dtype, device=k.device)
        state["wkv"] = WKVState(z, z.clone(), torch.full_like(z, NEG))
    y, state["wkv"] = wkv_with_state(_param(node, "weight", state, k), _param(node, "bias", state, k), k, v,
                                     state["wkv"])
    return y


@_kernel("maxpool2d")
def _maxpool2d(node, xs, state):
    x = xs[0]  # [n, B, C*H*W]
    y = F.max_pool2d(x.reshape(-1, *node.in_shape), tuple(node.kernel), tuple(node.stride), tuple(node.padding))
    return y.reshape(*x.shape[:-1], -1)


SUPPORTED = frozenset(HOST_KERNELS)
assert SUPPORTED == frozenset(HOST_OPS), sorted(SUPPORTED ^ frozenset(HOST_OPS))


def fresh_input(x: torch.Tensor) -> torch.Tensor:
    """A host op's input as a fresh tensor from torch's allocator, as in PyTorch's own inference:
    BLAS kernels may round differently for data at other alignments or strides (e.g. a view into
    a run's ``[T, B, size]`` array), and every backend must round alike."""
    return x.clone(memory_format=torch.contiguous_format)


def run_host_op(node: HostOp, xs: Sequence[torch.Tensor], state: dict) -> torch.Tensor:
    """Output ``[n, B, size]`` of ``node`` for source chunks ``xs`` (``state`` carried by the caller)."""
    with torch.no_grad():
        return HOST_KERNELS[node.op](node, xs, state)


def host_op_counts(node: HostOp, xs: Sequence[Any], spike_sources: Sequence[bool],
                   cache: dict | None = None) -> dict[str, np.ndarray]:
    """Operation counts per sample ``[B]`` of ``node`` over the steps of ``xs`` (``[n, B, size]``
    arrays or tensors of its sources; ``spike_sources[i]``: source ``i`` carries spikes), by the
    rules of ``spike.compiler.ir.hostops``. ``cache`` keeps per-node constants between calls."""
    n, B = xs[0].shape[:2]

    def const(value: int) -> np.ndarray:
        return np.full(B, int(value), np.int64)

    def events(x: Any, dims: tuple[int, ...]) -> Any:
        return (torch.as_tensor(x).reshape(n, B, -1) != 0).sum(dims)

    if node.op == "matmul":
        cache = {} if cache is None else cache
        if "per_input" not in cache:
            w = np.asarray(node.weight)
            cache["per_input"] = np.count_nonzero(w, axis=0).astype(np.float64)
        per_input = torch.as_tensor(cache["per_input"], device=torch.as_tensor(xs[0]).device)
        pairs = (events(xs[0], (0,)).to(torch.float64) @ per_input).round().to(torch.int64).cpu().numpy()
        counts = {"syn_ops" if spike_sources[0] else "macs": pairs, "dense_ops": const(n * np.size(node.weight))}
        if node.bias is not None:
            counts["host_flops"] = const(n * node.size)
        return counts
    if node.op == "add":
        counts = {"syn_ops": np.zeros(B, np.int64), "host_flops": np.zeros(B, np.int64)}
        for x, spiking in zip(xs[1:], spike_sources[1:]):
            if spiking:
                counts["syn_ops"] += events(x, (0, 2)).cpu().numpy().astype(np.int64)
            else:
                counts["host_flops"] += n * node.size
        return counts
    if node.op == "maxpool2d":  # comparisons: kh * kw - 1 per output
        return {"host_flops": const(n * node.size * (int(np.prod(node.kernel)) - 1))}
    return {"host_flops": const(n * node.size * HOST_OPS[node.op].flops)}


def host_op_kernel(to_tensor: Callable[[Any], torch.Tensor], write: Callable[[Any, int, int, torch.Tensor], None]):
    """The ``hostop`` kernel of a backend whose arrays ``to_tensor`` views as torch tensors and
    ``write(out, t0, t1, values)`` fills: runs :func:`run_host_op` and adds its counts."""

    def hostop(ctx: Any, t0: int, t1: int) -> None:
        xs = [fresh_input(to_tensor(s[t0:t1])) for s in ctx.sources]
        write(ctx.out, t0, t1, run_host_op(ctx.node, xs, ctx.state))
        spiking = [s == "spike" for s in ctx.source_signals]
        for key, value in host_op_counts(ctx.node, xs, spiking, ctx.cache).items():
            ctx.counts[key] += value

    return hostop
