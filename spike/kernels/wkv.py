"""The WKV recurrence of RWKV-4 time mixing (used by SpikeGPT's SRWKV), fused: forward AND backward.

Per channel ``c`` (``w = -exp(time_decay)``, ``u = time_first``; ``k_t``, ``v_t`` the key and value
of token ``t``)::

    wkv_t = (a_{t-1} + e^{u+k_t} v_t) / (b_{t-1} + e^{u+k_t})
    a_t = e^w a_{t-1} + e^{k_t} v_t ;   b_t = e^w b_{t-1} + e^{k_t} ;   a_{-1} = b_{-1} = 0

i.e. ``wkv_t`` is the average of ``v_0..v_t`` weighted by ``softmax_i(l_{t,i})`` with
``l_{t,i} = (t-1-i) w + k_i`` for ``i < t`` and ``l_{t,t} = u + k_t`` (:func:`wkv_naive`).

Running-max stabilisation (as the reference CUDA kernel): the state is kept as ``(a', b', p)``
with ``a = a' e^p``, ``b = b' e^p``; ``p`` starts at ``-1e38`` (:data:`NEG`)::

    q = max(p, u+k);  e1 = e^{p-q};  e2 = e^{u+k-q};  wkv = (e1 a' + e2 v) / (e1 b' + e2)
    q = max(p+w, k);  e1 = e^{p+w-q}; e2 = e^{k-q};   a' = e1 a' + e2 v;  b' = e1 b' + e2;  p = q

Backward (derived here; ``D_t = e^{q_t}(e1 b' + e2)`` is the denominator, ``r_t = gy_t / (e1 b' + e2)``):
a forward sweep carries ``da = dA/dw``, ``db = dB/dw`` on the same scale as ``a'``, ``b'``
(``da <- e1 (a' + da)``) and accumulates ``gw += gy (da - wkv db) e1 / den``,
``gu += gy (v - wkv) e2 / den``; it keeps ``wkv_t``, ``r_t`` and ``-q_t``. A reverse sweep carries
``gp = sum_{s>t} e^{(s-1-t) w - q_s - o} r_s`` and ``gq = -sum_{s>t} (...) r_s wkv_s`` with their own
running max ``o``::

    gk_t = r_t e^{u+k_t-q_t} (v_t - wkv_t) + e^{k_t+o} (gp v_t + gq)
    gv_t = r_t e^{u+k_t-q_t}              + e^{k_t+o} gp

Every exponent is <= 0 (``q_t >= u+k_t`` and ``q_s >= k_t + (s-1-t) w``), so nothing overflows
for any ``k``. ``d/d time_decay = w * d/dw``. Gradients of ``w``, ``u`` are summed over the batch.

Implementations (all take ``k``, ``v`` time-first ``[T, B, C]``, ``time_decay``, ``time_first`` ``[C]``):

* :func:`wkv` - the fused kernels as a torch autograd Function: Numba on CPU (``prange`` over
  (batch, block of channels); inside, time outer and channels inner over contiguous rows),
  Numba CUDA on CUDA tensors (:mod:`spike.kernels.wkv_cuda`, imported lazily; one thread per channel).
  The backward recomputes the forward sweep (nothing but the inputs is saved).
* :func:`wkv_with_state` - the same forward kernel from a given state, returning the final state
  (RNN-mode inference and prefill; no autograd). A call from the zero state runs the very same
  arithmetic as :func:`wkv`, so token-by-token and whole-sequence results agree bit for bit.
* :func:`wkv_loop` - the stabilised recurrence as a per-token Python loop of torch ops
  (autograd through it; the slow baseline, and the path on other devices).
* :func:`wkv_naive` - the O(T^2) definition (a masked softmax), the test oracle.

State layout: ``(a, b, p)``, each ``[B, C]`` (:func:`empty_state`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import numpy as np
import torch
from numba import njit, prange
from torch.autograd.function import once_differentiable

from spike.numba_threads import threads_at_most

__all__ = [
    "NEG",
    "WKVState",
    "empty_state",
    "wkv",
    "wkv_with_state",
    "wkv_loop",
    "wkv_naive",
    "WKVFunction",
    "forward_numpy",
    "backward_numpy",
]

NEG = -1e38  # the "minus infinity" of the running max (finite: -inf - -inf would be NaN)
BLOCK = 128  # channels per work item of the CPU kernels

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


class WKVState(NamedTuple):
    """``a``, ``b`` (scaled sums) and ``p`` (their log scale), each ``[B, C]``."""

    a: torch.Tensor
    b: torch.Tensor
    p: torch.Tensor


def empty_state(batch: int, channels: int, dtype=torch.float32, device=None) -> WKVState:
    """The state before the first token: ``a = b = 0``, ``p = NEG``."""
    z = torch.zeros(batch, channels, dtype=dtype, device=device)
    return WKVState(z, z.clone(), torch.full_like(z, NEG))


# ---------------------------------------------------------------------------------------------
# CPU kernels ([T, M] rows, M = B*C; w, u: [C]; one work item = one batch row x a channel block)
# ---------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", inline="always")
def _rescaled(x1, x2):
    """``(q, e^{x1-q}, e^{x2-q})`` with ``q = max(x1, x2)`` (``x2`` on ties)."""
    q = x1 if x1 > x2 else x2
    return q, np.exp(x1 - q), np.exp(x2 - q)


@njit(cache=True, error_model="numpy", inline="always")
def _work_item(item, ncb, C, blk):
    """Work item ``item`` of the CPU kernels (batch row ``item // ncb``, channel block ``item % ncb``):
    ``(c0, c1, n, m0)``, its channels ``c0 .. c1-1`` (``n`` of them) starting at column ``m0``."""
    c0 = (item % ncb) * blk
    c1 = min(C, c0 + blk)
    return c0, c1, c1 - c0, (item // ncb) * C + c0


@njit(cache=True, error_model="numpy", inline="always")
def _token(kk, vv, aa, bb, pp, uu, ww):
    """One token of one channel from the state ``(aa, bb, pp)`` (module docstring): ``(wkv, den, q,
    e1, e2, f, a', b', p')`` with ``q``, ``e1``, ``e2`` and the denominator ``den`` of ``wkv``, and
    ``f = e^{p+w-p'}`` the decay of the state."""
    q, e1, e2 = _rescaled(pp, uu + kk)
    den = e1 * bb + e2
    y = (e1 * aa + e2 * vv) / den
    p2, f, f2 = _rescaled(pp + ww, kk)
    return y, den, q, e1, e2, f, f * aa + f2 * vv, f * bb + f2, p2


@njit(cache=True, error_model="numpy")
def _fwd_row(kr, vr, yr, wb, ub, a, b, p, n):
    for j in range(n):
        y, _, _, _, _, _, a2, b2, p2 = _token(kr[j], vr[j], a[j], b[j], p[j], ub[j], wb[j])
        yr[j] = y
        a[j] = a2
        b[j] = b2
        p[j] = p2


@njit(cache=True, parallel=True, error_model="numpy")
def wkv_forward_kernel(w, u, k, v, y, sa, sb, sp, C, blk):
    """Forward over ``T`` tokens from the state ``(sa, sb, sp)`` (``[M]``), which is overwritten
    with the final state. ``y[T, M]`` receives wkv."""
    T, M = k.shape
    ncb = (C + blk - 1) // blk
    for item in prange((M // C) * ncb):
        c0, c1, n, m0 = _work_item(item, ncb, C, blk)
        a = sa[m0:m0 + n].copy()
        b = sb[m0:m0 + n].copy()
        p = sp[m0:m0 + n].copy()
        wb = w[c0:c1]
        ub = u[c0:c1]
        for t in range(T):
            _fwd_row(k[t, m0:m0 + n], v[t, m0:m0 + n], y[t, m0:m0 + n], wb, ub, a, b, p, n)
        sa[m0:m0 + n] = a
        sb[m0:m0 + n] = b
        sp[m0:m0 + n] = p


@njit(cache=True, error_model="numpy")
def _bwd_fwd_row(kr, vr, gr, wb, ub, a, b, p, da, db, accw, accu, yo, ro, lqo, n):
    for j in range(n):
        vv = vr[j]
        aa = a[j]
        bb = b[j]
        yy, den, q, e1, e2, f, a2, b2, p2 = _token(kr[j], vv, aa, bb, p[j], ub[j], wb[j])
        r = gr[j] / den
        accw[j] += r * (da[j] - yy * db[j]) * e1
        accu[j] += r * (vv - yy) * e2
        yo[j] = yy
        ro[j] = r
        lqo[j] = -q
        da[j] = f * (aa + da[j])
        db[j] = f * (bb + db[j])
        a[j] = a2
        b[j] = b2
        p[j] = p2


@njit(cache=True, error_model="numpy")
def _bwd_rev_row(kr, vr, wb, ub, yr, rr, lqr, gp, gq, o, gkr, gvr, n):
    for j in range(n):
        kk = kr[j]
        vv = vr[j]
        yy = yr[j]
        r = rr[j]
        lq = lqr[j]
        oo = o[j]
        e = r * np.exp(ub[j] + kk + lq)
        big = np.exp(kk + oo)
        gpj = gp[j]
        gqj = gq[j]
        gkr[j] = e * (vv - yy) + big * (gpj * vv + gqj)
        gvr[j] = e + big * gpj
        no, ea, eb = _rescaled(wb[j] + oo, lq)
        eb = r * eb
        gp[j] = ea * gpj + eb
        gq[j] = ea * gqj - eb * yy
        o[j] = no


@njit(cache=True, parallel=True, error_model="numpy")
def wkv_backward_kernel(w, u, k, v, gy, gk, gv, gw, gu, C, blk):
    """Backward from the zero state. ``gk``, ``gv``: ``[T, M]``; ``gw``, ``gu``: ``[M]``
    (per batch row; ``gw`` is d/dw, not yet multiplied by ``w``)."""
    T, M = k.shape
    ncb = (C + blk - 1) // blk
    for item in prange((M // C) * ncb):
        c0, c1, n, m0 = _work_item(item, ncb, C, blk)
        wb = w[c0:c1]
        ub = u[c0:c1]
        a = np.zeros(n, k.dtype)
        b = np.zeros(n, k.dtype)
        p = np.full(n, NEG, k.dtype)
        da = np.zeros(n, k.dtype)
        db = np.zeros(n, k.dtype)
        accw = np.zeros(n, k.dtype)
        accu = np.zeros(n, k.dtype)
        ys = np.empty((T, n), k.dtype)
        rs = np.empty((T, n), k.dtype)
        lqs = np.empty((T, n), k.dtype)
        for t in range(T):
            _bwd_fwd_row(k[t, m0:m0 + n], v[t, m0:m0 + n], gy[t, m0:m0 + n], wb, ub, a, b, p,
                         da, db, accw, accu, ys[t], rs[t], lqs[t], n)
        gp = np.zeros(n, k.dtype)
        gq = np.zeros(n, k.dtype)
        o = np.full(n, NEG, k.dtype)
        for t in range(T - 1, -1, -1):
            _bwd_rev_row(k[t, m0:m0 + n], v[t, m0:m0 + n], wb, ub, ys[t], rs[t], lqs[t], gp, gq, o,
                         gk[t, m0:m0 + n], gv[t, m0:m0 + n], n)
        gw[m0:m0 + n] = accw
        gu[m0:m0 + n] = accu


def _block(C: int) -> int:
    return max(1, min(C, BLOCK))


def forward_numpy(w, u, k, v, state=None):
    """CPU kernel on numpy arrays: ``w`` (already ``-exp(time_decay)``), ``u`` ``[C]``; ``k``, ``v``
    ``[T, B, C]``; ``state`` ``(a, b, p)`` each ``[B, C]`` or None. Returns ``(y, (a, b, p))``."""
    k = np.ascontiguousarray(k)
    T, B, C = k.shape
    dt = k.dtype
    v = np.ascontiguousarray(v, dtype=dt)
    if state is None:
        sa, sb, sp = np.zeros(B * C, dt), np.zeros(B * C, dt), np.full(B * C, NEG, dt)
    else:
        sa, sb, sp = (np.array(s, dtype=dt).reshape(B * C) for s in state)
    y = np.empty_like(k)
    wkv_forward_kernel(np.ascontiguousarray(w, dt), np.ascontiguousarray(u, dt), k.reshape(T, B * C),
                       v.reshape(T, B * C), y.reshape(T, B * C), sa, sb, sp, C, _block(C))
    return y, (sa.reshape(B, C), sb.reshape(B, C), sp.reshape(B, C))


def backward_numpy(w, u, k, v, gy):
    """CPU backward on numpy arrays (zero initial state). Returns ``(gw, gu, gk, gv)`` with ``gw``
    the gradient w.r.t. ``w`` itself (``[C]``, summed over the batch)."""
    k = np.ascontiguousarray(k)
    T, B, C = k.shape
    dt = k.dtype
    v = np.ascontiguousarray(v, dtype=dt)
    gy = np.ascontiguousarray(gy, dtype=dt)
    gk = np.empty_like(k)
    gv = np.empty_like(k)
    gw = np.empty(B * C, dt)
    gu = np.empty(B * C, dt)
    M = B * C
    wkv_backward_kernel(np.ascontiguousarray(w, dt), np.ascontiguousarray(u, dt), k.reshape(T, M),
                        v.reshape(T, M), gy.reshape(T, M), gk.reshape(T, M), gv.reshape(T, M), gw, gu,
                        C, _block(C))
    return gw.reshape(B, C).sum(0), gu.reshape(B, C).sum(0), gk, gv


# ---------------------------------------------------------------------------------------------
# torch entry points
# ---------------------------------------------------------------------------------------------


def _check(time_decay, time_first, k, v):
    if k.dim() != 3 or v.shape != k.shape:
        raise ValueError(f"wkv: k and v must both be [T, B, C], got {tuple(k.shape)} and {tuple(v.shape)}")
    C = k.shape[2]
    for name, t in (("time_decay", time_decay), ("time_first", time_first)):
        if t.numel() != C:
            raise ValueError(f"wkv: {name} must have C={C} elements, got shape {tuple(t.shape)}")


def _fused_ok(k: torch.Tensor) -> bool:
    if k.dtype not in _NUMPY:
        return False
    if k.device.type == "cpu":
        return True
    if k.device.type == "cuda":
        try:
            from spike.kernels import wkv_cuda

            return wkv_cuda.available()
        except Exception:
            return False
    return False


class WKVFunction(torch.autograd.Function):
    """``wkv(time_decay [C], time_first [C], k [T, B, C], v [T, B, C]) -> y [T, B, C]`` from the
    zero state, fused forward and backward (CPU: Numba; CUDA: :mod:`spike.kernels.wkv_cuda`)."""

    @staticmethod
    def forward(ctx, time_decay, time_first, k, v):  # type: ignore[override]
        dt = k.dtype
        w = -torch.exp(time_decay.detach().reshape(-1).to(dt))
        u = time_first.detach().reshape(-1).to(dt).contiguous()
        k = k.detach().contiguous()
        v = v.detach().to(dt).contiguous()
        T, B, C = k.shape
        y = torch.empty_like(k)
        state = empty_state(B, C, dt, k.device)
        _forward_into(w, u, k, v, y, state)
        ctx.save_for_backward(w, u, k, v)
        ctx.dtypes = (time_decay.dtype, time_first.dtype, v.dtype)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        w, u, k, v = ctx.saved_tensors
        T, B, C = k.shape
        gy = gy.to(k.dtype).contiguous()
        gk = torch.empty_like(k)
        gv = torch.empty_like(k)
        gw = k.new_empty((B, C))
        gu = k.new_empty((B, C))
        if k.is_cuda:
            from spike.kernels import wkv_cuda

            wkv_cuda.backward_torch(w, u, k, v, gy, gk, gv, gw, gu)
        else:
            M = B * C
            wkv_backward_kernel(w.numpy(), u.numpy(), k.numpy().reshape(T, M), v.numpy().reshape(T, M),
                                gy.numpy().reshape(T, M), gk.numpy().reshape(T, M),
                                gv.numpy().reshape(T, M), gw.numpy().reshape(M), gu.numpy().reshape(M),
                                C, _block(C))
        td_dt, tf_dt, _ = ctx.dtypes
        g_decay = (gw.sum(0) * w).to(td_dt)
        g_first = gu.sum(0).to(tf_dt)
        n = ctx.needs_input_grad
        return (g_decay if n[0] else None, g_first if n[1] else None,
                gk if n[2] else None, gv if n[3] else None)


def _forward_into(w, u, k, v, y, state: WKVState) -> None:
    """Run the forward kernel (CPU or CUDA) writing ``y`` and updating ``state`` in place."""
    T, B, C = k.shape
    M = B * C
    if k.is_cuda:
        from spike.kernels import wkv_cuda

        wkv_cuda.forward_torch(w, u, k, v, y, state)
        return
    blk = _block(C)
    with threads_at_most(B * ((C + blk - 1) // blk)):  # the kernel's parallel work items
        wkv_forward_kernel(w.numpy(), u.numpy(), k.numpy().reshape(T, M), v.numpy().reshape(T, M),
                           y.numpy().reshape(T, M), state.a.numpy().reshape(M), state.b.numpy().reshape(M),
                           state.p.numpy().reshape(M), C, blk)


def wkv(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        impl: str = "auto") -> torch.Tensor:
    """WKV over ``k``, ``v`` ``[T, B, C]`` (time first) from the zero state, differentiable in all
    four inputs. ``impl``: ``"auto"`` (fused kernel on CPU/CUDA, else the loop), ``"fused"``,
    ``"loop"`` (:func:`wkv_loop`) or ``"naive"`` (:func:`wkv_naive`). Reduced-precision ``k``, ``v``
    (bfloat16/float16) are computed in float32 and returned in their dtype, or in float32 under
    ``torch.autocast`` (there the recurrence is a float32 op, as autocast's ``layer_norm``)."""
    _check(time_decay, time_first, k, v)
    if impl == "naive":
        return wkv_naive(time_decay, time_first, k, v)
    if k.dtype in (torch.bfloat16, torch.float16):  # the recurrence and its state in float32
        y = wkv(time_decay, time_first, k.float(), v.float(), impl)
        return y if torch.is_autocast_enabled(k.device.type) else y.to(k.dtype)
    if impl == "loop" or (impl == "auto" and not _fused_ok(k)):
        return wkv_loop(time_decay, time_first, k, v)
    if impl not in ("auto", "fused"):
        raise ValueError(f"wkv: impl must be 'auto', 'fused', 'loop' or 'naive', got {impl!r}")
    if not _fused_ok(k):
        raise ValueError(f"wkv: no fused kernel for {k.device} / {k.dtype}")
    return WKVFunction.apply(time_decay, time_first, k, v)


@torch.no_grad()
def wkv_with_state(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor,
                   v: torch.Tensor, state: Optional[WKVState] = None) -> tuple[torch.Tensor, WKVState]:
    """Forward only (no autograd) from ``state`` (None: the zero state); returns ``(y, new state)``.
    The input state is not modified."""
    _check(time_decay, time_first, k, v)
    T, B, C = k.shape
    dt = k.dtype
    w = -torch.exp(time_decay.detach().reshape(-1).to(dt))
    u = time_first.detach().reshape(-1).to(dt).contiguous()
    if state is None:
        st = empty_state(B, C, dt, k.device)
    else:
        st = WKVState(*(s.detach().to(dt).reshape(B, C).clone() for s in state))
    if not _fused_ok(k):
        y, st = _loop(w, u, k.detach(), v.detach(), st)
        return y, st
    y = torch.empty_like(k, memory_format=torch.contiguous_format)
    _forward_into(w, u, k.detach().contiguous(), v.detach().to(dt).contiguous(), y, st)
    return y, st


def _loop(w, u, k, v, state: WKVState):
    a, b, p = state
    ys = []
    for kk, vv in zip(k.unbind(0), v.unbind(0)):
        ww = u + kk
        q = torch.maximum(p, ww)
        e1 = torch.exp(p - q)
        e2 = torch.exp(ww - q)
        ys.append((e1 * a + e2 * vv) / (e1 * b + e2))
        ww = p + w
        q = torch.maximum(ww, kk)
        e1 = torch.exp(ww - q)
        e2 = torch.exp(kk - q)
        a = e1 * a + e2 * vv
        b = e1 * b + e2
        p = q
    y = torch.stack(ys) if ys else torch.empty_like(k)
    return y, WKVState(a, b, p)


def wkv_loop(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor,
             v: torch.Tensor) -> torch.Tensor:
    """The stabilised recurrence as a per-token Python loop of torch ops (autograd through it)."""
    _check(time_decay, time_first, k, v)
    T, B, C = k.shape
    w = -torch.exp(time_decay.reshape(-1).to(k.dtype))
    u = time_first.reshape(-1).to(k.dtype)
    y, _ = _loop(w, u, k, v, empty_state(B, C, k.dtype, k.device))
    return y


def wkv_naive(time_decay: torch.Tensor, time_first: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> torch.Tensor:
    """The definition, O(T^2): ``wkv_t = sum_i softmax_i(l_{t,i}) v_i`` with ``l_{t,i} = (t-1-i) w
    + k_i`` (i < t), ``u + k_t`` (i = t), ``-inf`` (i > t). Stable for any ``k``; autograd."""
    _check(time_decay, time_first, k, v)
    T = k.shape[0]
    w = -torch.exp(time_decay.reshape(-1).to(k.dtype))
    u = time_first.reshape(-1).to(k.dtype)
    t_idx = torch.arange(T, device=k.device)
    dist = (t_idx[:, None] - 1 - t_idx[None, :]).to(k.dtype)  # [t, i]
    logits = dist[:, :, None, None] * w + k[None, :, :, :]  # [t, i, B, C]
    diag = (u + k)  # [T, B, C]
    eye = torch.eye(T, dtype=torch.bool, device=k.device)[:, :, None, None]
    logits = torch.where(eye, diag[:, None], logits)
    future = (t_idx[None, :] > t_idx[:, None])[:, :, None, None]
    logits = logits.masked_fill(future, -math.inf)
    weights = torch.softmax(logits, dim=1)
    return (weights * v[None]).sum(1)
