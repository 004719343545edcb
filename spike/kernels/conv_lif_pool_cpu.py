"""Numba CPU kernels: a 2-D convolution, the fused multi-step LIF and 2-D max pooling in one pass,
for the first block of a spiking CNN (``conv -> LIF -> pool`` on an input with few channels).

The convolution's output (the LIF's input current, ``[T, B, Cout, Ho, Wo]``, usually the largest
tensor of the network) is computed row by row in cache and never written to memory, nor is its
gradient: the backward recomputes it from the input in cache and adds the weight and bias
gradients up there.

Layout: the input ``inp[T, B, Cin, Hp, Wp]`` is already zero-padded (stride 1, dilation 1, one
group), the weight ``w[Cout, Cin, KH, KW]``; the LIF's neurons are the planes ``(b, c)`` of the
output, ``Ho = Hp - KH + 1`` by ``Wo = Wp - KW + 1``, in ``[B, Cout, Ho, Wo]`` order (``M`` of
them per step, as ``x[T, M]`` of :mod:`spike.kernels.lif_cpu`). Per step and neuron::

    c_t[b, o, y, x] = bias[o] + w[o, 0, 0, 0]*inp[t, b, 0, y, x] + w[o, 0, 0, 1]*inp[t, b, 0, y, x+1]
                      + ...  (terms in (ci, ky, kx) order, each a fused multiply-add: rounded once)
    s_t = LIF(c)_t ;  y_t, q_t = max_pool(s_t)          (:mod:`spike.kernels.lif_pool_cpu`)

Backward, per step from the last: the LIF adjoint through the rebuilt spike gradient
(:mod:`spike.kernels.lif_pool_cpu`) gives ``g_t = dL/dc_t`` in cache, then::

    dw[o, ci, ky, kx] += sum_{b, y, x} g_t[b, o, y, x] * inp[t, b, ci, y+ky, x+kx]
    dbias[o]          += sum_{b, y, x} g_t[b, o, y, x]

No input gradient (the input of a first layer is data). The sums run over a fixed partition of
the planes into work items (independent of the thread count), per item in vector accumulators
over ``x``, then item after item, so the results do not depend on the number of threads. The
convolution's summation order is not oneDNN's: values equal ``conv2d`` within float32 rounding,
exactly when every partial sum is exact (dyadic weights and inputs, design §3).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from spike.kernels.lif_cpu import (
    _adjoint_step, _backward_buffers, _checkpoint, _constants, _forward_buffers, _forward_step, _parameter_sums,
    _recompute_step, _segment_start, _work_item,
)
from spike.kernels.lif_pool_cpu import _backward_setup, _pool_row, _unpool_row
from spike.kernels.max_pool import VEC, _f32_ptr, _fma, _lanes_below, _masked_op, _splat, _vptr, kernel_supported

__all__ = ["ITEM_NEURONS", "MAX_CONV_KERNEL", "Kernels", "kernels", "planes_per_item", "slack"]

MAX_CONV_KERNEL = 7  # conv kernel sides 1..7 (the loops over taps are unrolled per size)
# Neurons per work item. Smaller than lif_cpu.BLOCK: this kernel streams no [T, M] input whose
# rows want to be wide, and the backward's recomputed rows (K+1 of them) of a 16384-neuron item
# stay in L2 (the CNN of benchmarks/vs_training.py, its first block alone, one thread, 2-core AMD
# EPYC: backward 3.3-3.4 ms against 3.6-3.7 ms with items of lif_cpu.BLOCK = 65536 neurons).
ITEM_NEURONS = 16384


def slack(wp: int) -> int:
    """Floats a flat padded input must hold past its last plane for the unmasked row loads of
    :func:`_conv_plane` and :func:`_plane_grads`: one row of ``wp`` and two vectors."""
    return wp + 2 * VEC


def planes_per_item(planes: int, plane: int) -> int:
    """Whole output planes per work item, about ``ITEM_NEURONS``: a function of the shape only (not
    of the thread count), so that the gradient sums are grouped the same way whatever the number of
    threads."""
    return max(1, min(planes, ITEM_NEURONS // plane))


def _masks(builder, n, j):
    """The masks of the two vectors at columns ``j`` and ``j + VEC`` of a row of ``n``."""
    i64 = ir.IntType(64)
    return [_lanes_below(builder, builder.sub(n, builder.add(j, ir.Constant(i64, VEC * k))), VEC) for k in range(2)]


@intrinsic
def _conv_plane(typingctx, out, o, inp, i0, hp, wp, cin, w, w0, bias, ho, wo, ckh, ckw):
    """One plane of the current: ``out[o + y*wo + x] = bias + w[w0] * inp[i0 + y*wp + x] + ...``
    for ``y < ho``, ``x < wo``, the taps ``(ci, ky, kx)`` in order at ``inp[i0 + (ci*hp + y + ky)*wp
    + kx + x]`` with weight ``w[w0 + (ci*ckh + ky)*ckw + kx]``, each term a fused multiply-add (half
    the vector operations of a product rounded and then added: on the CNN of
    ``benchmarks/vs_training.py`` the block's forward 1.82 -> 1.67 ms and backward 3.06 -> 2.83 ms,
    one thread, 2-core AMD EPYC; on 0/1 inputs every product is exact, so the two agree bit for
    bit). Two rows by two vectors of ``VEC`` columns at a time, their sums in registers over the
    taps (four independent chains); the stores are masked to the row, the loads
    are not (a quarter faster): ``inp`` must hold :func:`slack` floats past its last plane (their
    lanes are never stored). 1-D float32 C arrays, int64 offsets, ``ckh``, ``ckw`` compile-time
    constants. (Updating the row in memory tap after tap runs at the speed of store-to-load
    forwarding, and LLVM's own vectorised loop needs 64 iterations: a 28-wide row would run scalar.)"""
    if not (isinstance(ckh, types.IntegerLiteral) and isinstance(ckw, types.IntegerLiteral)):
        return None
    CKH, CKW = ckh.literal_value, ckw.literal_value
    sig = types.void(out, o, inp, i0, hp, wp, cin, w, w0, bias, ho, wo, ckh, ckw)

    def codegen(context, builder, signature, args):
        a_out, a_o, a_inp, a_i0, a_hp, a_wp, a_cin, a_w, a_w0, a_bias, a_ho, a_wo = args[:12]
        i64 = ir.IntType(64)
        vf = ir.VectorType(ir.FloatType(), VEC)
        store = _masked_op(builder, "store", vf)
        align = ir.Constant(ir.IntType(32), 4)
        none = ir.Constant(ir.VectorType(ir.IntType(1), VEC), [0] * VEC)
        pout = _f32_ptr(context, builder, signature.args[0], a_out, a_o)
        pin = _f32_ptr(context, builder, signature.args[2], a_inp, a_i0)
        pw = _f32_ptr(context, builder, signature.args[7], a_w, a_w0)
        plane = builder.mul(a_hp, a_wp)
        two = ir.Constant(i64, 2)
        with cgutils.for_range(builder, builder.sdiv(builder.add(a_ho, ir.Constant(i64, 1)), two)) as rp:
            y0 = builder.mul(rp.index, two)
            second = builder.icmp_signed("<", builder.add(y0, ir.Constant(i64, 1)), a_ho)
            pairs = builder.sdiv(builder.add(a_wo, ir.Constant(i64, 2 * VEC - 1)), ir.Constant(i64, 2 * VEC))
            with cgutils.for_range(builder, pairs) as cp:
                j = builder.mul(cp.index, ir.Constant(i64, 2 * VEC))
                m = _masks(builder, a_wo, j)
                masks = [m[0], m[1], builder.select(second, m[0], none), builder.select(second, m[1], none)]
                offs = [builder.add(builder.add(builder.mul(builder.add(y0, ir.Constant(i64, r)), a_wp), j),
                                    ir.Constant(i64, VEC * k)) for r in range(2) for k in range(2)]
                accs = [cgutils.alloca_once_value(builder, _splat(builder, a_bias, vf)) for _ in range(4)]
                with cgutils.for_range(builder, a_cin) as ci:
                    src = builder.gep(pin, [builder.mul(ci.index, plane)])
                    wci = builder.gep(pw, [builder.mul(ci.index, ir.Constant(i64, CKH * CKW))])
                    vals = [builder.load(a) for a in accs]
                    for ky in range(CKH):
                        for kx in range(CKW):
                            wv = _splat(builder, builder.load(builder.gep(wci, [ir.Constant(i64, ky * CKW + kx)])), vf)
                            tap = builder.add(builder.mul(a_wp, ir.Constant(i64, ky)), ir.Constant(i64, kx))
                            for q in range(4):
                                x = builder.load(_vptr(builder, src, builder.add(offs[q], tap)), align=4)
                                vals[q] = builder.call(_fma(builder, vf), [wv, x, vals[q]])
                    for q in range(4):
                        builder.store(vals[q], accs[q])
                for r in range(2):
                    for k in range(2):
                        q = 2 * r + k
                        dst = builder.add(builder.add(builder.mul(builder.add(y0, ir.Constant(i64, r)), a_wo), j),
                                          ir.Constant(i64, VEC * k))
                        builder.call(store, [builder.load(accs[q]), _vptr(builder, pout, dst), align, masks[q]])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _plane_grads(typingctx, gw, gw0, gb, gb0, g, g0, inp, i0, hp, wp, ci, ho, wo, ckh, ckw):
    """One plane's weight and bias gradient terms for input channel ``ci``, added to vector
    accumulators: ``gw[gw0 + (ky*ckw + kx)*wo + x] += sum_{y < ho} g[g0 + y*wo + x] * inp[i0 + (ci*hp
    + y + ky)*wp + kx + x]`` and, when ``ci == 0``, ``gb[gb0 + x] += sum_y g[g0 + y*wo + x]``
    (``x < wo``). Per pair of ``VEC``-column vectors, the ``ckh*ckw`` (+1) sums run over ``y`` in
    order in registers (independent chains), each term a fused multiply-add, and are added to the
    accumulators once (masked to the row). Unmasked loads: ``g`` must hold ``2*VEC`` floats past its
    last plane and ``inp`` :func:`slack` floats past its own. 1-D float32 C arrays, int64 offsets,
    ``ckh``, ``ckw`` compile-time constants."""
    if not (isinstance(ckh, types.IntegerLiteral) and isinstance(ckw, types.IntegerLiteral)):
        return None
    CKH, CKW = ckh.literal_value, ckw.literal_value
    sig = types.void(gw, gw0, gb, gb0, g, g0, inp, i0, hp, wp, ci, ho, wo, ckh, ckw)

    def codegen(context, builder, signature, args):
        a_gw, a_gw0, a_gb, a_gb0, a_g, a_g0, a_inp, a_i0, a_hp, a_wp, a_ci, a_ho, a_wo = args[:13]
        i64 = ir.IntType(64)
        vf = ir.VectorType(ir.FloatType(), VEC)
        load, store = _masked_op(builder, "load", vf), _masked_op(builder, "store", vf)
        align, undef = ir.Constant(ir.IntType(32), 4), ir.Constant(vf, ir.Undefined)
        pgw = _f32_ptr(context, builder, signature.args[0], a_gw, a_gw0)
        pgb = _f32_ptr(context, builder, signature.args[2], a_gb, a_gb0)
        pg = _f32_ptr(context, builder, signature.args[4], a_g, a_g0)
        pin = builder.gep(_f32_ptr(context, builder, signature.args[6], a_inp, a_i0),
                          [builder.mul(builder.mul(a_ci, a_hp), a_wp)])
        with_bias = builder.icmp_signed("==", a_ci, ir.Constant(i64, 0))
        ntap = CKH * CKW + 1  # the taps, then the bias
        pairs = builder.sdiv(builder.add(a_wo, ir.Constant(i64, 2 * VEC - 1)), ir.Constant(i64, 2 * VEC))
        with cgutils.for_range(builder, pairs) as cp:
            j = builder.mul(cp.index, ir.Constant(i64, 2 * VEC))
            masks = _masks(builder, a_wo, j)
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(vf, None)) for _ in range(2)] for _ in range(ntap)]
            with cgutils.for_range(builder, a_ho) as yl:
                y = yl.index
                for k in range(2):
                    col = builder.add(j, ir.Constant(i64, VEC * k))
                    gv = builder.load(_vptr(builder, pg, builder.add(builder.mul(y, a_wo), col)), align=4)
                    for tp in range(ntap):
                        prev = builder.load(accs[tp][k])
                        if tp < CKH * CKW:
                            ky, kx = divmod(tp, CKW)
                            off = builder.add(builder.add(builder.mul(builder.add(y, ir.Constant(i64, ky)), a_wp), col),
                                              ir.Constant(i64, kx))
                            x = builder.load(_vptr(builder, pin, off), align=4)
                            total = builder.call(_fma(builder, vf), [gv, x, prev])
                        else:
                            total = builder.fadd(prev, gv)
                        builder.store(total, accs[tp][k])
            for tp in range(ntap):
                for k in range(2):
                    col = builder.add(j, ir.Constant(i64, VEC * k))
                    if tp < CKH * CKW:
                        pa = _vptr(builder, pgw, builder.add(builder.mul(ir.Constant(i64, tp), a_wo), col))
                        mask = masks[k]
                    else:
                        pa = _vptr(builder, pgb, col)
                        mask = builder.select(with_bias, masks[k], ir.Constant(masks[k].type, [0] * VEC))
                    total = builder.fadd(builder.call(load, [pa, align, mask, undef]), builder.load(accs[tp][k]))
                    builder.call(store, [total, pa, align, mask])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, error_model="numpy", inline="always")
def _conv_rows(inp, B, t, pl0, npl, cout, w, bias, xr, ho, wo, CKH, CKW):
    """``xr``: the current ``c_t`` of the planes ``pl0 .. pl0+npl-1`` (module docstring);
    ``inp`` is the padded input flat (``[T*B*Cin*Hp*Wp]``), ``w`` the weight flat."""
    cin = w.size // (cout * CKH * CKW)
    hp, wp = ho + CKH - 1, wo + CKW - 1
    for pl in range(npl):
        b, c = divmod(pl0 + pl, cout)
        _conv_plane(xr, pl * ho * wo, inp, (t * B + b) * cin * hp * wp, hp, wp, cin, w, c * cin * CKH * CKW, bias[c],
                    ho, wo, CKH, CKW)


@njit(cache=True, error_model="numpy", inline="always")
def _conv_grads(inp, B, t, pl0, npl, cout, g, gw, gb, ho, wo, CKH, CKW):
    """Add step ``t``'s weight and bias gradient terms of the planes ``pl0 ..`` to the vector
    accumulators ``gw`` (flat ``[Cout, Cin, KH, KW, Wo]``) and ``gb`` (flat ``[Cout, Wo]``) from
    ``g`` (dL/dc_t, item-local); ``inp`` flat as in :func:`_conv_rows`."""
    cin = gw.size // (cout * CKH * CKW * wo)
    hp, wp = ho + CKH - 1, wo + CKW - 1
    for pl in range(npl):
        b, c = divmod(pl0 + pl, cout)
        for ci in range(cin):
            _plane_grads(gw, (c * cin + ci) * CKH * CKW * wo, gb, c * wo, g, pl * ho * wo, inp,
                         (t * B + b) * cin * hp * wp, hp, wp, ci, ho, wo, CKH, CKW)


@njit(cache=True, error_model="numpy", inline="always")
def _row_sum(a, a0, n):
    """``a[a0] + a[a0+1] + ... + a[a0+n-1]``, left to right."""
    s = a[a0]
    for i in range(a0 + 1, a0 + n):
        s += a[i]
    return s


class Kernels(NamedTuple):
    """The compiled kernels of one pooling window and convolution kernel size."""

    forward: Callable
    backward: Callable


@functools.lru_cache(maxsize=None)
def kernels(kh: int, kw: int, ckh: int, ckw: int) -> Kernels:
    """The fused kernels for ``kh x kw`` pooling windows (stride = window) after a ``ckh x ckw``
    convolution (compiled on first use, then from Numba's cache):

    * ``forward(inp, flat, w, bias, beta, thr, alpha, params, reset, delay, ge, cuba, y, q, ckv, cki,
      K, cout, ppi)``: ``inp`` the padded input ``[T, B, Cin, Hp, Wp]``, a view of the start of
      ``flat`` (1-D, :func:`slack` floats longer); the LIF arguments as
      :func:`spike.kernels.lif_cpu.lif_forward`; pooled spikes
      to ``y`` and argmax to ``q`` (``[T, B*Cout*(Ho//kh)*(Wo//kw)]``), ``ppi`` planes per work item
      (:func:`planes_per_item`);
    * ``backward(inp, flat, w, bias, beta, thr, alpha, params, reset, delay, ge, cuba, nd, sid, gy,
      gy_tstep, q, ckv, cki, K, dw, dbias, dwp, dbp, dbeta, dthr, dalpha, full, cout, ppi)``: as
      :func:`spike.kernels.lif_cpu.lif_backward` with the pooled spikes' gradient ``gy``; writes
      ``dw`` (``w``'s shape) and ``dbias`` (``[Cout]``), with ``dwp`` (``[items, Cout, Cin, KH,
      KW]``) and ``dbp`` (``[items, Cout]``) the per-item partial sums.
    """
    if not kernel_supported((kh, kw)):
        raise ValueError(f"conv_lif_pool kernels: kh and kw must be in 1..8, got ({kh}, {kw})")
    if not (1 <= ckh <= MAX_CONV_KERNEL and 1 <= ckw <= MAX_CONV_KERNEL):
        raise ValueError(f"conv_lif_pool kernels: the convolution kernel must be 1..{MAX_CONV_KERNEL} per side, "
                         f"got ({ckh}, {ckw})")
    KH, KW, CKH, CKW = int(kh), int(kw), int(ckh), int(ckw)

    @njit(cache=True, parallel=True, error_model="numpy")
    def forward(inp, flat, w, bias, beta, thr, alpha, params, reset, delay, ge, cuba, y, q, ckv, cki, K, cout, ppi):
        T = inp.shape[0]
        M = ckv.shape[1]
        ho = inp.shape[3] - CKH + 1
        wo = inp.shape[4] - CKW + 1
        cst = _constants(params, reset, ge)
        plane = ho * wo
        oplane = (ho // KH) * (wo // KW)
        P = M // plane
        B = inp.shape[1]
        wf = w.reshape(w.size)
        for b in prange((P + ppi - 1) // ppi):
            j0, j1, n, bb, tb, ab = _work_item(b, ppi * plane, M, beta, thr, alpha, cuba)
            v, ibuf = _forward_buffers(inp, n, ckv, cki, j0, j1, cst[1], cuba)
            xr = np.empty(n, dtype=inp.dtype)
            srow = np.empty(n, dtype=inp.dtype)
            pl0 = j0 // plane
            for t in range(T):
                _conv_rows(flat, B, t, pl0, n // plane, cout, wf, bias, xr, ho, wo, CKH, CKW)
                _forward_step(xr, t, v, srow, ibuf, ab, bb, tb, n, cst, delay, cuba)
                _pool_row(srow, y[t], q[t], pl0 * oplane, n // plane, ho, wo, KH, KW)
                _checkpoint(t, T, K, v, ibuf, ckv, cki, j0, j1, n, cuba)

    @njit(cache=True, parallel=True, error_model="numpy")
    def backward(inp, flat, w, bias, beta, thr, alpha, params, reset, delay, ge, cuba, nd, sid, gy, gy_tstep, q, ckv,
                 cki, K, dw, dbias, dwp, dbp, dbeta, dthr, dalpha, full, cout, ppi):
        T, B, cin = inp.shape[0], inp.shape[1], inp.shape[2]
        M = ckv.shape[1]
        ho = inp.shape[3] - CKH + 1
        wo = inp.shape[4] - CKW + 1
        cst, adj, lean, plane, oplane, items, nq = _backward_setup(params, reset, ge, nd, sid, full, T, M, K, ho, wo,
                                                                   ppi, KH, KW)
        wf = w.reshape(w.size)
        for b in prange(items):
            j0, j1, n, bb, tb, ab = _work_item(b, ppi * plane, M, beta, thr, alpha, cuba)
            V, H, I, dc, gnext, gi, acc = _backward_buffers(inp, n, K, delay, cuba, lean)
            xr = np.empty(n, dtype=inp.dtype)
            g = np.empty(n + 2 * VEC, dtype=inp.dtype)
            gsrow = np.empty(n, dtype=inp.dtype)
            gvrow = np.zeros(n, dtype=inp.dtype)  # the membrane is no output: its gradient is zero
            gw = np.zeros(cout * cin * CKH * CKW * wo, dtype=inp.dtype)
            gb = np.zeros(cout * wo, dtype=inp.dtype)
            pl0 = j0 // plane
            npl = n // plane
            for qq in range(nq - 1, -1, -1):
                t0 = qq * K
                L = min(T, t0 + K) - t0
                _segment_start(qq, j0, j1, n, V, I, ckv, cki, cuba)
                for u in range(L):
                    _conv_rows(flat, B, t0 + u, pl0, npl, cout, wf, bias, xr, ho, wo, CKH, CKW)
                    _recompute_step(xr, t0 + u, u, n, V, H, I, ab, bb, tb, cst, delay, cuba, lean)
                for u in range(L - 1, -1, -1):
                    t = t0 + u
                    _unpool_row(gy[t * gy_tstep], q[t], pl0 * oplane, gsrow, npl, ho, wo, KH, KW)
                    _adjoint_step(gsrow, gvrow, t, u, V, H, I, gnext, gi, dc, g, acc, ab, bb, tb, n,
                                  cst, adj, delay, cuba, lean)
                    _conv_grads(flat, B, t, pl0, npl, cout, g, gw, gb, ho, wo, CKH, CKW)
            _parameter_sums(acc, dbeta, dthr, dalpha, j0, j1, n, cuba, lean)
            for o in range(cout):
                dbp[b, o] = _row_sum(gb, o * wo, wo)
                for ci in range(cin):
                    for ky in range(CKH):
                        for kx in range(CKW):
                            dwp[b, o, ci, ky, kx] = _row_sum(gw, (((o * cin + ci) * CKH + ky) * CKW + kx) * wo, wo)
        for o in range(cout):  # item after item, in order: the same sums on any number of threads
            dbias[o] = dbp[0, o]
            for b in range(1, items):
                dbias[o] += dbp[b, o]
            for ci in range(cin):
                for ky in range(CKH):
                    for kx in range(CKW):
                        dw[o, ci, ky, kx] = dwp[0, o, ci, ky, kx]
                        for b in range(1, items):
                            dw[o, ci, ky, kx] += dwp[b, o, ci, ky, kx]

    return Kernels(forward, backward)
