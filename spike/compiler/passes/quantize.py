"""Quantisation to Loihi fixed point: ``quantize(program) -> Program`` (design brief §3, §5).

The fixed-point program is bit-accurate with lava-nc 0.10.0's ``PyLifModelBitAcc`` and
``PyDenseModelBitAcc`` (``lava/proc/lif/models.py``, ``lava/proc/dense/models.py``). Per step a
projection delivers, for the spikes ``s`` of its source (any non-zero value is a spike)::

    a = int32(shift(sum_j W_int[i, j] * s_j, weight_exp))      # shift: << e, or >> -e (floor)

(lava sums the integer weights in int64, applies the exponent after the sum, and the int32 port
wraps). A population adds its inputs in int32 (``a_in``) and updates, with int64 intermediates::

    u = sign(u) * ((|u| * (4096 - (du + 1))) >> 12)            # hidden +1: du=4095 clears u
    u = int32(u + int32(a_in << 6)); u -= 2^24 if u > 2^23; u += 2^24 if u <= -2^23
    v = sign(v) * ((|v| * (4096 - dv)) >> 12) + u + (bias_mant << bias_exp)
    v = clip(v, -(2^23 - 1), 2^23 - 1)
    spike = v > (vth << 6);  v = 0 where spike                  # u is not reset

(``spike.backends.numba.neurons.loihi_lif_step`` is the executable form). An ``li`` readout runs the same
``u``/``v`` update, never spikes and outputs ``v``; on Lava it is a LIF with ``vth = 2^17 - 1``
(which could only fire within 63 of the clip, ``v > 8388544``) whose ``v`` is probed.

Mapping from the float program (design §3: ``v' = beta*v + gain*I``, reset to zero in the step
of the spike, ``reset_delay=False``, strict ``>``). One real number ``S`` per population (shared by
populations fed by the same projection) turns float units into *activation units* (the integer
``a_in`` grid); ``v`` carries 6 more bits (``v_int ~ 64 * S * v``):

- ``du = 4095`` (u = a_in << 6: the step's current) for lif/if/li; cuba_lif ``du = round(4096 *
  (1 - alpha)) - 1`` clamped to 0..4095 (``u`` is the synaptic current ``i``);
  ``dv = round(4096 * (1 - beta))`` clamped to 0..4095;
- weights: ``W_int = round(gain * W * S / 2^e)`` with, per projection, the smallest ``weight_exp``
  ``e`` (-8..7) that keeps ``max |W_int| <= 2^(b-1) - 1`` (127 for 8 bits): the largest weight uses
  the whole range and every weight is within half an LSB (``2^e / (gain * S)`` float units);
- threshold: ``vth = round(threshold * S)``; when the group's spiking populations share one
  threshold, ``S`` is snapped so that ``threshold * S`` is an integer (exact threshold);
- bias (the projections' biases, summed per neuron; Loihi adds it to ``v`` every step):
  ``bias_mant << bias_exp = round(64 * S * gain * b)`` with the smallest exponent 0..7 that keeps
  the 13-bit mantissa; for cuba_lif the float bias passes through the synaptic filter, so ``b`` is
  replaced by its steady state ``b / (1 - alpha_q)`` (the first ~``1/(1-alpha)`` steps differ). A
  population's own ``bias`` (added to ``v`` in both, so exact up to rounding) joins it as
  ``64 * S * bias``; ``v_init`` becomes the integer ``v`` ``round(64 * S * v_init)``, clipped to 24 bits.

``S`` starts as large as the hardware allows (finer threshold, finer rounding of decays and right
shifts), limited by: ``vth <= 2^17 - 1``; no ``u`` wrap even if every input with a weight of one
sign spikes in every step (``|a_in| * 64 * 4096/(du+1) <= 2^23 - 64``); the bias fits 13 bits << 7;
``weight_exp <= 7``; for ``li`` (no reset, beta < 1) ``|v|`` stays inside 24 bits at that worst
case (an ``li`` with beta = 1 integrates without bound and clips). It is then lowered by less than
2x so that the group's largest weight is exactly ``2^(b-1) - 1`` at its exponent (the 8-bit range
is used in full), then snapped for an exact threshold (when that costs at most 1%), and backed off
further if rounding pushed an integer bound over its limit. The chosen ``S`` and what limits it,
plus the errors of every quantised quantity, are reported in
``program.metadata["quantization"][node]`` (projections: ``weight_exp``, ``scale`` (``W_int =
round(w * scale)``), ``lsb``, ``max_abs_weight_error`` <= lsb/2, ...; populations: ``scale`` S,
``v_scale`` 64*S, ``vth``, ``threshold_error``, ``du``, ``dv``, ``beta_error``, ``alpha_error``,
``bias_error``, ``u_headroom``, ``scale_limited_by``, ``notes``). Float ``v`` = ``v_int / (64*S)``.

Refused, with a :class:`ProgramError` naming the node and what to change: subtractive or no reset,
``reset_delay=True``, ``fire_ge=True``, negative thresholds, real-valued (non-spike) inputs into a
projection, host ops, a projection that feeds anything but populations, a population input that is
not a synaptic projection, average pooling over a window whose size is not a power of two (avg and
sum pooling become depthwise conv2d projections; max pooling of spikes stays an OR), and scales
that the bits cannot hold (weights or thresholds too small next to the rest of their layer).

The pass does not add delays: Lava's Dense delivers one step late, which a program for Loihi makes
explicit afterwards (``spike.compiler.passes.delays.target_delays``: delays >= 1, balanced, latency
recorded); a population's ``bias_mant`` then applies from its latency (``Program.onset``).
A Lava ``Dense`` equal to a projection: ``weights = 2 * W_int``, ``weight_exp = e - 1``,
``num_weight_bits=8`` (lava clips 8-bit mixed-sign weights to -256..255 and truncates them to even
values; ``(2 * sum) shifted by e - 1`` equals ``sum shifted by e`` exactly, floors included).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spike.compiler.ir.nodes import (
    BatchNorm, Conv2d, Dense, HostOp, Identity, Node, Pool2d, Population, Projection, Sparse,
)
from spike.compiler.ir.precision import program_precision
from spike.compiler.ir.program import Program, ProgramError, node_error, rebuild_graph
from spike.compiler.ir.signals import output_signal
from spike.semantics import LOIHI

__all__ = ["quantize", "loihi_neuron_params", "SPIKES_ONLY_HINT", "RESET_HINT"]

ACT = 1 << LOIHI.ACT_SHIFT  # 64: a_in << 6
U_SAFE = LOIHI.UV_MAX - ACT  # largest |u| allowed by the no-wrap bound
V_LIMIT = LOIHI.UV_MAX - 1
BIAS_LIMIT = LOIHI.BIAS_MANT_MAX << LOIHI.BIAS_EXP_MAX  # largest |bias_mant << bias_exp|
SPIKES_ONLY_HINT = "Loihi cores take spikes: use a rate/latency encoder or run the first layer on the host"
RESET_HINT = "Loihi's LIF resets to zero: train with reset='zero', reset_delay=False"


# ---- decoding (used by the backends) ----------------------------------------------------
def _int_param(arr: Any, n: int, what: str, name: str) -> np.ndarray:
    if arr is None:
        raise ProgramError(f"node {name!r} (population): fixed-point parameter {what} is missing (run quantize)")
    a = np.asarray(arr).astype(np.int64).reshape(-1)
    if a.shape[0] == 1 and n != 1:
        a = np.full(n, a[0], np.int64)
    if a.shape[0] != n:
        raise ProgramError(f"node {name!r} (population): {what} has {a.shape[0]} values, expected {n}")
    return np.ascontiguousarray(a)


def loihi_neuron_params(node: Population, name: str = "") -> dict[str, np.ndarray]:
    """Per-neuron int64 arrays a fixed-point kernel needs: ``du``, ``dv``, ``bias`` (``bias_mant <<
    bias_exp``; an arithmetic right shift for a negative exponent, as lava) and ``vth_eff``
    (``vth << 6``)."""
    n = node.size
    mant = _int_param(node.bias_mant, n, "bias_mant", name)
    exp = _int_param(node.bias_exp, n, "bias_exp", name)
    bias = np.where(exp >= 0, mant << np.maximum(exp, 0), mant >> np.maximum(-exp, 0))
    return {
        "du": _int_param(node.du, n, "du", name),
        "dv": _int_param(node.dv, n, "dv", name),
        "bias": np.ascontiguousarray(bias.astype(np.int64)),
        "vth_eff": _int_param(node.vth, n, "vth", name) << LOIHI.VTH_SHIFT,
    }


# ---- float analysis ---------------------------------------------------------------------
@dataclass
class _Proj:
    """A weighted projection: its float weights' bounds per target neuron, and its targets."""

    name: str
    node: Projection  # float node (a pool already turned into a depthwise conv2d)
    max_abs: float
    pos: np.ndarray  # per target neuron: sum of positive weights
    neg: np.ndarray  # per target neuron: sum of |negative weights|
    bias: np.ndarray  # per target neuron (zeros without a bias)
    targets: list[str]
    from_pool: bool = False


@dataclass
class _Pop:
    name: str
    node: Population
    spiking: bool
    thr: np.ndarray
    du: np.ndarray
    dv: np.ndarray
    filt: np.ndarray  # steady-state gain of the u filter: 4096 / (du + 1)
    projs: list[str] = field(default_factory=list)


def _weights_of(node: Projection) -> np.ndarray:
    if isinstance(node, (Dense, Conv2d)):
        return np.asarray(node.weight, dtype=np.float64)
    if isinstance(node, Sparse):
        return np.asarray(node.data, dtype=np.float64)
    return np.asarray([float(node.scale)])


def _row_bounds(node: Projection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = node.size
    if isinstance(node, Dense):
        w = np.asarray(node.weight, dtype=np.float64)
        b = np.zeros(n) if node.bias is None else np.asarray(node.bias, np.float64)
        return np.clip(w, 0, None).sum(1), np.clip(-w, 0, None).sum(1), b
    if isinstance(node, Sparse):
        pos, neg = np.zeros(n), np.zeros(n)
        d = np.asarray(node.data, np.float64)
        idx = np.asarray(node.indices, np.int64)
        np.add.at(pos, idx, np.clip(d, 0, None))
        np.add.at(neg, idx, np.clip(-d, 0, None))
        b = np.zeros(n) if node.bias is None else np.asarray(node.bias, np.float64)
        return pos, neg, b
    if isinstance(node, Conv2d):
        w = np.asarray(node.weight, dtype=np.float64)
        per = n // w.shape[0]  # output positions per channel
        pos = np.repeat(np.clip(w, 0, None).sum((1, 2, 3)), per)
        neg = np.repeat(np.clip(-w, 0, None).sum((1, 2, 3)), per)
        b = np.zeros(n) if node.bias is None else np.repeat(np.asarray(node.bias, np.float64), per)
        return pos, neg, b
    s = float(node.scale)
    return np.full(n, max(s, 0.0)), np.full(n, max(-s, 0.0)), np.zeros(n)


def _pool_as_conv(name: str, node: Pool2d) -> Conv2d:
    kh, kw = node.kernel
    area = kh * kw
    if node.mode == "avg" and area & (area - 1):
        raise node_error(name, node, "kernel", f"average pooling over {kh}x{kw} = {area} inputs: 1/{area} is not a power "
                   "of two; use a window of 1, 2, 4, 8, ... inputs or sum pooling")
    c = node.in_shape[0]
    w = np.full((c, 1, kh, kw), 1.0 / area if node.mode == "avg" else 1.0, np.float32)
    return Conv2d(shape=node.shape, in_shape=node.in_shape, delay=node.delay, weight=w, bias=None,
                  stride=tuple(node.stride), padding=tuple(node.padding), groups=c)


def _check_population(name: str, node: Population) -> None:
    if node.model not in LOIHI.FIXED_MODELS:
        raise node_error(name, node, "model", f"{node.model!r} has no Loihi fixed-point form")
    beyond = node.beyond_lif()
    if beyond:
        raise node_error(name, node, beyond[0], f"{beyond[1]!r} has no Loihi fixed-point form (Loihi's LIF: v' = beta*v + I, "
                   "reset to 0)")
    if node.model == "li":
        return
    if node.reset != "zero":
        raise node_error(name, node, "reset", f"{node.reset!r}: {RESET_HINT}")
    if node.reset_delay:
        raise node_error(name, node, "reset_delay", f"True: {RESET_HINT}")
    if node.fire_ge:
        raise node_error(name, node, "fire_ge", "True: Loihi fires on v > threshold; train with fire_ge=False")
    thr = np.asarray(node.threshold, np.float64)
    if (thr < 0).any():
        raise node_error(name, node, "threshold", f"negative ({thr.min():g}): Loihi's threshold is unsigned")


def _per_neuron(arr: Any, n: int, default: float) -> np.ndarray:
    if arr is None:
        return np.full(n, default)
    return np.broadcast_to(np.asarray(arr, np.float64).reshape(-1), (n,)).copy()


# ---- integer quantities -----------------------------------------------------------------
def _weight_exp(m: float, qmax: int) -> int:
    """Smallest exponent e with round(m / 2^e) <= qmax (m > 0)."""
    e = math.ceil(math.log2(m / qmax))
    while np.rint(m / 2.0**e) > qmax:
        e += 1
    while np.rint(m / 2.0 ** (e - 1)) <= qmax:
        e -= 1
    return e


def _shift_floor(x: np.ndarray, e: int) -> np.ndarray:
    return x * (1 << e) if e >= 0 else x >> (-e)


def _bias_parts(bias_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron: the smallest exponent 0..7 (or more, refused later) keeping the 13-bit mantissa."""
    mag = np.abs(bias_v)
    exp = np.zeros(len(bias_v), np.int64)
    big = mag > LOIHI.BIAS_MANT_MAX
    exp[big] = np.ceil(np.log2(mag[big] / LOIHI.BIAS_MANT_MAX)).astype(np.int64)
    for _ in range(3):
        over = np.abs(np.rint(bias_v / 2.0**exp)) > LOIHI.BIAS_MANT_MAX
        exp[over] += 1
    mant = np.rint(bias_v / 2.0**exp).astype(np.int64)
    return mant, exp


@dataclass
class _Quantised:
    nodes: dict[str, Node]
    report: dict[str, dict[str, Any]]
    ok: bool
    why: str = ""


def _summary(a: np.ndarray) -> Any:
    lo, hi = a.min(), a.max()
    return a.flat[0].item() if lo == hi else [lo.item(), hi.item()]


def _quantise_group(
    S: float, limit: str, group: list[str], pops: dict[str, _Pop], projs: dict[str, _Proj], weight_bits: int
) -> _Quantised:
    qmax = (1 << (weight_bits - 1)) - 1
    out: dict[str, Node] = {}
    report: dict[str, dict[str, Any]] = {}
    a_pos = {p: np.zeros(pops[p].node.size, np.int64) for p in group}
    a_neg = {p: np.zeros(pops[p].node.size, np.int64) for p in group}
    group_projs = sorted({j for p in group for j in pops[p].projs}, key=lambda j: list(projs).index(j))
    for j in group_projs:
        pr = projs[j]
        gains = {float(pops[t].node.gain) for t in pr.targets}
        if len(gains) != 1:
            raise node_error(j, pr.node, None, f"feeds populations {pr.targets} with different gains {sorted(gains)}; "
                       "one projection has one set of integer weights")
        factor = S * gains.pop()
        m = pr.max_abs * abs(factor)
        if m == 0:
            e = e_needed = 0
        else:
            e_needed = _weight_exp(m, qmax)
            e = max(e_needed, LOIHI.WEIGHT_EXP_MIN)
        if e > LOIHI.WEIGHT_EXP_MAX:
            return _Quantised(out, report, False, f"weight_exp {e} of {j!r}")
        if e_needed < LOIHI.WEIGHT_EXP_MIN and np.rint(m / 2.0**e) < (1 << max(weight_bits - 2, 0)):
            raise node_error(j, pr.node, None, (
                f"weights (max |w| = {pr.max_abs:.3g}) are too small next to the threshold and other inputs "
                f"of {pr.targets} (scale {S:.4g}, limited by {limit}): they would need weight_exp {e_needed} "
                f"< {LOIHI.WEIGHT_EXP_MIN} to keep {weight_bits} bits; scale this layer's weights up (or the "
                "threshold down) in training"))
        w = _weights_of(pr.node)
        w_int = np.clip(np.rint(w * factor / 2.0**e), -qmax, qmax).astype(np.int64)
        scale = factor / 2.0**e
        err = float(np.abs(w_int / scale - w).max()) if w.size and scale != 0 else 0.0
        dt = np.int8 if weight_bits <= 8 else np.int16
        node = pr.node
        common = dict(weight_exp=int(e), num_weight_bits=int(weight_bits))
        if isinstance(node, Dense):
            new = node.replace(weight=w_int.astype(dt), bias=None, **common)
        elif isinstance(node, Sparse):
            new = node.replace(data=w_int.astype(dt), bias=None, **common)
        elif isinstance(node, Conv2d):
            new = node.replace(weight=w_int.astype(dt), bias=None, **common)
        else:
            new = node.replace(scale=float(w_int[0]), **common)
        out[j] = new
        pos_i, neg_i, _ = _row_bounds(new)
        pos_i = _shift_floor(np.rint(pos_i).astype(np.int64), e)
        neg_i = -_shift_floor(-np.rint(neg_i).astype(np.int64), e)  # a negative sum floors away from 0
        for t in pr.targets:
            a_pos[t] += pos_i
            a_neg[t] += neg_i
        report[j] = {
            "kind": new.KIND, "targets": list(pr.targets), "weight_exp": int(e), "num_weight_bits": int(weight_bits),
            "scale": float(scale), "lsb": float(1 / scale) if scale else 0.0, "max_abs_weight": float(pr.max_abs),
            "max_abs_weight_int": int(np.abs(w_int).max()) if w_int.size else 0, "max_abs_weight_error": err,
            "from_pool": pr.from_pool,
        }
    for p in group:
        P = pops[p]
        node = P.node
        n = node.size
        gain = float(node.gain)
        b_total = np.zeros(n)
        for j in P.projs:
            b_total += projs[j].bias
        notes: list[str] = []
        cuba = node.model == "cuba_lif"
        filt = P.filt if cuba else np.ones(n)
        if cuba and (b_total != 0).any():
            notes.append("bias added to v at its synaptic steady state b/(1-alpha); the first steps differ")
        own_bias = _per_neuron(node.bias, n, 0.0)  # the population's own bias: added to v as Loihi's is
        bias_v = ACT * S * gain * b_total * filt + ACT * S * own_bias
        mant, bexp = _bias_parts(bias_v)
        if bexp.max() > LOIHI.BIAS_EXP_MAX:
            return _Quantised(out, report, False, f"bias of {p!r}")
        bias_eff = mant << bexp
        if P.spiking:
            vth = np.rint(P.thr * S).astype(np.int64)
            if (vth > LOIHI.VTH_MAX).any():
                return _Quantised(out, report, False, f"threshold of {p!r}")
            if ((vth == 0) & (P.thr > 0)).any():
                raise node_error(p, node, "threshold", (
                    f"{P.thr[P.thr > 0].min():.3g} rounds to vth 0 at scale {S:.4g} (limited by {limit}): the "
                    "threshold is too small next to this layer's inputs for 17 bits; raise it in training"))
        else:
            vth = np.full(n, LOIHI.VTH_MAX, np.int64)
        a_worst = np.maximum(a_pos[p], a_neg[p]).astype(np.float64)
        u_worst = ACT * a_worst * (4096.0 / (P.du + 1) if cuba else 1.0)
        if (u_worst > U_SAFE).any():
            return _Quantised(out, report, False, f"current u of {p!r}")
        if not P.spiking:
            leak = P.dv / 4096.0
            with np.errstate(divide="ignore", invalid="ignore"):
                v_worst = np.where(leak > 0, (u_worst + np.abs(bias_eff)) / leak, 0.0)
            if (v_worst > V_LIMIT).any():
                return _Quantised(out, report, False, f"membrane v of {p!r}")
            if (P.dv == 0).any():
                notes.append("beta = 1 without reset: v integrates without bound and clips at +-(2^23-1)")
        v_init = None  # the integer v of the float v_init: v_int = round(64 * S * v_init), within 24 bits
        if node.v_init is not None:
            v_init = np.clip(np.rint(ACT * S * _per_neuron(node.v_init, n, 0.0)), -V_LIMIT, V_LIMIT).astype(np.int32)
        new = node.replace(
            precision="fixed", du=P.du.astype(np.int32), dv=P.dv.astype(np.int32), vth=vth.astype(np.int32),
            bias_mant=mant.astype(np.int32), bias_exp=bexp.astype(np.int32), bias=None, v_init=v_init,
        )
        out[p] = new
        beta = _per_neuron(node.beta, n, 1.0)
        row: dict[str, Any] = {
            "kind": "population", "model": node.model, "group": list(group), "scale": float(S),
            "v_scale": float(ACT * S), "scale_limited_by": limit,
            "du": _summary(P.du), "dv": _summary(P.dv),
            "beta_error": float(np.abs((1 - P.dv / 4096.0) - beta).max()) if n else 0.0,
            "bias_error": float(np.abs((bias_eff / (ACT * S) - own_bias) / (gain * filt) - b_total).max())
            if n and gain else 0.0,
            "own_bias_error": float(np.abs(bias_eff / (ACT * S) - gain * b_total * filt - own_bias).max()) if n else 0.0,
            "u_headroom": float(u_worst.max() / LOIHI.UV_MAX) if n else 0.0,
            "notes": notes,
        }
        if P.spiking:
            row["vth"] = _summary(vth)
            row["threshold_error"] = float(np.abs(vth / S - P.thr).max()) if n else 0.0
        if cuba:
            alpha = _per_neuron(node.alpha, n, 0.0)
            row["alpha_error"] = float(np.abs((1 - (P.du + 1) / 4096.0) - alpha).max()) if n else 0.0
        report[p] = row
    return _Quantised(out, report, True)


def _group_scale(group: list[str], pops: dict[str, _Pop], projs: dict[str, _Proj], weight_bits: int) -> tuple[float, str]:
    """The largest scale S (activation units per float unit) the group's limits allow, and the limit."""
    qmax = (1 << (weight_bits - 1)) - 1
    cons: list[tuple[float, str]] = []
    for p in group:
        P = pops[p]
        node = P.node
        n = node.size
        g = abs(float(node.gain))
        pos, neg, bias = np.zeros(n), np.zeros(n), np.zeros(n)
        for j in P.projs:
            pos += projs[j].pos
            neg += projs[j].neg
            bias += projs[j].bias
            if projs[j].max_abs > 0 and g > 0:
                cons.append((qmax * 2.0**LOIHI.WEIGHT_EXP_MAX / (g * projs[j].max_abs), f"weight_exp <= 7 ({j})"))
        filt = P.filt if node.model == "cuba_lif" else np.ones(n)
        U = g * np.maximum(pos, neg) * filt  # worst |u| in float units
        if n and U.max() > 0:
            cons.append((U_SAFE / ACT / U.max(), f"no u wrap at full input ({p})"))
        Bv = np.abs(float(node.gain) * bias * filt + _per_neuron(node.bias, n, 0.0))  # and the population's own bias
        if n and Bv.max() > 0:
            cons.append((BIAS_LIMIT / ACT / Bv.max(), f"bias range ({p})"))
        if P.spiking and n and P.thr.max() > 0:
            cons.append((LOIHI.VTH_MAX / P.thr.max(), f"17-bit threshold ({p})"))
        if not P.spiking and n:
            leak = P.dv / 4096.0
            need = np.where(leak > 0, (U + Bv) / np.where(leak > 0, leak, 1), 0.0)
            if need.max() > 0:
                cons.append((V_LIMIT / ACT / need.max(), f"24-bit v of the readout ({p})"))
    if not cons:
        return 1.0, "nothing (no weights, bias or threshold)"
    S, why = min(cons, key=lambda c: c[0])
    return S * (1 - 2.0**-20), why


def _fill(S_cap: float, group: list[str], pops: dict[str, _Pop], projs: dict[str, _Proj], weight_bits: int) -> float:
    """The largest S <= S_cap (and > S_cap / 2) at which the group's largest weight is exactly the
    largest integer at its exponent, so that projection uses its whole range (finer weights matter
    more than the threshold's resolution, which stays within 2x of the largest allowed)."""
    qmax = (1 << (weight_bits - 1)) - 1
    m = max([abs(float(pops[p].node.gain)) * projs[j].max_abs for p in group for j in pops[p].projs] or [0.0])
    if m <= 0:
        return S_cap
    S = qmax * 2.0 ** math.floor(math.log2(S_cap * m / qmax)) / m
    while S > S_cap:  # floating-point edge
        S /= 2
    return S


def _snap(S: float, group: list[str], pops: dict[str, _Pop]) -> float:
    """When the group's spiking neurons share one threshold, make ``threshold * S`` an integer
    (if that lowers S by at most 1%: a coarse threshold grid keeps its rounding instead)."""
    thrs = np.concatenate([pops[p].thr for p in group if pops[p].spiking] or [np.zeros(0)])
    if thrs.size and thrs.min() == thrs.max() and thrs[0] > 0:
        vth = math.floor(thrs[0] * S)
        if vth >= 1 and vth >= 0.99 * thrs[0] * S:
            return vth / float(thrs[0])
    return S


# ---- the pass ---------------------------------------------------------------------------
def quantize(program: Program, weight_bits: int = 8) -> Program:
    """A new fixed-point Program (metadata ``precision: "fixed"`` and ``quantization`` report;
    populations ``precision="fixed"``) equivalent to the float ``program`` as closely as Loihi's
    bits allow; see the module docstring for the rules. ``program`` is not changed; it must have
    been through the float passes (``spike.compiler.pipeline.FLOAT_PIPELINE``).

    ``weight_bits`` (1..8): signed bits of each integer weight (``num_weight_bits``).
    """
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, (int, np.integer)) or not (
        LOIHI.WEIGHT_BITS_MIN <= weight_bits <= LOIHI.WEIGHT_BITS_MAX
    ):
        raise ValueError(f"weight_bits must be an int in [{LOIHI.WEIGHT_BITS_MIN}, {LOIHI.WEIGHT_BITS_MAX}], got {weight_bits!r}")
    weight_bits = int(weight_bits)
    if program_precision(program) == "fixed":
        raise ProgramError("quantize: the program is already fixed point (metadata precision 'fixed')")
    nodes = dict(program.nodes())
    for name, node in nodes.items():
        if isinstance(node, Population) and (node.threshold is None or (node.beta is None and node.charge == "beta")):
            raise node_error(name, node, None, "has no per-neuron parameters: quantize takes a program through the float "
                       "passes (spike.compiler.pipeline.FLOAT_PIPELINE)")

    for name, node in nodes.items():
        if isinstance(node, HostOp):
            raise node_error(name, node, None, f"host op {node.op!r} has no fixed-point form ({SPIKES_ONLY_HINT})")
        if isinstance(node, BatchNorm):
            raise node_error(name, node, None, "BatchNorm must be folded first (spike.compiler.passes.fold_batchnorm)")
        if node.KIND == "gate":
            raise node_error(name, node, None, "FTWT gates run in float32 programs only (no fixed-point form yet)")
    projs: dict[str, _Proj] = {}
    for name, node in nodes.items():
        if isinstance(node, Population):
            _check_population(name, node)
            continue
        if not isinstance(node, Projection):
            continue
        (src,) = program.sources(name)
        signal = output_signal(program, src)
        if signal != "spike":
            raise node_error(name, node, None, f"its input {src!r} is a {signal} signal. {SPIKES_ONLY_HINT}")
        if isinstance(node, Pool2d) and node.mode == "max":
            continue  # an OR of spikes: passes events on
        from_pool = isinstance(node, Pool2d)
        fnode = _pool_as_conv(name, node) if from_pool else node
        consumers = program.consumers(name)
        bad = [c for c in consumers if not isinstance(nodes[c], Population)]
        if bad or not consumers or name in program.outputs:
            where = ", ".join(f"{c!r} ({nodes[c].KIND})" for c in bad) or ("the program outputs" if consumers else "nothing")
            raise node_error(name, node, None, f"delivers its current to {where}: on Loihi synaptic currents go only into "
                       "neurons; end the network with a population (e.g. an 'li' readout)")
        pos, neg, bias = _row_bounds(fnode)
        w = _weights_of(fnode)
        projs[name] = _Proj(name, fnode, float(np.abs(w).max()) if w.size else 0.0, pos, neg, bias, consumers, from_pool)

    pops: dict[str, _Pop] = {}
    for name, node in nodes.items():
        if not isinstance(node, Population):
            continue
        for src in program.sources(name):
            if src not in projs:
                raise node_error(name, node, None, f"input {src!r} ({nodes[src].KIND}) is not a synaptic projection: on Loihi a "
                           "neuron's input is the sum of its synapses (connect it through a dense/conv2d/identity projection)")
        n = node.size
        beta = _per_neuron(node.beta, n, 1.0)
        dv = np.clip(np.rint(4096 * (1 - beta)), 0, LOIHI.DECAY_MAX).astype(np.int64)
        if node.model == "cuba_lif":
            alpha = _per_neuron(node.alpha, n, 0.0)
            du = np.clip(np.rint(4096 * (1 - alpha)) - 1, 0, LOIHI.DECAY_MAX).astype(np.int64)
        else:
            du = np.full(n, LOIHI.DECAY_MAX, np.int64)
        pops[name] = _Pop(name, node, node.model != "li", _per_neuron(node.threshold, n, 0.0), du, dv,
                          4096.0 / (du + 1), list(program.sources(name)))

    # populations fed by one projection share its scale
    parent = {p: p for p in pops}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for pr in projs.values():
        for t in pr.targets[1:]:
            parent[find(t)] = find(pr.targets[0])
    groups: dict[str, list[str]] = {}
    for p in pops:
        groups.setdefault(find(p), []).append(p)

    changed: dict[str, Node] = {}
    report: dict[str, dict[str, Any]] = {}
    for group in groups.values():
        cap, limit = _group_scale(group, pops, projs, weight_bits)
        for _ in range(100):
            S = _snap(_fill(cap, group, pops, projs, weight_bits), group, pops)
            q = _quantise_group(S, limit, group, pops, projs, weight_bits)
            if q.ok:
                break
            cap = min(cap, S) * 0.97  # rounding pushed an integer bound over its limit: back off
            if "reduced" not in limit:
                limit = f"{limit}; reduced to keep the {q.why} in range"
        else:
            raise ProgramError(f"populations {group}: no scale keeps {q.why} within Loihi's bits")
        changed.update(q.nodes)
        report.update(q.report)
    metadata = {**dict(program.metadata), "precision": "fixed", "quantization": report}
    return program.with_graph(rebuild_graph(program, nodes=changed), metadata=metadata)
