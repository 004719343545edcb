"""Dense PyTorch execution of a Program: the oracle for the other backends and the dense baseline.

Every kernel computes its node with whole-tensor torch operations (matmul, conv2d, pooling) and
derives the operation counts from the same tensors: ``syn_ops``/``macs`` are the number of
(non-zero input, non-zero weight) pairs, computed by running the layer on binarised inputs and
weights, as NeuroBench defines them; the pairs of step t of sample b are ``syn_ops`` when all of
that sample's input values at that step are in {-1, 0, 1}, else ``macs`` (NeuroBench decides per
layer call: the same with batch size 1), and every pair from a source of signal "spike" is
``syn_ops`` (no test); avg/sum pooling counts its (non-zero input, window) pairs as ``pool_ops``
only (NeuroBench counts no pooling: nothing in syn_ops/macs nor dense_ops).

Programs of precision "fixed" run Loihi fixed point on int32 tensors (the oracle for the numba
kernels): projections sum integer weights exactly in float64 (|sums| < 2^53), then shift by
``weight_exp`` and wrap to int32 in int64; populations follow ``numba.neurons.loihi_lif_step``
element-wise in int64.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F

from spike.backends.engine import NodeContext
from spike.backends.host_ops import host_op_kernel
from spike.backends.registry import Backend, BackendError, register_backend
from spike.compiler.ir.nodes import Bernoulli, Conv2d, Dense, Identity, Pool2d, Population, Sparse
from spike import semantics
from spike.compiler.passes.quantize import loihi_neuron_params

_DTYPES = {"float32": torch.float32, "int32": torch.int32}

BACKEND = register_backend(
    Backend(
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
    """Add per-sample pair counts; ``pairs`` is [t, B, ...] of pair counts per output, from the
    inputs ``x`` [t, B, ...]: a (step, sample)'s pairs are ``macs`` when one of its inputs is
    outside {-1, 0, 1} (and the source is not a spike signal), else ``syn_ops``."""
    per_step = pairs.reshape(pairs.shape[0], pairs.shape[1], -1).to(torch.float64).sum(dim=2)  # [t, B]
    if ctx.source_signals[0] == "spike":
        ctx.counts["syn_ops"] += np.rint(per_step.sum(dim=0).numpy()).astype(np.int64)
    else:
        xs = x.reshape(x.shape[0], x.shape[1], -1)
        real = ((xs != 0) & (xs != 1) & (xs != -1)).any(dim=2)  # [t, B]
        zero = torch.zeros_like(per_step)
        ctx.counts["syn_ops"] += np.rint(torch.where(real, zero, per_step).sum(dim=0).numpy()).astype(np.int64)
        ctx.counts["macs"] += np.rint(torch.where(real, per_step, zero).sum(dim=0).numpy()).astype(np.int64)
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
    else:
        ctx.out[t0:t1] = F.linear(x, w, b)
        _silent_before_onset(ctx, t0, t1)
    nz_w = (w != 0).to(torch.float32)
    pairs = F.linear((x != 0).to(torch.float32), nz_w)
    _count_pairs(ctx, x, pairs, node.in_size * node.size)


@BACKEND.kernel("conv2d")
def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    conv2d_masked(ctx, t0, t1)


def conv2d_masked(ctx: NodeContext, t0: int, t1: int, keep: torch.Tensor | None = None) -> None:
    """Steps t0..t1-1 of a conv2d; ``keep`` ``[B, C_out]`` (float32, 1 = kept: an FTWT gate's mask,
    float32 programs): masked channels output 0 (no bias) and receive no pairs."""
    node: Conv2d = ctx.node
    w, b = _weights(ctx)
    x = _delayed(ctx.sources[0], node.delay, t0, t1)
    t, B = x.shape[:2]
    xi = x.reshape(t * B, *node.in_shape)
    kw = dict(stride=node.stride, padding=node.padding, groups=node.groups)
    kept = None if keep is None else keep[None, :, :, None, None]
    if ctx.precision == "fixed":
        xi = (xi != 0).to(torch.float64)
        y = F.conv2d(xi, w.to(torch.float64), **kw).reshape(t, B, node.size)
        ctx.out[t0:t1] = _deliver(y, node.weight_exp)
    else:
        y = F.conv2d(xi, w, b, **kw)
        if kept is not None:
            y = y.reshape(t, B, *y.shape[1:])
            y = torch.where(kept > 0, y, torch.zeros_like(y))
        ctx.out[t0:t1] = y.reshape(t, B, node.size)
        _silent_before_onset(ctx, t0, t1)
    pairs = F.conv2d((xi != 0).to(torch.float32), (w != 0).to(torch.float32), **kw)
    if kept is not None:
        pairs = pairs.reshape(t, B, *pairs.shape[1:]) * kept
    pairs = pairs.reshape(t, B, -1)
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



_step = semantics.make_neuron_step(operator.mul, semantics.threshold_fire(lambda c: c.to(torch.float32)),
                                   semantics.same, 1.0)


@BACKEND.kernel("population")
def population(ctx: NodeContext, t0: int, t1: int) -> None:
    """``spike.semantics`` on [B, n] tensors (I = sum of sources in source order, ((s0+s1)+s2)), or
    Loihi fixed point."""
    if ctx.precision == "fixed":
        _population_fixed(ctx, t0, t1)
        return
    population_float(ctx, t0, t1)


def population_float(ctx: NodeContext, t0: int, t1: int, sources: list[torch.Tensor] | None = None,
                     active: torch.Tensor | None = None) -> None:
    """Steps t0..t1-1 of a float32 population from ``sources`` (default: all of the node's);
    ``active`` ``[B, n]`` bool: only those neurons update (an FTWT gate's mask), the others
    output 0 and keep their state."""
    node: Population = ctx.node
    st = ctx.state
    if "state" not in st:
        st["state"] = list(torch.from_numpy(semantics.initial_state(node, ctx.batch)))  # v, s, i, j
        st["params"] = list(torch.from_numpy(semantics.neuron_params(node)))
        st["flags"] = semantics.neuron_flags(node)
        bias = semantics.neuron_bias(node)
        st["bias"] = None if bias is None else torch.from_numpy(bias)
    srcs = ctx.sources if sources is None else sources
    late_idx: tuple[int, ...] = ()
    if node.late_recurrent:
        if sources is not None:
            raise BackendError(f"population {ctx.name!r}: a gated population cannot add recurrent inputs late")
        late_idx = ctx.recurrent_sources()
    beta, thr, alpha, tau, rate = st["params"]
    flags = st["flags"]
    zero = torch.zeros((ctx.batch, node.size))
    for t in range(t0, t1):
        current, late = zero, zero
        early = [s[t] for i, s in enumerate(srcs) if i not in late_idx]
        if early:
            current = early[0].clone()
            for x in early[1:]:
                current = current + x
        for k, i in enumerate(late_idx):
            late = srcs[i][t].clone() if k == 0 else late + srcs[i][t]
        bias = st["bias"]
        out, *new = _step(current, late, *st["state"], beta, thr, alpha, tau, rate, node.gain, node.v_reset, *flags,
                          0.0 if bias is None else bias, bias is not None and t >= ctx.onset)
        if active is not None:
            new = [torch.where(active, a, b) for a, b in zip(new, st["state"])]
            out = torch.where(active, out, zero)
        st["state"] = new
        ctx.out[t] = out
        if ctx.mem is not None:
            ctx.mem[t] = new[semantics.S_V]
        ctx.counts["neuron_updates"] += node.size if active is None else active.sum(dim=1).numpy().astype(np.int64)
        if node.model != "li":
            ctx.counts["spikes"] += out.sum(dim=1).to(torch.int64).numpy()


@BACKEND.kernel("bernoulli")
def bernoulli(ctx: NodeContext, t0: int, t1: int) -> None:
    """``spike.semantics``' counter-based spikes on int64 tensors, one step at a time ([B, n])."""
    node: Bernoulli = ctx.node
    st = ctx.state
    if "thresholds" not in st:
        st["thresholds"] = torch.from_numpy(semantics.spike_thresholds(node.p, node.size))
        st["neurons"] = torch.arange(node.size, dtype=torch.int64)[None, :]
        st["samples"] = torch.arange(ctx.batch, dtype=torch.int64)[:, None]
    lo, hi = (torch.tensor(w, dtype=torch.int64) for w in semantics.seed_words(node.seed))
    step0 = ctx.base - ctx.program.latency_of(ctx.name)
    for t in range(t0, t1):
        if t + step0 < 0:
            ctx.out[t] = 0
            continue
        key = semantics.spike_key(lo, hi, st["samples"], torch.tensor(t + step0, dtype=torch.int64))  # [B, 1]
        ctx.out[t] = (semantics.spike_hash(key, st["neurons"]) < st["thresholds"]).to(ctx.out.dtype)


UV_MAX = 1 << 23


def _loihi_decay(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``sign(x) * ((|x| * (4096 - d)) >> 12)`` in int64."""
    p = x * (4096 - d)
    return torch.sign(p) * torch.div(p.abs(), 4096, rounding_mode="floor")


def _population_fixed(ctx: NodeContext, t0: int, t1: int) -> None:
    """Loihi fixed point, element-wise in int64 (same rule as ``numba.neurons.loihi_lif_step``)."""
    node: Population = ctx.node
    st = ctx.state
    if not st:
        p = loihi_neuron_params(node, ctx.name)
        st.update({k: torch.from_numpy(v) for k, v in p.items()})
        st["u"] = torch.zeros((ctx.batch, node.size), dtype=torch.int64)
        st["v"] = torch.from_numpy(semantics.initial_v_fixed(node, ctx.batch)).to(torch.int64)
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
