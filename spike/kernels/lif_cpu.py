"""Numba CPU kernels: the fused multi-step LIF forward and backward (design §3).

Layout: ``x[T, M]`` time-first and C-contiguous, ``M`` = batch x neurons. Both kernels run
``prange`` over blocks of neurons; inside a block the loop is *time outer, neurons inner*, so the
inner loop walks contiguous memory with no branches (flags are hoisted or turned into selects)
and LLVM vectorises it. float32 and float64 are both supported; every constant is read from the
``params`` array so the float32 path never promotes to float64 (in Numba ``float32 + int`` is
float64). ``beta`` and ``thr`` are either per-neuron rows ``[M]`` or, when uniform, scalars of
the dtype (a separate specialisation that streams two arrays fewer). Row helpers index
block-local views with the range variable only, so Numba emits no negative-index wrap-around
(which would turn loads into gathers), and use ``error_model="numpy"`` (Python's
ZeroDivisionError check would block vectorisation of the surrogate's division). The surrogate
derivative is inlined into the adjoint loops (its switch is loop-invariant and gets unswitched).
With no parameter and no membrane gradient (the usual training case) a leaner adjoint runs.
dL/dx of narrow rows goes to memory by non-temporal stores (:func:`streams_dx`).

Semantics (one neuron; ``c_t`` is ``x_t``, or ``i_t = alpha*i_{t-1} + x_t`` when ``cuba``;
state starts at ``v = s = i = 0``), operation order exactly as written:

reset_delay=1::

    subtract: v_t = (beta*v_{t-1} + g*c_t) - thr*s_{t-1}
    zero:     v_t = beta*((1-s_{t-1})*v_{t-1}) + g*c_t
    none:     v_t = beta*v_{t-1} + g*c_t
    s_t = H(v_t - thr)                          (membrane output v_t)

reset_delay=0::

    h_t = beta*v_{t-1} + g*c_t ;  s_t = H(h_t - thr)
    subtract: v_t = h_t - thr*s_t ; zero: v_t = h_t*(1-s_t) ; none: v_t = h_t

``H`` fires on ``>`` or, with ``fire_ge``, on ``>=``. The kernels evaluate the reset-mode
switches as ``(1 - kz*s)*v`` and ``X - (thr*s if subtract else 0)`` with ``kz`` in {0, 1}: these are
exactly the formulas above (multiplying by 1 and subtracting 0 are exact).

Backward by checkpointed recomputation: the forward also stores the state every ``K`` steps
(``ckv[q] = v_{qK-1}``, ``cki[q] = i_{qK-1}``, zeros for ``q = 0``; ``T*M/K`` floats). The backward
walks the segments from last to first; for each block of neurons it recomputes the segment's
forward (bit-identical, same arithmetic) into a ``(K+1) x block`` buffer that stays in cache, then
runs the adjoint recursion through it. (With reset_delay=0 and no parameter gradient the adjoint
reads the pre-reset ``h`` only: the recomputation then keeps ``v`` in one row updated in place and
writes the ``h`` rows alone, half the buffer traffic: a SpikingJelly-style CNN training step of
``benchmarks/vs_training.py`` 19.1 -> 18.5 ms and 19.7 -> 19.3 ms in two A/B runs.) The membrane is
therefore never kept for backward: a layer saves its input and the checkpoints only, and the
kernels stream wide contiguous rows. (:mod:`spike.kernels.lif_kept_cpu` keeps it instead, for the
usual training step: see :mod:`spike.kernels.lif` for which runs when.) A block is ``BLOCK`` =
65536 neurons: its rows of 256 KiB, one
per step ``M`` floats apart, keep the hardware prefetcher streaming (2-core AMD EPYC, fwd+bwd of
4096 x 32 x T100: 14.4 ms against 18.6 ms with blocks of 8192, although the backward's 4.4 MB
buffer then lives in L3 rather than L2). ``K`` is 16 (``CKPT_EVERY``) for such blocks and grows for
narrower ones (:func:`ckpt_every`), so that a segment's buffer keeps that size.

Adjoint (reset_delay=1), ``sigma_t = surrogate'(v_t - thr)``, ``nd`` = not detach_reset::

    Gs_t = gs_t + nd * Gv_{t+1} * dv_{t+1}/ds_t   (zero: -beta*v_t, subtract: -thr, none: 0)
    Gv_t = gv_t + Gv_{t+1} * beta*(1 - [zero]*s_t) + Gs_t*sigma_t
    dc_t = g*Gv_t ; dbeta += Gv_t*A_t ; dthr += -Gs_t*sigma_t - [subtract]*Gv_t*s_{t-1}

(``A_t = (1-[zero]*s_{t-1})*v_{t-1}``.) reset_delay=0::

    Gv_t = gv_t + beta*Gh_{t+1}
    Gs_t = gs_t + nd * Gv_t * dv_t/ds_t            (zero: -h_t, subtract: -thr, none: 0)
    Gh_t = Gv_t*(1 - [zero]*s_t) + Gs_t*sigma_t,  sigma_t = surrogate'(h_t - thr)
    dc_t = g*Gh_t ; dbeta += Gh_t*v_{t-1} ; dthr += -Gs_t*sigma_t - [subtract]*Gv_t*s_t

Synaptic current (cuba): ``Gi_t = dc_t + alpha*Gi_{t+1}``, ``dx_t = Gi_t``,
``dalpha += Gi_t*i_{t-1}``; otherwise ``dx_t = dc_t``.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange
from numba.core import types
from numba.extending import overload

from spike.kernels.nontemporal import store_fence, stream_row

__all__ = [
    "RESET_CODES",
    "SURROGATE_IDS",
    "CKPT_EVERY",
    "SEGMENT_BYTES",
    "ckpt_every",
    "make_params",
    "n_ckpt",
    "fwd_block",
    "bwd_block",
    "streams_dx",
    "lif_forward",
    "lif_backward",
    "forward",
    "backward",
    "grad_rows",
]

RESET_CODES = {"subtract": 0, "zero": 1, "none": 2}
SURROGATE_IDS = {"atan": 0, "fast_sigmoid": 1, "sigmoid": 2, "triangle": 3, "straight_through": 4}
SIGMOID = SURROGATE_IDS["sigmoid"]

# params[] layout (dtype of x): gain, surrogate constants c0 and c1, then typed 0 and 1.
P_GAIN, P_C0, P_C1, P_ZERO, P_ONE = 0, 1, 2, 3, 4
N_PARAMS = 5

CKPT_EVERY = 16  # K: steps per checkpoint segment (at least; see ckpt_every)
SEGMENT_BYTES = 2 << 20  # a backward segment's recomputed rows, K x work item, about this size
BLOCK = 65536  # neurons per work item (rows of 256 KiB in float32; wide rows stream best)
STREAM_MAX_ROW = 16384  # dL/dx by non-temporal stores for work items this narrow ...
STREAM_MIN_BYTES = 12 << 20  # ... and a dx this large (streams_dx)


def make_params(gain: float, surrogate_id: int, surrogate_param: float, dtype) -> np.ndarray:
    """Pack the float constants for the kernels in the kernels' dtype.

    The surrogate constants are computed in float64 and then rounded, as torch does with a
    Python scalar: atan ``c0 = alpha/2``, ``c1 = pi/2*alpha``; the others use ``c0 = param``.
    """
    p = float(surrogate_param)
    if surrogate_id == 0:
        c0, c1 = p / 2, math.pi / 2 * p
    else:
        c0, c1 = p, 0.0
    return np.array([gain, c0, c1, 0.0, 1.0], dtype=dtype)


def ckpt_every(M: int, itemsize: int) -> int:
    """Steps per checkpoint segment ``K`` for ``M`` neurons of ``itemsize`` bytes: ``CKPT_EVERY``,
    or more where a work item is narrower than ``BLOCK``, so that the ``K`` rows a backward
    segment recomputes stay about ``SEGMENT_BYTES`` (fewer segments, whose rows the prefetcher
    streams: fwd+bwd of 256 x 32 x T1000, 32 KiB rows, 9.2-9.4 -> 8.0 ms at ``K`` = 64 against 16,
    one thread, 2-core AMD EPYC; 4 MiB segments, ``K`` = 128, gain little more and made a 512-wide
    layer's larger buffers page-fault). The results do not depend on ``K``: the recomputation
    repeats the forward's arithmetic."""
    return max(CKPT_EVERY, SEGMENT_BYTES // (itemsize * max(1, min(M, BLOCK))))


def n_ckpt(T: int, K: int = CKPT_EVERY) -> int:
    """Number of checkpoint rows for ``T`` steps (at least 1)."""
    return max(1, -(-T // K))


def _split(M: int, blk: int) -> int:
    """Cap the block so that every Numba thread gets work (multiple of 16 for the vector loop)."""
    nt = numba.get_num_threads()
    if nt > 1:
        per = -(-M // nt)
        per = -(-per // 16) * 16
        blk = min(blk, max(16, per))
    return max(1, min(M, blk))


def fwd_block(M: int) -> int:
    """Neurons per forward work item (the ``blk`` argument of :func:`lif_forward`)."""
    return _split(M, BLOCK)


def bwd_block(M: int) -> int:
    """Neurons per backward work item (the ``blk`` argument of :func:`lif_backward`)."""
    return _split(M, BLOCK)


def streams_dx(T: int, M: int, itemsize: int) -> bool:
    """Whether :func:`lif_backward` writes dL/dx by non-temporal stores (its ``stream`` argument):
    when a work item's rows are at most ``STREAM_MAX_ROW`` neurons and dx is ``STREAM_MIN_BYTES``
    or more. The adjoint writes the rows from the last step to the first, and a plain store first
    reads its line. Backward alone, one thread, 2-core AMD EPYC (Zen 5), plain -> streamed:
    ``T, M`` = 1000, 8192 (the ``256 x 32 x T1000`` of ``benchmarks/lif_train.py``) 4.16 -> 3.82 ms,
    1000, 16384: 8.36 -> 7.44, 500, 8192: 2.03 -> 1.80; but rows of 65536: 5.53 -> 5.77, and a dx
    of 8 MB (1000, 2048), still cached when it is read: 0.69 -> 0.92. The layer's fwd+bwd at
    1000, 8192: 6.05 -> 5.80 ms (best of 40; medians 6.44 -> 6.13)."""
    return bwd_block(M) <= STREAM_MAX_ROW and T * M * itemsize >= STREAM_MIN_BYTES


def _at(a, k):
    """``a[k]`` for a per-neuron row, ``a`` itself for a uniform (scalar) parameter."""
    return a if np.ndim(a) == 0 else a[k]


def _blk(a, j0, j1):
    """The block ``a[j0:j1]`` of a per-neuron parameter; a uniform (scalar) one as is."""
    return a if np.ndim(a) == 0 else a[j0:j1]


@overload(_at, inline="always")
def _at_impl(a, k):
    if isinstance(a, types.Array):
        return lambda a, k: a[k]
    return lambda a, k: a


@overload(_blk, inline="always")
def _blk_impl(a, j0, j1):
    if isinstance(a, types.Array):
        return lambda a, j0, j1: a[j0:j1]
    return lambda a, j0, j1: a


# The reset switches reach the row loops either as values of the dtype (``kz`` in {0, 1}: one
# compiled loop for every reset mode) or as compile-time booleans (:mod:`spike.kernels.lif_kept_cpu`'s
# kernels, specialised per flag set), whose dead terms LLVM then removes. Both give the same bits:
# ``(1 - 0*s)*v == v`` and ``x - 0 == x`` exactly, for every float ``v`` and ``x`` (s is 0 or 1).


def _keep(kz, s, v, one):
    """``(1 - kz*s)*v``: what zero reset keeps of ``v`` after a spike ``s``."""
    return (one - kz * s) * v


def _times(kz, x, zero):
    """``x*kz``."""
    return x * kz


@njit(cache=True, error_model="numpy", inline="always")
def _minus_if(ks, x, r):
    """``x - r`` when ``ks`` (subtract reset), else ``x`` (which is ``x - 0``, bit for bit)."""
    return x - r if ks else x


@overload(_keep, inline="always")
def _keep_impl(kz, s, v, one):
    if isinstance(kz, types.Boolean):
        return lambda kz, s, v, one: (one - s) * v if kz else v
    return lambda kz, s, v, one: (one - kz * s) * v


@overload(_times, inline="always")
def _times_impl(kz, x, zero):
    if isinstance(kz, types.Boolean):
        return lambda kz, x, zero: x if kz else x * zero
    return lambda kz, x, zero: x * kz


# ---------------------------------------------------------------------------------------------
# forward
# ---------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", inline="always")
def _fire(v, th, ge, zero, one):
    """``H(v - th)``: ``one`` where ``v > th`` (or ``v == th`` with ``ge``), else ``zero``."""
    return one if (v > th) | (ge & (v == th)) else zero


@njit(cache=True, error_model="numpy", inline="always")
def _v_delay(ck, bj, th, pv, g, kz, ks, ge, first, zero, one):
    """reset_delay=1 for one neuron: ``v_t`` from ``v_{t-1} = pv`` and ``c_t = ck``, ``s_{t-1}``
    recomputed as ``H(pv - th)`` (``first`` is 0 at t=0: s_{-1} = 0, else 1)."""
    sp = _fire(pv, th, ge, zero, first)
    return _minus_if(ks, bj * _keep(kz, sp, pv, one) + g * ck, th * sp)


@njit(cache=True, error_model="numpy", inline="always")
def _hv_nodelay(ck, bj, th, pv, g, kz, ks, ge, zero, one):
    """reset_delay=0 for one neuron: ``(h_t, v_t, s_t)`` from ``v_{t-1} = pv`` and ``c_t = ck``."""
    h = bj * pv + g * ck
    sn = _fire(h, th, ge, zero, one)
    return h, _minus_if(ks, _keep(kz, sn, h, one), th * sn), sn


@njit(cache=True, error_model="numpy")
def _fwd_row_delay(c, beta, thr, v, sout, n, g, kz, ks, ge, first, zero, one):
    """reset_delay=1, one time step for a block of ``n`` neurons: the state row ``v`` from v_{t-1}
    to v_t in place, and ``sout`` (s_t). ``s_{t-1} = H(v_{t-1} - thr)`` is recomputed from v_{t-1}
    (a compare is cheaper than another stream); ``first`` is 0 at t=0 (s_{-1} = 0), else 1.

    All arrays are block-local rows indexed by the range variable only, so Numba drops
    negative-index wrap-around and LLVM vectorises the loop. The state is one row updated in place
    (one array, so no runtime alias check between a ``vin`` and a ``vout`` that could be the same),
    which streams one row fewer than two ping-pong rows: 1.8 against 2.5 ms for T=1000 x 8192
    neurons, 2-core AMD EPYC."""
    for k in range(n):
        th = _at(thr, k)
        vk = _v_delay(c[k], _at(beta, k), th, v[k], g, kz, ks, ge, first, zero, one)
        v[k] = vk
        sout[k] = _fire(vk, th, ge, zero, one)


@njit(cache=True, error_model="numpy")
def _fwd_row_delay_v(c, beta, thr, vin, vout, n, g, kz, ks, ge, first, zero, one):
    """:func:`_fwd_row_delay` without the spike output (backward recomputation)."""
    for k in range(n):
        vout[k] = _v_delay(c[k], _at(beta, k), _at(thr, k), vin[k], g, kz, ks, ge, first, zero, one)


@njit(cache=True, error_model="numpy")
def _fwd_row_nodelay(c, beta, thr, v, out, n, g, kz, ks, ge, zero, one, pre):
    """reset_delay=0, one time step: the state row ``v`` from v_{t-1} to v_t (post reset) in place,
    and ``out``: s_t (as :func:`_fwd_row_delay`), or with ``pre`` the pre-reset h_t (the lean
    backward's recomputation, whose adjoint reads h only)."""
    for k in range(n):
        h, vk, sn = _hv_nodelay(c[k], _at(beta, k), _at(thr, k), v[k], g, kz, ks, ge, zero, one)
        v[k] = vk
        out[k] = h if pre else sn


@njit(cache=True, error_model="numpy")
def _fwd_row_nodelay_h(c, beta, thr, vin, vout, hout, n, g, kz, ks, ge, zero, one):
    """:func:`_fwd_row_nodelay` writing the pre-reset ``h`` instead of spikes (recomputation)."""
    for k in range(n):
        h, v, _ = _hv_nodelay(c[k], _at(beta, k), _at(thr, k), vin[k], g, kz, ks, ge, zero, one)
        vout[k] = v
        hout[k] = h


@njit(cache=True, error_model="numpy")
def _syn_row(x, alpha, iin, iout, n):
    """Synaptic current ``i_t = alpha*i_{t-1} + x_t`` for one step of a block."""
    for k in range(n):
        iout[k] = alpha[k] * iin[k] + x[k]


@njit(cache=True, error_model="numpy")
def _fill_row(dst, value, n):
    for k in range(n):
        dst[k] = value


@njit(cache=True, error_model="numpy")
def _copy_row(src, dst, n):
    for k in range(n):
        dst[k] = src[k]


@njit(cache=True, error_model="numpy")
def _spike_row(v, thr, n, ge, zero, one, out):
    for k in range(n):
        out[k] = _fire(v[k], _at(thr, k), ge, zero, one)


@njit(cache=True, error_model="numpy", inline="always")
def _constants(params, reset, ge):
    """``(g, zero, one, kz, ks, ge)`` of both kernels: the gain and the typed 0 and 1 from
    ``params``, the reset switches (``kz`` one for zero reset, ``ks`` True for subtract) and
    ``fire_ge`` as a boolean."""
    zero = params[P_ZERO]
    one = params[P_ONE]
    return params[P_GAIN], zero, one, (one if reset == 1 else zero), reset == 0, ge != 0


@njit(cache=True, error_model="numpy", inline="always")
def _work_item(b, blk, M, beta, thr, alpha, cuba):
    """Work item ``b``: ``(j0, j1, n)``, its neurons ``j0 .. j1-1``, and their ``beta``, ``thr``
    and ``alpha`` (one unused value unless ``cuba``)."""
    j0 = b * blk
    j1 = min(M, j0 + blk)
    return j0, j1, j1 - j0, _blk(beta, j0, j1), _blk(thr, j0, j1), (alpha[j0:j1] if cuba else alpha[0:1])


@njit(cache=True, error_model="numpy", inline="always")
def _forward_step(xt, t, v, sout, ibuf, ab, bb, tb, n, cst, delay, cuba):
    """Step ``t`` of one work item: the state row ``v`` from v_{t-1} (zeros at t=0) to v_t in
    place and ``sout`` (s_t) from the input row ``xt``, through the synaptic current ping-pong
    ``ibuf`` when ``cuba``; ``cst``: :func:`_constants`."""
    g, zero, one, kz, ks, geb = cst
    first = zero if t == 0 else one
    if cuba:
        c = ibuf[t & 1]
        _syn_row(xt, ab, ibuf[(t + 1) & 1], c, n)
    else:
        c = xt
    if delay:
        _fwd_row_delay(c, bb, tb, v, sout, n, g, kz, ks, geb, first, zero, one)
    else:
        _fwd_row_nodelay(c, bb, tb, v, sout, n, g, kz, ks, geb, zero, one, False)


@njit(cache=True, error_model="numpy", inline="always")
def _forward_buffers(x, n, ckv, cki, j0, j1, zero, cuba):
    """A forward work item's buffers ``(v, i ping-pong)``, the state row zero; writes its zero
    checkpoints ``ckv[0]`` (and ``cki[0]``)."""
    _fill_row(ckv[0, j0:j1], zero, n)
    if cuba:
        _fill_row(cki[0, j0:j1], zero, n)
    return np.zeros(n, dtype=x.dtype), np.zeros((2, n), dtype=x.dtype)


@njit(cache=True, error_model="numpy", inline="always")
def _checkpoint(t, T, K, vout, ibuf, ckv, cki, j0, j1, n, cuba):
    """After step ``t``: ``ckv[q] = v_t`` (and ``cki[q] = i_t``) when ``t + 1 = qK < T``."""
    if (t + 1) % K == 0 and t + 1 < T:
        q = (t + 1) // K
        _copy_row(vout, ckv[q, j0:j1], n)
        if cuba:
            _copy_row(ibuf[t & 1], cki[q, j0:j1], n)


@njit(cache=True, parallel=True, error_model="numpy")
def lif_forward(x, beta, thr, alpha, params, reset, delay, ge, cuba, spk, mem, need_mem,
                ckv, cki, K, blk):
    """Forward over ``T`` steps from a zero state. ``beta``, ``thr``: ``[M]`` rows, or both dtype
    scalars (uniform parameters); ``alpha``: ``[M]`` (read only when ``cuba``).

    Writes spikes to ``spk[T, M]``; with ``need_mem`` the membrane (post reset) to ``mem[T, M]``
    (else ``mem`` may be any 2-D array). Checkpoints for :func:`lif_backward`: ``ckv[q] =
    v_{qK-1}`` (``[n_ckpt(T, K), M]``, row 0 zeros) and, when ``cuba``, ``cki[q] = i_{qK-1}``
    (else ``cki`` may be any 2-D array). ``blk``: neurons per work item (:func:`fwd_block`).
    """
    T, M = x.shape
    cst = _constants(params, reset, ge)
    zero = cst[1]
    nb = (M + blk - 1) // blk
    for b in prange(nb):
        j0, j1, n, bb, tb, ab = _work_item(b, blk, M, beta, thr, alpha, cuba)
        v, ibuf = _forward_buffers(x, n, ckv, cki, j0, j1, zero, cuba)
        for t in range(T):
            _forward_step(x[t, j0:j1], t, v, spk[t, j0:j1], ibuf, ab, bb, tb, n, cst, delay, cuba)
            if need_mem:
                _copy_row(v, mem[t, j0:j1], n)
            _checkpoint(t, T, K, v, ibuf, ckv, cki, j0, j1, n, cuba)


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------




@njit(cache=True, error_model="numpy", inline="always")
def _sg1(u, sid, c0, c1, one):
    """surrogate'(u) (``u = v - thr``), inlined into the adjoint loops. ``sid`` is loop-invariant:
    LLVM may unswitch the branch or if-convert it and vectorise the loop with every branch
    speculated per element. The sigmoid's ``exp`` must not be among those (a scalar libm call per
    element whatever the surrogate: the backward took 3.4x its time in whichever process linked
    that version of a row function), so :func:`_adjoint_row` runs the sigmoid in loops of its own
    (``sid == SIGMOID`` a constant there) and the others in loops where ``sid != SIGMOID`` is known."""
    if sid == 0:  # atan: alpha/2 / (1 + (pi/2*alpha*u)^2)
        w = c1 * u
        return c0 / (one + w * w)
    elif sid == 1:  # fast sigmoid: 1/(slope*|u| + 1)^2
        d = c0 * abs(u) + one
        return one / (d * d)
    elif sid == SIGMOID:  # sigmoid, stable form: slope*e/(1+e)^2, e = exp(-slope*|u|)
        e = math.exp(-c0 * abs(u))
        return c0 * e / ((one + e) * (one + e))
    elif sid == 3:  # snnTorch triangular: +p for u<0, -p for u>=0
        return c0 if u < 0 else -c0
    return one  # straight through


@njit(cache=True, error_model="numpy", inline="always")
def _adj_delay(gsk, gvn, bj, th, vv, kz, ks, ge, nd, sid, c0, c1, zero, one):
    """The terms of one neuron's reset_delay=1 adjoint step: ``(decay, Gs, sigma)`` with
    ``Gv_t = gv_t + Gv_{t+1}*decay + Gs*sigma`` (``gvn`` = Gv_{t+1}, ``vv`` = v_t)."""
    sv = _fire(vv, th, ge, zero, one)
    dvds = _times(kz, -(bj * vv), zero) - (th if ks else zero)
    Gs = gsk + (gvn * dvds if nd else zero)
    return _keep(kz, sv, bj, one), Gs, _sg1(vv - th, sid, c0, c1, one)


@njit(cache=True, error_model="numpy", inline="always")
def _adj_nodelay(gsk, Gv, th, hh, kz, ks, ge, nd, sid, c0, c1, zero, one):
    """One neuron's reset_delay=0 adjoint step from ``Gv`` = Gv_t and ``hh`` = h_t: ``(Gh_t, Gs,
    sigma, s_t)``."""
    sv = _fire(hh, th, ge, zero, one)
    dvds = _times(kz, -hh, zero) - (th if ks else zero)
    Gs = gsk + (Gv * dvds if nd else zero)
    sg = _sg1(hh - th, sid, c0, c1, one)
    return _keep(kz, sv, Gv, one) + Gs * sg, Gs, sg, sv


@njit(cache=True, error_model="numpy", inline="always")
def _bwd_row_delay(gs, gv, beta, thr, vt, vp, gnext, dc, acc_b, acc_t, n, g, kz, ks, ge,
                   nd, first, sid, c0, c1, zero, one):
    """Adjoint of one reset_delay=1 step. ``gnext`` holds Gv_{t+1} in, Gv_t out; ``dc`` gets
    dL/dc_t. ``first`` is 0 at t=0 (s_{-1} = 0 whatever H(0 - thr) is), else 1."""
    for k in range(n):
        th = _at(thr, k)
        pv = vp[k]
        sp = _fire(pv, th, ge, zero, first)
        gvn = gnext[k]
        decay, Gs, sg = _adj_delay(gs[k], gvn, _at(beta, k), th, vt[k], kz, ks, ge, nd, sid, c0, c1, zero, one)
        Gv = gv[k] + gvn * decay + Gs * sg
        gnext[k] = Gv
        dc[k] = g * Gv
        acc_b[k] += Gv * _keep(kz, sp, pv, one)
        acc_t[k] += -Gs * sg - (Gv * sp if ks else zero)


@njit(cache=True, error_model="numpy", inline="always")
def _bwd_row_nodelay(gs, gv, beta, thr, ht, vp, gnext, dc, acc_b, acc_t, n, g, kz, ks, ge,
                     nd, sid, c0, c1, zero, one):
    """Adjoint of one reset_delay=0 step. ``gnext`` holds Gh_{t+1} in, Gh_t out."""
    for k in range(n):
        Gv = gv[k] + _at(beta, k) * gnext[k]
        Gh, Gs, sg, sv = _adj_nodelay(gs[k], Gv, _at(thr, k), ht[k], kz, ks, ge, nd, sid, c0, c1, zero, one)
        gnext[k] = Gh
        dc[k] = g * Gh
        acc_b[k] += Gh * vp[k]
        acc_t[k] += -Gs * sg - (Gv * sv if ks else zero)


@njit(cache=True, error_model="numpy", inline="always")
def _bwd_row_delay_lean(gs, beta, thr, vt, gnext, dc, n, g, kz, ks, ge, nd, sid, c0, c1, zero,
                        one):
    """:func:`_bwd_row_delay` with no membrane gradient and no parameter gradients (the usual
    training case): fewer streams through the cache."""
    for k in range(n):
        gvn = gnext[k]
        decay, Gs, sg = _adj_delay(gs[k], gvn, _at(beta, k), _at(thr, k), vt[k], kz, ks, ge, nd, sid, c0, c1, zero,
                                   one)
        Gv = gvn * decay + Gs * sg
        gnext[k] = Gv
        dc[k] = g * Gv


@njit(cache=True, error_model="numpy", inline="always")
def _bwd_row_nodelay_lean(gs, beta, thr, ht, gnext, dc, n, g, kz, ks, ge, nd, sid, c0, c1, zero,
                          one):
    """:func:`_bwd_row_nodelay` with no membrane gradient and no parameter gradients."""
    for k in range(n):
        Gh, _, _, _ = _adj_nodelay(gs[k], _at(beta, k) * gnext[k], _at(thr, k), ht[k], kz, ks, ge, nd, sid, c0, c1,
                                   zero, one)
        gnext[k] = Gh
        dc[k] = g * Gh


@njit(cache=True, error_model="numpy")
def _bwd_syn_row(dc, alpha, ip, gi, dx, acc_a, n):
    """Synaptic current adjoint: Gi_t = dc_t + alpha*Gi_{t+1}; dx_t = Gi_t; dalpha += Gi_t*i_{t-1}."""
    for k in range(n):
        G = dc[k] + alpha[k] * gi[k]
        gi[k] = G
        dx[k] = G
        acc_a[k] += G * ip[k]


@njit(cache=True, error_model="numpy", inline="always")
def _backward_buffers(x, n, K, delay, cuba, lean):
    """A backward work item's buffers: ``V`` (``V[u+1] = v_{t0+u}``, ``V[0] = v_{t0-1}``; one row,
    the running state, when ``lean`` with delay=0, whose adjoint reads ``H`` only), ``H`` (pre-reset
    h, delay=0), ``I`` (``I[u+1] = i_{t0+u}``), ``dc``, ``gnext`` (Gv_{t+1}, delay=1, or Gh_{t+1},
    delay=0), ``gi`` (Gi_{t+1}) and the parameter sums ``acc``; rows for segments of ``min(K, T)``
    steps (``T = x.shape[0]``). What a call does not use (``gi`` and the alpha sum without a
    synaptic current, the beta and threshold sums when ``lean``) is one element long: zeroing those
    rows for every work item took about 0.1 ms of each fused layer's backward on the CNN of
    ``benchmarks/vs_training.py``."""
    dt = x.dtype
    k = min(K, x.shape[0])
    nc = n if cuba else 1
    npar = 1 if lean else n
    return (np.empty((1 if (lean and delay == 0) else k + 1, n), dtype=dt),
            np.empty((k if delay == 0 else 1, n), dtype=dt),
            np.empty((k + 1 if cuba else 1, n), dtype=dt), np.empty(n, dtype=dt), np.zeros(n, dtype=dt),
            np.zeros(nc, dtype=dt), (np.zeros(npar, dtype=dt), np.zeros(npar, dtype=dt), np.zeros(nc, dtype=dt)))


@njit(cache=True, error_model="numpy", inline="always")
def _recompute_segment(x, q, t0, L, j0, j1, n, V, H, I, ckv, cki, ab, bb, tb, cst, delay, cuba, lean):
    """Steps ``t0 .. t0+L-1`` of one work item recomputed from checkpoint ``q`` (bit-identical to the
    forward): ``V[u+1] = v_{t0+u}``, ``V[0] = v_{t0-1}`` (for lean delay=0 only the running state
    ``V[0]``), ``H[u] = h_{t0+u}`` (delay=0), ``I[u+1] = i_{t0+u}`` (cuba)."""
    _segment_start(q, j0, j1, n, V, I, ckv, cki, cuba)
    for u in range(L):
        _recompute_step(x[t0 + u, j0:j1], t0 + u, u, n, V, H, I, ab, bb, tb, cst, delay, cuba, lean)


@njit(cache=True, error_model="numpy", inline="always")
def _segment_start(q, j0, j1, n, V, I, ckv, cki, cuba):
    """A segment's initial state from checkpoint ``q``: ``V[0]`` (and ``I[0]``)."""
    _copy_row(ckv[q, j0:j1], V[0], n)
    if cuba:
        _copy_row(cki[q, j0:j1], I[0], n)


@njit(cache=True, error_model="numpy", inline="always")
def _recompute_step(xt, t, u, n, V, H, I, ab, bb, tb, cst, delay, cuba, lean):
    """Step ``t`` (``u`` within its segment) of :func:`_recompute_segment` from the input row ``xt``."""
    g, zero, one, kz, ks, geb = cst
    first = zero if t == 0 else one
    if cuba:
        c = I[u + 1]
        _syn_row(xt, ab, I[u], c, n)
    else:
        c = xt
    if delay:
        _fwd_row_delay_v(c, bb, tb, V[u], V[u + 1], n, g, kz, ks, geb, first, zero, one)
    elif lean:  # one state row, updated in place: the rows of v are not written to the buffer
        _fwd_row_nodelay(c, bb, tb, V[0], H[u], n, g, kz, ks, geb, zero, one, True)
    else:
        _fwd_row_nodelay_h(c, bb, tb, V[u], V[u + 1], H[u], n, g, kz, ks, geb, zero, one)


@njit(cache=True, error_model="numpy")
def _adjoint_row(gsr, gvr, bb, tb, hv, vp, gnext, tgt, acc_b, acc_t, n, cst, adj, first, delay, lean):
    """One adjoint row, :func:`_bwd_row_delay` and co. (``hv``: v_t for delay=1, h_t for delay=0;
    ``vp``: v_{t-1}), with the sigmoid surrogate in a loop of its own (see :func:`_sg1`)."""
    ndb, sid, c0, c1 = adj
    if sid == SIGMOID:
        _adjoint_rows(gsr, gvr, bb, tb, hv, vp, gnext, tgt, acc_b, acc_t, n, cst, ndb, first, SIGMOID, c0, c1, delay,
                      lean)
    else:
        _adjoint_rows(gsr, gvr, bb, tb, hv, vp, gnext, tgt, acc_b, acc_t, n, cst, ndb, first, sid, c0, c1, delay,
                      lean)


@njit(cache=True, error_model="numpy", inline="always")
def _adjoint_rows(gsr, gvr, bb, tb, hv, vp, gnext, tgt, acc_b, acc_t, n, cst, ndb, first, sid, c0, c1, delay, lean):
    """The row loop of the delay and lean switches (:func:`_adjoint_row`'s body)."""
    g, zero, one, kz, ks, geb = cst
    if delay:
        if lean:
            _bwd_row_delay_lean(gsr, bb, tb, hv, gnext, tgt, n, g, kz, ks, geb, ndb, sid, c0, c1, zero, one)
        else:
            _bwd_row_delay(gsr, gvr, bb, tb, hv, vp, gnext, tgt, acc_b, acc_t, n, g, kz, ks, geb, ndb, first, sid,
                           c0, c1, zero, one)
    else:
        if lean:
            _bwd_row_nodelay_lean(gsr, bb, tb, hv, gnext, tgt, n, g, kz, ks, geb, ndb, sid, c0, c1, zero, one)
        else:
            _bwd_row_nodelay(gsr, gvr, bb, tb, hv, vp, gnext, tgt, acc_b, acc_t, n, g, kz, ks, geb, ndb, sid, c0, c1,
                             zero, one)


@njit(cache=True, error_model="numpy", inline="always")
def _adjoint_step(gsr, gvr, t, u, V, H, I, gnext, gi, dc, dst, acc, ab, bb, tb, n, cst, adj, delay, cuba, lean):
    """The adjoint of step ``t`` (``u`` within its segment, :func:`_recompute_segment`'s buffers) of
    one work item: ``gsr``, ``gvr`` are the rows of the output gradients, ``dst`` gets dL/dx_t;
    ``acc``: the parameter sums ``(beta, thr, alpha)``; ``cst``: :func:`_constants`; ``adj``:
    ``(not detach_reset, surrogate id, c0, c1)``."""
    acc_b, acc_t, acc_a = acc
    first = cst[1] if t == 0 else cst[2]
    vp = V[0] if (lean and not delay) else V[u]  # v_{t-1}: read by the full adjoint only
    _adjoint_row(gsr, gvr, bb, tb, V[u + 1] if delay else H[u], vp, gnext, dc if cuba else dst, acc_b, acc_t, n,
                 cst, adj, first, delay, lean)
    if cuba:
        _bwd_syn_row(dc, ab, I[u], gi, dst, acc_a, n)


@njit(cache=True, error_model="numpy", inline="always")
def _parameter_sums(acc, dbeta, dthr, dalpha, j0, j1, n, cuba, lean):
    """A work item's per-neuron parameter gradients, when the adjoint was not lean."""
    acc_b, acc_t, acc_a = acc
    if not lean:
        _copy_row(acc_b, dbeta[j0:j1], n)
        _copy_row(acc_t, dthr[j0:j1], n)
        if cuba:
            _copy_row(acc_a, dalpha[j0:j1], n)


@njit(cache=True, parallel=True, error_model="numpy")
def lif_backward(x, beta, thr, alpha, params, reset, delay, ge, cuba, nd, sid,
                 gs, gs_tstep, gv, gv_tstep, ckv, cki, K, dx, dbeta, dthr, dalpha, full, blk, stream):
    """Adjoint over ``T`` steps (see module docstring). Inputs as :func:`lif_forward`.

    ``gs``/``gv``: gradients of the spike and membrane outputs, ``[T, M]`` with ``*_tstep=1`` or
    one broadcast row ``[1, M]`` with ``*_tstep=0`` (zeros for an unused output). ``ckv``,
    ``cki``, ``K``: the checkpoints written by :func:`lif_forward`. Writes ``dx[T, M]`` and the
    per-neuron sums ``dbeta``, ``dthr`` and (when ``cuba``) ``dalpha`` (``[M]``). With
    ``full=0`` the caller promises that no parameter gradient is wanted and that ``gv`` is zero:
    a leaner adjoint runs (fewer streams) and ``dbeta``/``dthr``/``dalpha`` are not written
    (they may then be any 1-D arrays).
    ``blk``: neurons per work item (:func:`bwd_block`). With ``stream`` (:func:`streams_dx`) each
    row of dL/dx is computed into a row of the work item and copied to ``dx`` by non-temporal
    stores (the same values).
    """
    T, M = x.shape
    cst = _constants(params, reset, ge)
    adj = (nd != 0, sid, params[P_C0], params[P_C1])
    lean = full == 0
    nb = (M + blk - 1) // blk
    nq = (T + K - 1) // K
    for b in prange(nb):
        j0, j1, n, bb, tb, ab = _work_item(b, blk, M, beta, thr, alpha, cuba)
        V, H, I, dc, gnext, gi, acc = _backward_buffers(x, n, K, delay, cuba, lean)
        row = np.empty(n if stream else 1, dtype=x.dtype)  # dL/dx_t on its way to dx when streamed
        for q in range(nq - 1, -1, -1):
            t0 = q * K
            L = min(T, t0 + K) - t0
            _recompute_segment(x, q, t0, L, j0, j1, n, V, H, I, ckv, cki, ab, bb, tb, cst, delay, cuba, lean)
            for u in range(L - 1, -1, -1):
                t = t0 + u
                _adjoint_step(gs[t * gs_tstep, j0:j1], gv[t * gv_tstep, j0:j1], t, u, V, H, I, gnext, gi, dc,
                              row if stream else dx[t, j0:j1], acc, ab, bb, tb, n, cst, adj, delay, cuba, lean)
                if stream:
                    stream_row(row, dx[t, j0:j1], n)
        if stream:
            store_fence()
        _parameter_sums(acc, dbeta, dthr, dalpha, j0, j1, n, cuba, lean)


# ---------------------------------------------------------------------------------------------
# numpy-level entry points (tests, the CUDA simulator comparison, scripts)
# ---------------------------------------------------------------------------------------------


def _per(p, M, dt):
    # always a fresh writable copy: a read-only array is a different Numba type (a recompile)
    return np.array(np.broadcast_to(np.asarray(p, dt), (M,)), dtype=dt)


def _params_bt(beta, thr, M, dt):
    """beta, thr as dtype scalars when both are uniform, else as [M] rows."""
    if np.ndim(beta) == 0 and np.ndim(thr) == 0:
        return dt.type(beta), dt.type(thr)
    return _per(beta, M, dt), _per(thr, M, dt)


def grad_rows(gr: np.ndarray | None, M: int, dt: np.dtype) -> tuple[np.ndarray, int]:
    """An output gradient for the backward kernels: ``(rows, tstep)``, ``gr`` as ``[T, M]`` rows of
    dtype ``dt`` with ``tstep`` 1, or for ``None`` one zero row ``[1, M]`` with ``tstep`` 0."""
    if gr is None:
        return np.zeros((1, M), dt), 0
    return np.ascontiguousarray(gr, dtype=dt), 1


def _sid(surrogate):
    return SURROGATE_IDS[surrogate] if isinstance(surrogate, str) else int(surrogate)


def forward(x, beta, thr, alpha=None, *, gain=1.0, reset="subtract", reset_delay=True,
            fire_ge=False, need_mem=True, K=CKPT_EVERY):
    """numpy wrapper of :func:`lif_forward`: returns ``(spk, mem, ckv, cki)`` (``mem`` None
    without ``need_mem``; ``cki`` None without ``alpha``)."""
    x = np.ascontiguousarray(x)
    T, M = x.shape
    dt = x.dtype
    cuba = alpha is not None
    spk = np.empty((T, M), dt)
    mem = np.empty((T, M), dt) if need_mem else np.empty((1, 1), dt)
    ckv = np.empty((n_ckpt(T, K), M), dt)
    cki = np.empty((n_ckpt(T, K), M), dt) if cuba else np.empty((1, 1), dt)
    lif_forward(x, *_params_bt(beta, thr, M, dt), _per(alpha, M, dt) if cuba else np.zeros(1, dt),
                make_params(gain, 0, 2.0, dt), RESET_CODES[reset], int(bool(reset_delay)),
                int(bool(fire_ge)), int(cuba), spk, mem, bool(need_mem), ckv, cki, K, fwd_block(M))
    return spk, (mem if need_mem else None), ckv, (cki if cuba else None)


def backward(x, beta, thr, alpha=None, gs=None, gv=None, *, gain=1.0, reset="subtract",
             reset_delay=True, fire_ge=False, detach_reset=True, surrogate="atan",
             surrogate_param=2.0, K=CKPT_EVERY, stream=None):
    """numpy wrapper of :func:`lif_backward` (runs :func:`forward` for the checkpoints): returns
    ``(dx, dbeta, dthr, dalpha)``, per-neuron parameter gradients (``dalpha`` None without
    ``alpha``). ``gs``/``gv``: ``[T, M]`` or None; ``stream``: as :func:`streams_dx` decides
    when None."""
    x = np.ascontiguousarray(x)
    T, M = x.shape
    dt = x.dtype
    cuba = alpha is not None
    _, _, ckv, cki = forward(x, beta, thr, alpha, gain=gain, reset=reset, reset_delay=reset_delay,
                             fire_ge=fire_ge, need_mem=False, K=K)
    gs_a, gs_st = grad_rows(gs, M, dt)
    gv_a, gv_st = grad_rows(gv, M, dt)
    dx = np.empty((T, M), dt)
    dbeta = np.empty(M, dt)
    dthr = np.empty(M, dt)
    dalpha = np.empty(M if cuba else 1, dt)
    sid = _sid(surrogate)
    lif_backward(x, *_params_bt(beta, thr, M, dt), _per(alpha, M, dt) if cuba else np.zeros(1, dt),
                 make_params(gain, sid, surrogate_param, dt), RESET_CODES[reset],
                 int(bool(reset_delay)), int(bool(fire_ge)), int(cuba), int(not detach_reset), sid,
                 gs_a, gs_st, gv_a, gv_st, ckv, cki if cuba else np.empty((1, 1), dt), K,
                 dx, dbeta, dthr, dalpha, 1, bwd_block(M),
                 streams_dx(T, M, dt.itemsize) if stream is None else bool(stream))
    return dx, dbeta, dthr, (dalpha if cuba else None)
