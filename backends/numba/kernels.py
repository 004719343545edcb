"""Compiled loops of the numba backend (see ``numba.backend`` for how nodes map onto them).

Every function works on float32 arrays ``[T, B, n]`` and fills steps ``t0..t1-1`` of ``out``;
the batch is split over threads with ``prange`` (each thread owns whole samples, so the per-sample
counters need no atomics). Projections read their source at ``t - delay`` and deliver nothing
before the source starts. Arithmetic stays in float32 and in the order of design §3 (no
``fastmath``), so results equal the dense torch reference bit for bit whenever the sums are exact.

Event-driven projections gather the non-zero inputs of a step, then add one contiguous weight
row per event into the step's output; counters add a precomputed per-input pair count per event.
Projections count their pairs into ``acs`` (``syn_ops``) or ``macs``: with ``check`` False (a
spike source) every pair is an accumulate; with ``check`` True the pairs of a (step, sample) are
``macs`` when one of its input values is outside {-1, 0, 1} (NeuroBench's per-call rule), else
``acs``; the test rides on the loop that already reads every non-zero input.
"""
from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit, prange

from spike import semantics
from spike.semantics import (
    MODEL_ALPHA, MODEL_CUBA, MODEL_LI, P_ALPHA, P_BETA, P_RATE, P_TAU, P_THR, S_I, S_J, S_S, S_V, NeuronFlags,
    make_neuron_step,
)



# ----------------------------------------------------------------------------- row accumulation


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


@njit(cache=True, inline="always")
def _gather(x, idx):
    """Indices of the non-zero entries of ``x`` into ``idx``; returns their number.

    Branch-free compaction (every index is written, the count advances on non-zero values):
    constant cost per input whatever the activity, no branch mispredictions.
    """
    m = 0
    for i in range(x.shape[0]):
        idx[m] = i
        m += x[i] != 0
    return m


@njit(cache=True, parallel=True)
def dense_forward(src, wt, row_nnz, bias, out, t0, t1, delay, onset, acs, macs, check):
    """Dense projection, ``wt`` = W^T ``[n_in, n_out]`` (C order), ``row_nnz[i]`` = nnz(W[:, i]).

    ``out[t, b] = bias + sum over non-zero x = src[t-delay, b, i] of wt[i] * x`` from step ``onset`` on
    (``Program.onset``: the bias travels with the events; 0 before);
    ``acs[b]`` or ``macs[b]`` += non-zero (input, weight) pairs delivered (module docstring).
    """
    B = out.shape[1]
    n_in = wt.shape[0]
    n_out = wt.shape[1]
    has_bias = bias.shape[0] > 0
    for b in prange(B):
        idx = np.empty(n_in, np.int64)
        val = np.empty(n_in, np.float32)
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            acc = out[t, b]
            if has_bias and t >= onset:
                for j in range(n_out):
                    acc[j] = bias[j]
            else:
                for j in range(n_out):
                    acc[j] = 0
            if t < onset:  # before its source's first aligned step (Program.onset): nothing, bias included
                continue
            ts = t - delay
            x = src[ts, b]
            m = _gather(x, idx)
            unit = True
            real = False
            nops = 0
            for k in range(m):
                v = x[idx[k]]
                val[k] = v
                nops += row_nnz[idx[k]]
                if v != 1:
                    unit = False
                    if v != -1:
                        real = True
            if check and real:
                nmacs += nops
            else:
                nacs += nops
            _add_rows(acc, wt, idx, val, m, unit)
        acs[b] += nacs
        macs[b] += nmacs


@njit(cache=True, parallel=True)
def sparse_forward(src, indptr, indices, data, row_nnz, bias, out, t0, t1, delay, onset, acs, macs, check):
    """CSR projection over source neurons (targets of input i: ``indices[indptr[i]:indptr[i+1]]``)."""
    B = out.shape[1]
    n_in = indptr.shape[0] - 1
    n_out = out.shape[2]
    has_bias = bias.shape[0] > 0
    for b in prange(B):
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            acc = out[t, b]
            if has_bias and t >= onset:
                for j in range(n_out):
                    acc[j] = bias[j]
            else:
                for j in range(n_out):
                    acc[j] = 0
            if t < onset:  # before its source's first aligned step (Program.onset): nothing, bias included
                continue
            ts = t - delay
            x = src[ts, b]
            real = False
            nops = 0
            for i in range(n_in):
                v = x[i]
                if v == 0:
                    continue
                nops += row_nnz[i]
                if v == 1:
                    for k in range(indptr[i], indptr[i + 1]):
                        acc[indices[k]] += data[k]
                else:
                    if v != -1:
                        real = True
                    for k in range(indptr[i], indptr[i + 1]):
                        acc[indices[k]] += data[k] * v
            if check and real:
                nmacs += nops
            else:
                nacs += nops
        acs[b] += nacs
        macs[b] += nmacs


# ----------------------------------------------------------------------------- convolution


@njit(cache=True, parallel=True)
def conv2d_forward(
    src, wc, in_pairs, bias, out, t0, t1, delay, onset, geom, acs, macs, check
):
    """Event-driven 2-D convolution (dilation 1).

    ``wc[g, cl, ky, kx, j]`` = W[g*cout_pg + j, cl, ky, kx]; ``geom`` = (C_in, H, W, C_out, H_out,
    W_out, kh, kw, sy, sx, py, px, cin_pg, cout_pg). Each input event (c, y, x) adds
    ``wc[g, cl, ky, kx] * value`` at every output (oy, ox) it reaches, accumulated channel-last in a
    per-thread buffer and written out channel-first. ``in_pairs[c*H*W + y*W + x]`` is the number of
    non-zero weights that event reaches inside the output; pairs go to ``acs`` or ``macs`` per
    (step, sample) (module docstring).
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
                for y in range(H):
                    for xx in range(W):
                        v = x[c * HW + y * W + xx]
                        if v == 0:
                            continue
                        nops += in_pairs[c * HW + y * W + xx]
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
                                w = wc[g, cl, ky, kx]
                                a = acc[oy, ox]
                                if v == 1:
                                    for j in range(cout_pg):
                                        a[base + j] = a[base + j] + w[j]
                                else:
                                    for j in range(cout_pg):
                                        a[base + j] = a[base + j] + w[j] * v
            for co in range(C_out):
                for oy in range(Ho):
                    for ox in range(Wo):
                        if has_bias:
                            o[co * HWo + oy * Wo + ox] = acc[oy, ox, co] + bias[co]
                        else:
                            o[co * HWo + oy * Wo + ox] = acc[oy, ox, co]
            if check and real:
                nmacs += nops
            else:
                nacs += nops
        acs[b] += nacs
        macs[b] += nmacs


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
    for b in prange(B):
        nops = 0
        for t in range(t0, t1):
            o = out[t, b]
            for j in range(n_out):
                o[j] = 0
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
                                o[c * HWo + oy * Wo + ox] += v
            if divisor > 0:
                for j in range(n_out):
                    o[j] = o[j] / divisor
        pairs[b] += nops


@njit(cache=True, parallel=True)
def pool_max_forward(src, out, t0, t1, delay, geom):
    """Max pooling with zero padding (the IR's rule); on binary events an OR of the window."""
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
                for j in range(o.shape[0]):
                    o[j] = 0
                continue
            x = src[ts, b]
            for c in range(C):
                for oy in range(Ho):
                    for ox in range(Wo):
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
                                if v > m or v != v:
                                    m = v
                        if padded and m < 0:
                            m = np.float32(0)
                        o[c * HWo + oy * Wo + ox] = m


# ----------------------------------------------------------------------------- one-to-one


@njit(cache=True, parallel=True)
def identity_forward(src, scale, out, t0, t1, delay, acs, macs, check):
    """``out[t] = scale * src[t - delay]`` (a copy when scale is 1); ``acs`` or ``macs`` += non-zero
    inputs (module docstring)."""
    B = out.shape[1]
    n = out.shape[2]
    one = scale == 1
    for b in prange(B):
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            o = out[t, b]
            ts = t - delay
            if ts < 0:
                for j in range(n):
                    o[j] = 0
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
                if one:
                    o[j] = v
                else:
                    o[j] = scale * v
            if check and real:
                nmacs += nops
            else:
                nacs += nops
        acs[b] += nacs
        macs[b] += nmacs


# ----------------------------------------------------------------------------- neurons


@njit(cache=True, inline="always")
def _mul(a, b):
    return a * b


@njit(cache=True, inline="always")
def _to_float(c):
    return np.float32(1.0) if c else np.float32(0.0)


neuron_step = njit(inline="always")(make_neuron_step(_mul, _to_float, np.float32(1), np.float32(0)))
# Part of every population kernel's cache key: a change to spike.semantics recompiles them.
_SEMANTICS_VERSION = int(hashlib.sha256(inspect.getsource(semantics).encode()).hexdigest()[:12], 16)


@lru_cache(maxsize=None)
def population_kernel(flags: NeuronFlags, gated: bool) -> Any:
    """The population update of ``spike.semantics`` compiled for one set of switches (constants,
    so each case is a branch-free loop that vectorises) and cached on disk per set.

    ``kernel(cur, late, ioff, t0, t1, params, gain, v_reset, state, out, mem, record, active,
    nactive, spikes, updates)`` steps ``t0..t1-1`` with input ``cur[t + ioff]`` (recurrent inputs
    added after the charge: ``late[t + ioff]``), per-neuron ``params`` ``[N_PARAMS, n]`` and
    ``state`` ``[N_STATES, B, n]`` in place. ``gated``: only the neurons ``active[b, :nactive[b]]``
    update (an FTWT mask); the others output 0 and keep their state.
    """
    model, reset, reset_delay, fire_ge, charge, rule, has_late = flags
    version = _SEMANTICS_VERSION  # read below, so it is part of the closure and of the disk cache key
    spiking = model != MODEL_LI
    filtered = model == MODEL_CUBA or model == MODEL_ALPHA

    def population_forward(cur, late, ioff, t0, t1, params, gain, v_reset, state, out, mem, record,
                           active, nactive, spikes, updates):
        B = out.shape[1]
        n = out.shape[2]
        beta, thr, alpha, tau, rate = params[P_BETA], params[P_THR], params[P_ALPHA], params[P_TAU], params[P_RATE]
        for b in prange(B):
            nsp = 0
            v_b, s_b, i_b, j_b = state[S_V, b], state[S_S, b], state[S_I, b], state[S_J, b]
            m = nactive[b] if gated else n
            for t in range(t0, t1):
                x_t = cur[t + ioff, b]
                l_t = late[t + ioff, b] if has_late else x_t
                o = out[t, b]
                if gated:
                    o[:] = 0
                for kk in range(m):
                    k = active[b, kk] if gated else kk
                    ok, vk, sk, ik, jk = neuron_step(
                        x_t[k], l_t[k], v_b[k], s_b[k], i_b[k], j_b[k], beta[k], thr[k], alpha[k], tau[k], rate[k],
                        gain, v_reset, model, reset, reset_delay, fire_ge, charge, rule, has_late)
                    o[k] = ok
                    v_b[k] = vk
                    if spiking:
                        s_b[k] = sk
                        nsp += sk != 0
                    if filtered:
                        i_b[k] = ik
                    if model == MODEL_ALPHA:
                        j_b[k] = jk
                if record:
                    mt = mem[t, b]
                    for k in range(n):
                        mt[k] = v_b[k]
            spikes[b] += nsp
            updates[b] += m * (t1 - t0) + 0 * version

    return njit(cache=True, parallel=True)(population_forward)


# ----------------------------------------------------------------------------- Loihi fixed point
#
# Bit-accurate with lava-nc 0.10.0 (``PyLifModelBitAcc``, ``PyDenseModelBitAcc``); see
# ``spike.compiler.passes.quantize`` for the mapping from float programs. Every value is carried in int64
# and wrapped or clipped exactly where lava's int32 / 24-bit arithmetic does. Left shifts are
# written as multiplications by a power of two (the same two's-complement result, defined for
# negative values in every language the kernels get ported to).

UV_MAX = 1 << 23  # u wraps past this, v is clipped to +-(UV_MAX - 1)
DECAY_UNITY = 4096  # 12-bit decays: factor (4096 - d) / 4096
ACT_SCALE = 64  # a_in << 6
VTH_SCALE = 64  # v > vth << 6


@njit(cache=True, inline="always")
def wrap_int32(x):
    """``x`` (int64) reduced to the signed 32-bit range, as a cast to int32 wraps."""
    return ((x + 2147483648) & 4294967295) - 2147483648


@njit(cache=True, inline="always")
def shift_by_exp(x, exp):
    """``x << exp`` for ``exp >= 0``, arithmetic ``x >> -exp`` (floor) otherwise."""
    if exp >= 0:
        return x * (1 << exp)
    return x >> (-exp)


@njit(cache=True, inline="always")
def loihi_decay(x, d):
    """``sign(x) * ((|x| * (4096 - d)) >> 12)`` in int64: the decay rounds toward zero."""
    p = x * (DECAY_UNITY - d)
    if p < 0:
        return -((-p) >> 12)
    return p >> 12


@njit(cache=True, inline="always")
def loihi_lif_step(u, v, a_in, du, dv, bias, vth_eff, spiking):
    """One Loihi LIF compartment, one step (int64 in, int64 out): returns ``(u, v, spike)``.

    ``a_in``: the int32 sum of this step's synaptic inputs; ``bias`` = ``bias_mant << bias_exp``;
    ``vth_eff`` = ``vth << 6``; ``spiking`` False for an ``li`` readout (no spike, no reset)::

        u = sign(u) * ((|u| * (4096 - (du + 1))) >> 12)      # current decay, hidden +1
        u = int32(u + int32(a_in << 6))                       # lava adds in int32
        u -= 2^24 if u > 2^23;  u += 2^24 if u <= -2^23      # 24-bit wrap, once, as lava
        v = sign(v) * ((|v| * (4096 - dv)) >> 12) + u + bias
        v = clip(v, -(2^23 - 1), 2^23 - 1)
        spike = v > vth << 6;  v = 0 where spike              # hard reset, u unchanged
    """
    uu = wrap_int32(loihi_decay(u, du + 1) + wrap_int32(a_in * ACT_SCALE))
    if uu > UV_MAX:
        uu -= 2 * UV_MAX
    elif uu <= -UV_MAX:
        uu += 2 * UV_MAX
    vv = loihi_decay(v, dv) + uu + bias
    if vv > UV_MAX - 1:
        vv = UV_MAX - 1
    elif vv < -(UV_MAX - 1):
        vv = -(UV_MAX - 1)
    s = spiking and vv > vth_eff
    if s:
        vv = 0
    return uu, vv, s


@njit(cache=True, parallel=True)
def population_fixed_forward(
    cur, ioff, t0, t1, du, dv, bias, onset, vth_eff, spiking, u_state, v_state, out, mem_v, mem_u, record, spikes
):
    """Loihi fixed-point neurons for steps t0..t1-1 (see :func:`loihi_lif_step`).

    ``cur[t + ioff, b]`` is the int32 input of step t; ``du``, ``dv``, ``bias`` (effective, applied
    from step ``onset`` on: ``Program.onset``),
    ``vth_eff`` (= vth << 6) are per-neuron int64; state ``u_state``/``v_state`` [B, n] int32 in
    place. ``out`` gets spikes (0/1), or v for an ``li`` readout (``spiking`` False).
    """
    B = out.shape[1]
    n = out.shape[2]
    for b in prange(B):
        nsp = 0
        u_b = u_state[b]
        v_b = v_state[b]
        for t in range(t0, t1):
            x_t = cur[t + ioff, b]
            o = out[t, b]
            biased = t >= onset
            for k in range(n):
                uu, vv, s = loihi_lif_step(
                    np.int64(u_b[k]), np.int64(v_b[k]), np.int64(x_t[k]), du[k], dv[k],
                    bias[k] if biased else np.int64(0), vth_eff[k], spiking
                )
                u_b[k] = uu
                v_b[k] = vv
                if spiking:
                    o[k] = 1 if s else 0
                    nsp += s
                else:
                    o[k] = vv
            if record:
                mv = mem_v[t, b]
                mu = mem_u[t, b]
                for k in range(n):
                    mv[k] = v_b[k]
                    mu[k] = u_b[k]
        spikes[b] += nsp


@njit(cache=True, parallel=True)
def dense_fixed_forward(src, wt, row_nnz, weight_exp, out, t0, t1, delay, acs, macs, check):
    """Fixed-point dense projection: every non-zero input is a spike (lava casts to bool);
    ``out[t, b] = int32((sum of wt[i] over spiking i) shifted by weight_exp)``, summed in int64.
    ``wt`` = W^T [n_in, n_out] of integer weights (int64). Pairs counted by the input values, as
    the float kernels (module docstring)."""
    B = out.shape[1]
    n_in = wt.shape[0]
    n_out = wt.shape[1]
    for b in prange(B):
        idx = np.empty(n_in, np.int64)
        acc = np.zeros(n_out, np.int64)
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            acc[:] = 0
            ts = t - delay
            if ts >= 0:
                x = src[ts, b]
                m = _gather(x, idx)
                nops = 0
                real = False
                for k in range(m):
                    row = wt[idx[k]]
                    nops += row_nnz[idx[k]]
                    v = x[idx[k]]
                    if v != 1 and v != -1:
                        real = True
                    for j in range(n_out):
                        acc[j] += row[j]
                if check and real:
                    nmacs += nops
                else:
                    nacs += nops
            o = out[t, b]
            for j in range(n_out):
                o[j] = wrap_int32(shift_by_exp(acc[j], weight_exp))
        acs[b] += nacs
        macs[b] += nmacs


@njit(cache=True, parallel=True)
def sparse_fixed_forward(src, indptr, indices, data, row_nnz, weight_exp, out, t0, t1, delay, acs, macs, check):
    """Fixed-point CSR projection (integer ``data``), as :func:`dense_fixed_forward`."""
    B = out.shape[1]
    n_in = indptr.shape[0] - 1
    n_out = out.shape[2]
    for b in prange(B):
        acc = np.zeros(n_out, np.int64)
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            acc[:] = 0
            ts = t - delay
            if ts >= 0:
                x = src[ts, b]
                nops = 0
                real = False
                for i in range(n_in):
                    v = x[i]
                    if v == 0:
                        continue
                    nops += row_nnz[i]
                    if v != 1 and v != -1:
                        real = True
                    for k in range(indptr[i], indptr[i + 1]):
                        acc[indices[k]] += data[k]
                if check and real:
                    nmacs += nops
                else:
                    nacs += nops
            o = out[t, b]
            for j in range(n_out):
                o[j] = wrap_int32(shift_by_exp(acc[j], weight_exp))
        acs[b] += nacs
        macs[b] += nmacs


@njit(cache=True, parallel=True)
def conv2d_fixed_forward(src, wc, in_pairs, weight_exp, out, t0, t1, delay, geom, acs, macs, check):
    """Fixed-point event-driven convolution (integer ``wc``, layout and ``geom`` as
    :func:`conv2d_forward`); sums in int64, then shift by weight_exp and wrap to int32."""
    C_in, H, W, C_out, Ho, Wo = geom[0], geom[1], geom[2], geom[3], geom[4], geom[5]
    kh, kw, sy, sx, py, px = geom[6], geom[7], geom[8], geom[9], geom[10], geom[11]
    cin_pg, cout_pg = geom[12], geom[13]
    B = out.shape[1]
    HW = H * W
    HWo = Ho * Wo
    for b in prange(B):
        acc = np.zeros((Ho, Wo, C_out), np.int64)
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            acc[:] = 0
            ts = t - delay
            if ts >= 0:
                x = src[ts, b]
                nops = 0
                real = False
                for c in range(C_in):
                    g = c // cin_pg
                    cl = c - g * cin_pg
                    base = g * cout_pg
                    for y in range(H):
                        for xx in range(W):
                            v = x[c * HW + y * W + xx]
                            if v == 0:
                                continue
                            nops += in_pairs[c * HW + y * W + xx]
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
                                    w = wc[g, cl, ky, kx]
                                    a = acc[oy, ox]
                                    for j in range(cout_pg):
                                        a[base + j] += w[j]
                if check and real:
                    nmacs += nops
                else:
                    nacs += nops
            o = out[t, b]
            for co in range(C_out):
                for oy in range(Ho):
                    for ox in range(Wo):
                        o[co * HWo + oy * Wo + ox] = wrap_int32(shift_by_exp(acc[oy, ox, co], weight_exp))
        acs[b] += nacs
        macs[b] += nmacs


@njit(cache=True, parallel=True)
def identity_fixed_forward(src, weight, weight_exp, out, t0, t1, delay, acs, macs, check):
    """Fixed-point one-to-one synapses: ``out = int32((weight if spike else 0) shifted by weight_exp)``."""
    B = out.shape[1]
    n = out.shape[2]
    on = wrap_int32(shift_by_exp(weight, weight_exp))
    off = wrap_int32(shift_by_exp(np.int64(0), weight_exp))
    for b in prange(B):
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            o = out[t, b]
            ts = t - delay
            if ts < 0:
                for j in range(n):
                    o[j] = off
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
                    o[j] = on
                else:
                    o[j] = off
            if check and real:
                nmacs += nops
            else:
                nacs += nops
        acs[b] += nacs
        macs[b] += nmacs


@njit(cache=True, parallel=True)
def pool_or_forward(src, out, t0, t1, delay, geom):
    """Fixed-point max pooling of spikes: 1 where any input of the window is non-zero (an OR)."""
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
                for j in range(o.shape[0]):
                    o[j] = 0
                continue
            x = src[ts, b]
            for c in range(C):
                for oy in range(Ho):
                    for ox in range(Wo):
                        m = 0
                        for ky in range(kh):
                            iy = oy * sy - py + ky
                            if iy < 0 or iy >= H:
                                continue
                            for kx in range(kw):
                                ix = ox * sx - px + kx
                                if ix >= 0 and ix < W and x[c * HW + iy * W + ix] != 0:
                                    m = 1
                        o[c * HWo + oy * Wo + ox] = m
