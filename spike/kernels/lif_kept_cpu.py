"""Numba CPU kernels of the usual training step, specialised per flag set: the LIF forward keeps
the one row per step that the backward reads, and the backward is one pass from the last step to
the first.

The usual training step wants no parameter gradient and no membrane output (hence no membrane
gradient), so the adjoint is :mod:`spike.kernels.lif_cpu`'s lean one, which reads one value per
neuron and step: ``v_t`` with reset_delay=1, the pre-reset ``h_t`` with reset_delay=0. The forward
of :func:`forward_kernel` writes that value to ``kept[T, M]`` as it steps, and the backward of
:func:`backward_kernel` runs the adjoint straight through ``kept``: no checkpoints, no
recomputation. The price is one ``[T, M]`` array per layer for backward (SpikingJelly's fused
neurons keep one too), where :mod:`spike.kernels.lif_cpu` keeps ``T*M/K`` floats and recomputes
them; :mod:`spike.kernels.lif` chooses between the two.

Each flag set compiles kernels of its own, on first use and then from Numba's cache, as
SpikingJelly's kernel templates do: reset mode, reset delay, ``fire_ge`` and the synaptic current
(and, for the backward, ``detach_reset`` and the surrogate) are closure constants, so the shared
helpers of :mod:`spike.kernels.lif_cpu` get the reset switches as booleans and LLVM drops the terms
that a flag set does not have (``(1 - 0*s)*v``, ``x - 0``, the other surrogates). The row loops are
module-level functions inlined into each kernel, the flags passed as arguments: a kernel's closure
holds plain values only, which Numba's cache key hashes alike in every process (a closure over
other compiled functions was compiled again in every process). The arithmetic is that of
:mod:`spike.kernels.lif_cpu`, operation for operation: spikes and dL/dx equal its kernels' bit for
bit.

The backward walks each row from its last neuron to its first, and the rows from the last step
to the first, so the rows of a work item are read and written as one descending stream, which the
hardware prefetcher follows (a copy of 1000 x 8192 floats row by row from the last row to the
first took 1.5 ms, as one descending stream 1.1 ms, the same as forwards; 2-core AMD EPYC).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from numba import njit, prange

from spike.kernels.lif_cpu import (
    P_C0, P_C1, P_GAIN, P_ONE, P_ZERO, _adj_delay, _adj_nodelay, _at, _fire, _hv_nodelay, _v_delay, _work_item,
)

__all__ = ["forward_kernel", "backward_kernel"]


@njit(cache=True, error_model="numpy", inline="always")
def _current(xt, alpha, i, k, cuba):
    """``c_t``: ``x_t``, or with a synaptic current ``i_t = alpha*i_{t-1} + x_t`` (in place)."""
    if cuba:
        c = alpha[k] * i[k] + xt[k]
        i[k] = c
        return c
    return xt[k]


@njit(cache=True, error_model="numpy", inline="always")
def _delayed_kept(xt, beta, thr, alpha, i, vp, v, s, n, g, first, zero, one, zr, ks, ge, cuba):
    """reset_delay=1, one step: v_t from ``vp`` (v_{t-1}) into the kept row ``v``, spikes to ``s``."""
    for k in range(n):
        th = _at(thr, k)
        vk = _v_delay(_current(xt, alpha, i, k, cuba), _at(beta, k), th, vp[k], g, zr, ks, ge, first, zero, one)
        v[k] = vk
        s[k] = _fire(vk, th, ge, zero, one)


@njit(cache=True, error_model="numpy", inline="always")
def _immediate(xt, beta, thr, alpha, i, v, s, h, n, g, zero, one, zr, ks, ge, cuba):
    """reset_delay=0, one step: ``v`` from v_{t-1} to v_t in place, spikes to ``s``, h_t to the kept
    row ``h``."""
    for k in range(n):
        hk, vk, sk = _hv_nodelay(_current(xt, alpha, i, k, cuba), _at(beta, k), _at(thr, k), v[k], g, zr, ks, ge,
                                 zero, one)
        v[k] = vk
        s[k] = sk
        h[k] = hk


@njit(cache=True, error_model="numpy", inline="always")
def _adjoint_row(gs, beta, thr, alpha, kt, gn, gi, dx, n, g, c0, c1, zero, one, zr, ks, delay, ge, cuba, nd, sid):
    """One step's lean adjoint, neurons from the last to the first: ``gn`` holds Gv_{t+1} (Gh_{t+1}
    with reset_delay=0) in and Gv_t out, ``gi`` Gi_{t+1} in and Gi_t out, ``dx`` gets dL/dx_t;
    ``kt``: the kept row of the step."""
    for j in range(n):
        k = np.uint64(n - 1 - j)  # unsigned: no negative-index wrap-around, so LLVM vectorises
        th = _at(thr, k)
        bj = _at(beta, k)
        if delay:
            gvn = gn[k]
            decay, Gs, sg = _adj_delay(gs[k], gvn, bj, th, kt[k], zr, ks, ge, nd, sid, c0, c1, zero, one)
            G = gvn * decay + Gs * sg
        else:
            G, _, _, _ = _adj_nodelay(gs[k], bj * gn[k], th, kt[k], zr, ks, ge, nd, sid, c0, c1, zero, one)
        gn[k] = G
        d = g * G
        if cuba:
            d = d + alpha[k] * gi[k]
            gi[k] = d
        dx[k] = d


@functools.lru_cache(maxsize=None)
def forward_kernel(reset: int, delay: bool, ge: bool, cuba: bool) -> Callable:
    """``forward(x, beta, thr, alpha, params, spk, kept, blk)`` for one flag set (``reset`` a
    :data:`~spike.kernels.lif_cpu.RESET_CODES` value): the LIF over ``x[T, M]`` from a zero state,
    spikes to ``spk[T, M]`` and ``v_t`` (reset_delay=1) or ``h_t`` (reset_delay=0) to
    ``kept[T, M]``. Other arguments as :func:`spike.kernels.lif_cpu.lif_forward`: ``beta``, ``thr``
    ``[M]`` rows or dtype scalars, ``alpha`` ``[M]`` (read only with ``cuba``), ``params`` from
    :func:`~spike.kernels.lif_cpu.make_params`, ``blk`` neurons per work item. With reset_delay=1
    the kept row of step t-1 is the state of step t (one stream fewer than a state row of its own)."""
    # closure constants: plain values only, so that Numba's cache key (which hashes them) is the
    # same in every process
    ZR, KS, DELAY, GE, CUBA = reset == 1, reset == 0, bool(delay), bool(ge), bool(cuba)

    @njit(cache=True, parallel=True, error_model="numpy")
    def forward(x, beta, thr, alpha, params, spk, kept, blk):
        T, M = x.shape
        g, zero, one = params[P_GAIN], params[P_ZERO], params[P_ONE]
        for b in prange((M + blk - 1) // blk):
            j0, j1, n, bb, tb, ab = _work_item(b, blk, M, beta, thr, alpha, CUBA)
            v = np.zeros(n, dtype=x.dtype)
            i = np.zeros(n if CUBA else 1, dtype=x.dtype)
            for t in range(T):
                first = zero if t == 0 else one
                xt, st, kt = x[t, j0:j1], spk[t, j0:j1], kept[t, j0:j1]
                if not DELAY:
                    _immediate(xt, bb, tb, ab, i, v, st, kt, n, g, zero, one, ZR, KS, GE, CUBA)
                else:
                    _delayed_kept(xt, bb, tb, ab, i, v if t == 0 else kept[t - 1, j0:j1], kt, st, n, g, first, zero,
                                  one, ZR, KS, GE, CUBA)

    return forward


@functools.lru_cache(maxsize=None)
def backward_kernel(reset: int, delay: bool, ge: bool, cuba: bool, nd: bool, sid: int) -> Callable:
    """``backward(kept, beta, thr, alpha, params, gs, gs_tstep, dx, blk)`` for one flag set (``nd``:
    not ``detach_reset``; ``sid`` a :data:`~spike.kernels.lif_cpu.SURROGATE_IDS` value): dL/dx into
    ``dx[T, M]`` from the spikes' gradient ``gs`` (``[T, M]`` with ``gs_tstep=1``, or one broadcast
    row with ``gs_tstep=0``) and the rows :func:`forward_kernel` kept. The adjoint is
    :mod:`spike.kernels.lif_cpu`'s lean one (module docstring there); other arguments as its
    :func:`~spike.kernels.lif_cpu.lif_backward`."""
    ZR, KS, DELAY, GE, CUBA, ND, SID = (reset == 1, reset == 0, bool(delay), bool(ge), bool(cuba), bool(nd),
                                        int(sid))

    @njit(cache=True, parallel=True, error_model="numpy")
    def backward(kept, beta, thr, alpha, params, gs, gs_tstep, dx, blk):
        T, M = kept.shape
        g, zero, one, c0, c1 = params[P_GAIN], params[P_ZERO], params[P_ONE], params[P_C0], params[P_C1]
        for b in prange((M + blk - 1) // blk):
            j0, j1, n, bb, tb, ab = _work_item(b, blk, M, beta, thr, alpha, CUBA)
            gn = np.zeros(n, dtype=kept.dtype)
            gi = np.zeros(n if CUBA else 1, dtype=kept.dtype)
            for t in range(T - 1, -1, -1):
                _adjoint_row(gs[t * gs_tstep, j0:j1], bb, tb, ab, kept[t, j0:j1], gn, gi, dx[t, j0:j1], n, g, c0, c1,
                             zero, one, ZR, KS, DELAY, GE, CUBA, ND, SID)

    return backward
