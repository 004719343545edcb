"""FTWT gates on the numba backend: the ``gate`` kernel, and gated forms of the ``conv2d`` and
``population`` kernels (registered onto ``numba.backend.BACKEND``; the plain kernels still run
every node that no gate touches).

Per sample ``b`` with mask ``keep[b]`` (``backends.gate_common.gate_mask``):

- a conv2d projection into a gated population adds each input event's kernel taps into the kept
  output channels only; ``syn_ops``/``macs`` count the (event, non-zero weight) pairs delivered
  into kept channels (``syn_ops`` or ``macs`` per (sample, step) by all of that step's input
  values, those into masked channels included, as ``numba.kernels``), ``dense_ops`` stays the
  dense count of the layer; masked channels' outputs are 0 (no bias);
- the gated population updates only the neurons of kept channels (the same float32 operations, in
  the same order, as ``numba.kernels.population_kernel``); masked neurons keep ``v = 0``, emit no
  spike and are not counted in ``neuron_updates``;
- the gate node outputs the mask (1.0 kept) at every step and counts its head as ``host_flops``.

Gated programs run in float32 (fixed-point programs with gates are refused by validation).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from spike.backends.numba import backend as NB
from spike.backends.engine import NodeContext
from spike.backends.layout import conv_layout
from spike.backends.gate_common import add_gate_checks, gate_host_flops, gate_mask, gate_of_population, gated_consumer
from spike.backends.registry import BackendError

BACKEND = NB.BACKEND
_plain_conv2d = BACKEND.kernels["conv2d"]
_plain_population = BACKEND.kernels["population"]


# ----------------------------------------------------------------------------- compiled loops


@njit(cache=True, parallel=True)
def conv2d_gated_forward(src, wc, tap_nnz, bias, out, t0, t1, delay, onset, geom, act, nact, keep, acs, macs,
                         check):
    """``numba.kernels.conv2d_forward`` restricted per sample to the kept output channels.

    ``act[b, g, :nact[b, g]]`` are the kept channels of group ``g`` (local indices), ``keep[b, co]``
    (uint8) the mask, ``tap_nnz[b, g, cl, ky, kx]`` the non-zero weights of a tap into kept channels.
    ``check``: a step's pairs are ``macs`` when one of its input values (any channel) is outside
    {-1, 0, 1}, else ``acs``.
    """
    C_in, H, W, C_out, Ho, Wo = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    kh, kw, sy, sx, py, px = geom[6], geom[7], geom[8], geom[9], geom[10], geom[11]
    cin_pg, cout_pg = geom[12], geom[13]
    B = out.shape[1]
    has_bias = bias.shape[0] > 0
    HW = H * W
    HWo = Ho * Wo
    for b in prange(B):
        acc = np.empty((Ho, Wo, C_out), np.float32)
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            o = out[t, b]
            if t < onset:  # nothing before the onset, bias included (Program.onset)
                o[:] = 0
                continue
            ts = t - delay
            acc[:] = 0
            x = src[ts, b]
            real = False
            nops = 0
            for c in range(C_in):
                g = c // cin_pg
                cl = c - g * cin_pg
                base = g * cout_pg
                na = nact[b, g]
                if na == 0:  # nothing delivered; its values still decide the step's kind
                    if check and not real:
                        for i in range(c * HW, (c + 1) * HW):
                            v = x[i]
                            if v != 0 and v != 1 and v != -1:
                                real = True
                    continue
                for y in range(H):
                    for xx in range(W):
                        v = x[c * HW + y * W + xx]
                        if v == 0:
                            continue
                        if v != 1 and v != -1:
                            real = True
                        for ky in range(kh):
                            ny = y + py - ky
                            if ny < 0:
                                break
                            if ny % sy != 0:
                                continue
                            oy = ny // sy
                            if oy >= Ho:
                                continue
                            for kx in range(kw):
                                nx = xx + px - kx
                                if nx < 0:
                                    break
                                if nx % sx != 0:
                                    continue
                                ox = nx // sx
                                if ox >= Wo:
                                    continue
                                nops += tap_nnz[b, g, cl, ky, kx]
                                w = wc[g, cl, ky, kx]
                                a = acc[oy, ox]
                                if v == 1:
                                    for jj in range(na):
                                        j = base + act[b, g, jj]
                                        a[j] = a[j] + w[j - base]
                                else:
                                    for jj in range(na):
                                        j = base + act[b, g, jj]
                                        a[j] = a[j] + w[j - base] * v
            for co in range(C_out):
                kept = keep[b, co] != 0
                for oy in range(Ho):
                    for ox in range(Wo):
                        if not kept:
                            o[co * HWo + oy * Wo + ox] = 0
                        elif has_bias:
                            o[co * HWo + oy * Wo + ox] = acc[oy, ox, co] + bias[co]
                        else:
                            o[co * HWo + oy * Wo + ox] = acc[oy, ox, co]
            if check and real:
                nmacs += nops
            else:
                nacs += nops
        acs[b] += nacs
        macs[b] += nmacs


# ----------------------------------------------------------------------------- kernels


def _float_only(ctx: NodeContext, what: str) -> None:
    if ctx.precision == "fixed":
        raise BackendError(f"{what} {ctx.name!r}: FTWT gates run in float32 programs only")


@BACKEND.kernel("gate")
def gate(ctx: NodeContext, t0: int, t1: int) -> None:
    _float_only(ctx, "gate")
    mask = gate_mask(ctx, ctx.name)
    ctx.out[t0:t1] = mask.astype(ctx.out.dtype)[None]
    if t0 == 0:
        ctx.counts["host_flops"] += gate_host_flops(ctx, ctx.name)


def _conv_prep(ctx: NodeContext) -> dict:
    c = ctx.cache
    if "g_wc" not in c:
        node = ctx.node
        L = conv_layout(node, ctx.name)
        c["g_wc"] = L.wc
        c["g_nz"] = (L.wc != 0).astype(np.int64)  # [G, cin_pg, kh, kw, cout_pg]
        c["g_geom"] = L.geom
        c["g_bias"] = NB._bias(node, L.C_out)
        c["g_dense_per_step"] = L.dense_per_step
    return c


def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    target = gated_consumer(ctx.program, ctx.name) if ctx.program is not None else None
    if target is None:
        _plain_conv2d(ctx, t0, t1)
        return
    _float_only(ctx, "conv2d")
    c = _conv_prep(ctx)
    keep = gate_mask(ctx, target[1])  # [B, C_out]
    G, cin_pg, kh, kw, cout_pg = c["g_nz"].shape
    B = ctx.batch
    kg = keep.reshape(B, G, cout_pg)
    nact = kg.sum(axis=2).astype(np.int64)
    act = np.zeros((B, G, cout_pg), np.int64)
    for b in range(B):
        for g in range(G):
            idx = np.flatnonzero(kg[b, g])
            act[b, g, : len(idx)] = idx
    tap_nnz = np.ascontiguousarray(np.einsum("gcyxj,bgj->bgcyx", c["g_nz"], kg.astype(np.int64)))
    conv2d_gated_forward(
        NB._source(ctx), c["g_wc"], tap_nnz, c["g_bias"], ctx.out, t0, t1, ctx.node.delay, ctx.onset,
        c["g_geom"], act, nact,
        keep.astype(np.uint8), *NB._pair_counters(ctx),
    )
    ctx.counts["dense_ops"] += c["g_dense_per_step"] * (t1 - t0)


def population(ctx: NodeContext, t0: int, t1: int) -> None:
    found = gate_of_population(ctx.program, ctx.name) if ctx.program is not None else None
    if found is None:
        _plain_population(ctx, t0, t1)
        return
    _float_only(ctx, "population")
    gate_name, gi = found
    node = ctx.node
    n = node.size
    st = ctx.state  # the mask is the run's (it depends on the samples)
    if "active" not in st:
        keep = gate_mask(ctx, gate_name)  # [B, C]
        neuron_keep = np.repeat(keep, n // keep.shape[1], axis=1)  # channel-major neurons
        active = np.zeros((ctx.batch, n), np.int64)
        for b in range(ctx.batch):
            idx = np.flatnonzero(neuron_keep[b])
            active[b, : len(idx)] = idx
        st["active"], st["nactive"] = active, neuron_keep.sum(axis=1).astype(np.int64)
    srcs = [s for i, s in enumerate(ctx.sources) if i != gi]
    NB.population_float(ctx, t0, t1, sources=srcs, active=st["active"], nactive=st["nactive"])


BACKEND.kernels["conv2d"] = conv2d
BACKEND.kernels["population"] = population
add_gate_checks(BACKEND)
