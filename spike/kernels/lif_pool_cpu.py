"""Numba CPU kernels: the fused multi-step LIF followed by 2-D max pooling, whose full-size spikes
never leave the cache.

Layout: ``x[T, M]`` as in :mod:`spike.kernels.lif_cpu`, with ``M = P*h*w`` (``P`` planes of ``h x w``
neurons: the pooled dimensions last). Outputs: the pooled spikes ``y[T, P*ho*wo]`` and the argmax of
each window ``q`` (uint8, as :mod:`spike.kernels.max_pool`), ``ho = h // kh``, ``wo = w // kw``.

A work item is a run of whole planes. Forward, per step: the LIF row update of ``lif_cpu`` into a
block-local spike row, then the pooling blocks of ``max_pool`` on that row::

    s_t = LIF(x)_t                     (lif_cpu, state in the block)
    y_t, q_t = max_pool(s_t)           (max_pool's scan: first position of the maximum)

Backward: the LIF adjoint of ``lif_cpu`` (checkpointed recomputation), with the spike gradient of
each step rebuilt in the block from the pooled gradient::

    gs_t = max_pool_backward(gy_t, q_t)    (0 + gy at the argmax, 0 elsewhere)

Both are the operations of ``max_pool2d(lif(x))`` and of its backward, in the same order, so the
results are equal bit for bit; what the fusion saves is writing the ``[T, M]`` spike map and its
gradient to memory and reading them back (float32 only, as the pooling kernels).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numba
import numpy as np
from numba import njit, prange

from spike.kernels.lif_cpu import (
    BLOCK, P_C0, P_C1, _adjoint_step, _backward_buffers, _checkpoint, _constants, _forward_buffers, _forward_step,
    _parameter_sums, _recompute_segment, _work_item,
)
from spike.kernels.max_pool import VEC, _bwd_rows, _fwd_rows, _zero_outside, kernel_supported

__all__ = ["Kernels", "kernels", "planes_per_item"]


def planes_per_item(planes: int, plane: int) -> int:
    """Whole planes per work item: about ``lif_cpu.BLOCK`` neurons (at least one plane), fewer when
    that leaves a Numba thread without work."""
    per = max(1, BLOCK // plane)
    nt = numba.get_num_threads()
    if nt > 1:
        per = min(per, -(-planes // nt))
    return max(1, min(planes, per))


@njit(cache=True, error_model="numpy", inline="always")
def _runs(planes, h, w, KH, KW):
    """How :func:`_pool_row` covers ``planes`` planes ``h x w``: ``(runs, rows)``, one column of
    ``planes*ho`` output rows when the windows tile the planes' height (the rows of the next plane
    follow), else ``planes`` columns of ``ho``."""
    ho = h // KH
    return (1, planes * ho) if h == KH * ho else (planes, ho)


@njit(cache=True, error_model="numpy", inline="always")
def _pool_row(s, y, q, o0, planes, h, w, KH, KW):
    """``y[o0 + ...]``, ``q[o0 + ...]``: the ``KH x KW`` windows of the item-local spike row ``s`` of
    ``planes`` planes ``h x w`` (``KH``, ``KW`` compile-time constants: inlined into a kernel of
    :func:`kernels`). The spikes are 0 or 1, so the scan runs without its NaN test (the same
    result)."""
    ho = h // KH
    wo = w // KW
    runs, rows = _runs(planes, h, w, KH, KW)
    for pl in range(runs):
        for j in range(0, wo, VEC):
            _fwd_rows(s, pl * h * w + KW * j, w, y, q, o0 + pl * ho * wo + j, wo, rows, min(VEC, wo - j), KH, KW,
                      False)


@njit(cache=True, error_model="numpy", inline="always")
def _unpool_row(gy, q, o0, gs, planes, h, w, KH, KW):
    """The item-local spike gradient row ``gs`` from the pooled gradient ``gy[o0 + ...]`` (as
    :func:`_pool_row`)."""
    ho = h // KH
    wo = w // KW
    runs, rows = _runs(planes, h, w, KH, KW)
    for pl in range(runs):
        for j in range(0, wo, VEC):
            _bwd_rows(gy, q, o0 + pl * ho * wo + j, wo, gs, pl * h * w + KW * j, w, rows, min(VEC, wo - j), KH, KW)
    if h % KH or w % KW:
        for pl in range(planes):
            _zero_outside(gs, pl * h * w, h, w, KH, KW)


@njit(cache=True, error_model="numpy")  # not inlined: parfors' array analysis trips on its nested tuple
def _backward_setup(params, reset, ge, nd, sid, full, T, M, K, h, w, ppi, KH, KW):
    """A pooled backward kernel's constants: ``(cst, adj, lean, plane, oplane, items, nq)``, the
    LIF constants and adjoint switches (:func:`spike.kernels.lif_cpu.lif_backward`), the input and
    pooled plane sizes of ``h x w`` planes and ``KH x KW`` windows, the work items of ``ppi`` planes
    and the checkpoint segments of ``K`` steps."""
    plane = h * w
    items = (M // plane + ppi - 1) // ppi
    return (_constants(params, reset, ge), (nd != 0, sid, params[P_C0], params[P_C1]), full == 0, plane,
            (h // KH) * (w // KW), items, (T + K - 1) // K)


class Kernels(NamedTuple):
    """The compiled kernels of one window size (arguments: see :func:`kernels`)."""

    forward: Callable
    backward: Callable


@functools.lru_cache(maxsize=None)
def kernels(kh: int, kw: int) -> Kernels:
    """The fused kernels for ``kh x kw`` windows, stride = window (compiled on first use, then from
    Numba's cache):

    * ``forward(x, beta, thr, alpha, params, reset, delay, ge, cuba, y, q, ckv, cki, K, h, w, ppi)``:
      arguments as :func:`spike.kernels.lif_cpu.lif_forward` (no membrane output), pooled spikes
      to ``y`` and argmax to ``q`` (``[T, P*ho*wo]``), ``ppi`` planes per work item
      (:func:`planes_per_item`);
    * ``backward(x, beta, thr, alpha, params, reset, delay, ge, cuba, nd, sid, gy, gy_tstep, q, ckv,
      cki, K, dx, dbeta, dthr, dalpha, full, h, w, ppi)``: as :func:`spike.kernels.lif_cpu.lif_backward`
      with the pooled spikes' gradient ``gy`` (``[T, P*ho*wo]``, or one broadcast row with
      ``gy_tstep=0``) in place of the spikes' and no membrane gradient.
    """
    if not kernel_supported((kh, kw)):
        raise ValueError(f"lif_pool kernels: kh and kw must be in 1..8, got ({kh}, {kw})")
    KH, KW = int(kh), int(kw)

    @njit(cache=True, parallel=True, error_model="numpy")
    def forward(x, beta, thr, alpha, params, reset, delay, ge, cuba, y, q, ckv, cki, K, h, w, ppi):
        T, M = x.shape
        cst = _constants(params, reset, ge)
        plane = h * w
        oplane = (h // KH) * (w // KW)
        P = M // plane
        for b in prange((P + ppi - 1) // ppi):
            j0, j1, n, bb, tb, ab = _work_item(b, ppi * plane, M, beta, thr, alpha, cuba)
            v, ibuf = _forward_buffers(x, n, ckv, cki, j0, j1, cst[1], cuba)
            srow = np.empty(n, dtype=x.dtype)
            for t in range(T):
                _forward_step(x[t, j0:j1], t, v, srow, ibuf, ab, bb, tb, n, cst, delay, cuba)
                _pool_row(srow, y[t], q[t], (j0 // plane) * oplane, n // plane, h, w, KH, KW)
                _checkpoint(t, T, K, v, ibuf, ckv, cki, j0, j1, n, cuba)

    @njit(cache=True, parallel=True, error_model="numpy")
    def backward(x, beta, thr, alpha, params, reset, delay, ge, cuba, nd, sid, gy, gy_tstep, q, ckv, cki, K,
                 dx, dbeta, dthr, dalpha, full, h, w, ppi):
        T, M = x.shape
        cst, adj, lean, plane, oplane, items, nq = _backward_setup(params, reset, ge, nd, sid, full, T, M, K, h, w,
                                                                   ppi, KH, KW)
        for b in prange(items):
            j0, j1, n, bb, tb, ab = _work_item(b, ppi * plane, M, beta, thr, alpha, cuba)
            V, H, I, dc, gnext, gi, acc = _backward_buffers(x, n, K, delay, cuba, lean)
            gsrow = np.empty(n, dtype=x.dtype)
            gvrow = np.zeros(n, dtype=x.dtype)  # the membrane is no output: its gradient is zero
            for qq in range(nq - 1, -1, -1):
                t0 = qq * K
                L = min(T, t0 + K) - t0
                _recompute_segment(x, qq, t0, L, j0, j1, n, V, H, I, ckv, cki, ab, bb, tb, cst, delay, cuba, lean)
                for u in range(L - 1, -1, -1):
                    t = t0 + u
                    _unpool_row(gy[t * gy_tstep], q[t], (j0 // plane) * oplane, gsrow, n // plane, h, w, KH, KW)
                    _adjoint_step(gsrow, gvrow, t, u, V, H, I, gnext, gi, dc, dx[t, j0:j1], acc, ab, bb, tb, n,
                                  cst, adj, delay, cuba, lean)
            _parameter_sums(acc, dbeta, dthr, dalpha, j0, j1, n, cuba, lean)

    return Kernels(forward, backward)
