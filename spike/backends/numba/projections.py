"""Compiled projection loops of the numba backend (see ``numba.backend`` for how nodes map onto
them; the neuron updates are in ``numba.neurons``).

Every loop fills steps ``t0..t1-1`` of ``out`` (``[T, B, n]``); the batch is split over threads
with ``prange`` (each thread owns whole samples, so the per-sample counters need no atomics; the
sparse loop can also give a sample's blocks of targets to several threads, one of which counts).
Projections read their source at ``t - delay`` and deliver nothing before step ``start``: the
node's ``Program.onset`` in float32 (the bias travels with the events), its ``delay`` in fixed
point; a step before the source's first (``t < delay``, e.g. a ``late_recurrent`` population's
recurrent synapses, whose bias starts at step 0) has no events, and the source's buffer is not
read there (its contents are not assumed to be zero). Float arithmetic stays in float32 (float64
for a float64 program: the kernels follow their arrays' dtype) and in the order of design §3 (no
``fastmath``), so
results equal the dense torch reference bit for bit whenever the sums are exact.

Each projection loop is written once and compiled per arithmetic (and per use of an FTWT mask)
by a factory that closes over constant flags, as ``population_kernel`` does for the neuron
switches: ``fixed`` runs Loihi fixed point (int32 signals, every non-zero input a spike, integer
weights summed in int64, then shifted by ``weight_exp`` and wrapped to int32 as lava's
``PyDenseModelBitAcc`` does), else float32 (``out = bias + sum of w * x``, ``w`` alone for
``x == 1``). Numba prunes the branches on a constant flag, so each specialisation is the loop of
its own case; each is cached on disk per flag set. ``numba.neurons`` defines the integer helpers
(``wrap_int32``, ``shift_by_exp``).

Event-driven projections gather the non-zero inputs of a step (:func:`events.gather`: 64 inputs compared
with zero at once into a bit mask, whose set bits become the event indices), then add each event's
weights into the step's output: a dense projection one contiguous row per event, a sparse one its
CSR row cut by blocks of targets (``layout.SparseBlocks``: compact row pointers, uint16 offsets,
weights as one-byte codes when there are few distinct ones), block by block for a group of
events, so the scattered adds stay in cache, with the rows' loads prefetched a few events ahead;
every target still receives its terms in the CSR loop's order. Counters add a precomputed
per-input pair count per event.
Projections count their pairs into ``acs`` (``syn_ops``) or ``macs``: with ``check`` False (a
spike source) every pair is an accumulate; with ``check`` True the pairs of a (step, sample) are
``macs`` when one of its input values is outside {-1, 0, 1} (NeuroBench's per-call rule), else
``acs``; the test rides on the loop that already reads every non-zero input.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from spike.backends.numba.events import CHUNK, gather
from spike.backends.numba.neurons import shift_by_exp, wrap_int32


# ----------------------------------------------------------------------------- shared pieces


@njit(cache=True, inline="always")
def _add_rows(acc, rows, idx, val, m, unit):
    """``acc += sum_k rows[idx[k]] * val[k]`` for k < m, in k order for every element.

    Four rows are added per pass over ``acc`` (``((acc + r0) + r1) + ...``: the same float
    operations in the same order as one row at a time, with a quarter of the accumulator
    traffic). ``unit`` says every value is 1 (binary events): add without multiplying.
    """
    n = acc.shape[0]
    k = 0
    if unit:
        while k + 4 <= m:
            r0 = rows[idx[k]]
            r1 = rows[idx[k + 1]]
            r2 = rows[idx[k + 2]]
            r3 = rows[idx[k + 3]]
            for j in range(n):
                acc[j] = acc[j] + r0[j] + r1[j] + r2[j] + r3[j]
            k += 4
        while k < m:
            r0 = rows[idx[k]]
            for j in range(n):
                acc[j] = acc[j] + r0[j]
            k += 1
    else:
        while k + 4 <= m:
            r0 = rows[idx[k]]
            r1 = rows[idx[k + 1]]
            r2 = rows[idx[k + 2]]
            r3 = rows[idx[k + 3]]
            v0 = val[k]
            v1 = val[k + 1]
            v2 = val[k + 2]
            v3 = val[k + 3]
            for j in range(n):
                acc[j] = acc[j] + r0[j] * v0 + r1[j] * v1 + r2[j] * v2 + r3[j] * v3
            k += 4
        while k < m:
            r0 = rows[idx[k]]
            v0 = val[k]
            for j in range(n):
                acc[j] = acc[j] + r0[j] * v0
            k += 1


_GROUP = 32  # events whose rows are scattered block by block while they stay in cache
_AHEAD = 8  # events ahead whose synapses are prefetched (their row pointers: a group ahead)
_LINE = 64  # bytes per cache line


@njit(cache=True, inline="always")
def _prefetch_span(a, q0, q1):
    """Prefetch the cache lines of ``a[q0:q1]`` (``q1 > q0``; ``a`` may be strided)."""
    step = max(1, _LINE // a.strides[0])
    for q in range(q0, q1 - 1, step):
        prefetch(a, q)
    prefetch(a, q1 - 1)


@njit(cache=True, inline="always")
def _prefetch_row(ptr, off, w, i, blk0, blk1, uniform):
    """Prefetch the synapses of source ``i`` into blocks ``blk0 .. blk1-1`` (contiguous in its row):
    their targets, and their weights unless ``uniform`` (none are read)."""
    q0 = ptr[i, blk0]
    q1 = ptr[i, blk1]
    if q1 > q0:
        _prefetch_span(off, q0, q1)
        if not uniform:
            _prefetch_span(w, q0, q1)


@njit(cache=True, inline="always")
def _weight(w, table, k, w0, coded, uniform):
    """Synapse ``k``'s weight: ``w0`` (= ``table[0]``, read once per call) when every synapse has the
    same one (``uniform``), ``table[w[k]]`` when ``coded``, else ``w[k]`` (constant flags: the
    other branches are pruned)."""
    if uniform:
        return w0
    if coded:
        return table[w[k]]
    return w[k]


@intrinsic
def prefetch(typingctx, arr, i):
    """``prefetch(arr, i)``: hint the cache to load ``arr[i]`` of a 1-D array, contiguous or strided
    (LLVM's ``llvm.prefetch``, read, high locality); no effect on results. ``i`` may lie past the end
    (a hint never faults)."""
    if not isinstance(arr, types.Array) or arr.ndim != 1:
        return None

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        index = context.cast(builder, args[1], idxty, types.intp)
        if aryty.layout == "C":
            item = builder.gep(ary.data, [index])
        else:  # strided (e.g. a column): the byte offset index * stride
            stride = cgutils.unpack_tuple(builder, ary.strides, aryty.ndim)[0]
            item = builder.gep(builder.bitcast(ary.data, ir.IntType(8).as_pointer()), [builder.mul(index, stride)])
        ptr = builder.bitcast(item, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i), codegen


@njit(cache=True, inline="always")
def _event_values(x, idx, m, pair_w, val):
    """The values of the ``m`` events ``idx[:m]`` of ``x`` into ``val``; returns ``(pairs, unit,
    real)``: the sum of their ``pair_w``, whether every value is 1, whether one is outside
    {-1, 0, 1}."""
    unit = True
    real = False
    nops = 0
    for k in range(m):
        v = x[idx[k]]
        val[k] = v
        nops += pair_w[idx[k]]
        if v != 1:
            unit = False
            if v != -1:
                real = True
    return nops, unit, real


@njit(cache=True, inline="always")
def _write_shifted(o, acc, weight_exp):
    """``o = int32(acc shifted by weight_exp)``: a fixed-point projection's delivery (lava's)."""
    for j in range(o.shape[0]):
        o[j] = wrap_int32(shift_by_exp(acc[j], weight_exp))


@njit(cache=True, inline="always")
def _add_tap(a, w, base, n, v, unit):
    """``a[base + j] += w[j] * v`` for j < n (``w[j]`` alone when ``unit``)."""
    if unit:
        for j in range(n):
            a[base + j] = a[base + j] + w[j]
    else:
        for j in range(n):
            a[base + j] = a[base + j] + w[j] * v


@njit(cache=True, inline="always")
def _add_tap_kept(a, w, base, act, b, g, na, v):
    """:func:`_add_tap` into the kept channels ``base + act[b, g, :na]`` only (an FTWT mask)."""
    if v == 1:
        for jj in range(na):
            j = base + act[b, g, jj]
            a[j] = a[j] + w[j - base]
    else:
        for jj in range(na):
            j = base + act[b, g, jj]
            a[j] = a[j] + w[j - base] * v


@njit(cache=True, inline="always")
def _windows(n, pad, stride, k, n_out):
    """Along one axis of ``n`` inputs: ``r[i] = (lo, hi)``, input ``i`` lies in the windows of the
    outputs ``lo .. hi-1`` (output ``o`` covers inputs ``o*stride - pad`` .. ``o*stride - pad + k-1``);
    it reaches output ``o`` through kernel tap ``i + pad - o*stride``."""
    r = np.empty((n, 2), np.int64)
    for i in range(n):
        q = i + pad
        r[i, 0] = max((q - k) // stride + 1, 0)
        r[i, 1] = min(q // stride + 1, n_out)
    return r


@njit(cache=True, inline="always")
def _zero(o, n):
    """``o[:n] = 0``."""
    for j in range(n):
        o[j] = 0


@njit(cache=True, inline="always")
def _open_step(o, n, t, start, bias, has_bias, fill):
    """Start step ``t`` of the output row ``o`` (``n`` values); returns whether the step delivers
    anything. Before ``start`` (its source's first aligned step, ``Program.onset``) ``o = 0``, bias
    included, and False; else True, after ``o = bias`` (0 without one) when ``fill`` (float32)."""
    if t < start:
        _zero(o, n)
        return False
    if fill:
        if has_bias:
            for j in range(n):
                o[j] = bias[j]
        else:
            _zero(o, n)
    return True


@njit(cache=True, inline="always")
def _tally(nacs, nmacs, nops, mac):
    """``(nacs, nmacs)`` with a (step, sample)'s ``nops`` pairs added to ``macs`` when ``mac``
    (module docstring), else to ``acs``."""
    if mac:
        return nacs, nmacs + nops
    return nacs + nops, nmacs


# ----------------------------------------------------------------------------- dense and sparse


@lru_cache(maxsize=None)
def dense_kernel(fixed: bool, narrow: bool = False) -> Any:
    """``dense_forward(src, wt, row_nnz, bias, weight_exp, out, t0, t1, delay, start, acs, macs,
    check, dense, dense_per_step)``: a dense projection, ``wt`` = W^T ``[n_in, n_out]`` (C order), ``row_nnz[i]`` =
    nnz(W[:, i]).

    ``out[t, b] = bias + sum over non-zero x = src[t-delay, b, i] of wt[i] * x`` from step ``start``
    on, 0 before (float32; ``bias`` may be empty); fixed point: ``int32((sum of wt[i] over the
    non-zero inputs i) shifted by weight_exp)``, summed in int64, or with ``narrow`` (the caller
    knows ``n_in * max|w| < 2**31``) in int32: the same integers, twice as many per vector.
    ``acs[b]`` or ``macs[b]`` += the non-zero (input, weight) pairs delivered (module docstring),
    ``dense[b] += dense_per_step`` per step (the dense-equivalent pairs, counted here rather than by
    the caller: a numpy add per call costs more than a small layer's steps).

    Silent rows (float; ``engine`` docstring): with ``src_marked``, a source row flagged in
    ``src_silent[t - delay, b]`` has no events and is not read; with ``marks``, a zero output row
    (before ``start``, or a step without events and no bias) is left unwritten and flagged in
    ``silent[t, b]``.
    """

    acc_type = np.int32 if narrow else np.int64

    def dense_forward(src, wt, row_nnz, bias, weight_exp, out, t0, t1, delay, start, acs, macs, check, dense,
                      dense_per_step, silent, marks, src_silent, src_marked):
        B = out.shape[1]
        n_in = wt.shape[0]
        n_out = wt.shape[1]
        has_bias = bias.shape[0] > 0
        for b in prange(B):
            idx = np.empty(n_in + CHUNK, np.int64)
            val = np.empty(n_in, src.dtype)
            acc = np.zeros(n_out if fixed else 0, acc_type)
            nacs = 0
            nmacs = 0
            for t in range(t0, t1):
                o = out[t, b]
                # before the source's step 0 (its buffer is not read), or a source row flagged silent
                no_events = t < delay or (src_marked and t >= start and src_silent[t - delay, b] != 0)
                x = src[max(t - delay, 0), b]
                m = 0 if no_events or t < start else gather(x, idx)
                if marks and (t < start or (m == 0 and not has_bias)):
                    silent[t, b] = 1  # a zero row, left unwritten
                    continue
                if not _open_step(o, n_out, t, start, bias, has_bias, not fixed):
                    continue
                if no_events:
                    if fixed:
                        _zero(o, n_out)
                    continue
                nops, unit, real = _event_values(x, idx, m, row_nnz, val)
                nacs, nmacs = _tally(nacs, nmacs, nops, check and real)
                if fixed:  # every event a spike (lava casts to bool)
                    acc[:] = 0
                    _add_rows(acc, wt, idx, val, m, True)
                    _write_shifted(o, acc, weight_exp)
                else:
                    _add_rows(o, wt, idx, val, m, unit)
            acs[b] += nacs
            macs[b] += nmacs
            dense[b] += dense_per_step * (t1 - t0)

    return njit(cache=True, parallel=True)(dense_forward)


@lru_cache(maxsize=None)
def sparse_kernel(fixed: bool, coded: bool, uniform: bool = False) -> Any:
    """``sparse_forward(src, ptr, off, w, table, row_nnz, bias, weight_exp, out, t0, t1, delay,
    start, acs, macs, check, block, lanes, dense, dense_per_step)``: a CSR projection over source neurons, laid out by
    blocks of targets (``layout.SparseBlocks``: ``ptr``, ``off``, ``w``, ``table``, ``block``;
    weights ``table[w[k]]`` when ``coded``, else ``w[k]``; ``uniform`` (a table of one weight):
    ``table[0]`` for every synapse, ``w`` not read; ``ptr`` may be a strided view, int32 or
    int64). Arithmetic and counts as :func:`dense_kernel`'s.

    Each (sample, step) gathers its events (sources with a non-zero input, in source order:
    :func:`events.gather`), then takes them in groups of ``_GROUP``, in order: for each block of targets,
    the group's segments into that block, event by event. A target therefore receives the terms
    of the CSR loop ``for i in events: for k in row i`` in that loop's order (within a group only
    its block's pass writes it, and a segment keeps its row's order), so float32 sums (and the
    fixed-point integer sums) are the same bit for bit whatever the weights. A block about the
    size of the L1 cache takes the scattered adds at L1 speed; a group's rows stay in cache over
    its block passes. The loads are software-pipelined over the events (a hint never changes a
    result): an event's row pointers are prefetched a group ahead, its synapses (every block of
    the lane) ``_AHEAD`` events ahead, so a row with few synapses costs little more than its adds.
    ``lanes`` > 1 splits each sample's blocks over threads (items ``(sample, lane)`` in
    ``prange``, each gathering the events itself; lane 0 counts, ``dense[b] += dense_per_step``
    per step included: the node's dense-equivalent pairs, counted here rather than by the caller).
    """

    def sparse_forward(src, ptr, off, w, table, row_nnz, bias, weight_exp, out, t0, t1, delay, start,
                       acs, macs, check, block, lanes, dense, dense_per_step):
        B = out.shape[1]
        n_in = ptr.shape[0]
        n_out = out.shape[2]
        nblk = ptr.shape[1] - 1
        has_bias = bias.shape[0] > 0
        for item in prange(B * lanes):
            b = item // lanes
            lane = item - b * lanes
            blk0 = lane * nblk // lanes
            blk1 = (lane + 1) * nblk // lanes
            lo = min(blk0 * block, n_out)
            hi = min(blk1 * block, n_out)
            idx = np.empty(n_in + CHUNK, np.int64)
            val = np.empty(n_in + CHUNK, src.dtype)
            acc = np.zeros(hi - lo if fixed else 0, np.int64)
            col = ptr[:, blk0]  # each source's first pointer in the lane: prefetched a group ahead
            w0 = table[0] if uniform else np.zeros(1, table.dtype)[0]
            nacs = 0
            nmacs = 0
            for t in range(t0, t1):
                o = out[t, b]
                if t < start:
                    _zero(o[lo:hi], hi - lo)
                    continue
                if not fixed:
                    if has_bias:
                        o[lo:hi] = bias[lo:hi]
                    else:
                        _zero(o[lo:hi], hi - lo)
                if t < delay:  # before the source's step 0: no events (its buffer is not read)
                    if fixed:
                        _zero(o[lo:hi], hi - lo)
                    continue
                x = src[t - delay, b]
                m = gather(x, idx)
                if lane == 0:
                    nops, _unit, real = _event_values(x, idx, m, row_nnz, val)
                    nacs, nmacs = _tally(nacs, nmacs, nops, check and real)
                else:
                    for e in range(m):
                        val[e] = x[idx[e]]
                if fixed:
                    acc[:] = 0
                ob = o[lo:hi]
                for e in range(min(_AHEAD, m)):  # the pipeline's start: the first rows, the first group's pointers
                    _prefetch_row(ptr, off, w, idx[e], blk0, blk1, uniform)
                for e in range(_AHEAD, min(_GROUP, m)):
                    prefetch(col, idx[e])
                for g0 in range(0, m, _GROUP):  # events in groups whose rows stay in cache over the blocks
                    g1 = min(g0 + _GROUP, m)
                    for blk in range(blk0, blk1):
                        base = np.uint64(blk * block - lo)  # unsigned indices: no negative-index wraparound
                        first = blk == blk0
                        last = blk == blk1 - 1
                        for e in range(g0, g1):
                            # software pipeline: the row pointers of the event a group on (first pass), the
                            # synapses (all the lane's blocks) of the event _AHEAD on, from its group's first
                            # pass or, across groups, the last pass of the group before
                            if first and e + _GROUP < m:
                                prefetch(col, idx[e + _GROUP])
                            ea = e + _AHEAD
                            if ea < m and ((first and ea < g1) or (last and ea >= g1)):
                                _prefetch_row(ptr, off, w, idx[ea], blk0, blk1, uniform)
                            i = idx[e]
                            p0 = np.uint64(ptr[i, blk])
                            p1 = np.uint64(ptr[i, blk + 1])
                            v = val[e]
                            if fixed:  # every event a spike (lava casts to bool)
                                for k in range(p0, p1):
                                    j = base + off[k]
                                    acc[j] += _weight(w, table, k, w0, coded, uniform)
                            elif v == 1:
                                for k in range(p0, p1):
                                    j = base + off[k]
                                    ob[j] = ob[j] + _weight(w, table, k, w0, coded, uniform)
                            else:
                                for k in range(p0, p1):
                                    j = base + off[k]
                                    ob[j] = ob[j] + _weight(w, table, k, w0, coded, uniform) * v
                if fixed:
                    _write_shifted(o[lo:hi], acc, weight_exp)
            acs[b] += nacs
            macs[b] += nmacs
            if lane == 0:
                dense[b] += dense_per_step * (t1 - t0)

    return njit(cache=True, parallel=True)(sparse_forward)


# ----------------------------------------------------------------------------- convolution


@lru_cache(maxsize=None)
def conv2d_kernel(fixed: bool, gated: bool) -> Any:
    """``conv2d_forward(src, wc, pairs, bias, weight_exp, out, t0, t1, delay, start, geom, act, nact,
    keep, acs, macs, check)``: event-driven 2-D convolution (dilation 1).

    ``wc[g, cl, ky, kx, j]`` = W[g*cout_pg + j, cl, ky, kx]; ``geom`` = (C_in, H, W, C_out, H_out,
    W_out, kh, kw, sy, sx, py, px, cin_pg, cout_pg). Each input event (c, y, x) adds
    ``wc[g, cl, ky, kx] * value`` at every output (oy, ox) it reaches, accumulated channel-last in a
    per-thread buffer and written out channel-first (float32: plus the bias, when ``bias`` is not
    empty; fixed point: summed in int64, then shifted by ``weight_exp`` and wrapped to int32).
    ``pairs[c*H*W + y*W + x]`` is the number of non-zero weights that event reaches inside the
    output; pairs go to ``acs`` or ``macs`` per (step, sample) (module docstring).

    ``gated`` (an FTWT mask): per sample, only the kept output channels receive anything;
    ``act[b, g, :nact[b, g]]`` are the kept channels of group ``g`` (local indices), ``keep[b, co]``
    (uint8) the mask, and ``pairs[b, g, cl, ky, kx]`` the non-zero weights of a tap into kept
    channels; masked channels output 0 (no bias). A step's pairs are still ``macs`` when one of its
    input values (any channel) is outside {-1, 0, 1}.
    """

    def conv2d_forward(src, wc, pairs, bias, weight_exp, out, t0, t1, delay, start, geom, act, nact, keep, acs,
                       macs, check):
        C_in, H, W, C_out, Ho, Wo = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
        kh, kw, sy, sx, py, px = geom[6], geom[7], geom[8], geom[9], geom[10], geom[11]
        cin_pg, cout_pg = geom[12], geom[13]
        B = out.shape[1]
        has_bias = bias.shape[0] > 0
        HW = H * W
        HWo = Ho * Wo
        ry = _windows(H, py, sy, kh, Ho)
        rx = _windows(W, px, sx, kw, Wo)
        for b in prange(B):
            if fixed:
                acc = np.empty((Ho, Wo, C_out), np.int64)
            else:
                acc = np.empty((Ho, Wo, C_out), out.dtype)  # float32, or float64
            nacs = 0
            nmacs = 0
            for t in range(t0, t1):
                o = out[t, b]
                if not _open_step(o, o.shape[0], t, start, bias, has_bias, False):  # the bias comes with the write-out
                    continue
                acc[:] = 0
                x = src[max(t - delay, 0), b]
                real = False
                nops = 0
                for c in range(C_in if t >= delay else 0):  # before the source's step 0: no events
                    g = c // cin_pg
                    cl = c - g * cin_pg
                    base = g * cout_pg
                    if gated and nact[b, g] == 0:  # nothing delivered; its values still decide the step's kind
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
                            if not gated:
                                nops += pairs[c * HW + y * W + xx]
                            if v != 1 and v != -1:
                                real = True
                            for oy in range(ry[y, 0], ry[y, 1]):  # one output per tap: tap order is free
                                ky = y + py - oy * sy
                                for ox in range(rx[xx, 0], rx[xx, 1]):
                                    kx = xx + px - ox * sx
                                    if gated:
                                        nops += pairs[b, g, cl, ky, kx]
                                        _add_tap_kept(acc[oy, ox], wc[g, cl, ky, kx], base, act, b, g, nact[b, g], v)
                                    else:  # fixed point: every event a spike
                                        _add_tap(acc[oy, ox], wc[g, cl, ky, kx], base, cout_pg, v, fixed or v == 1)
                for co in range(C_out):
                    kept = True
                    if gated:
                        kept = keep[b, co] != 0
                    for oy in range(Ho):
                        for ox in range(Wo):
                            if fixed:
                                o[co * HWo + oy * Wo + ox] = wrap_int32(shift_by_exp(acc[oy, ox, co], weight_exp))
                            elif not kept:
                                o[co * HWo + oy * Wo + ox] = 0
                            elif has_bias:
                                o[co * HWo + oy * Wo + ox] = acc[oy, ox, co] + bias[co]
                            else:
                                o[co * HWo + oy * Wo + ox] = acc[oy, ox, co]
                nacs, nmacs = _tally(nacs, nmacs, nops, check and real)
            acs[b] += nacs
            macs[b] += nmacs

    return njit(cache=True, parallel=True)(conv2d_forward)


# ----------------------------------------------------------------------------- pooling


@njit(cache=True, parallel=True)
def pool_sum_forward(src, win_count, out, t0, t1, delay, geom, divisor, pairs):
    """Sum / average pooling by scattering each event into the windows that contain it.

    Contributions reach each window in (ky, kx) order, as torch sums; zero padding adds nothing.
    ``divisor`` > 0 divides each window sum (float32), as ``avg_pool2d(count_include_pad=True)``.
    ``win_count[y*W + x]`` = number of windows containing input (y, x).
    """
    C, H, W, Ho, Wo = geom[0], geom[1], geom[2], geom[3], geom[4]
    kh, kw, sy, sx, py, px = geom[5], geom[6], geom[7], geom[8], geom[9], geom[10]
    B = out.shape[1]
    HW = H * W
    HWo = Ho * Wo
    n_out = out.shape[2]
    ry = _windows(H, py, sy, kh, Ho)
    rx = _windows(W, px, sx, kw, Wo)
    for b in prange(B):
        nops = 0
        for t in range(t0, t1):
            o = out[t, b]
            _zero(o, n_out)
            ts = t - delay
            if ts < 0:
                continue
            x = src[ts, b]
            for c in range(C):
                for y in range(H):
                    for xx in range(W):
                        v = x[c * HW + y * W + xx]
                        if v == 0:
                            continue
                        nops += win_count[y * W + xx]
                        for oy in range(ry[y, 0], ry[y, 1]):
                            for ox in range(rx[xx, 0], rx[xx, 1]):
                                o[c * HWo + oy * Wo + ox] += v
            if divisor > 0:
                for j in range(n_out):
                    o[j] = o[j] / divisor
        pairs[b] += nops


@lru_cache(maxsize=None)
def pool_max_kernel(fixed: bool) -> Any:
    """``pool_max_forward(src, out, t0, t1, delay, geom)``: max pooling with zero padding (the IR's
    rule), on binary events an OR of the window; fixed point: 1 where any input of the window is
    non-zero (an OR of spikes)."""

    def pool_max_forward(src, out, t0, t1, delay, geom):
        C, H, W, Ho, Wo = geom[0], geom[1], geom[2], geom[3], geom[4]
        kh, kw, sy, sx, py, px = geom[5], geom[6], geom[7], geom[8], geom[9], geom[10]
        B = out.shape[1]
        HW = H * W
        HWo = Ho * Wo
        for b in prange(B):
            for t in range(t0, t1):
                o = out[t, b]
                ts = t - delay
                if ts < 0:
                    _zero(o, o.shape[0])
                    continue
                x = src[ts, b]
                for c in range(C):
                    for oy in range(Ho):
                        for ox in range(Wo):
                            if fixed:
                                m = 0
                            else:
                                m = np.float32(-np.inf)
                            padded = False
                            for ky in range(kh):
                                iy = oy * sy - py + ky
                                for kx in range(kw):
                                    ix = ox * sx - px + kx
                                    if iy < 0 or iy >= H or ix < 0 or ix >= W:
                                        padded = True
                                        continue
                                    v = x[c * HW + iy * W + ix]
                                    if fixed:
                                        if v != 0:
                                            m = 1
                                    elif v > m or v != v:
                                        m = v
                            if not fixed and padded and m < 0:
                                m = np.float32(0)
                            o[c * HWo + oy * Wo + ox] = m

    return njit(cache=True, parallel=True)(pool_max_forward)


# ----------------------------------------------------------------------------- one-to-one


@lru_cache(maxsize=None)
def identity_kernel(fixed: bool) -> Any:
    """``identity_forward(src, scale, weight_exp, out, t0, t1, delay, acs, macs, check)``:
    ``out[t] = scale * src[t - delay]`` (a copy when scale is 1), 0 before the source; fixed point
    (integer ``scale``): ``int32(scale shifted by weight_exp)`` where the source spiked, else 0.
    ``acs`` or ``macs`` += non-zero inputs (module docstring)."""

    def identity_forward(src, scale, weight_exp, out, t0, t1, delay, acs, macs, check):
        B = out.shape[1]
        n = out.shape[2]
        one = scale == 1
        on = wrap_int32(shift_by_exp(np.int64(scale), weight_exp)) if fixed else 0
        for b in prange(B):
            nacs = 0
            nmacs = 0
            for t in range(t0, t1):
                o = out[t, b]
                ts = t - delay
                if ts < 0:
                    _zero(o, n)
                    continue
                x = src[ts, b]
                nops = 0
                real = False
                for j in range(n):
                    v = x[j]
                    if v != 0:
                        nops += 1
                        if v != 1 and v != -1:
                            real = True
                    if fixed:
                        o[j] = on if v != 0 else 0
                    elif one:
                        o[j] = v
                    else:
                        o[j] = scale * v
                nacs, nmacs = _tally(nacs, nmacs, nops, check and real)
            acs[b] += nacs
            macs[b] += nmacs

    return njit(cache=True, parallel=True)(identity_forward)
