"""Numba CUDA kernels for the fused WKV (forward and backward): one thread per (batch, channel),
a loop over tokens. Same recurrences and operation order as the CPU kernels in
:mod:`spike.kernels.wkv` (whose docstring holds the formulas and the derivation of the backward).

``numba.cuda`` is imported lazily: nothing here is touched on a CPU-only run. Under
``NUMBA_ENABLE_CUDASIM=1`` the kernels run in Numba's CUDA simulator on numpy arrays; that is how
the tests check them against the CPU kernels on machines without a GPU. On a GPU, ``exp`` is
libdevice's and products may be contracted into FMAs, so results agree with the CPU kernels to
rounding, not bit for bit. The backward recomputes the forward sweep into global scratch
(``3 x [T, M]``: wkv, ``gy/den`` and ``-q``) and then runs the reverse sweep.

Layout: ``k``, ``v``, ``y``, ``gy``, ``gk``, ``gv`` are ``[T, M]`` with ``M = B*C``; ``w``, ``u``
``[C]``; state and per-row ``gw``, ``gu`` ``[M]``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from spike.kernels.wkv import NEG

__all__ = ["available", "simulator_enabled", "forward", "backward", "forward_numpy",
           "backward_numpy", "forward_torch", "backward_torch", "THREADS"]

THREADS = 128
cuda = None  # numba.cuda, bound on first use (a module global so that the simulator can swap it)


def simulator_enabled() -> bool:
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


def available() -> bool:
    """True when Numba can launch CUDA kernels here (a GPU, or the simulator)."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


@functools.lru_cache(maxsize=None)
def _kernels():
    global cuda
    from numba import cuda as _cuda

    cuda = _cuda

    @cuda.jit
    def fwd(w, u, k, v, y, sa, sb, sp, C):
        m = cuda.grid(1)
        T = k.shape[0]
        M = k.shape[1]
        if m >= M:
            return
        c = m % C
        wc = w[c]
        uc = u[c]
        a = sa[m]
        b = sb[m]
        p = sp[m]
        for t in range(T):
            kk = k[t, m]
            vv = v[t, m]
            ww = uc + kk
            q = p if p > ww else ww
            e1 = math.exp(p - q)
            e2 = math.exp(ww - q)
            y[t, m] = (e1 * a + e2 * vv) / (e1 * b + e2)
            ww = p + wc
            q = ww if ww > kk else kk
            e1 = math.exp(ww - q)
            e2 = math.exp(kk - q)
            a = e1 * a + e2 * vv
            b = e1 * b + e2
            p = q
        sa[m] = a
        sb[m] = b
        sp[m] = p

    @cuda.jit
    def bwd(w, u, k, v, gy, consts, gk, gv, gw, gu, Y, R, LQ, C):
        m = cuda.grid(1)
        T = k.shape[0]
        M = k.shape[1]
        if m >= M:
            return
        c = m % C
        wc = w[c]
        uc = u[c]
        zero = consts[0]
        neg = consts[1]
        a = zero
        b = zero
        p = neg
        da = zero
        db = zero
        accw = zero
        accu = zero
        for t in range(T):
            kk = k[t, m]
            vv = v[t, m]
            g = gy[t, m]
            ww = uc + kk
            q = p if p > ww else ww
            e1 = math.exp(p - q)
            e2 = math.exp(ww - q)
            den = e1 * b + e2
            yy = (e1 * a + e2 * vv) / den
            r = g / den
            accw += r * (da - yy * db) * e1
            accu += r * (vv - yy) * e2
            Y[t, m] = yy
            R[t, m] = r
            LQ[t, m] = -q
            ww = p + wc
            q = ww if ww > kk else kk
            e1 = math.exp(ww - q)
            e2 = math.exp(kk - q)
            da = e1 * (a + da)
            db = e1 * (b + db)
            a = e1 * a + e2 * vv
            b = e1 * b + e2
            p = q
        gw[m] = accw
        gu[m] = accu
        gp = zero
        gq = zero
        o = neg
        for i in range(T):
            t = T - 1 - i
            kk = k[t, m]
            vv = v[t, m]
            yy = Y[t, m]
            r = R[t, m]
            lq = LQ[t, m]
            e = r * math.exp(uc + kk + lq)
            big = math.exp(kk + o)
            gk[t, m] = e * (vv - yy) + big * (gp * vv + gq)
            gv[t, m] = e + big * gp
            wo = wc + o
            no = wo if wo > lq else lq
            ea = math.exp(wo - no)
            eb = r * math.exp(lq - no)
            gp = ea * gp + eb
            gq = ea * gq - eb * yy
            o = no

    return fwd, bwd


def _grid(M: int) -> int:
    return max(1, (M + THREADS - 1) // THREADS)


def forward(w, u, k, v, y, sa, sb, sp, C, stream=0):
    """Launch the forward kernel on CUDA-array-like arguments (device arrays, or numpy arrays in
    the simulator)."""
    fwd, _ = _kernels()
    fwd[_grid(k.shape[1]), THREADS, stream](w, u, k, v, y, sa, sb, sp, int(C))


def backward(w, u, k, v, gy, consts, gk, gv, gw, gu, Y, R, LQ, C, stream=0):
    """Launch the backward kernel (``consts = [0, NEG]`` in the data's dtype)."""
    _, bwd = _kernels()
    bwd[_grid(k.shape[1]), THREADS, stream](w, u, k, v, gy, consts, gk, gv, gw, gu, Y, R, LQ, int(C))


def _to_dev(a):
    from numba import cuda

    return a if simulator_enabled() else cuda.to_device(a)


def _from_dev(a):
    return a if simulator_enabled() else a.copy_to_host()


def forward_numpy(w, u, k, v, state=None):
    """As :func:`spike.kernels.wkv.forward_numpy` (``k``, ``v`` ``[T, B, C]``), on the GPU/simulator."""

    k = np.ascontiguousarray(k)
    T, B, C = k.shape
    dt = k.dtype
    M = B * C
    if state is None:
        st = [np.zeros(M, dt), np.zeros(M, dt), np.full(M, NEG, dt)]
    else:
        st = [np.array(s, dtype=dt).reshape(M) for s in state]
    dev = [_to_dev(np.ascontiguousarray(a, dt)) for a in (w, u, k.reshape(T, M),
                                                          np.asarray(v, dt).reshape(T, M))]
    y = _to_dev(np.zeros((T, M), dt))
    st = [_to_dev(s) for s in st]
    forward(*dev, y, *st, C)
    return _from_dev(y).reshape(T, B, C), tuple(_from_dev(s).reshape(B, C) for s in st)


def backward_numpy(w, u, k, v, gy):
    """As :func:`spike.kernels.wkv.backward_numpy`: returns ``(gw, gu, gk, gv)``."""

    k = np.ascontiguousarray(k)
    T, B, C = k.shape
    dt = k.dtype
    M = B * C
    dev = [_to_dev(np.ascontiguousarray(a, dt)) for a in (w, u, k.reshape(T, M),
                                                          np.asarray(v, dt).reshape(T, M),
                                                          np.asarray(gy, dt).reshape(T, M),
                                                          np.array([0.0, NEG], dt))]
    out = [_to_dev(np.zeros(s, dt)) for s in ((T, M), (T, M), (M,), (M,), (T, M), (T, M), (T, M))]
    backward(*dev, *out, C)
    gk, gv, gw, gu = (_from_dev(a) for a in out[:4])
    return (gw.reshape(B, C).sum(0), gu.reshape(B, C).sum(0), gk.reshape(T, B, C), gv.reshape(T, B, C))


def _ctx(x):
    import torch
    from numba import cuda

    stream = cuda.external_stream(torch.cuda.current_stream(x.device).cuda_stream)
    return cuda.as_cuda_array, stream


def forward_torch(w, u, k, v, y, state) -> None:
    """Forward on torch CUDA tensors (``k``, ``v``, ``y`` ``[T, B, C]``; ``state`` a
    :class:`spike.kernels.wkv.WKVState` updated in place)."""
    import torch

    T, B, C = k.shape
    M = B * C
    with torch.cuda.device(k.device):
        arr, stream = _ctx(k)
        forward(arr(w), arr(u), arr(k.view(T, M)), arr(v.view(T, M)), arr(y.view(T, M)),
                arr(state.a.view(M)), arr(state.b.view(M)), arr(state.p.view(M)), C, stream=stream)


def backward_torch(w, u, k, v, gy, gk, gv, gw, gu) -> None:
    """Backward on torch CUDA tensors (``gw``, ``gu`` ``[B, C]`` per batch row, ``gw`` w.r.t.
    ``w``)."""
    import torch


    T, B, C = k.shape
    M = B * C
    with torch.cuda.device(k.device):
        arr, stream = _ctx(k)
        consts = torch.tensor([0.0, NEG], dtype=k.dtype, device=k.device)
        scratch = [k.new_empty((T, M)) for _ in range(3)]
        backward(arr(w), arr(u), arr(k.view(T, M)), arr(v.view(T, M)), arr(gy.view(T, M)),
                 arr(consts), arr(gk.view(T, M)), arr(gv.view(T, M)), arr(gw.view(M)),
                 arr(gu.view(M)), *(arr(s) for s in scratch), C, stream=stream)
