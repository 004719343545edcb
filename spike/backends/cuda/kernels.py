"""Numba CUDA kernels of the cuda backend's projections (see ``cuda.backend`` for how nodes map
onto them; the neuron updates are in ``cuda.neurons``), with the launch configuration and the
device arithmetic both modules share.

Every kernel reproduces the operations of the matching loop in ``numba.projections`` in the same
order, so outputs and counts are bit-identical to the numba backend:

- Products that feed an addition go through :func:`fmul` (``mul.rn`` on a GPU): NVVM contracts a
  plain ``a*b + c`` into one fused multiply-add by default, which rounds once instead of twice.
- No float atomics anywhere. Each output element is owned by one thread (dense: one thread per
  (step, sample, target) looping over the step's active inputs in ascending order), or by one
  block that applies the events one after another, in ascending input order, with a barrier
  between events (sparse rows and conv kernels scatter to distinct targets within one event).
  Fixed-point sums are integers, whose order does not matter: the scatter kernels add them with
  integer atomics into an int64 accumulator row per block, then shift by ``weight_exp`` and wrap
  to int32 as lava does.
- Counters are int64 ``[B]`` device arrays, added to with integer atomics (one per thread and
  kernel call; integer sums do not depend on the order).

As in ``numba.projections``, each delivery loop is written once and compiled per arithmetic (and
per use of an FTWT mask) by a factory closing over constant flags (``fixed``, ``gated``), whose
branches Numba prunes. A projection delivers nothing before step ``start`` (its
``Program.onset`` in float32, its delay in fixed point).

Arrays are ``[T, B, n]`` (C order); kernels handle ``nsteps`` steps from ``t0`` at once, all
samples in parallel. The block size ``TPB`` is a power of two; under Numba's CUDA simulator (each
simulated thread is a Python thread) it is small and element-wise grids are capped. The
simulator swaps ``cuda`` into a kernel module's globals for a launch: device functions (and
:func:`inline` helpers) that use ``cuda`` must live in the module of the kernels calling them (those
shared across modules here, :func:`fmul`, :func:`wrap_int32`, :func:`shift_by_exp`, do not use it).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
from numba import float32, int32, int64

from spike.compat.numba_cuda import cuda_register_jitable, numba_cuda

cuda = numba_cuda()  # numpy >= 2.5 needs the compat fix before numba.cuda's first compile


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


def inline(fn: Any) -> Any:
    """``fn`` as a helper of the kernels (index arithmetic, an event's term, a fixed-point row
    write), inlined into each at the Numba IR level: a kernel compiles to the code it has with the
    helper written out (a ``cuda.jit(device=True)`` function, inlined later by NVVM, changes the
    integer code around it). Under the simulator ``fn`` is called as it is."""
    return cuda_register_jitable(inline="always")(fn)


def blocks_for(n: int) -> int:
    """Blocks of a grid-stride element-wise kernel over ``n`` elements."""
    return max(1, min((n + TPB - 1) // TPB, EW_MAX_BLOCKS))


def grid_for(units: int) -> int:
    """Blocks of a block-stride kernel over ``units`` work units (one block each on a GPU)."""
    return max(1, min(units, MAX_BLOCKS))


# ----------------------------------------------------------------------------- indexing


@inline
def step_unit(r, B, t0, delay):
    """``(tt, b, t, ts)`` of unit ``r = tt * B + b``: step ``t = t0 + tt`` of sample ``b``, which
    reads source step ``ts = t - delay``."""
    b = r % B
    tt = r // B
    t = t0 + tt
    return tt, b, t, t - delay


@inline
def elements(a, nsteps):
    """``(B, n, first, total, stride)``: the grid-stride loop ``range(first, total, stride)`` of a
    thread over the ``total = nsteps * B * n`` elements of ``nsteps`` steps of ``a`` ``[T, B, n]``."""
    B = a.shape[1]
    n = a.shape[2]
    return B, n, cuda.grid(1), nsteps * B * n, cuda.gridsize(1)


@inline
def step_element(e, n, B, t0, delay):
    """``(j, b, t, ts)`` of element ``e = (tt * B + b) * n + j`` of an element-wise loop: its index
    ``j`` in unit ``tt * B + b`` (see :func:`step_unit`)."""
    j = e % n
    _, b, t, ts = step_unit(e // n, B, t0, delay)
    return j, b, t, ts


# ----------------------------------------------------------------------------- utilities


@cuda.jit
def fill_zero(a):
    """``a[:] = 0`` for a 1-D array (any dtype)."""
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for e in range(start, a.shape[0], stride):
        a[e] = 0


def _steps_kernel(add: bool) -> Any:
    """``(dst, dst_t0, src, src_t0, nsteps)``: ``dst[dst_t0 + s] = src[src_t0 + s]`` (``add``:
    ``dst[dst_t0 + s] + src[src_t0 + s]``) for s < nsteps, element-wise (``[T, B, n]`` arrays)."""

    def steps(dst, dst_t0, src, src_t0, nsteps):
        B, n, first, total, stride = elements(dst, nsteps)
        for e in range(first, total, stride):
            j = e % n
            r = e // n
            b = r % B
            s = r // B
            if add:
                dst[dst_t0 + s, b, j] = dst[dst_t0 + s, b, j] + src[src_t0 + s, b, j]
            else:
                dst[dst_t0 + s, b, j] = src[src_t0 + s, b, j]

    return cuda.jit(steps)


copy_steps = _steps_kernel(False)  # dst[dst_t0 + s] = src[src_t0 + s] (any dtype)
add_steps = _steps_kernel(True)  # dst[dst_t0 + s] += src[src_t0 + s] (float32, or int32 wrapping)


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
        tt, b, t, ts = step_unit(r, B, t0, delay)
        if t < onset:
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



# ----------------------------------------------------------------------------- integer arithmetic
#
# Loihi fixed point (bit-accurate with lava-nc, as ``numba.neurons``): values carried in int64,
# wrapped where lava's int32 arithmetic does.

I64_2_31 = np.int64(1 << 31)
I64_MASK32 = np.int64((1 << 32) - 1)
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


@inline
def add_event(x, w, v):
    """``x + w * v``: ``x + w`` for an event of value 1, else the product rounded on its own
    (:func:`fmul`) and added (float32, the numba kernels' operations)."""
    if v == ONE:
        return x + w
    return x + fmul(w, v)


@inline
def store_fixed(out, t, b, acc, row, weight_exp):
    """The block writes ``out[t, b] = int32(acc[row] shifted by weight_exp)`` once every thread's
    atomics into ``acc[row]`` are done (a barrier before, and one after: the row is then free)."""
    cuda.syncthreads()
    for j in range(cuda.threadIdx.x, out.shape[2], TPB):
        out[t, b, j] = wrap_int32(shift_by_exp(acc[row, j], weight_exp))
    cuda.syncthreads()


@inline
def window_geometry(geom, k):
    """``(H, W, HW, Ho, Wo, HWo, kh, kw, sy, sx, py, px)`` of a 2-D window ``geom`` (int64), ``Ho``
    at index ``k``: a pool2d's ``[C, H, W, Ho, Wo, kh, kw, sy, sx, py, px]`` (``k = 3``), a
    conv2d's ``[C, H, W, C_out, Ho, Wo, kh, kw, sy, sx, py, px, cin_pg, cout_pg]`` (``k = 4``)."""
    H = geom[1]
    W = geom[2]
    Ho = geom[k]
    Wo = geom[k + 1]
    return (H, W, H * W, Ho, Wo, Ho * Wo, geom[k + 2], geom[k + 3], geom[k + 4], geom[k + 5], geom[k + 6],
            geom[k + 7])


@inline
def unflatten(i, HW, W):
    """``(c, y, x)`` of the flat index ``i = (c * H + y) * W + x`` (``HW = H * W``)."""
    c = i // HW
    rem = i - c * HW
    y = rem // W
    return c, y, rem - y * W


# ----------------------------------------------------------------------------- projections


@lru_cache(maxsize=None)
def dense_kernel(fixed: bool) -> Any:
    """``dense_deliver(src, idx, cnt, wt, bias, has_bias, weight_exp, out, t0, nsteps, delay, start)``:
    ``out[t, b, j] = bias[j] + sum over active i (ascending) of wt[i, j] * x[i]`` from step ``start``
    on, 0 before (fixed point: ``int32((sum of wt[i, j] over active i) shifted by weight_exp)``,
    summed in int64).

    One thread per (step, sample, target ``j``); a work unit covers ``TPB`` consecutive targets
    of one (step, sample), so a warp reads consecutive entries of a row of ``wt`` = W^T
    (coalesced). The active indices and values are staged in shared memory ``TPB`` at a time.
    The running sum starts at the bias and adds ``w`` (value 1) or ``w*x`` in the numba
    kernel's order.
    """

    def dense_deliver(src, idx, cnt, wt, bias, has_bias, weight_exp, out, t0, nsteps, delay, start):
        B = out.shape[1]
        n_out = out.shape[2]
        n_tiles = (n_out + TPB - 1) // TPB
        tid = cuda.threadIdx.x
        sidx = cuda.shared.array(TPB, int32)
        if not fixed:
            sval = cuda.shared.array(TPB, float32)
        for r in range(cuda.blockIdx.x, nsteps * B * n_tiles, cuda.gridDim.x):
            tile = r % n_tiles
            tt, b, t, ts = step_unit(r // n_tiles, B, t0, delay)
            j = tile * TPB + tid
            if fixed:
                acc = I64_ZERO
            else:
                acc = ZERO
                if has_bias and j < n_out and t >= start:
                    acc = bias[j]
            if t >= start:
                m = cnt[tt, b]
                for c0 in range(0, m, TPB):
                    k = c0 + tid
                    if k < m:
                        i = idx[tt, b, k]
                        sidx[tid] = i
                        if not fixed:
                            sval[tid] = src[ts, b, i]
                    cuda.syncthreads()
                    if j < n_out:
                        q_end = min(TPB, m - c0)
                        for q in range(q_end):
                            if fixed:  # every event a spike (lava casts to bool)
                                acc += int64(wt[sidx[q], j])
                            else:
                                acc = add_event(acc, wt[sidx[q], j], sval[q])
                    cuda.syncthreads()
            if j < n_out:
                if fixed:
                    out[t, b, j] = wrap_int32(shift_by_exp(acc, weight_exp))
                else:
                    out[t, b, j] = acc

    return cuda.jit(dense_deliver)


@lru_cache(maxsize=None)
def sparse_kernel(fixed: bool) -> Any:
    """``sparse_deliver(src, idx, cnt, indptr, indices, data, row_serial, bias, has_bias, weight_exp,
    acc, out, t0, nsteps, delay, start)``: CSR rows of the active inputs scattered into
    ``out[t, b]``, one work unit per (step, sample).

    Before step ``start`` the row is 0, bias included. From then on, float32: the block
    initialises the row with the bias, then applies the active inputs in ascending order: the
    threads share one CSR row (distinct targets: plain read-add-write, no atomics), with a barrier
    between rows, so every target receives its terms in the numba kernel's order; a row that names
    a target twice (``row_serial``) is applied by one thread, in CSR order. Fixed point: the block
    zeroes its int64 row ``acc[blockIdx.x]``, adds the rows of the active inputs with integer
    atomics, then writes ``out = int32(acc shifted by weight_exp)``.
    """

    def sparse_deliver(src, idx, cnt, indptr, indices, data, row_serial, bias, has_bias, weight_exp, acc, out, t0,
                       nsteps, delay, start):
        B = out.shape[1]
        n_out = out.shape[2]
        tid = cuda.threadIdx.x
        row = cuda.blockIdx.x
        for r in range(cuda.blockIdx.x, nsteps * B, cuda.gridDim.x):
            tt, b, t, ts = step_unit(r, B, t0, delay)
            for j in range(tid, n_out, TPB):
                if fixed:
                    acc[row, j] = 0
                elif has_bias and t >= start:
                    out[t, b, j] = bias[j]
                else:
                    out[t, b, j] = ZERO
            if not fixed and t < start:
                continue
            cuda.syncthreads()
            if t >= start:
                m = cnt[tt, b]
                for k in range(m):
                    i = idx[tt, b, k]
                    if fixed:  # every event a spike (lava casts to bool)
                        for p in range(indptr[i] + tid, indptr[i + 1], TPB):
                            cuda.atomic.add(acc, (row, indices[p]), int64(data[p]))
                        continue
                    v = src[ts, b, i]
                    lo = indptr[i]
                    hi = indptr[i + 1]
                    if row_serial[i] != 0:
                        if tid == 0:
                            for p in range(lo, hi):
                                jj = indices[p]
                                out[t, b, jj] = add_event(out[t, b, jj], data[p], v)
                    else:
                        for p in range(lo + tid, hi, TPB):
                            jj = indices[p]
                            out[t, b, jj] = add_event(out[t, b, jj], data[p], v)
                    cuda.syncthreads()
            if fixed:
                store_fixed(out, t, b, acc, row, weight_exp)

    return cuda.jit(sparse_deliver)


@lru_cache(maxsize=None)
def conv2d_kernel(fixed: bool, gated: bool) -> Any:
    """``conv2d_deliver(src, idx, cnt, wc, bias, has_bias, weight_exp, acc, keep, out, t0, nsteps,
    delay, start, geom, pairs, macs, real)``: event-driven 2-D convolution, one work unit per
    (step, sample).

    ``wc[g, cl, ky, kx, j]`` = W[g*cout_pg + j, cl, ky, kx]; ``geom`` as in ``numba.projections``.
    The active inputs are applied in ascending flat order (c, y, x); for one event the threads
    cover its (tap, output channel) pairs, which reach distinct outputs. Float32: accumulated in
    ``out[t, b]`` with a barrier after each event, the bias added last (``acc + bias``), as the
    numba kernel does; fixed point: integer atomics into the block's int64 row ``acc[blockIdx.x]``
    (channel-first), then ``out = int32(acc shifted by weight_exp)``. Before step ``start`` the
    outputs are 0, bias included.

    ``gated`` (an FTWT mask, float32): only the taps into kept output channels (``keep[b, co]``
    != 0) are added (zero weights included, as the numba kernel adds them); ``pairs[b]`` counts the
    (event, non-zero weight) pairs into kept channels (one integer atomic per thread and work
    unit), ``macs[b]`` instead where ``real[tt, b]`` (written by ``gather_active``); masked
    channels' outputs are 0 (no bias).
    """

    def conv2d_deliver(src, idx, cnt, wc, bias, has_bias, weight_exp, acc, keep, out, t0, nsteps, delay, start,
                       geom, pairs, macs, real):
        H, W, HW, Ho, Wo, HWo, kh, kw, sy, sx, py, px = window_geometry(geom, 4)
        cin_pg = geom[12]
        cout_pg = geom[13]
        B = out.shape[1]
        n_out = out.shape[2]
        nwork = kh * kw * cout_pg
        tid = cuda.threadIdx.x
        row = cuda.blockIdx.x
        for r in range(cuda.blockIdx.x, nsteps * B, cuda.gridDim.x):
            tt, b, t, ts = step_unit(r, B, t0, delay)
            if not fixed and t < start:
                for o in range(tid, n_out, TPB):
                    out[t, b, o] = ZERO
                continue
            for o in range(tid, n_out, TPB):
                if fixed:
                    acc[row, o] = 0
                else:
                    out[t, b, o] = ZERO
            cuda.syncthreads()
            nops = 0
            m = cnt[tt, b] if t >= start else 0
            for k in range(m):
                i = idx[tt, b, k]
                v = src[ts, b, i]
                c, y, x = unflatten(i, HW, W)
                g = c // cin_pg
                cl = c - g * cin_pg
                base = g * cout_pg
                for wid in range(tid, nwork, TPB):
                    tap = wid // cout_pg
                    j = wid - tap * cout_pg
                    if gated and keep[b, base + j] == 0:
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
                            o = (base + j) * HWo + oy * Wo + ox
                            if fixed:  # every event a spike (lava casts to bool)
                                cuda.atomic.add(acc, (row, o), int64(w))
                            else:
                                if gated and w != ZERO:
                                    nops += 1
                                out[t, b, o] = add_event(out[t, b, o], w, v)
                if not fixed:
                    cuda.syncthreads()
            if gated and nops != 0:
                if real[tt, b] != 0:
                    cuda.atomic.add(macs, b, nops)
                else:
                    cuda.atomic.add(pairs, b, nops)
            if fixed:
                store_fixed(out, t, b, acc, row, weight_exp)
            elif gated or has_bias:
                for o in range(tid, n_out, TPB):
                    co = o // HWo
                    if gated and keep[b, co] == 0:
                        out[t, b, o] = ZERO
                    elif has_bias:
                        out[t, b, o] = out[t, b, o] + bias[co]
                if gated:
                    cuda.syncthreads()  # the outputs are final before the block's next unit

    return cuda.jit(conv2d_deliver)


# ----------------------------------------------------------------------------- pooling


@cuda.jit
def pool_sum_forward(src, out, t0, nsteps, delay, geom, divisor):
    """Sum / average pooling, one thread per output: the window's non-zero inputs in ascending
    (ky, kx) order (the order events reach it in the numba kernel), divided by ``divisor`` > 0."""
    H, W, HW, _, Wo, HWo, kh, kw, sy, sx, py, px = window_geometry(geom, 3)
    B, n_out, first, total, stride = elements(out, nsteps)
    for e in range(first, total, stride):
        o, b, t, ts = step_element(e, n_out, B, t0, delay)
        acc = ZERO
        if ts >= 0:
            c, oy, ox = unflatten(o, HWo, Wo)
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



@lru_cache(maxsize=None)
def pool_max_kernel(fixed: bool) -> Any:
    """``pool_max_forward(src, out, t0, nsteps, delay, geom)``: max pooling with zero padding, one
    thread per output (the numba kernel's rule); fixed point: 1 where any input of the window is
    non-zero (an OR of spikes)."""

    def pool_max_forward(src, out, t0, nsteps, delay, geom):
        H, W, HW, _, Wo, HWo, kh, kw, sy, sx, py, px = window_geometry(geom, 3)
        B, n_out, first, total, stride = elements(out, nsteps)
        for e in range(first, total, stride):
            o, b, t, ts = step_element(e, n_out, B, t0, delay)
            if ts < 0:
                out[t, b, o] = 0
                continue
            c, oy, ox = unflatten(o, HWo, Wo)
            if fixed:
                mx = 0
            else:
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
                    if fixed:
                        if v != 0:
                            mx = 1
                    elif v > mx or v != v:
                        mx = v
            if not fixed and padded and mx < ZERO:
                mx = ZERO
            out[t, b, o] = mx

    return cuda.jit(pool_max_forward)


@lru_cache(maxsize=None)
def identity_kernel(fixed: bool) -> Any:
    """``identity_forward(src, scale, unit, out, t0, nsteps, delay)``: ``out[t] = scale *
    src[t - delay]`` (a copy when ``unit``), zeros before the source; fixed point: ``scale`` (the
    delivered integer, ``int32(weight shifted by weight_exp)``) where the source spiked, else 0."""

    def identity_forward(src, scale, unit, out, t0, nsteps, delay):
        B, n, first, total, stride = elements(out, nsteps)
        for e in range(first, total, stride):
            j, b, t, ts = step_element(e, n, B, t0, delay)
            if ts < 0:
                out[t, b, j] = 0
            elif fixed:
                out[t, b, j] = scale if src[ts, b, j] != 0 else 0
            elif unit:
                out[t, b, j] = src[ts, b, j]
            else:
                out[t, b, j] = fmul(scale, src[ts, b, j])

    return cuda.jit(identity_forward)
