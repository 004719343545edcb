"""Numba CUDA kernels of the cuda backend's neuron updates (see ``cuda.backend``; projections and
the shared device arithmetic are in ``cuda.kernels``).

- float32: :func:`population_forward` steps ``spike.semantics`` (``make_neuron_step`` with
  :func:`~spike.backends.cuda.kernels.fmul`, so no product is fused into an addition): the
  float32 operations of ``numba.neurons.population_kernel``, bit for bit;
- Loihi fixed point: :func:`population_fixed_forward`, a port of
  ``numba.neurons.population_fixed_forward`` (bit-accurate with lava-nc's ``PyLifModelBitAcc``);
- generated spike sources: :func:`bernoulli_forward`, the counter-based hash of ``spike.semantics``
  as int64 device functions (the bits of ``numba.neurons.bernoulli_forward``).

One thread per (sample, neuron), state in registers; work unit ``r = b * n_tiles + tile``:
``TPB`` consecutive neurons of sample ``b``.
"""
from __future__ import annotations

import numpy as np
from numba import int64

from spike.backends.cuda.kernels import I64_ZERO, ONE, TPB, ZERO, cuda, fmul, inline, wrap_int32
from spike.semantics import (
    MODEL_LI, P_ALPHA, P_BETA, P_RATE, P_TAU, P_THR, S_I, S_J, S_S, S_V, make_neuron_step, make_spike_hash, same,
    threshold_fire,
)


# ----------------------------------------------------------------------------- float32


@cuda.jit(device=True)
def _to_float(c):
    return ONE if c else ZERO


neuron_step = cuda.jit(device=True)(make_neuron_step(
    fmul, cuda.jit(device=True)(threshold_fire(_to_float)), cuda.jit(device=True)(same), ONE))


@inline
def neuron_tiles(out):
    """``(B, n, n_tiles)`` of the block-stride loop over units ``r = b * n_tiles + tile`` (``TPB``
    consecutive neurons of sample ``b``) of a population with output ``out`` ``[T, B, n]``."""
    n = out.shape[2]
    return out.shape[1], n, (n + TPB - 1) // TPB


@inline
def tile_neuron(r, n_tiles):
    """``(b, k)``: the sample of unit ``r`` and this thread's neuron in it (``k >= n``: none)."""
    b = r // n_tiles
    return b, (r - b * n_tiles) * TPB + cuda.threadIdx.x


@cuda.jit
def population_forward(
    cur, late, ioff, t0, t1, params, gain, v_reset, model, reset, reset_delay, fire_ge, charge, rule, has_late,
    bias, biased, onset, state, out, mem, record, keep, gated, spikes,
):
    """``spike.semantics`` for steps t0..t1-1, one thread per (sample, neuron), state in registers.

    Input current ``cur[t + ioff]`` (recurrent inputs added after the charge: ``late[t + ioff]``),
    the population's own ``bias[k]`` after the charge from step ``onset`` on when ``biased``,
    per-neuron ``params`` ``[N_PARAMS, n]``, ``state`` ``[N_STATES, B, n]``; products through
    :func:`fmul`, so the float32 operations are the numba backend's. ``gated``: neurons with
    ``keep[b, k] == 0`` output 0, keep their state and record it as membrane. Each thread adds its
    spike count to ``spikes[b]`` with one int64 atomic. Work unit ``r = b * n_tiles + tile``:
    ``TPB`` consecutive neurons of sample ``b``.
    """
    B, n, n_tiles = neuron_tiles(out)
    for r in range(cuda.blockIdx.x, B * n_tiles, cuda.gridDim.x):
        b, k = tile_neuron(r, n_tiles)
        if k >= n:
            continue
        if gated and keep[b, k] == 0:
            vk = state[S_V, b, k]
            for t in range(t0, t1):
                out[t, b, k] = ZERO
                if record:
                    mem[t, b, k] = vk
            continue
        nsp = 0
        v = state[S_V, b, k]
        s = state[S_S, b, k]
        i = state[S_I, b, k]
        j = state[S_J, b, k]
        be = params[P_BETA, k]
        th = params[P_THR, k]
        al = params[P_ALPHA, k]
        ta = params[P_TAU, k]
        ra = params[P_RATE, k]
        bk = bias[k] if biased else ZERO
        for t in range(t0, t1):
            x = cur[t + ioff, b, k]
            xl = late[t + ioff, b, k] if has_late else ZERO
            o, v, s, i, j = neuron_step(x, xl, v, s, i, j, be, th, al, ta, ra, gain, v_reset,
                                        model, reset, reset_delay, fire_ge, charge, rule, has_late,
                                        bk, biased and t >= onset)
            if model != MODEL_LI and o != ZERO:
                nsp += 1
            out[t, b, k] = o
            if record:
                mem[t, b, k] = v
        state[S_V, b, k] = v
        state[S_S, b, k] = s
        state[S_I, b, k] = i
        state[S_J, b, k] = j
        if nsp != 0:
            cuda.atomic.add(spikes, b, nsp)



# ----------------------------------------------------------------------------- Loihi fixed point
#
# Values carried in int64, wrapped or clipped where lava's int32 / 24-bit arithmetic does.

UV_MAX = np.int64(1 << 23)  # u wraps past this, v is clipped to +-(UV_MAX - 1)
DECAY_UNITY = np.int64(4096)  # 12-bit decays: factor (4096 - d) / 4096
ACT_SCALE = np.int64(64)  # a_in << 6


@cuda.jit(device=True)
def loihi_decay(x, d):
    """``sign(x) * ((|x| * (4096 - d)) >> 12)`` in int64: the decay rounds toward zero."""
    p = x * (DECAY_UNITY - d)
    if p < 0:
        return -((-p) >> 12)
    return p >> 12



@cuda.jit
def population_fixed_forward(
    cur, ioff, t0, t1, du, dv, bias, onset, vth_eff, spiking, u_state, v_state, out, mem_v, mem_u,
    record_v, record_u, spikes,
):
    """Loihi fixed-point neurons for steps t0..t1-1, one thread per (sample, neuron), as
    ``numba.neurons.population_fixed_forward`` / ``loihi_lif_step``: int32 input ``cur[t + ioff]``,
    int32 state ``u_state``/``v_state`` [B, n]; ``out`` gets spikes (0/1), or v for an ``li``
    readout (``spiking`` False). The bias applies from step ``onset`` on (``Program.onset``), 0
    before. Work unit ``r = b * n_tiles + tile``."""
    B, n, n_tiles = neuron_tiles(out)
    for r in range(cuda.blockIdx.x, B * n_tiles, cuda.gridDim.x):
        b, k = tile_neuron(r, n_tiles)
        if k < n:
            nsp = 0
            u = int64(u_state[b, k])
            v = int64(v_state[b, k])
            du_k = du[k] + 1  # the hidden +1 of lava's current decay
            dv_k = dv[k]
            bias_k = bias[k]
            vth_k = vth_eff[k]
            for t in range(t0, t1):
                a_in = int64(cur[t + ioff, b, k])
                u = wrap_int32(loihi_decay(u, du_k) + wrap_int32(a_in * ACT_SCALE))
                if u > UV_MAX:
                    u -= 2 * UV_MAX
                elif u <= -UV_MAX:
                    u += 2 * UV_MAX
                if t >= onset:
                    v = loihi_decay(v, dv_k) + u + bias_k
                else:
                    v = loihi_decay(v, dv_k) + u
                if v > UV_MAX - 1:
                    v = UV_MAX - 1
                elif v < -(UV_MAX - 1):
                    v = -(UV_MAX - 1)
                if spiking:
                    if v > vth_k:
                        v = I64_ZERO
                        out[t, b, k] = 1
                        nsp += 1
                    else:
                        out[t, b, k] = 0
                else:
                    out[t, b, k] = v
                if record_v:
                    mem_v[t, b, k] = v
                if record_u:
                    mem_u[t, b, k] = u
            u_state[b, k] = u
            v_state[b, k] = v
            if nsp != 0:
                cuda.atomic.add(spikes, b, nsp)


# ----------------------------------------------------------------------------- generated sources

spike_key, spike_hash = make_spike_hash(cuda.jit(device=True))


@cuda.jit
def bernoulli_forward(thresholds, seed_lo, seed_hi, out, t0, t1, step0):
    """Spikes of a ``Bernoulli`` node for steps t0..t1-1 (aligned step ``t + step0``; silent where
    negative), one thread per (sample, neuron): ``hash(key(seed, b, t + step0), k) <
    thresholds[k]``. Work unit ``r = b * n_tiles + tile``."""
    B, n, n_tiles = neuron_tiles(out)
    for r in range(cuda.blockIdx.x, B * n_tiles, cuda.gridDim.x):
        b, k = tile_neuron(r, n_tiles)
        if k < n:
            thr = thresholds[k]
            for t in range(t0, t1):
                s = t + step0
                if s < 0:
                    out[t, b, k] = 0
                else:
                    key = spike_key(int64(seed_lo), int64(seed_hi), int64(b), int64(s))
                    out[t, b, k] = 1 if spike_hash(key, int64(k)) < thr else 0
