"""FTWT gates on the cuda backend: the ``gate`` kernel, and gated forms of the ``conv2d`` and
``population`` kernels (registered onto ``cuda.backend.BACKEND``; the plain kernels still run
every node that no gate touches). Same semantics, operation order and counts as ``numba.gates``,
bit for bit:

- the mask of a gate (``gate_common.gate_mask``) is computed on the host, once per run, from its
  source's values copied back from the device (small: ``[T, B, C_in*H*W]``);
- a conv2d projection into a gated population (``cuda.kernels.conv2d_gated_deliver``) adds
  each input event's taps into the kept output channels only, in ascending event order; its
  ``syn_ops``/``macs`` are the (event, non-zero weight) pairs into kept channels, counted on the
  device (``syn_ops`` or ``macs`` per (sample, step) as ``gather_active`` decides from all the
  step's input values); ``dense_ops`` stays the dense count of the layer; masked channels output 0 (no bias);
- the gated population (``cuda.kernels.population_gated_forward``) updates only the neurons
  of kept channels (the plain kernel's float32 operations); masked neurons keep ``v = 0``, emit no
  spike and are not counted in ``neuron_updates`` (added on the host from the mask);
- the gate node outputs the mask (1.0 kept) at every step and counts its head as ``host_flops``.

Gated programs run in float32 (fixed-point programs with gates are refused by validation).
The kernels are in ``cuda.kernels`` (imported lazily, as in ``cuda.backend``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from spike.backends.cuda import backend as CB
from spike.backends.engine import NodeContext
from spike.backends.layout import conv_layout
from spike.backends.gate_common import add_gate_checks, gate_host_flops, gate_mask, gate_of_population, gated_consumer
from spike.backends.registry import BackendError

BACKEND = CB.BACKEND
_plain_conv2d = BACKEND.kernels["conv2d"]
_plain_population = BACKEND.kernels["population"]


def _float_only(ctx: NodeContext, what: str) -> None:
    if CB._fixed(ctx):
        raise BackendError(f"{what} {ctx.name!r}: FTWT gates run in float32 programs only")


class _HostView:
    """What ``gate_common`` reads of a run (program, shared dict, the gate source's values), with
    the source copied to the host once per run (kept in ``ctx.shared``)."""

    def __init__(self, ctx: NodeContext, gate: str) -> None:
        self.program = ctx.program
        self.shared = ctx.shared
        srcs = ctx.program.sources(gate)
        self.values: dict[str, Any] = {}
        if len(srcs) == 1 and srcs[0] in ctx.values:
            host = ctx.shared.setdefault("ftwt_gate_sources_host", {})
            if srcs[0] not in host:
                host[srcs[0]] = CB._to_numpy(ctx.values[srcs[0]])
            self.values[srcs[0]] = host[srcs[0]]


def _mask(ctx: NodeContext, gate: str) -> np.ndarray:
    return gate_mask(_HostView(ctx, gate), gate)


@BACKEND.kernel("gate")
def gate(ctx: NodeContext, t0: int, t1: int) -> None:
    _float_only(ctx, "gate")
    K = CB._kernels()
    mask = _mask(ctx, ctx.name).astype(np.float32)  # [B, C]
    nsteps = t1 - t0
    total = nsteps * ctx.batch * mask.shape[1]
    if total:
        dev = CB._from_numpy(np.broadcast_to(mask[None], (nsteps, *mask.shape)))
        K.copy_steps[K.blocks_for(total), K.TPB](ctx.out, t0, dev, 0, nsteps)
    if t0 == 0:
        ctx.counts["host_flops"] += gate_host_flops(_HostView(ctx, ctx.name), ctx.name)


def _conv_prep(ctx: NodeContext) -> dict:
    c = ctx.cache
    if "g_wc" not in c:
        node = ctx.node
        L = conv_layout(node, ctx.name)
        c["g_dense_per_step"] = L.dense_per_step
        c["g_wc"] = CB._to_device(L.wc)
        c["g_geom"] = CB._to_device(L.geom)
        c["g_bias"], c["g_has_bias"] = CB._bias(node, L.C_out, ctx.name)
        c["g_no_pairs"] = CB._to_device(np.zeros(max(L.C * L.H * L.W, 1), np.int64))  # pairs counted on delivery
    return c


def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    target = gated_consumer(ctx.program, ctx.name) if ctx.program is not None else None
    if target is None:
        _plain_conv2d(ctx, t0, t1)
        return
    _float_only(ctx, "conv2d")
    c = _conv_prep(ctx)
    st = ctx.state
    if "g_keep" not in st:
        st["g_keep"] = CB._from_numpy(_mask(ctx, target[1]).astype(np.uint8))  # [B, C_out]
    if t1 > t0 and ctx.batch > 0:
        K = CB._kernels()
        src = CB._source(ctx)
        onset = ctx.onset  # Program.onset: delay + the source's latency
        idx, cnt = CB._gather(ctx, src, t0, t1, ctx.node.delay, c["g_no_pairs"], True, onset)
        K.conv2d_gated_deliver[K.grid_for((t1 - t0) * ctx.batch), K.TPB](
            src, idx, cnt, c["g_wc"], c["g_bias"], c["g_has_bias"], st["g_keep"], ctx.out, t0, t1 - t0,
            ctx.node.delay, onset, c["g_geom"], *CB._pair_counters(ctx)[:2], ctx.state["pair_real"],
        )
    ctx.counts["dense_ops"] += c["g_dense_per_step"] * (t1 - t0)
    CB._finish(ctx, t1)


def population(ctx: NodeContext, t0: int, t1: int) -> None:
    found = gate_of_population(ctx.program, ctx.name) if ctx.program is not None else None
    if found is None:
        _plain_population(ctx, t0, t1)
        return
    _float_only(ctx, "population")
    gate_name, gi = found
    n = ctx.node.size
    st = ctx.state  # the mask is the run's (it depends on the samples)
    if "g_keep" not in st:
        keep = _mask(ctx, gate_name)  # [B, C]
        if keep.shape[1] == 0 or n % keep.shape[1]:
            raise BackendError(f"population {ctx.name!r}: {n} neurons do not split into the {keep.shape[1]} "
                               f"channels of gate {gate_name!r}")
        neuron_keep = np.repeat(keep, n // keep.shape[1], axis=1)  # channel-major neurons
        st["g_keep"] = CB._from_numpy(neuron_keep.astype(np.uint8))
        st["g_nactive"] = neuron_keep.sum(axis=1).astype(np.int64)
    CB.population_float(ctx, t0, t1, skip=gi, keep=st["g_keep"], nactive=st["g_nactive"])


BACKEND.kernels["conv2d"] = conv2d
BACKEND.kernels["population"] = population
add_gate_checks(BACKEND)
