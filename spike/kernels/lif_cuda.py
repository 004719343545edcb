"""Numba CUDA kernels for the fused multi-step LIF: one thread per neuron, a loop over time.

Same semantics and operation order as the CPU kernels (:mod:`spike.kernels.lif_cpu`, whose docstring
holds the formulas and the adjoint). ``numba.cuda`` is imported lazily: nothing here is touched on a
CPU-only run. Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in Numba's CUDA simulator on
numpy arrays (that is how the tests check them on machines without a GPU).

Bit-exactness with the CPU: NVVM contracts ``a*b + c`` into a fused multiply-add by default, which
rounds once instead of twice. Every product here therefore goes through ``__fmul_rn`` /
``__dmul_rn`` (libdevice; never contracted), so forward values match the CPU kernels bit for bit.
Divisions are IEEE (Numba's default ``prec_div``). Only the sigmoid surrogate's ``exp`` may differ
from the CPU's libm in the last ulp.

The backward recomputes the forward of each neuron into global scratch (``[T+1, M]``; one more
for ``h`` with ``reset_delay=False`` and for the synaptic current), then runs the adjoint.
Works with Numba's built-in ``numba.cuda`` and with the ``numba-cuda`` package (no numpy<2 APIs).
The host plumbing (:func:`simulator_enabled`, :func:`available`, :func:`to_dev`, :func:`from_dev`,
:func:`torch_launch`) serves :mod:`spike.kernels.wkv_cuda` too.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from spike.compat.numba_cuda import numba_cuda
from spike.kernels.lif_cpu import RESET_CODES, SURROGATE_IDS, grad_rows, make_params

__all__ = [
    "available",
    "simulator_enabled",
    "forward",
    "backward",
    "forward_numpy",
    "backward_numpy",
    "forward_torch",
    "backward_torch",
    "THREADS",
]

THREADS = 128  # threads per block
cuda = None  # numba.cuda, bound on first use (a module global so that the simulator can swap it)


def simulator_enabled() -> bool:
    """True when ``numba.cuda`` is Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba import config

    return bool(getattr(config, "ENABLE_CUDASIM", False))


def available() -> bool:
    """True when Numba can launch CUDA kernels here (a GPU, or the simulator)."""
    try:
        return bool(numba_cuda().is_available())
    except Exception:
        return False


@functools.lru_cache(maxsize=None)
def _kernels(kind: str):
    """Compile (lazily, once per dtype) the forward and backward kernels. ``kind``: 'f4'/'f8'."""
    global cuda
    cuda = numba_cuda()

    if simulator_enabled():
        def mul(a, b):
            return a * b
    else:
        from numba.cuda import libdevice

        mul = libdevice.fmul_rn if kind == "f4" else libdevice.dmul_rn

    @cuda.jit(device=True)
    def fire(v, th, ge, zero, one):
        return one if (v > th) or (ge and v == th) else zero

    @cuda.jit(device=True)
    def surrogate(u, sid, c0, c1, one):
        if sid == 0:  # atan
            w = mul(c1, u)
            return c0 / (one + mul(w, w))
        if sid == 1:  # fast sigmoid
            d = mul(c0, abs(u)) + one
            return one / mul(d, d)
        if sid == 2:  # sigmoid (stable form)
            e = math.exp(mul(-c0, abs(u)))
            return mul(c0, e) / mul(one + e, one + e)
        if sid == 3:  # snnTorch triangular
            return c0 if u < 0 else -c0
        return one

    @cuda.jit(device=True)
    def constants(j, beta, thr, alpha, params, reset, ge, cuba):
        """Neuron ``j``'s ``(g, zero, one, kz, ks, geb, b, th, al)``: gain, 0, 1, the reset switches
        (``kz`` 1 for "zero", ``ks`` for "subtract"), ``fire_ge``, beta, thr, alpha (0 without cuba)."""
        zero = params[3]
        one = params[4]
        return (params[0], zero, one, one if reset == 1 else zero, reset == 0, ge != 0, beta[j], thr[j],
                alpha[j] if cuba else zero)

    def sweep_fn(recompute):
        """The forward of neuron ``j`` over all steps from the zero state, with :func:`constants`
        ``k``: spikes into ``out[t]``, ``v_t`` into ``mem[t]`` when ``need_mem``; ``recompute``
        (the backward's scratch): ``v_t`` into ``out[t + 1]``, ``h_t`` into ``mem[t]`` (without
        delay) and ``i_t`` into ``cur[t + 1]`` (cuba)."""

        def sweep(x, j, k, delay, cuba, out, mem, cur, need_mem):
            g, zero, one, kz, ks, geb, b, th, al = k
            v = zero
            i = zero
            sp = zero
            for t in range(x.shape[0]):
                c = x[t, j]
                if cuba:
                    i = mul(al, i) + c
                    if recompute:
                        cur[t + 1, j] = i
                    c = i
                if delay:
                    a = mul(one - mul(kz, sp), v)
                    r = mul(th, sp) if ks else zero
                    v = (mul(b, a) + mul(g, c)) - r
                    s = fire(v, th, geb, zero, one)
                    sp = s
                else:
                    h = mul(b, v) + mul(g, c)
                    if recompute:
                        mem[t, j] = h
                    s = fire(h, th, geb, zero, one)
                    r = mul(th, s) if ks else zero
                    v = mul(h, one - mul(kz, s)) - r
                if recompute:
                    out[t + 1, j] = v
                else:
                    out[t, j] = s
                    if need_mem:
                        mem[t, j] = v

        return cuda.jit(device=True)(sweep)

    forward_sweep = sweep_fn(False)
    recompute_sweep = sweep_fn(True)

    @cuda.jit
    def fwd(x, beta, thr, alpha, params, reset, delay, ge, cuba, spk, mem, need_mem):
        j = cuda.grid(1)
        if j >= x.shape[1]:
            return
        k = constants(j, beta, thr, alpha, params, reset, ge, cuba)
        forward_sweep(x, j, k, delay, cuba, spk, mem, mem, need_mem)

    @cuda.jit
    def bwd(x, beta, thr, alpha, params, reset, delay, ge, cuba, nd, sid,
            gs, gs_tstep, gv, gv_tstep, dx, dbeta, dthr, dalpha, V, H, I):
        j = cuda.grid(1)
        T, M = x.shape
        if j >= M:
            return
        k = constants(j, beta, thr, alpha, params, reset, ge, cuba)
        g, zero, one, kz, ks, geb, b, th, al = k
        c0 = params[1]
        c1 = params[2]
        ndb = nd != 0
        # ---- recompute the forward: V[t+1] = v_t, H[t] = h_t, I[t+1] = i_t
        V[0, j] = zero
        if cuba:
            I[0, j] = zero
        recompute_sweep(x, j, k, delay, cuba, V, H, I, False)
        # ---- adjoint
        gnext = zero
        gi = zero
        acc_b = zero
        acc_t = zero
        acc_a = zero
        for tt in range(T):
            t = T - 1 - tt
            gsv = gs[t * gs_tstep, j]
            gvv = gv[t * gv_tstep, j]
            if delay:
                vv = V[t + 1, j]
                pv = V[t, j]
                sv = fire(vv, th, geb, zero, one)
                sp = fire(pv, th, geb, zero, one) if t > 0 else zero
                sg = surrogate(vv - th, sid, c0, c1, one)
                dvds = mul(-mul(b, vv), kz) - (th if ks else zero)
                Gs = gsv + (mul(gnext, dvds) if ndb else zero)
                Gv = (gvv + mul(gnext, mul(b, one - mul(kz, sv)))) + mul(Gs, sg)
                gnext = Gv
                dc = mul(g, Gv)
                acc_b = acc_b + mul(Gv, mul(one - mul(kz, sp), pv))
                acc_t = acc_t + (mul(-Gs, sg) - (mul(Gv, sp) if ks else zero))
            else:
                hh = H[t, j]
                pv = V[t, j]
                sv = fire(hh, th, geb, zero, one)
                sg = surrogate(hh - th, sid, c0, c1, one)
                Gv = gvv + mul(b, gnext)
                dvds = mul(-hh, kz) - (th if ks else zero)
                Gs = gsv + (mul(Gv, dvds) if ndb else zero)
                Gh = mul(Gv, one - mul(kz, sv)) + mul(Gs, sg)
                gnext = Gh
                dc = mul(g, Gh)
                acc_b = acc_b + mul(Gh, pv)
                acc_t = acc_t + (mul(-Gs, sg) - (mul(Gv, sv) if ks else zero))
            if cuba:
                G = dc + mul(al, gi)
                gi = G
                dx[t, j] = G
                acc_a = acc_a + mul(G, I[t, j])
            else:
                dx[t, j] = dc
        dbeta[j] = acc_b
        dthr[j] = acc_t
        if cuba:
            dalpha[j] = acc_a

    return fwd, bwd


def _kind(dtype) -> str:
    dt = np.dtype(dtype)
    if dt == np.float32:
        return "f4"
    if dt == np.float64:
        return "f8"
    raise ValueError(f"dtype: the CUDA kernels support float32 and float64, got {dt}")


def _threads() -> int:
    # the simulator runs every thread of a block as a Python thread: keep blocks small there
    return 32 if simulator_enabled() else THREADS


def _grid(M: int) -> int:
    return max(1, (M + _threads() - 1) // _threads())


def forward(x, beta, thr, alpha, params, reset, delay, ge, cuba, spk, mem, need_mem, stream=0):
    """Launch the forward kernel on CUDA-array-like arguments (device arrays, or numpy arrays in
    the simulator). Shapes and meaning as :func:`spike.kernels.lif_cpu.lif_forward` (no checkpoints)."""
    T, M = x.shape
    fwd, _ = _kernels(_kind(x.dtype))
    fwd[_grid(M), _threads(), stream](x, beta, thr, alpha, params, int(reset), int(delay), int(ge),
                                   int(cuba), spk, mem, bool(need_mem))


def backward(x, beta, thr, alpha, params, reset, delay, ge, cuba, nd, sid, gs, gs_tstep, gv,
             gv_tstep, dx, dbeta, dthr, dalpha, V, H, I, stream=0):
    """Launch the backward kernel. ``V``: scratch ``[T+1, M]``; ``H``: ``[T, M]`` when
    ``delay == 0`` (else any 2-D array); ``I``: ``[T+1, M]`` when ``cuba`` (else any 2-D)."""
    T, M = x.shape
    _, bwd = _kernels(_kind(x.dtype))
    bwd[_grid(M), _threads(), stream](x, beta, thr, alpha, params, int(reset), int(delay), int(ge),
                                   int(cuba), int(nd), int(sid), gs, int(gs_tstep), gv,
                                   int(gv_tstep), dx, dbeta, dthr, dalpha, V, H, I)


# ---------------------------------------------------------------------------------------------
# numpy entry points (the simulator tests) -- same signatures as spike.kernels.lif_cpu.forward/backward
# ---------------------------------------------------------------------------------------------


def to_dev(a: np.ndarray) -> Any:
    """``a`` on the device (the array itself under the simulator)."""
    return a if simulator_enabled() else numba_cuda().to_device(a)


def from_dev(a: Any) -> np.ndarray:
    """A device array back on the host (the array itself under the simulator)."""
    return a if simulator_enabled() else a.copy_to_host()


def forward_numpy(x, beta, thr, alpha=None, *, gain=1.0, reset="subtract", reset_delay=True,
                  fire_ge=False, need_mem=True):
    """Returns ``(spk, mem)`` as numpy arrays (``mem`` None without ``need_mem``)."""

    x = np.ascontiguousarray(x)
    T, M = x.shape
    dt = x.dtype
    cuba = alpha is not None
    per = lambda p: np.array(np.broadcast_to(np.asarray(p, dt), (M,)), dtype=dt)  # noqa: E731
    args = [to_dev(a) for a in (x, per(beta), per(thr), per(alpha) if cuba else np.zeros(1, dt),
                                make_params(gain, 0, 2.0, dt))]
    spk = to_dev(np.zeros((T, M), dt))
    mem = to_dev(np.zeros((T, M) if need_mem else (1, 1), dt))
    forward(*args, RESET_CODES[reset], int(reset_delay), int(fire_ge), int(cuba), spk, mem,
            need_mem)
    return from_dev(spk), (from_dev(mem) if need_mem else None)


def backward_numpy(x, beta, thr, alpha=None, gs=None, gv=None, *, gain=1.0, reset="subtract",
                   reset_delay=True, fire_ge=False, detach_reset=True, surrogate="atan",
                   surrogate_param=2.0):
    """Returns ``(dx, dbeta, dthr, dalpha)`` as numpy arrays (``dalpha`` None without alpha)."""

    x = np.ascontiguousarray(x)
    T, M = x.shape
    dt = x.dtype
    cuba = alpha is not None
    sid = SURROGATE_IDS[surrogate] if isinstance(surrogate, str) else int(surrogate)
    per = lambda p: np.array(np.broadcast_to(np.asarray(p, dt), (M,)), dtype=dt)  # noqa: E731

    gs_a, gs_st = grad_rows(gs, M, dt)
    gv_a, gv_st = grad_rows(gv, M, dt)
    dev = [to_dev(a) for a in (x, per(beta), per(thr), per(alpha) if cuba else np.zeros(1, dt),
                               make_params(gain, sid, surrogate_param, dt))]
    out = [to_dev(np.zeros(s, dt)) for s in ((T, M), (M,), (M,), (M,) if cuba else (1,))]
    V = to_dev(np.zeros((T + 1, M), dt))
    H = to_dev(np.zeros((T, M) if not reset_delay else (1, 1), dt))
    I = to_dev(np.zeros((T + 1, M) if cuba else (1, 1), dt))
    backward(*dev, RESET_CODES[reset], int(reset_delay), int(fire_ge), int(cuba),
             int(not detach_reset), sid, to_dev(gs_a), gs_st, to_dev(gv_a), gv_st, *out, V, H, I)
    dx, dbeta, dthr, dalpha = (from_dev(a) for a in out)
    return dx, dbeta, dthr, (dalpha if cuba else None)


# ---------------------------------------------------------------------------------------------
# torch entry points (used by spike.kernels.lif for CUDA tensors)
# ---------------------------------------------------------------------------------------------


def torch_launch(x: Any) -> tuple[Any, Any]:
    """``(as_cuda_array, stream)`` to launch on torch CUDA tensors: the converter to Numba device
    arrays and torch's current stream on ``x``'s device."""
    import torch

    cuda = numba_cuda()
    stream = cuda.external_stream(torch.cuda.current_stream(x.device).cuda_stream)
    return cuda.as_cuda_array, stream


def _params_dev(cfg, x):
    import torch


    p = make_params(cfg.gain, cfg.surrogate_id, cfg.surrogate_param, np.dtype(str(x.dtype).split(".")[-1]))
    return torch.from_numpy(p).to(x.device)


def forward_torch(x, beta, thr, alpha, cfg, spk, mem):
    """Forward on torch CUDA tensors (``x [T, M]``; ``beta``, ``thr``, ``alpha`` ``[M]``)."""
    import torch

    with torch.cuda.device(x.device):
        arr, stream = torch_launch(x)
        cuba = alpha is not None
        al = alpha if cuba else x.new_zeros(1)
        mm = mem if cfg.need_mem else x.new_empty((1, 1))
        p = _params_dev(cfg, x)
        forward(arr(x.detach()), arr(beta.detach()), arr(thr.detach()), arr(al.detach()), arr(p),
                cfg.reset, int(cfg.reset_delay), int(cfg.fire_ge), int(cuba), arr(spk), arr(mm),
                cfg.need_mem, stream=stream)


def backward_torch(x, beta, thr, alpha, cfg, gs, gs_tstep, gv, gv_tstep, dx, dbeta, dthr, dalpha):
    """Backward on torch CUDA tensors (arguments as in :class:`spike.kernels.lif.LIFFunction`)."""
    import torch

    with torch.cuda.device(x.device):
        arr, stream = torch_launch(x)
        T, M = x.shape
        cuba = alpha is not None
        al = alpha if cuba else x.new_zeros(1)
        da = dalpha if cuba else x.new_zeros(1)
        V = x.new_empty((T + 1, M))
        H = x.new_empty((T, M) if not cfg.reset_delay else (1, 1))
        I = x.new_empty((T + 1, M) if cuba else (1, 1))
        p = _params_dev(cfg, x)
        backward(arr(x.detach()), arr(beta.detach()), arr(thr.detach()), arr(al.detach()), arr(p),
                 cfg.reset, int(cfg.reset_delay), int(cfg.fire_ge), int(cuba),
                 int(not cfg.detach_reset), cfg.surrogate_id, arr(gs), gs_tstep, arr(gv), gv_tstep,
                 arr(dx), arr(dbeta), arr(dthr), arr(da), arr(V), arr(H), arr(I), stream=stream)
