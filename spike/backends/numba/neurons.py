"""Compiled neuron updates of the numba backend (see ``numba.backend``; the projections are in
``numba.projections``).

- float32 (float64 for a float64 program: the kernels follow their arrays' dtype):
  :func:`population_kernel`, the update of ``spike.semantics`` compiled per set of switches, in
  the order of design §3 (no ``fastmath``);
- Loihi fixed point: :func:`population_fixed_forward` stepping :func:`loihi_lif_step`, bit-accurate
  with lava-nc, and the integer helpers (``wrap_int32``, ``shift_by_exp``) the fixed-point
  projections share;
- generated spike sources: :func:`bernoulli_forward`, the counter-based hash of ``spike.semantics``
  compiled (int64, the same bits as numpy, torch and CUDA).

The batch is split over threads with ``prange`` (each thread owns whole samples, so the per-sample
counters need no atomics).
"""
from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit, prange

from spike import semantics
from spike.backends.numba.events import list_nonzero
from spike.semantics import (
    MODEL_ALPHA, MODEL_CUBA, MODEL_LI, P_ALPHA, P_BETA, P_RATE, P_TAU, P_THR, RULE_SNNTORCH, S_I, S_J, S_S, S_V,
    NeuronFlags,
    make_neuron_step, make_spike_hash, same, threshold_fire,
)


# ----------------------------------------------------------------------------- neurons


@njit(cache=True, inline="always")
def _mul(a, b):
    return a * b


@njit(cache=True, inline="always")
def _to_float(c):
    return np.float32(1.0) if c else np.float32(0.0)


@njit(cache=True, inline="always")
def _input_sum(srcs, t, b, k):
    """``((srcs[0][t, b, k] + srcs[1][t, b, k]) + ...)``: one neuron's input, summed in source order
    in the sources' dtype (a tuple of same-typed arrays: the loop's length is a constant)."""
    x = srcs[0][t, b, k]
    for i in range(1, len(srcs)):
        x += srcs[i][t, b, k]
    return x


@njit(cache=True, inline="always")
def _zero_flagged(srcs, flags, t, b):
    """Write the zeros of every source row ``srcs[i][t, b]`` flagged silent in ``flags[i][t, b]``
    (unwritten: their values are undefined), so that :func:`_input_sum` may read them. A flagged
    row's readers take it as zeros either way."""
    for i in range(len(srcs)):
        if flags[i][t, b] != 0:
            srcs[i][t, b, :] = 0


@njit(cache=True, inline="always")
def _silent(srcs, flags, t, b):
    """Whether every source row ``srcs[i][t, b]`` is all zero bits: flagged silent in
    ``flags[i][t, b]`` (its buffer unwritten, not read), or read in blocks of 64 values OR-ed at
    once, so that an all-zero row costs a fraction of its update."""
    for i in range(len(srcs)):
        if flags[i][t, b] != 0:
            continue
        bits = srcs[i][t, b].view(np.uint32)
        n = bits.shape[0]
        full = n - n % 64
        for c in range(0, full, 64):
            a = np.uint32(0)
            for j in range(c, c + 64):
                a |= bits[j]
            if a != 0:
                return False
        for j in range(full, n):
            if bits[j] != 0:
                return False
    return True


neuron_step = njit(inline="always")(make_neuron_step(
    _mul, njit(inline="always")(threshold_fire(_to_float)), njit(inline="always")(same), np.float32(1)))
# Part of every population kernel's cache key: a change to spike.semantics recompiles them.
_SEMANTICS_VERSION = int(hashlib.sha256(inspect.getsource(semantics).encode()).hexdigest()[:12], 16)


@lru_cache(maxsize=None)
def population_kernel(flags: NeuronFlags, gated: bool, biased: bool = False, parallel: bool = True) -> Any:
    """The population update of ``spike.semantics`` compiled for one set of switches (constants,
    so each case is a branch-free loop that vectorises) and cached on disk per set. ``parallel``:
    the samples split over numba's threads (``prange``); False compiles the same loop for one
    thread, in about half the compile time (3.5 s against 1.8 s per set on a 2-core AMD EPYC), for
    runs with one thread to give it or steps too small to pay for waking threads (the backend's
    ``PARALLEL_MIN_UPDATES``).

    ``kernel(curs, lates, t0, t1, params, gain, v_reset, bias, onset, state, out, mem, record,
    active, nactive, spikes, updates, listed, index, nlisted, quiet, rest_is_fixed, flags_cur, flags_late,
    silent, marks)`` steps
    ``t0..t1-1`` with input ``I[t] = ((curs[0][t] + curs[1][t]) + ...)`` summed in float32 in source
    order as each neuron is updated (no summed copy; recurrent inputs added after the charge: the
    sum of ``lates`` alike), per-neuron ``params`` ``[N_PARAMS, n]`` and ``state`` ``[N_STATES, B,
    n]`` in place. ``biased``: the population's own ``bias[k]`` is added after the charge from step
    ``onset`` on. ``gated``: only the neurons ``active[b, :nactive[b]]`` update (an FTWT mask); the
    others output 0 and keep their state. ``listed``: each step's spiking neurons also go to
    ``index[t, b, :nlisted[t, b]]`` (:func:`list_nonzero`).

    Quiet steps: ``quiet[b]`` (kept across calls) is true while sample ``b``'s whole state is zero.
    When ``rest_is_fixed`` (the update maps a zero state and a zero input to a zero state and a
    zero output, :func:`rest_is_fixed_point`), a step of a quiet sample whose inputs are all zero
    (every bit: a -0.0 input counts as input) and that adds no bias only writes zeros: the update
    would compute exactly them. Silent rows (``engine`` docstring): ``flags_cur``/``flags_late``
    (uint8 ``[rows, B]`` per source, 1 = that row is zero and unwritten) spare reading such rows in
    a quiet sample's step (a step that updates writes their zeros first); with ``marks``, a quiet
    sample's silent step leaves its output row unwritten and sets ``silent[t, b]`` instead.
    """
    model, reset, reset_delay, fire_ge, charge, rule, has_late = flags
    version = _SEMANTICS_VERSION  # read below, so it is part of the closure and of the disk cache key
    threaded = parallel  # likewise: numba's disk cache tells the two compilations apart by their closures only
    spiking = model != MODEL_LI
    filtered = model == MODEL_CUBA or model == MODEL_ALPHA
    # the last spike is state only where a later step reads it (a delayed reset, the alpha model)
    keeps_spike = spiking and (reset_delay or rule == RULE_SNNTORCH or model == MODEL_ALPHA)

    def population_forward(curs, lates, t0, t1, params, gain, v_reset, bias, onset, state, out, mem, record,
                           active, nactive, spikes, updates, listed, index, nlisted, quiet, rest_is_fixed,
                           flags_cur, flags_late, silent_out, marks):
        B = out.shape[1]
        n = out.shape[2]
        beta, thr, alpha, tau, rate = params[P_BETA], params[P_THR], params[P_ALPHA], params[P_TAU], params[P_RATE]
        for b in prange(B):
            nsp = 0
            v_b, s_b, i_b, j_b = state[S_V, b], state[S_S, b], state[S_I, b], state[S_J, b]
            m = nactive[b] if gated else n
            quiet_b = quiet[b]
            for t in range(t0, t1):
                o = out[t, b]
                biased_t = biased and t >= onset
                silent = (rest_is_fixed and not biased_t and _silent(curs, flags_cur, t, b)
                          and (not has_late or _silent(lates, flags_late, t, b)))
                unwritten = False
                if silent and quiet_b:
                    if marks:
                        silent_out[t, b] = 1
                        unwritten = True
                    else:
                        o[:] = 0
                else:
                    if gated:
                        o[:] = 0
                    awake = False  # whether any state is non-zero after the step (tracked after a silent input)
                    _zero_flagged(curs, flags_cur, t, b)  # an update reads every source row
                    if has_late:
                        _zero_flagged(lates, flags_late, t, b)
                    for kk in range(m):
                        k = active[b, kk] if gated else kk
                        xk = _input_sum(curs, t, b, k)
                        ok, vk, sk, ik, jk = neuron_step(
                            xk, _input_sum(lates, t, b, k) if has_late else xk, v_b[k], s_b[k], i_b[k], j_b[k],
                            beta[k], thr[k], alpha[k], tau[k], rate[k], gain, v_reset, model, reset, reset_delay,
                            fire_ge, charge, rule, has_late, bias[k] if biased else np.float32(0), biased_t)
                        o[k] = ok
                        v_b[k] = vk
                        if keeps_spike:
                            s_b[k] = sk
                        if spiking:
                            nsp += sk != 0
                        if filtered:
                            i_b[k] = ik
                        if model == MODEL_ALPHA:
                            j_b[k] = jk
                        if silent:
                            awake |= (vk != 0) | (keeps_spike and sk != 0) | (filtered and ik != 0) | (
                                model == MODEL_ALPHA and jk != 0)
                    quiet_b = silent and not awake
                if record:
                    mt = mem[t, b]
                    for k in range(n):
                        mt[k] = v_b[k]
                if listed:
                    nlisted[t, b] = 0 if unwritten else list_nonzero(o, index[t, b])
            quiet[b] = quiet_b
            spikes[b] += nsp
            updates[b] += m * (t1 - t0) + 0 * version + 0 * threaded

    return njit(cache=True, parallel=parallel)(population_forward)


def rest_is_fixed_point(kernel: Any, params: np.ndarray, gain: np.floating, v_reset: np.floating, n_states: int,
                        n_curs: int, n_lates: int, out_dtype: Any, src_dtype: Any = None, state_dtype: Any = None) -> bool:
    """Whether ``kernel`` (a :func:`population_kernel`, not gated) maps a zero state and a zero input
    to a zero state and a zero output for every neuron (one step of the kernel itself, no bias):
    the condition under which it may skip quiet steps. ``n_curs``/``n_lates``: the tuples' lengths
    of the calls to come, their sources in ``src_dtype``, state, bias and membrane record in
    ``state_dtype`` (both default: ``params``' dtype) and the output in ``out_dtype``, so that the
    probe compiles no other specialisation."""
    n = params.shape[1]
    src_dtype = params.dtype if src_dtype is None else src_dtype
    dt = params.dtype if state_dtype is None else state_dtype
    zero = np.zeros((1, 1, n), src_dtype)
    state = np.zeros((n_states, 1, n), dt)
    out = np.ones((1, 1, n), out_dtype)
    counter = np.zeros(1, np.int64)
    flags = np.zeros((1, 1), np.uint8)
    kernel((zero,) * n_curs, (zero,) * n_lates, 0, 1, params, gain, v_reset, np.zeros(n, dt), 0, state,
           out, np.zeros((1, 1, 1), dt), False, np.zeros((1, 1), np.int64), np.zeros(1, np.int64), counter, counter.copy(), False,
           np.zeros((1, 1, 1), np.int32), np.zeros((1, 1), np.int64), np.zeros(1, np.bool_), False,
           (flags,) * n_curs, (flags,) * n_lates, flags, False)
    return not out.any() and not state.any()


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
    cur, ioff, t0, t1, du, dv, bias, onset, vth_eff, spiking, u_state, v_state, out, mem_v, mem_u, record, spikes,
    listed, index, nlisted
):
    """Loihi fixed-point neurons for steps t0..t1-1 (see :func:`loihi_lif_step`).

    ``cur[t + ioff, b]`` is the int32 input of step t; ``du``, ``dv``, ``bias`` (effective, applied
    from step ``onset`` on: ``Program.onset``),
    ``vth_eff`` (= vth << 6) are per-neuron int64; state ``u_state``/``v_state`` [B, n] int32 in
    place. ``out`` gets spikes (0/1), or v for an ``li`` readout (``spiking`` False); ``listed``:
    the spikes of each step also as :func:`list_nonzero`'s list in ``index``/``nlisted``.
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
            if listed:
                nlisted[t, b] = list_nonzero(o, index[t, b])
        spikes[b] += nsp


# ----------------------------------------------------------------------------- generated sources

spike_key, spike_hash = make_spike_hash(njit(inline="always"))


@njit(cache=True, parallel=True)
def bernoulli_forward(thresholds, seed_lo, seed_hi, out, t0, t1, step0):
    """Spikes of a ``Bernoulli`` node for local steps t0..t1-1 (aligned step ``t + step0``; silent
    where that is negative): ``out[t, b, k] = hash(key(seed, b, t + step0), k) < thresholds[k]``."""
    B = out.shape[1]
    n = out.shape[2]
    for b in prange(B):
        for t in range(t0, t1):
            o = out[t, b]
            s = t + step0
            if s < 0:
                for k in range(n):
                    o[k] = 0
                continue
            key = spike_key(np.int64(seed_lo), np.int64(seed_hi), np.int64(b), np.int64(s))
            for k in range(n):
                o[k] = 1 if spike_hash(key, np.int64(k)) < thresholds[k] else 0
