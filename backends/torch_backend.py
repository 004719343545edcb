"""Dense PyTorch execution of a Program: the oracle for the other backends and the dense baseline.

Every kernel computes its node with whole-tensor torch operations (matmul, conv2d, pooling) and
derives the operation counts from the same tensors: ``syn_ops``/``macs`` are the number of
(non-zero input, non-zero weight) pairs, computed by running the layer on binarised inputs and
weights, as NeuroBench defines them; avg/sum pooling counts its (non-zero input, window) pairs as
``pool_ops`` only (NeuroBench counts no pooling: nothing in syn_ops/macs nor dense_ops).

Programs of precision "fixed" run Loihi fixed point on int32 tensors (the oracle for the numba
kernels): projections sum integer weights exactly in float64 (|sums| < 2^53), then shift by
``weight_exp`` and wrap to int32 in int64; populations follow ``numba_kernels.loihi_lif_step``
element-wise in int64.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spike.backends.engine import NodeContext
from spike.backends.host_kernels import host_op_kernel
from spike.backends.registry import Backend, BackendError, register_backend
from spike.compiler.ir import Conv2d, Dense, Identity, Pool2d, Population, Sparse
from spike.compiler.program import Program, ProgramError

_DTYPES = {"float32": torch.float32, "int32": torch.int32}

class TorchBackend(Backend):
    """Checks fixed-point programs against the fixed-point rules before a run."""

    def check(self, program: Program) -> None:
        super().check(program)
        precision = "fixed" if program.metadata.get("precision") == "fixed" else "float32"
        if precision == "fixed":
            from spike.compiler.validate import check_fixed_point

            try:
                check_fixed_point(program)
            except ProgramError as e:
                raise BackendError(f"backend {self.name!r} cannot execute this fixed-point program: {e}") from None
        bad = [f"{n} (precision {node.precision!r})" for n, node in program.nodes()
               if isinstance(node, Population) and node.precision != precision]
        if bad:
            raise BackendError(f"backend {self.name!r}: population(s) {', '.join(bad)} in a {precision} program")


BACKEND = register_backend(
    TorchBackend(
        name="torch",
        precisions=frozenset({"float32", "fixed"}),
        zeros=lambda shape, dtype: torch.zeros(shape, dtype=_DTYPES[dtype]),
        to_numpy=lambda t: t.numpy(),
        from_numpy=lambda a: torch.from_numpy(np.ascontiguousarray(a)),
    )
)


def _delayed(src: torch.Tensor, delay: int, t0: int, t1: int) -> torch.Tensor:
    """Source values seen at steps t0..t1-1 through a delay (zeros before the source starts)."""
    out = torch.zeros((t1 - t0,) + tuple(src.shape[1:]), dtype=src.dtype)
    lo = max(t0, delay)
    if lo < t1:
        out[lo - t0 :] = src[lo - delay : t1 - delay]
    return out


def _silent_before_onset(ctx: NodeContext, t0: int, t1: int) -> None:
    """Nothing before the node's onset (``Program.onset``: a projection's bias travels with its
    events; its source is silent before then, so only the bias is removed)."""
    if t0 < ctx.onset:
        ctx.out[t0 : min(t1, ctx.onset)] = 0


def _wrap_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 values reduced to the signed 32-bit range, as a cast to int32 wraps."""
    return ((x + 2**31) & (2**32 - 1)) - 2**31


def _deliver(acc: torch.Tensor, weight_exp: int) -> torch.Tensor:
    """Exact integer sums (float64) shifted by ``weight_exp`` (right shifts floor) and wrapped to int32."""
    a = acc.round().to(torch.int64)
    a = a * (1 << weight_exp) if weight_exp >= 0 else torch.div(a, 1 << -weight_exp, rounding_mode="floor")
    return _wrap_int32(a).to(torch.int32)


def _count_pairs(ctx: NodeContext, x: torch.Tensor, pairs: torch.Tensor, dense_per_step: float) -> None:
    """Add per-sample pair counts; ``pairs`` is [t, B, ...] of pair counts per output."""
    per_sample = pairs.reshape(pairs.shape[0], pairs.shape[1], -1).sum(dim=(0, 2)).to(torch.float64)
    key = "syn_ops" if ctx.source_signals[0] == "spike" else "macs"
    ctx.counts[key] += np.rint(per_sample.numpy()).astype(np.int64)
    ctx.counts["dense_ops"] += int(round(dense_per_step)) * x.shape[0]


def _weights(ctx: NodeContext) -> tuple[torch.Tensor, torch.Tensor | None]:
    if "w" not in ctx.cache:
        node = ctx.node
        if isinstance(node, Sparse):
            w = np.zeros((node.size, node.in_size), dtype=np.float32)
            rows = np.repeat(np.arange(node.in_size), np.diff(node.indptr))
            np.add.at(w, (node.indices, rows), node.data)  # duplicate entries add up, as delivered
        else:
            w = node.weight
        ctx.cache["w"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        ctx.cache["b"] = None if node.bias is None else torch.from_numpy(np.asarray(node.bias, np.float32))
    return ctx.cache["w"], ctx.cache["b"]


@BACKEND.kernel("dense")
@BACKEND.kernel("sparse")
def dense(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Dense = ctx.node
    w, b = _weights(ctx)
    x = _delayed(ctx.sources[0], node.delay, t0, t1)
    if ctx.precision == "fixed":
        spikes = (x != 0).to(torch.float64)
        ctx.out[t0:t1] = _deliver(F.linear(spikes, w.to(torch.float64)), node.weight_exp)
        x = spikes
    else:
        ctx.out[t0:t1] = F.linear(x, w, b)
        _silent_before_onset(ctx, t0, t1)
    nz_w = (w != 0).to(torch.float32)
    pairs = F.linear((x != 0).to(torch.float32), nz_w)
    _count_pairs(ctx, x, pairs, node.in_size * node.size)


@BACKEND.kernel("conv2d")
def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Conv2d = ctx.node
    w, b = _weights(ctx)
    x = _delayed(ctx.sources[0], node.delay, t0, t1)
    t, B = x.shape[:2]
    xi = x.reshape(t * B, *node.in_shape)
    kw = dict(stride=node.stride, padding=node.padding, groups=node.groups)
    if ctx.precision == "fixed":
        xi = (xi != 0).to(torch.float64)
        y = F.conv2d(xi, w.to(torch.float64), **kw).reshape(t, B, node.size)
        ctx.out[t0:t1] = _deliver(y, node.weight_exp)
    else:
        ctx.out[t0:t1] = F.conv2d(xi, w, b, **kw).reshape(t, B, node.size)
        _silent_before_onset(ctx, t0, t1)
    pairs = F.conv2d((xi != 0).to(torch.float32), (w != 0).to(torch.float32), **kw).reshape(t, B, -1)
    if "dense_per_step" not in ctx.cache:
        ones = torch.ones((1, *node.in_shape))
        ctx.cache["dense_per_step"] = float(F.conv2d(ones, torch.ones_like(w), **kw).sum())
    _count_pairs(ctx, x, pairs, ctx.cache["dense_per_step"])


@BACKEND.kernel("pool2d")
def pool2d(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Pool2d = ctx.node
    x = _delayed(ctx.sources[0], node.delay, t0, t1)
    t, B = x.shape[:2]
    xi = x.reshape(t * B, *node.in_shape)
    kw = dict(kernel_size=node.kernel, stride=node.stride, padding=node.padding)
    if ctx.precision == "fixed":
        if node.mode != "max":  # check() rejects these; kept for direct kernel calls
            raise BackendError(f"pool2d {ctx.name!r}: {node.mode!r} pooling has no fixed-point form")
        xi = (xi != 0).to(torch.float32)  # an OR of spikes
    if node.mode == "max":
        y = F.max_pool2d(F.pad(xi, (node.padding[1],) * 2 + (node.padding[0],) * 2), node.kernel, node.stride)
    elif node.mode == "avg":
        y = F.avg_pool2d(xi, **kw, count_include_pad=True)
    else:
        y = F.avg_pool2d(xi, **kw, count_include_pad=True, divisor_override=1)
    ctx.out[t0:t1] = y.reshape(t, B, node.size)
    if node.mode != "max":
        nz = (xi != 0).to(torch.float32)
        pairs = F.avg_pool2d(nz, **kw, divisor_override=1).reshape(t, B, -1)
        # pooling accumulates are pool_ops, never syn_ops/macs nor dense_ops (NeuroBench counts no pooling)
        per_sample = pairs.reshape(t, B, -1).sum(dim=(0, 2)).to(torch.float64)
        ctx.counts["pool_ops"] += np.rint(per_sample.numpy()).astype(np.int64)


@BACKEND.kernel("identity")
def identity(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Identity = ctx.node
    x = _delayed(ctx.sources[0], node.delay, t0, t1)
    if ctx.precision == "fixed":
        ctx.out[t0:t1] = _deliver((x != 0).to(torch.float64) * float(node.scale), node.weight_exp)
    else:
        ctx.out[t0:t1] = x if node.scale == 1.0 else x * node.scale
    _count_pairs(ctx, x, (x != 0).to(torch.float32), node.size)


def _write_tensor(out: torch.Tensor, t0: int, t1: int, values: torch.Tensor) -> None:
    out[t0:t1] = values


BACKEND.kernel("hostop")(host_op_kernel(lambda a: a, _write_tensor))



@BACKEND.kernel("population")
def population(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Population = ctx.node
    if ctx.precision == "fixed":
        _population_fixed(ctx, t0, t1)
        return
    st = ctx.state
    if not st:
        shape = (ctx.batch, node.size)
        st.update(v=torch.zeros(shape), s=torch.zeros(shape), i=torch.zeros(shape))
        st["beta"] = torch.from_numpy(np.asarray(node.beta, np.float32))
        st["thr"] = torch.from_numpy(np.asarray(node.threshold, np.float32))
        st["alpha"] = None if node.alpha is None else torch.from_numpy(np.asarray(node.alpha, np.float32))
    beta, thr, gain = st["beta"], st["thr"], torch.tensor(node.gain, dtype=torch.float32)
    for t in range(t0, t1):
        current = ctx.sources[0][t].clone()
        for src in ctx.sources[1:]:
            current = current + src[t]
        if node.model == "cuba_lif":
            st["i"] = st["alpha"] * st["i"] + current
            current = st["i"]
        v, s_prev = st["v"], st["s"]
        if node.model == "li":
            v = beta * v + gain * current
            s = torch.zeros_like(v)
            ctx.out[t] = v
        elif node.reset_delay:
            if node.reset == "subtract":
                v = beta * v + gain * current - thr * s_prev
            elif node.reset == "zero":
                v = beta * ((1 - s_prev) * v) + gain * current
            else:
                v = beta * v + gain * current
            s = ((v >= thr) if node.fire_ge else (v > thr)).to(torch.float32)
            ctx.out[t] = s
        else:
            h = beta * v + gain * current
            s = ((h >= thr) if node.fire_ge else (h > thr)).to(torch.float32)
            v = h - thr * s if node.reset == "subtract" else (h * (1 - s) if node.reset == "zero" else h)
            ctx.out[t] = s
        st["v"], st["s"] = v, s
        if ctx.mem is not None:
            ctx.mem[t] = v
        ctx.counts["neuron_updates"] += node.size
        ctx.counts["spikes"] += s.sum(dim=1).to(torch.int64).numpy()


UV_MAX = 1 << 23


def _loihi_decay(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``sign(x) * ((|x| * (4096 - d)) >> 12)`` in int64."""
    p = x * (4096 - d)
    return torch.sign(p) * torch.div(p.abs(), 4096, rounding_mode="floor")


def _population_fixed(ctx: NodeContext, t0: int, t1: int) -> None:
    """Loihi fixed point, element-wise in int64 (same rule as ``numba_kernels.loihi_lif_step``)."""
    node: Population = ctx.node
    st = ctx.state
    if not st:
        from spike.compiler.quantize import loihi_neuron_params

        p = loihi_neuron_params(node, ctx.name)
        st.update({k: torch.from_numpy(v) for k, v in p.items()})
        st["u"] = torch.zeros((ctx.batch, node.size), dtype=torch.int64)
        st["v"] = torch.zeros((ctx.batch, node.size), dtype=torch.int64)
    du, dv, bias, vth_eff = st["du"], st["dv"], st["bias"], st["vth_eff"]
    spiking = node.model != "li"
    for t in range(t0, t1):
        a_in = torch.zeros((ctx.batch, node.size), dtype=torch.int64)
        for src in ctx.sources:
            a_in = _wrap_int32(a_in + src[t].to(torch.int64))
        u = _wrap_int32(_loihi_decay(st["u"], du + 1) + _wrap_int32(a_in * 64))
        u = torch.where(u > UV_MAX, u - 2 * UV_MAX, torch.where(u <= -UV_MAX, u + 2 * UV_MAX, u))
        v = torch.clamp(_loihi_decay(st["v"], dv) + u + (bias if t >= ctx.onset else 0), -(UV_MAX - 1), UV_MAX - 1)
        if spiking:
            s = v > vth_eff
            v = torch.where(s, torch.zeros_like(v), v)
            ctx.out[t] = s.to(torch.int32)
            ctx.counts["spikes"] += s.sum(dim=1).numpy().astype(np.int64)
        else:
            ctx.out[t] = v.to(torch.int32)
        st["u"], st["v"] = u, v
        if ctx.mem is not None:
            ctx.mem[t] = v.to(torch.int32)
        if ctx.mem_u is not None:
            ctx.mem_u[t] = u.to(torch.int32)
        ctx.counts["neuron_updates"] += node.size


from spike.backends import torch_gate  # noqa: E402,F401  (FTWT gates: gate kernel, gated conv2d/population)
