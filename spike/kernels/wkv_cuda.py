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

from spike.compat.numba_cuda import numba_cuda
from spike.kernels.lif_cuda import available, from_dev, simulator_enabled, to_dev, torch_launch
from spike.kernels.wkv import NEG

__all__ = ["available", "simulator_enabled", "forward", "backward", "forward_numpy",
           "backward_numpy", "forward_torch", "backward_torch", "THREADS"]

THREADS = 128
cuda = None  # numba.cuda, bound on first use (a module global so that the simulator can swap it)


@functools.lru_cache(maxsize=None)
def _kernels():
    global cuda
    cuda = numba_cuda()

    @cuda.jit(device=True)
    def lse(x, y):
        """``(q, exp(x - q), exp(y - q))`` with ``q = max(x, y)`` (``y`` on a tie)."""
        q = x if x > y else y
        return q, math.exp(x - q), math.exp(y - q)

    @cuda.jit(device=True)
    def channel(w, u, m, C):
        """``(w[c], u[c])``: the decay and bonus of row ``m``'s channel ``c = m % C``."""
        c = m % C
        return w[c], u[c]

    @cuda.jit(device=True)
    def mix(a, b, e1, e2, vv):
        """``(e1*a + e2*vv, e1*b + e2)``: the output's numerator and denominator, or the next state."""
        return e1 * a + e2 * vv, e1 * b + e2

    @cuda.jit
    def fwd(w, u, k, v, y, sa, sb, sp, C):
        m = cuda.grid(1)
        T, M = k.shape
        if m >= M:
            return
        wc, uc = channel(w, u, m, C)
        a = sa[m]
        b = sb[m]
        p = sp[m]
        for t in range(T):
            kk = k[t, m]
            vv = v[t, m]
            q, e1, e2 = lse(p, uc + kk)
            num, den = mix(a, b, e1, e2, vv)
            y[t, m] = num / den
            q, e1, e2 = lse(p + wc, kk)
            a, b = mix(a, b, e1, e2, vv)
            p = q
        sa[m] = a
        sb[m] = b
        sp[m] = p

    @cuda.jit
    def bwd(w, u, k, v, gy, consts, gk, gv, gw, gu, Y, R, LQ, C):
        m = cuda.grid(1)
        T, M = k.shape
        if m >= M:
            return
        wc, uc = channel(w, u, m, C)
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
            q, e1, e2 = lse(p, uc + kk)
            num, den = mix(a, b, e1, e2, vv)
            yy = num / den
            r = g / den
            accw += r * (da - yy * db) * e1
            accu += r * (vv - yy) * e2
            Y[t, m] = yy
            R[t, m] = r
            LQ[t, m] = -q
            q, e1, e2 = lse(p + wc, kk)
            da = e1 * (a + da)
            db = e1 * (b + db)
            a, b = mix(a, b, e1, e2, vv)
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
            o, ea, el = lse(wc + o, lq)
            eb = r * el
            gp = ea * gp + eb
            gq = ea * gq - eb * yy

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
    dev = [to_dev(np.ascontiguousarray(a, dt)) for a in (w, u, k.reshape(T, M),
                                                         np.asarray(v, dt).reshape(T, M))]
    y = to_dev(np.zeros((T, M), dt))
    st = [to_dev(s) for s in st]
    forward(*dev, y, *st, C)
    return from_dev(y).reshape(T, B, C), tuple(from_dev(s).reshape(B, C) for s in st)


def backward_numpy(w, u, k, v, gy):
    """As :func:`spike.kernels.wkv.backward_numpy`: returns ``(gw, gu, gk, gv)``."""

    k = np.ascontiguousarray(k)
    T, B, C = k.shape
    dt = k.dtype
    M = B * C
    dev = [to_dev(np.ascontiguousarray(a, dt)) for a in (w, u, k.reshape(T, M),
                                                         np.asarray(v, dt).reshape(T, M),
                                                         np.asarray(gy, dt).reshape(T, M),
                                                         np.array([0.0, NEG], dt))]
    out = [to_dev(np.zeros(s, dt)) for s in ((T, M), (T, M), (M,), (M,), (T, M), (T, M), (T, M))]
    backward(*dev, *out, C)
    gk, gv, gw, gu = (from_dev(a) for a in out[:4])
    return (gw.reshape(B, C).sum(0), gu.reshape(B, C).sum(0), gk.reshape(T, B, C), gv.reshape(T, B, C))


def forward_torch(w, u, k, v, y, state) -> None:
    """Forward on torch CUDA tensors (``k``, ``v``, ``y`` ``[T, B, C]``; ``state`` a
    :class:`spike.kernels.wkv.WKVState` updated in place)."""
    import torch

    T, B, C = k.shape
    M = B * C
    with torch.cuda.device(k.device):
        arr, stream = torch_launch(k)
        forward(arr(w), arr(u), arr(k.view(T, M)), arr(v.view(T, M)), arr(y.view(T, M)),
                arr(state.a.view(M)), arr(state.b.view(M)), arr(state.p.view(M)), C, stream=stream)


def backward_torch(w, u, k, v, gy, gk, gv, gw, gu) -> None:
    """Backward on torch CUDA tensors (``gw``, ``gu`` ``[B, C]`` per batch row, ``gw`` w.r.t.
    ``w``)."""
    import torch


    T, B, C = k.shape
    M = B * C
    with torch.cuda.device(k.device):
        arr, stream = torch_launch(k)
        consts = torch.tensor([0.0, NEG], dtype=k.dtype, device=k.device)
        scratch = [k.new_empty((T, M)) for _ in range(3)]
        backward(arr(w), arr(u), arr(k.view(T, M)), arr(v.view(T, M)), arr(gy.view(T, M)),
                 arr(consts), arr(gk.view(T, M)), arr(gv.view(T, M)), arr(gw.view(M)),
                 arr(gu.view(M)), *(arr(s) for s in scratch), C, stream=stream)
