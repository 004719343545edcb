"""Discretisation of NIR's continuous-time neurons, shared by NIR import and export.

Forward Euler with step ``dt`` (seconds), the convention snnTorch's NIR exporter writes:

    LIF      tau dv/dt = (v_leak - v) + r*I   ->  v' = beta*v + gain*I + (1 - beta)*v_leak
             beta = 1 - dt/tau,  gain = r*dt/tau
    LI       the same, non-spiking
    IF, I    dv/dt = r*I                      ->  beta = 1,  gain = r*dt
    CubaLIF  tau_syn di/dt = -i + w_in*S;  tau_mem dv/dt = (v_leak - v) + r*i
             ->  i' = alpha*i + I,  v' = beta*v + gain*i
             alpha = 1 - dt/tau_syn,  beta = 1 - dt/tau_mem,
             gain = (r*dt/tau_mem) * (w_in*dt/tau_syn)   (the input scale of i folds into gain:
             i is linear in its input)

The inverse (export) is ``tau = dt/(1 - beta)``, ``r = gain*tau/dt`` (``gain/dt`` for IF, I)
and ``w_in = tau_syn/dt``. snnTorch writes ``tau = dt/(1-beta)``, ``r = tau/dt``,
``w_in = tau_syn/dt`` and ``v_leak = 0``, i.e. gain 1.

Exact (exponential) integration, ``discretization="exp"`` on import (Sinabs's convention: its
LIF decays by ``exp(-1/tau_mem)`` per step, tau in steps, and with ``norm_input``, its default,
scales its input by ``1 - decay``):

    LIF, LI  beta = exp(-dt/tau),  gain = r*(1 - beta),  drive (1 - beta)*v_leak   (the exact
             solution over one step of a constant input); IF, I as above (there the Euler step is
             exact)

with ``beta`` the float32 nearest the float64 ``exp`` and ``gain`` evaluated in float32, as Sinabs
computes ``1 - alpha``. CubaLIF has no exact one-step form in the IR (the current decays within the
step), so the importer refuses it in this mode.

Exact inversion. The stored numbers were rounded by their producer (snnTorch computes them in
float32; our exporter in float64), so ``1 - dt/tau`` is off by an ulp or two. The inverse is
therefore solved exactly: the decay is the float32 value (the IR's precision) whose forward
formula, evaluated in the precision of the stored array, reproduces the stored ``tau`` bit for
bit; the gain likewise reproduces ``r``. When several values qualify, the one with the shortest
mantissa (e.g. 1.0, 0.875) wins, then the one nearest the direct formula. This recovers
snnTorch's float32 beta exactly for beta >= 0.5 (below 0.5 float32 ``1 - beta`` itself loses
bits, so the nearest value is returned), and a gain of exactly 1.0. Our exporter's float64
``tau`` maps back to the float32 decay exactly; several float64 gains can round to one ``r``,
so it also writes the gain into the node's metadata, used when it reproduces ``r`` exactly.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["decay_from_tau", "gain_from_r", "tau_from_decay", "r_from_gain", "gain_matches", "decay_exp",
           "gain_exp", "dt_seconds"]

_SEARCH = 8  # ulps searched on each side of the direct formula


def dt_seconds(dt: Any, error: type[Exception], where: str = "") -> float:
    """The step ``dt`` as a float number of seconds; raises ``error`` (its message led by ``where``)
    unless it is a positive, finite number."""
    text = " ".join(repr(dt).split())
    text = text if len(text) <= 60 else text[:57] + "..."
    if isinstance(dt, (bool, np.bool_)):
        raise error(f"{where}dt must be a number of seconds, got {text}")
    try:
        seconds = float(dt)
    except (TypeError, ValueError):
        raise error(f"{where}dt must be a number of seconds, got {text}") from None
    if not (math.isfinite(seconds) and seconds > 0):
        raise error(f"{where}dt must be a positive, finite number of seconds, got {seconds!r}")
    return seconds


def _kind(*arrays: np.ndarray) -> type:
    """float32 when every stored array is float32 (e.g. snnTorch's export), else float64."""
    return np.float32 if all(np.asarray(a).dtype == np.float32 for a in arrays) else np.float64


def _step(a: np.ndarray, k: int) -> np.ndarray:
    out = a.copy()
    target = np.array(np.inf if k > 0 else -np.inf, dtype=a.dtype)
    for _ in range(abs(k)):
        out = np.nextafter(out, target)
    return out


def _trailing_zeros(a: np.ndarray) -> np.ndarray:
    """Trailing zero bits of each value's mantissa (a "simplicity" score: 1.0 scores highest)."""
    if a.dtype == np.float32:
        m = (a.view(np.uint32) & np.uint32(0x7FFFFF)).astype(np.uint64)
        nbits = 23
    else:
        m = a.view(np.uint64) & np.uint64((1 << 52) - 1)
        nbits = 52
    out = np.full(a.shape, nbits, dtype=np.int64)
    nz = m != 0
    low = m[nz] & (~m[nz] + np.uint64(1))  # lowest set bit
    out[nz] = np.round(np.log2(low.astype(np.float64))).astype(np.int64)
    return out


def _pick(cands: list[np.ndarray], hits: list[np.ndarray], approx: np.ndarray) -> np.ndarray:
    """Per element: the hit with the shortest mantissa, then nearest ``approx``; else ``approx``."""
    best = np.array(approx, dtype=cands[0].dtype, copy=True)
    score = np.full(best.shape, -1, dtype=np.int64)
    dist = np.full(best.shape, np.inf)
    a64 = np.asarray(approx, dtype=np.float64)
    for c, h in zip(cands, hits):
        s = _trailing_zeros(c)
        with np.errstate(invalid="ignore"):
            d = np.abs(c.astype(np.float64) - a64)
        d = np.where(np.isnan(d), 0.0, d)
        better = h & ((s > score) | ((s == score) & (d < dist)))
        best[better] = c[better]
        score[better] = s[better]
        dist[better] = d[better]
    return best


def _tau_forward(decay: np.ndarray, dt: float, kind: type) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return kind(dt) / (kind(1) - decay.astype(kind))


def decay_from_tau(tau: np.ndarray, dt: float) -> np.ndarray:
    """float32 ``1 - dt/tau`` solved exactly (see module doc). ``tau = inf`` gives 1."""
    tau = np.asarray(tau)
    kind = _kind(tau)
    tau = tau.astype(kind)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # dt >> tau: caller refuses d < 0
        q0 = kind(dt) / tau
        approx = 1.0 - q0.astype(np.float64)
        cands = []
        for k in range(-_SEARCH, _SEARCH + 1):
            c = (kind(1) - _step(q0, k)).astype(np.float32)
            cands += [c, _step(c, 1), _step(c, -1)]
        hits = [_tau_forward(c, dt, kind) == tau for c in cands]
        return _pick(cands, hits, approx.astype(np.float32))


def _r_forward(gain: np.ndarray, scale: np.ndarray, dt: float, kind: type) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return (gain.astype(kind) * scale.astype(kind)) / kind(dt)


def gain_from_r(r: np.ndarray, scale: np.ndarray | float, dt: float) -> np.ndarray:
    """``r*dt/scale`` solved exactly (``scale`` is tau for LIF/LI/CubaLIF, 1 for IF/I); the
    result has the stored arrays' precision."""
    r = np.asarray(r)
    scale_arr = np.asarray(scale)
    kind = _kind(r, scale_arr) if isinstance(scale, np.ndarray) else _kind(r)
    r = r.astype(kind)
    scale_arr = np.broadcast_to(scale_arr.astype(kind), r.shape)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g0 = (r * kind(dt)) / scale_arr
    cands = [_step(g0, k) for k in range(-_SEARCH, _SEARCH + 1)]
    hits = [_r_forward(c, scale_arr, dt, kind) == r for c in cands]
    return _pick(cands, hits, g0)


def tau_from_decay(decay: np.ndarray, dt: float) -> np.ndarray:
    """float64 ``tau = dt/(1 - decay)`` that :func:`decay_from_tau` maps back to ``decay``."""
    decay = np.asarray(decay, dtype=np.float32)
    tau0 = _tau_forward(decay, dt, np.float64)
    tau = tau0.copy()
    ok = decay_from_tau(tau, dt) == decay
    for k in (1, -1, 2, -2, 3, -3):
        if ok.all():
            break
        c = _step(tau0, k)
        hit = ~ok & (decay_from_tau(c, dt) == decay)
        tau[hit] = c[hit]
        ok |= hit
    return tau


def r_from_gain(gain: float | np.ndarray, scale: np.ndarray | float, dt: float) -> np.ndarray:
    """float64 ``r = gain*scale/dt``. Several float64 gains can round to the same ``r``, so the
    exporter also records the gain itself in the node's metadata (see :func:`gain_matches`)."""
    scale_arr = np.asarray(scale, dtype=np.float64)
    g = np.broadcast_to(np.asarray(gain, dtype=np.float64), scale_arr.shape)
    return _r_forward(g, scale_arr, dt, np.float64)


def gain_matches(gain: float, r: np.ndarray, scale: np.ndarray | float, dt: float) -> bool:
    """Whether ``gain`` (e.g. from node metadata) reproduces the stored ``r`` exactly."""
    r = np.asarray(r)
    scale_arr = np.asarray(scale)
    kind = _kind(r, scale_arr) if isinstance(scale, np.ndarray) else _kind(r)
    g = np.full(r.shape, gain, dtype=kind)
    return bool(np.array_equal(_r_forward(g, np.broadcast_to(scale_arr, r.shape), dt, kind), r.astype(kind)))


def decay_exp(tau: np.ndarray, dt: float) -> np.ndarray:
    """float32 ``exp(-dt/tau)``, rounded once from float64 (exact integration); ``tau = inf`` gives 1."""
    with np.errstate(divide="ignore", over="ignore"):
        return np.exp(-float(dt) / np.asarray(tau, dtype=np.float64)).astype(np.float32)


def gain_exp(r: np.ndarray, decay: np.ndarray) -> np.ndarray:
    """``r*(1 - decay)`` evaluated in float32 (exact integration's input gain), as float64 values."""
    one = np.float32(1)
    return (np.asarray(r, dtype=np.float32) * (one - np.asarray(decay, dtype=np.float32))).astype(np.float64)
