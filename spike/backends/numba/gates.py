"""FTWT gates on the numba backend: the ``gate`` kernel, and the "gated" variants of the ``conv2d``
and ``population`` kernels, which the engine runs for the nodes a gate masks (``Program.gated``);
``ctx.gate`` names the gate (``gate_common.GateRef``).

Per sample ``b`` with mask ``keep[b]`` (``gate_common.gate_mask``):

- a conv2d projection into a gated population adds each input event's kernel taps into the kept
  output channels only (``numba.projections.conv2d_kernel(gated=True)``); ``syn_ops``/``macs``
  count the (event, non-zero weight) pairs delivered into kept channels (``syn_ops`` or ``macs``
  per (sample, step) by all of that step's input values, those into masked channels included, as
  the plain kernel decides), ``dense_ops`` stays the dense count of the layer; masked channels'
  outputs are 0 (no bias);
- the gated population updates only the neurons of kept channels (the same float32 operations, in
  the same order, as ``numba.neurons.population_kernel``); masked neurons keep ``v = 0``, emit no
  spike and are not counted in ``neuron_updates``;
- the gate node outputs the mask (1.0 kept) at every step and counts its head as ``host_flops``.

Gated programs run in float32 (backends refuse fixed-point programs with gates before a run).
"""
from __future__ import annotations

import numpy as np

from spike.backends.engine import NodeContext
from spike.backends.gate_common import gate_mask, gate_run
from spike.backends.layout import delivery
from spike.backends.numba import projections as P
from spike.backends.numba.backend import BACKEND, conv_arrays, pair_counters, population_float, source
from spike.backends.registry import GATED


@BACKEND.kernel("gate")
def gate(ctx: NodeContext, t0: int, t1: int) -> None:
    run = gate_run(ctx)
    ctx.out[t0:t1] = run.mask.astype(ctx.out.dtype)[None]
    if t0 == 0:
        ctx.counts["host_flops"] += run.host_flops


def _kept(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a mask ``[..., n]``: the kept indices, ascending, padded with 0 (``[..., n]``),
    and their number (``[...]``)."""
    rows = keep.reshape(-1, keep.shape[-1])
    act = np.zeros(rows.shape, np.int64)
    for r in range(rows.shape[0]):
        idx = np.flatnonzero(rows[r])
        act[r, : len(idx)] = idx
    return act.reshape(keep.shape), rows.sum(axis=1).astype(np.int64).reshape(keep.shape[:-1])


@BACKEND.kernel("conv2d", GATED)
def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    c = conv_arrays(ctx)
    L = c["layout"]
    if "nz" not in c:
        c["nz"] = (L.wc != 0).astype(np.int64)  # [G, cin_pg, kh, kw, cout_pg]
    st = ctx.state  # the mask is the run's (it depends on the samples)
    if "act" not in st:
        keep = gate_mask(ctx)  # [B, C_out]
        kg = keep.reshape(ctx.batch, L.groups, L.cout_pg)
        st["act"], st["nact"] = _kept(kg)  # [B, G, cout_pg], [B, G]
        st["tap_nnz"] = np.ascontiguousarray(np.einsum("gcyxj,bgj->bgcyx", c["nz"], kg.astype(np.int64)))
        st["keep"] = keep.astype(np.uint8)
    weight_exp, delay, start = delivery(ctx)
    P.conv2d_kernel(False, True)(  # float32: gated programs are float only
        source(ctx), c["wc"], st["tap_nnz"], c["bias"], weight_exp, ctx.out, t0, t1, delay, start, L.geom,
        st["act"], st["nact"], st["keep"], *pair_counters(ctx),
    )
    ctx.counts["dense_ops"] += L.dense_per_step * (t1 - t0)


@BACKEND.kernel("population", GATED)
def population(ctx: NodeContext, t0: int, t1: int) -> None:
    st = ctx.state  # the mask is the run's (it depends on the samples)
    if "active" not in st:
        keep = gate_mask(ctx)  # [B, C]
        neuron_keep = np.repeat(keep, ctx.node.size // keep.shape[1], axis=1)  # channel-major neurons
        st["active"], st["nactive"] = _kept(neuron_keep)
    srcs = [s for i, s in enumerate(ctx.sources) if i != ctx.gate.position]
    population_float(ctx, t0, t1, sources=srcs, active=st["active"], nactive=st["nactive"])
