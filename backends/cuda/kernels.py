"""Numba CUDA kernels of the cuda backend (see ``cuda.backend`` for how nodes map onto them).

Every kernel reproduces the float32 operations of the matching loop in ``numba.kernels`` in the
same order, so outputs, membranes and counts are bit-identical to the numba backend:

- Products that feed an addition go through :func:`fmul` (``mul.rn`` on a GPU): NVVM contracts a
  plain ``a*b + c`` into one fused multiply-add by default, which rounds once instead of twice.
- No float atomics anywhere. Each output element is owned by one thread (dense: one thread per
  (step, sample, target) looping over the step's active inputs in ascending order), or by one
  block that applies the events one after another, in ascending input order, with a barrier
  between events (sparse rows and conv kernels scatter to distinct targets within one event).
- Counters are int64 ``[B]`` device arrays, added to with integer atomics (one per thread and
  kernel call; integer sums do not depend on the order).

Arrays are ``[T, B, n]`` (C order); kernels handle ``nsteps`` steps from ``t0`` at once, all
samples in parallel. The block size ``TPB`` is a power of two; under Numba's CUDA simulator (each
simulated thread is a Python thread) it is small and element-wise grids are capped.
"""
from __future__ import annotations

import os

import numpy as np
from numba import cuda, float32, int32, int64

from spike.semantics import MODEL_LI, P_ALPHA, P_BETA, P_RATE, P_TAU, P_THR, S_I, S_J, S_S, S_V, make_neuron_step


def simulating() -> bool:
    """True when ``numba.cuda`` is Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    if "simulator" in getattr(cuda.jit, "__module__", ""):
        return True
    try:
        from numba.core import config

        return bool(getattr(config, "ENABLE_CUDASIM", 0))
    except Exception:  # pragma: no cover - numba layouts without numba.core.config
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


SIMULATING = simulating()
if SIMULATING:  # a race in the simulator's shared arrays (spike.compat.numba_cudasim)
    from spike.compat.numba_cudasim import lock_shared_arrays

    lock_shared_arrays()
# threads per block: a power of two (the scans and reductions); SPIKE_CUDA_TPB overrides it
TPB = int(os.environ.get("SPIKE_CUDA_TPB", "0")) or (16 if SIMULATING else 128)
if TPB < 2 or TPB & (TPB - 1) or TPB > 1024:
    raise ValueError(f"SPIKE_CUDA_TPB={TPB}: expected a power of two in [2, 1024]")
# Grid caps. Kernels loop over their work units with a block stride (``for r in range(blockIdx.x,
# units, gridDim.x)``): on a GPU a launch has one block per unit (element-wise kernels: up to
# EW_MAX_BLOCKS), under the simulator, where every block costs milliseconds, a couple of blocks
# run all units.
MAX_BLOCKS = 2 if SIMULATING else 1 << 30
EW_MAX_BLOCKS = 2 if SIMULATING else 8192


ZERO = np.float32(0.0)
ONE = np.float32(1.0)
NEG_ONE = np.float32(-1.0)
NEG_INF = np.float32(-np.inf)

if SIMULATING:

    def fmul(a, b):
        """float32 product (numpy scalars: rounded to float32, nothing to contract)."""
        return a * b

else:
    from numba.cuda import libdevice

    @cuda.jit(device=True)
    def fmul(a, b):
        """float32 product rounded on its own (``mul.rn``: never fused into an FMA)."""
        return libdevice.fmul_rn(a, b)


def blocks_for(n: int) -> int:
    """Blocks of a grid-stride element-wise kernel over ``n`` elements."""
    return max(1, min((n + TPB - 1) // TPB, EW_MAX_BLOCKS))


def grid_for(units: int) -> int:
    """Blocks of a block-stride kernel over ``units`` work units (one block each on a GPU)."""
    return max(1, min(units, MAX_BLOCKS))


# ----------------------------------------------------------------------------- utilities


@cuda.jit
def fill_zero(a):
    """``a[:] = 0`` for a 1-D array (any dtype)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, a.shape[0], stride):
        a[e] = 0


@cuda.jit
def copy_steps(dst, dst_t0, src, src_t0, nsteps):
    """``dst[dst_t0 + s] = src[src_t0 + s]`` for s < nsteps (``[T, B, n]`` arrays)."""
    B = dst.shape[1]
    n = dst.shape[2]
    total = nsteps * B * n
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, total, stride):
        j = e % n
        r = e // n
        b = r % B
        s = r // B
        dst[dst_t0 + s, b, j] = src[src_t0 + s, b, j]


@cuda.jit
def add_steps(dst, dst_t0, src, src_t0, nsteps):
    """``dst[dst_t0 + s] = dst[dst_t0 + s] + src[src_t0 + s]`` (float32, element-wise)."""
    B = dst.shape[1]
    n = dst.shape[2]
    total = nsteps * B * n
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, total, stride):
        j = e % n
        r = e // n
        b = r % B
        s = r // B
        dst[dst_t0 + s, b, j] = dst[dst_t0 + s, b, j] + src[src_t0 + s, b, j]


# ----------------------------------------------------------------------------- active inputs


@cuda.jit
def gather_active(src, t0, nsteps, delay, onset, pair_w, idx, cnt, pairs, macs, check, real, write_idx):
    """Compact the non-zero inputs of every (step, sample); count their pairs.

    One work unit per (step ``t0 + tt``, sample ``b``), ``unit = tt * B + b``, reading
    ``src[t - delay, b]``. Thread ``tid`` owns a contiguous segment of the inputs: it counts its
    non-zero entries, an inclusive scan of the counts in shared memory gives its first slot, and
    it writes its indices there, so ``idx[tt, b, :cnt[tt, b]]`` lists the active inputs in
    ascending order (written when ``write_idx``). ``pairs[b] += pair_w[i]`` for every active
    ``i`` (integer atomics, one per thread); with ``check``, the unit's pairs go to ``macs[b]``
    instead when one of its values is outside {-1, 0, 1} (a flag in shared memory), and
    ``real[tt, b]`` says so (1) for the delivery kernels that count pairs themselves. Steps
    before ``onset`` (>= ``delay``: the node's ``Program.onset``, or just ``delay``) have no events.
    """
    B = src.shape[1]
    n = src.shape[2]
    tid = cuda.threadIdx.x
    scan = cuda.shared.array(TPB, int32)
    flag = cuda.shared.array(1, int32)
    seg = (n + TPB - 1) // TPB
    lo = min(tid * seg, n)
    hi = min(lo + seg, n)
    if tid == 0:
        flag[0] = 0
    cuda.syncthreads()
    for r in range(cuda.blockIdx.x, nsteps * B, cuda.gridDim.x):
        b = r % B
        tt = r // B
        ts = t0 + tt - delay
        if t0 + tt < onset:
            if tid == 0:
                cnt[tt, b] = 0
                real[tt, b] = 0
            continue
        m = 0
        mine = 0
        odd = False
        for i in range(lo, hi):
            v = src[ts, b, i]
            if v != ZERO:
                m += 1
                mine += pair_w[i]
                if v != ONE and v != NEG_ONE:
                    odd = True
        if check and odd:
            flag[0] = 1
        scan[tid] = m
        cuda.syncthreads()
        is_real = flag[0] != 0  # read by every thread before the scan's first barrier
        off = 1
        while off < TPB:
            add = 0
            if tid >= off:
                add = scan[tid - off]
            cuda.syncthreads()
            scan[tid] += add
            cuda.syncthreads()
            off *= 2
        if tid == 0:  # every thread has read the flag (barriers above); next written after the last one
            flag[0] = 0
            real[tt, b] = 1 if is_real else 0
        if mine != 0:
            if is_real:
                cuda.atomic.add(macs, b, mine)
            else:
                cuda.atomic.add(pairs, b, mine)
        if write_idx:
            k = scan[tid] - m
            for i in range(lo, hi):
                if src[ts, b, i] != ZERO:
                    idx[tt, b, k] = i
                    k += 1
        if tid == TPB - 1:
            cnt[tt, b] = scan[tid]
        cuda.syncthreads()  # the scan is read before the next unit rewrites it


# ----------------------------------------------------------------------------- projections


@cuda.jit
def dense_deliver(src, idx, cnt, wt, bias, has_bias, out, t0, nsteps, delay, onset):
    """``out[t, b, j] = bias[j] + sum over active i (ascending) of wt[i, j] * x[i]`` from step
    ``onset`` (>= ``delay``, ``Program.onset``) on; 0 before, bias included.

    One thread per (step, sample, target ``j``); a work unit covers ``TPB`` consecutive targets
    of one (step, sample), so a warp reads consecutive entries of a row of ``wt`` = W^T
    (coalesced). The active indices and values are staged in shared memory ``TPB`` at a time.
    The running sum starts at the bias and adds ``w`` (value 1) or ``w*x`` in the numba
    kernel's order.
    """
    B = out.shape[1]
    n_out = out.shape[2]
    n_tiles = (n_out + TPB - 1) // TPB
    tid = cuda.threadIdx.x
    sidx = cuda.shared.array(TPB, int32)
    sval = cuda.shared.array(TPB, float32)
    for r in range(cuda.blockIdx.x, nsteps * B * n_tiles, cuda.gridDim.x):
        tile = r % n_tiles
        rest = r // n_tiles
        b = rest % B
        tt = rest // B
        t = t0 + tt
        ts = t - delay
        j = tile * TPB + tid
        acc = ZERO
        if has_bias and j < n_out and t >= onset:
            acc = bias[j]
        if t >= onset:
            m = cnt[tt, b]
            for c0 in range(0, m, TPB):
                k = c0 + tid
                if k < m:
                    i = idx[tt, b, k]
                    sidx[tid] = i
                    sval[tid] = src[ts, b, i]
                cuda.syncthreads()
                if j < n_out:
                    q_end = min(TPB, m - c0)
                    for q in range(q_end):
                        v = sval[q]
                        w = wt[sidx[q], j]
                        if v == ONE:
                            acc = acc + w
                        else:
                            acc = acc + fmul(w, v)
                cuda.syncthreads()
        if j < n_out:
            out[t, b, j] = acc


@cuda.jit
def sparse_deliver(src, idx, cnt, indptr, indices, data, row_serial, bias, has_bias, out, t0, nsteps, delay, onset):
    """CSR rows of the active inputs scattered into ``out[t, b]``, one work unit per (step, sample).

    Before step ``onset`` (>= ``delay``, ``Program.onset``) the row is 0, bias included. From then
    on the block initialises the row with the bias, then applies the active inputs in ascending
    order: the threads share one CSR row (distinct targets: plain read-add-write, no atomics),
    with a barrier between rows, so every target receives its terms in the numba kernel's order.
    A row that names a target twice (``row_serial``) is applied by one thread, in CSR order.
    """
    B = out.shape[1]
    n_out = out.shape[2]
    tid = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, nsteps * B, cuda.gridDim.x):
        b = r % B
        tt = r // B
        t = t0 + tt
        ts = t - delay
        for j in range(tid, n_out, TPB):
            if has_bias and t >= onset:
                out[t, b, j] = bias[j]
            else:
                out[t, b, j] = ZERO
        if t < onset:
            continue
        cuda.syncthreads()
        m = cnt[tt, b]
        for k in range(m):
            i = idx[tt, b, k]
            v = src[ts, b, i]
            lo = indptr[i]
            hi = indptr[i + 1]
            if row_serial[i] != 0:
                if tid == 0:
                    for p in range(lo, hi):
                        jj = indices[p]
                        if v == ONE:
                            out[t, b, jj] = out[t, b, jj] + data[p]
                        else:
                            out[t, b, jj] = out[t, b, jj] + fmul(data[p], v)
            else:
                for p in range(lo + tid, hi, TPB):
                    jj = indices[p]
                    if v == ONE:
                        out[t, b, jj] = out[t, b, jj] + data[p]
                    else:
                        out[t, b, jj] = out[t, b, jj] + fmul(data[p], v)
            cuda.syncthreads()


@cuda.jit
def conv2d_deliver(src, idx, cnt, wc, bias, has_bias, out, t0, nsteps, delay, onset, geom):
    """Event-driven 2-D convolution, one work unit per (step, sample), accumulating in ``out[t, b]``.

    ``wc[g, cl, ky, kx, j]`` = W[g*cout_pg + j, cl, ky, kx]; ``geom`` as in ``numba.kernels``.
    The active inputs are applied in ascending flat order (c, y, x); for one event the threads
    cover its (tap, output channel) pairs, which reach distinct outputs, then a barrier. The
    bias is added last (``acc + bias``), as the numba kernel does. Before step ``onset``
    (>= ``delay``, ``Program.onset``) the outputs are 0, bias included.
    """
    H = geom[1]
    W = geom[2]
    Ho = geom[4]
    Wo = geom[5]
    kh = geom[6]
    kw = geom[7]
    sy = geom[8]
    sx = geom[9]
    py = geom[10]
    px = geom[11]
    cin_pg = geom[12]
    cout_pg = geom[13]
    B = out.shape[1]
    n_out = out.shape[2]
    HW = H * W
    HWo = Ho * Wo
    nwork = kh * kw * cout_pg
    tid = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, nsteps * B, cuda.gridDim.x):
        b = r % B
        tt = r // B
        t = t0 + tt
        ts = t - delay
        if t < onset:
            for o in range(tid, n_out, TPB):
                out[t, b, o] = ZERO
            continue
        for o in range(tid, n_out, TPB):
            out[t, b, o] = ZERO
        cuda.syncthreads()
        m = cnt[tt, b]
        for k in range(m):
            i = idx[tt, b, k]
            v = src[ts, b, i]
            c = i // HW
            rem = i - c * HW
            y = rem // W
            x = rem - y * W
            g = c // cin_pg
            cl = c - g * cin_pg
            base = g * cout_pg
            for wid in range(tid, nwork, TPB):
                tap = wid // cout_pg
                j = wid - tap * cout_pg
                ky = tap // kw
                kx = tap - ky * kw
                ny = y + py - ky
                nx = x + px - kx
                if ny >= 0 and nx >= 0 and ny % sy == 0 and nx % sx == 0:
                    oy = ny // sy
                    ox = nx // sx
                    if oy < Ho and ox < Wo:
                        w = wc[g, cl, ky, kx, j]
                        o = (base + j) * HWo + oy * Wo + ox
                        if v == ONE:
                            out[t, b, o] = out[t, b, o] + w
                        else:
                            out[t, b, o] = out[t, b, o] + fmul(w, v)
            cuda.syncthreads()
        if has_bias:
            for o in range(tid, n_out, TPB):
                out[t, b, o] = out[t, b, o] + bias[o // HWo]


@cuda.jit
def pool_sum_forward(src, out, t0, nsteps, delay, geom, divisor):
    """Sum / average pooling, one thread per output: the window's non-zero inputs in ascending
    (ky, kx) order (the order events reach it in the numba kernel), divided by ``divisor`` > 0."""
    H = geom[1]
    W = geom[2]
    Ho = geom[3]
    Wo = geom[4]
    kh = geom[5]
    kw = geom[6]
    sy = geom[7]
    sx = geom[8]
    py = geom[9]
    px = geom[10]
    B = out.shape[1]
    n_out = out.shape[2]
    HW = H * W
    HWo = Ho * Wo
    total = nsteps * B * n_out
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, total, stride):
        o = e % n_out
        rest = e // n_out
        b = rest % B
        t = t0 + rest // B
        ts = t - delay
        acc = ZERO
        if ts >= 0:
            c = o // HWo
            p = o - c * HWo
            oy = p // Wo
            ox = p - oy * Wo
            for ky in range(kh):
                iy = oy * sy - py + ky
                if iy >= 0 and iy < H:
                    for kx in range(kw):
                        ix = ox * sx - px + kx
                        if ix >= 0 and ix < W:
                            v = src[ts, b, c * HW + iy * W + ix]
                            if v != ZERO:
                                acc = acc + v
            if divisor > ZERO:
                acc = acc / divisor
        out[t, b, o] = acc


@cuda.jit
def pool_max_forward(src, out, t0, nsteps, delay, geom):
    """Max pooling with zero padding, one thread per output (the numba kernel's rule)."""
    H = geom[1]
    W = geom[2]
    Ho = geom[3]
    Wo = geom[4]
    kh = geom[5]
    kw = geom[6]
    sy = geom[7]
    sx = geom[8]
    py = geom[9]
    px = geom[10]
    B = out.shape[1]
    n_out = out.shape[2]
    HW = H * W
    HWo = Ho * Wo
    total = nsteps * B * n_out
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, total, stride):
        o = e % n_out
        rest = e // n_out
        b = rest % B
        t = t0 + rest // B
        ts = t - delay
        if ts < 0:
            out[t, b, o] = ZERO
            continue
        c = o // HWo
        p = o - c * HWo
        oy = p // Wo
        ox = p - oy * Wo
        mx = NEG_INF
        padded = False
        for ky in range(kh):
            iy = oy * sy - py + ky
            for kx in range(kw):
                ix = ox * sx - px + kx
                if iy < 0 or iy >= H or ix < 0 or ix >= W:
                    padded = True
                    continue
                v = src[ts, b, c * HW + iy * W + ix]
                if v > mx or v != v:
                    mx = v
        if padded and mx < ZERO:
            mx = ZERO
        out[t, b, o] = mx


@cuda.jit
def identity_forward(src, scale, unit, out, t0, nsteps, delay):
    """``out[t] = scale * src[t - delay]`` (a copy when ``unit``), zeros before the source."""
    B = out.shape[1]
    n = out.shape[2]
    total = nsteps * B * n
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, total, stride):
        j = e % n
        rest = e // n
        b = rest % B
        t = t0 + rest // B
        ts = t - delay
        if ts < 0:
            out[t, b, j] = ZERO
        elif unit:
            out[t, b, j] = src[ts, b, j]
        else:
            out[t, b, j] = fmul(scale, src[ts, b, j])


# ----------------------------------------------------------------------------- neurons


@cuda.jit(device=True)
def _to_float(c):
    return ONE if c else ZERO


neuron_step = cuda.jit(device=True)(make_neuron_step(fmul, _to_float, ONE, ZERO))


@cuda.jit
def population_forward(
    cur, late, ioff, t0, t1, params, gain, v_reset, model, reset, reset_delay, fire_ge, charge, rule, has_late,
    state, out, mem, record, keep, gated, spikes,
):
    """``spike.semantics`` for steps t0..t1-1, one thread per (sample, neuron), state in registers.

    Input current ``cur[t + ioff]`` (recurrent inputs added after the charge: ``late[t + ioff]``),
    per-neuron ``params`` ``[N_PARAMS, n]``, ``state`` ``[N_STATES, B, n]``; products through
    :func:`fmul`, so the float32 operations are the numba backend's. ``gated``: neurons with
    ``keep[b, k] == 0`` output 0, keep their state and record it as membrane. Each thread adds its
    spike count to ``spikes[b]`` with one int64 atomic. Work unit ``r = b * n_tiles + tile``:
    ``TPB`` consecutive neurons of sample ``b``.
    """
    B = out.shape[1]
    n = out.shape[2]
    n_tiles = (n + TPB - 1) // TPB
    tid = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, B * n_tiles, cuda.gridDim.x):
        b = r // n_tiles
        k = (r - b * n_tiles) * TPB + tid
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
        for t in range(t0, t1):
            x = cur[t + ioff, b, k]
            xl = late[t + ioff, b, k] if has_late else ZERO
            o, v, s, i, j = neuron_step(x, xl, v, s, i, j, be, th, al, ta, ra, gain, v_reset,
                                        model, reset, reset_delay, fire_ge, charge, rule, has_late)
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
# Ports of the fixed-point loops of ``numba.kernels`` (bit-accurate with lava-nc's
# ``PyLifModelBitAcc``): values carried in int64, wrapped or clipped where lava's int32 / 24-bit
# arithmetic does. Integer sums do not depend on their order, so the scatter kernels add with
# integer atomics into an int64 accumulator row.

I64_2_31 = np.int64(1 << 31)
I64_MASK32 = np.int64((1 << 32) - 1)
UV_MAX = np.int64(1 << 23)  # u wraps past this, v is clipped to +-(UV_MAX - 1)
DECAY_UNITY = np.int64(4096)  # 12-bit decays: factor (4096 - d) / 4096
ACT_SCALE = np.int64(64)  # a_in << 6
I64_ZERO = np.int64(0)
I64_ONE = np.int64(1)


@cuda.jit(device=True)
def wrap_int32(x):
    """``x`` (int64) reduced to the signed 32-bit range, as a cast to int32 wraps."""
    return ((x + I64_2_31) & I64_MASK32) - I64_2_31


@cuda.jit(device=True)
def shift_by_exp(x, e):
    """``x << e`` for ``e >= 0``, arithmetic ``x >> -e`` (floor) otherwise."""
    if e >= 0:
        return x * (I64_ONE << e)
    return x >> (-e)


@cuda.jit(device=True)
def loihi_decay(x, d):
    """``sign(x) * ((|x| * (4096 - d)) >> 12)`` in int64: the decay rounds toward zero."""
    p = x * (DECAY_UNITY - d)
    if p < 0:
        return -((-p) >> 12)
    return p >> 12


@cuda.jit
def dense_fixed_deliver(src, idx, cnt, wt, weight_exp, out, t0, nsteps, delay):
    """Fixed-point dense projection: ``out[t, b, j] = int32((sum of wt[i, j] over active i)
    shifted by weight_exp)``, summed in int64 by one thread per target (as ``dense_deliver``)."""
    B = out.shape[1]
    n_out = out.shape[2]
    n_tiles = (n_out + TPB - 1) // TPB
    tid = cuda.threadIdx.x
    sidx = cuda.shared.array(TPB, int32)
    for r in range(cuda.blockIdx.x, nsteps * B * n_tiles, cuda.gridDim.x):
        tile = r % n_tiles
        rest = r // n_tiles
        b = rest % B
        tt = rest // B
        t = t0 + tt
        ts = t - delay
        j = tile * TPB + tid
        acc = I64_ZERO
        if ts >= 0:
            m = cnt[tt, b]
            for c0 in range(0, m, TPB):
                k = c0 + tid
                if k < m:
                    sidx[tid] = idx[tt, b, k]
                cuda.syncthreads()
                if j < n_out:
                    q_end = min(TPB, m - c0)
                    for q in range(q_end):
                        acc += int64(wt[sidx[q], j])
                cuda.syncthreads()
        if j < n_out:
            out[t, b, j] = wrap_int32(shift_by_exp(acc, weight_exp))


@cuda.jit
def sparse_fixed_deliver(src, idx, cnt, indptr, indices, data, weight_exp, acc, out, t0, nsteps, delay):
    """Fixed-point CSR projection, one work unit per (step, sample): the block zeroes its int64
    row ``acc[blockIdx.x]``, adds the rows of the active inputs with integer atomics, then writes
    ``out = int32(acc shifted by weight_exp)``."""
    B = out.shape[1]
    n_out = out.shape[2]
    tid = cuda.threadIdx.x
    row = cuda.blockIdx.x
    for r in range(cuda.blockIdx.x, nsteps * B, cuda.gridDim.x):
        b = r % B
        tt = r // B
        t = t0 + tt
        ts = t - delay
        for j in range(tid, n_out, TPB):
            acc[row, j] = 0
        cuda.syncthreads()
        if ts >= 0:
            m = cnt[tt, b]
            for k in range(m):
                i = idx[tt, b, k]
                for p in range(indptr[i] + tid, indptr[i + 1], TPB):
                    cuda.atomic.add(acc, (row, indices[p]), int64(data[p]))
        cuda.syncthreads()
        for j in range(tid, n_out, TPB):
            out[t, b, j] = wrap_int32(shift_by_exp(acc[row, j], weight_exp))
        cuda.syncthreads()


@cuda.jit
def conv2d_fixed_deliver(src, idx, cnt, wc, weight_exp, acc, out, t0, nsteps, delay, geom):
    """Fixed-point event-driven convolution (integer ``wc``, layout and ``geom`` as
    ``conv2d_deliver``): the block's int64 row ``acc[blockIdx.x]`` (channel-first), integer atomics, then
    ``out = int32(acc shifted by weight_exp)``."""
    H = geom[1]
    W = geom[2]
    Ho = geom[4]
    Wo = geom[5]
    kh = geom[6]
    kw = geom[7]
    sy = geom[8]
    sx = geom[9]
    py = geom[10]
    px = geom[11]
    cin_pg = geom[12]
    cout_pg = geom[13]
    B = out.shape[1]
    n_out = out.shape[2]
    HW = H * W
    HWo = Ho * Wo
    nwork = kh * kw * cout_pg
    tid = cuda.threadIdx.x
    row = cuda.blockIdx.x
    for r in range(cuda.blockIdx.x, nsteps * B, cuda.gridDim.x):
        b = r % B
        tt = r // B
        t = t0 + tt
        ts = t - delay
        for o in range(tid, n_out, TPB):
            acc[row, o] = 0
        cuda.syncthreads()
        if ts >= 0:
            m = cnt[tt, b]
            for k in range(m):
                i = idx[tt, b, k]
                c = i // HW
                rem = i - c * HW
                y = rem // W
                x = rem - y * W
                g = c // cin_pg
                cl = c - g * cin_pg
                base = g * cout_pg
                for wid in range(tid, nwork, TPB):
                    tap = wid // cout_pg
                    j = wid - tap * cout_pg
                    ky = tap // kw
                    kx = tap - ky * kw
                    ny = y + py - ky
                    nx = x + px - kx
                    if ny >= 0 and nx >= 0 and ny % sy == 0 and nx % sx == 0:
                        oy = ny // sy
                        ox = nx // sx
                        if oy < Ho and ox < Wo:
                            o = (base + j) * HWo + oy * Wo + ox
                            cuda.atomic.add(acc, (row, o), int64(wc[g, cl, ky, kx, j]))
        cuda.syncthreads()
        for o in range(tid, n_out, TPB):
            out[t, b, o] = wrap_int32(shift_by_exp(acc[row, o], weight_exp))
        cuda.syncthreads()


@cuda.jit
def identity_fixed_forward(src, on, off, out, t0, nsteps, delay):
    """Fixed-point one-to-one synapses: ``out = on`` where the source spiked, else ``off``."""
    B = out.shape[1]
    n = out.shape[2]
    total = nsteps * B * n
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, total, stride):
        j = e % n
        rest = e // n
        b = rest % B
        t = t0 + rest // B
        ts = t - delay
        if ts >= 0 and src[ts, b, j] != 0:
            out[t, b, j] = on
        else:
            out[t, b, j] = off


@cuda.jit
def pool_or_forward(src, out, t0, nsteps, delay, geom):
    """Fixed-point max pooling of spikes: 1 where any input of the window is non-zero (an OR)."""
    H = geom[1]
    W = geom[2]
    Ho = geom[3]
    Wo = geom[4]
    kh = geom[5]
    kw = geom[6]
    sy = geom[7]
    sx = geom[8]
    py = geom[9]
    px = geom[10]
    B = out.shape[1]
    n_out = out.shape[2]
    HW = H * W
    HWo = Ho * Wo
    total = nsteps * B * n_out
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, total, stride):
        o = e % n_out
        rest = e // n_out
        b = rest % B
        t = t0 + rest // B
        ts = t - delay
        mx = 0
        if ts >= 0:
            c = o // HWo
            p = o - c * HWo
            oy = p // Wo
            ox = p - oy * Wo
            for ky in range(kh):
                iy = oy * sy - py + ky
                if iy >= 0 and iy < H:
                    for kx in range(kw):
                        ix = ox * sx - px + kx
                        if ix >= 0 and ix < W and src[ts, b, c * HW + iy * W + ix] != 0:
                            mx = 1
        out[t, b, o] = mx


@cuda.jit
def population_fixed_forward(
    cur, ioff, t0, t1, du, dv, bias, onset, vth_eff, spiking, u_state, v_state, out, mem_v, mem_u,
    record_v, record_u, spikes,
):
    """Loihi fixed-point neurons for steps t0..t1-1, one thread per (sample, neuron), as
    ``numba.kernels.population_fixed_forward`` / ``loihi_lif_step``: int32 input ``cur[t + ioff]``,
    int32 state ``u_state``/``v_state`` [B, n]; ``out`` gets spikes (0/1), or v for an ``li``
    readout (``spiking`` False). The bias applies from step ``onset`` on (``Program.onset``), 0
    before. Work unit ``r = b * n_tiles + tile``."""
    B = out.shape[1]
    n = out.shape[2]
    n_tiles = (n + TPB - 1) // TPB
    tid = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, B * n_tiles, cuda.gridDim.x):
        b = r // n_tiles
        k = (r - b * n_tiles) * TPB + tid
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


# ----------------------------------------------------------------------------- FTWT gates
#
# The gated form of ``conv2d_deliver`` (used by ``cuda.gates``; the numba loop is
# ``numba.gates.conv2d_gated_forward``; gated populations are ``population_forward`` with ``gated``).
# It lives in this module because the simulator swaps ``cuda`` into a module's globals for a
# launch: a kernel calling a device function from another module would race on that swap.


@cuda.jit
def conv2d_gated_deliver(src, idx, cnt, wc, bias, has_bias, keep, out, t0, nsteps, delay, onset, geom, pairs,
                         macs, real):
    """``conv2d_deliver`` into the kept output channels only (``keep[b, co]`` != 0).

    Per event, the taps into kept channels are added (zero weights included, as the numba kernel
    adds them); ``pairs[b]`` counts the (event, non-zero weight) pairs into kept channels (one
    integer atomic per thread and work unit), ``macs[b]`` instead where ``real[tt, b]`` (written
    by ``gather_active``). Masked channels' outputs are 0 (no bias); kept ones
    get ``acc + bias``. Before step ``onset`` (>= ``delay``, ``Program.onset``) every output is 0.
    """
    H = geom[1]
    W = geom[2]
    Ho = geom[4]
    Wo = geom[5]
    kh = geom[6]
    kw = geom[7]
    sy = geom[8]
    sx = geom[9]
    py = geom[10]
    px = geom[11]
    cin_pg = geom[12]
    cout_pg = geom[13]
    B = out.shape[1]
    n_out = out.shape[2]
    HW = H * W
    HWo = Ho * Wo
    nwork = kh * kw * cout_pg
    tid = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, nsteps * B, cuda.gridDim.x):
        b = r % B
        tt = r // B
        t = t0 + tt
        ts = t - delay
        if t < onset:
            for o in range(tid, n_out, TPB):
                out[t, b, o] = ZERO
            continue
        for o in range(tid, n_out, TPB):
            out[t, b, o] = ZERO
        cuda.syncthreads()
        nops = 0
        m = cnt[tt, b]
        for k in range(m):
            i = idx[tt, b, k]
            v = src[ts, b, i]
            c = i // HW
            rem = i - c * HW
            y = rem // W
            x = rem - y * W
            g = c // cin_pg
            cl = c - g * cin_pg
            base = g * cout_pg
            for wid in range(tid, nwork, TPB):
                tap = wid // cout_pg
                j = wid - tap * cout_pg
                if keep[b, base + j] == 0:
                    continue
                ky = tap // kw
                kx = tap - ky * kw
                ny = y + py - ky
                nx = x + px - kx
                if ny >= 0 and nx >= 0 and ny % sy == 0 and nx % sx == 0:
                    oy = ny // sy
                    ox = nx // sx
                    if oy < Ho and ox < Wo:
                        w = wc[g, cl, ky, kx, j]
                        if w != ZERO:
                            nops += 1
                        o = (base + j) * HWo + oy * Wo + ox
                        if v == ONE:
                            out[t, b, o] = out[t, b, o] + w
                        else:
                            out[t, b, o] = out[t, b, o] + fmul(w, v)
            cuda.syncthreads()
        if nops != 0:
            if real[tt, b] != 0:
                cuda.atomic.add(macs, b, nops)
            else:
                cuda.atomic.add(pairs, b, nops)
        for o in range(tid, n_out, TPB):
            co = o // HWo
            if keep[b, co] == 0:
                out[t, b, o] = ZERO
            elif has_bias:
                out[t, b, o] = out[t, b, o] + bias[co]
        cuda.syncthreads()  # the outputs are final before the block's next unit


