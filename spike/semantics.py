"""Design §3 written once: the float32 neuron update that every backend runs.

One step of one neuron (or of whole arrays of them) is :func:`make_neuron_step`'s function; the
numba and CUDA kernels compile it (with their own multiply, so no backend fuses a product into
an addition), the torch backend and the lava backend's Python processes call it on tensors and
numpy arrays. Only integer flags branch; values never do, so the same source serves scalars and
arrays. Operation order is part of the definition: float results equal the library a model came
from bit for bit whenever its sums are exact.

With ``I`` the sum of a population's inputs in source order (``late``: the sum of its recurrent
inputs, kept apart when the population adds them after its charge), ``r`` the reset signal of the
previous step and ``s`` the spike of this one:

- ``r = s[t-1]`` (rule ``standard``) or ``r = H(v - thr)`` of the stored membrane (rule
  ``snntorch``: snnTorch's ``mem_reset``, which also sees neurons still above threshold after a
  reset without delay);
- synaptic stage: ``cuba_lif`` ``i = alpha*i + I (+ late)``, ``u = i``; ``alpha`` (snnTorch's
  Alpha) ``e = alpha*e + I``, ``n = beta*n - I``, ``m = tau*(e + n)``; otherwise ``u = I``;
- charge: ``beta`` ``m = beta*v + gain*u``; ``tau_input`` ``m = v + (u - (v - v_reset))/tau``;
  ``tau`` ``m = v - (v - v_reset)/tau + u``; ``rate_input`` ``m = v + (u - (v - v_reset))*rate``;
  ``rate`` ``m = v - (v - v_reset)*rate + u`` (SpikingJelly's LIF and ParametricLIF charges);
  ``(+ late)`` for the other models;
- reset from the previous step (``reset_delay``, and always under rule ``snntorch``): ``subtract``
  ``m = m - thr*r``; ``zero`` resets the old membrane before the charge, ``v := (1-r)*v``;
  ``drop`` resets the new one, ``m = m - m*r`` (the step's input is lost, as snnTorch's Synaptic,
  Lapicque and recurrent neurons do);
- fire ``s = H(m - thr)``, on ``m > thr`` or ``m >= thr`` (``fire_ge``);
- reset in the same step (``reset_delay`` False), with ``d = s`` (standard) or ``d = s - r``
  (snntorch): ``subtract`` ``v = m - thr*d``; ``zero``/``drop`` ``v = s*v_reset + (1-s)*m``
  (standard) or ``v = m - d*m`` (snntorch); ``none`` ``v = m``. Otherwise ``v = m``.
- ``li`` never fires: it outputs ``m`` and keeps it.

A population starts from ``v = v_reset`` (0 unless a SpikingJelly hard reset says otherwise) and
zero currents. The Loihi fixed-point update (``precision`` "fixed") is ``spike.compiler.passes.quantize``'s;
the ranges of its parameters and state are :class:`LOIHI`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

MODELS = {"lif": 0, "if": 0, "cuba_lif": 1, "li": 2, "alpha": 3}
MODEL_LIF, MODEL_CUBA, MODEL_LI, MODEL_ALPHA = 0, 1, 2, 3
RESETS = {"subtract": 0, "zero": 1, "none": 2, "drop": 3}
RESET_SUBTRACT, RESET_ZERO, RESET_NONE, RESET_DROP = 0, 1, 2, 3
CHARGES = {"beta": 0, "tau": 1, "tau_input": 2, "rate": 3, "rate_input": 4}
CHARGE_BETA, CHARGE_TAU, CHARGE_TAU_INPUT, CHARGE_RATE, CHARGE_RATE_INPUT = 0, 1, 2, 3, 4
RULES = {"standard": 0, "snntorch": 1}
RULE_STANDARD, RULE_SNNTORCH = 0, 1

# rows of the per-neuron parameter array (:func:`neuron_params`)
P_BETA, P_THR, P_ALPHA, P_TAU, P_RATE = 0, 1, 2, 3, 4
N_PARAMS = 5
# rows of the state array: membrane, previous spike, synaptic current(s)
S_V, S_S, S_I, S_J = 0, 1, 2, 3
N_STATES = 4


class NeuronFlags(NamedTuple):
    """The integer switches of one population's update (constant over a run)."""

    model: int
    reset: int
    reset_delay: bool
    fire_ge: bool
    charge: int
    rule: int
    late: bool  # recurrent inputs added after the charge (kept apart from I)


def neuron_flags(node: Any) -> NeuronFlags:
    """The switches of a ``Population`` node."""
    return NeuronFlags(
        MODELS[node.model], RESETS[node.reset], bool(node.reset_delay), bool(node.fire_ge),
        CHARGES[node.charge], RULES[node.reset_rule], bool(node.late_recurrent),
    )


def neuron_params(node: Any) -> np.ndarray:
    """``[N_PARAMS, size]`` float32: beta, threshold, alpha, tau, rate per neuron (unused: 0;
    beta of ``if``: 1)."""
    n = node.size
    out = np.zeros((N_PARAMS, n), np.float32)
    for row, value, default in ((P_BETA, node.beta, 1.0), (P_THR, node.threshold, 1.0), (P_ALPHA, node.alpha, 0.0),
                                (P_TAU, node.tau, 1.0), (P_RATE, node.rate, 0.0)):
        out[row] = default if value is None else np.broadcast_to(np.asarray(value, np.float32).reshape(-1), (n,))
    return out


def initial_state(node: Any, batch: int) -> np.ndarray:
    """``[N_STATES, batch, size]`` float32: ``v = v_reset``, everything else 0."""
    state = np.zeros((N_STATES, batch, node.size), np.float32)
    state[S_V] = np.float32(node.v_reset)
    return state


def threshold_fire(to_float: Callable) -> Callable:
    """``fire(m, thr, fire_ge)`` = ``to_float(m >= thr)`` or ``to_float(m > thr)``: the spike of
    :func:`make_neuron_step` where ``to_float`` turns a comparison into 0/1 of the value type."""

    def fire(m, thr, fire_ge):
        return to_float(m >= thr) if fire_ge else to_float(m > thr)

    return fire


def same(s: Any) -> Any:
    """The reset signal of :func:`make_neuron_step` when no gradient is cut: the spike itself."""
    return s


def make_neuron_step(mul: Callable, fire: Callable, hold: Callable, one: Any) -> Callable:
    """The update of the module docstring as ``step(x, late, v, s, i, j, beta, thr, alpha, tau,
    rate, gain, v_reset, model, reset, reset_delay, fire_ge, charge, rule, has_late) -> (out, v,
    s, i, j)``.

    ``mul(a, b)`` is the backend's float32 product; ``fire(m, thr, fire_ge)`` the spike of
    membrane ``m`` (:func:`threshold_fire`; in training a surrogate-gradient step of ``m - thr``);
    ``hold(s)`` the spike as a reset uses it (:func:`same`; in training ``s.detach()`` when the
    reset passes no gradient); ``one`` the value type's 1.
    """

    def step(x, late, v, s, i, j, beta, thr, alpha, tau, rate, gain, v_reset,
             model, reset, reset_delay, fire_ge, charge, rule, has_late):
        if rule == RULE_SNNTORCH:
            r = hold(fire(v, thr, False))
        else:
            r = hold(s)
        delayed = reset_delay or rule == RULE_SNNTORCH
        if model == MODEL_ALPHA:
            e = mul(alpha, i) + x
            n = mul(beta, j) - x
            m = mul(tau, e + n)
            if reset == RESET_SUBTRACT:
                m = m + mul(j, r)  # snnTorch: mem - (-syn_inh[t-1]) * reset
                e = e - mul(thr, r)
                n = n - mul(n, r)
            elif reset != RESET_NONE:
                e = e - mul(e, r)
                n = n - mul(n, r)
                m = m - mul(m, r)
            sn = fire(m, thr, fire_ge)
            return sn, m, sn, e, n
        if model == MODEL_CUBA:
            i = mul(alpha, i) + x
            if has_late:
                i = i + late
            u = i
        else:
            u = x
        if charge == CHARGE_BETA:
            if delayed and reset == RESET_ZERO:
                m = mul(beta, mul(one - r, v)) + mul(gain, u)
            else:
                m = mul(beta, v) + mul(gain, u)
        elif charge == CHARGE_TAU_INPUT:
            m = v + (u - (v - v_reset)) / tau
        elif charge == CHARGE_TAU:
            m = v - (v - v_reset) / tau + u
        elif charge == CHARGE_RATE_INPUT:
            m = v + mul(u - (v - v_reset), rate)
        else:
            m = v - mul(v - v_reset, rate) + u
        if has_late and model != MODEL_CUBA:
            m = m + late
        if model == MODEL_LI:
            return m, m, s, i, j
        if delayed:
            if reset == RESET_SUBTRACT:
                m = m - mul(thr, r)
            elif reset == RESET_DROP:
                m = m - mul(m, r)
        sn = fire(m, thr, fire_ge)
        d = hold(sn)
        if reset_delay or reset == RESET_NONE:
            v = m
        elif rule == RULE_SNNTORCH:
            d = d - r
            if reset == RESET_SUBTRACT:
                v = m - mul(d, thr)
            else:
                v = m - mul(d, m)
        elif reset == RESET_SUBTRACT:
            v = m - mul(thr, d)
        else:
            v = mul(d, v_reset) + mul(one - d, m)
        return sn, v, sn, i, j

    return step


def _product(a: Any, b: Any) -> Any:
    return a * b


def _as_float32(c: np.ndarray) -> np.ndarray:
    return np.asarray(c, np.float32)


# numpy arrays (the lava backend's Python processes): float32 in, float32 out
numpy_step = make_neuron_step(_product, threshold_fire(_as_float32), same, np.float32(1))


# Loihi fixed point (design §3): the ranges of its parameters and state
class LOIHI:
    """Loihi fixed-point ranges (lava-nc 0.10.0 ``PyLifModelBitAcc`` / ``PyDenseModelBitAcc``)."""

    UV_BITS = 24  # u and v are 24-bit signed
    UV_MAX = 1 << 23  # u wraps past +-2^23, v is clipped to +-(2^23 - 1)
    DECAY_BITS = 12  # du, dv in 0..4095, decay factor (4096 - d) / 4096
    DECAY_MAX = 4095
    VTH_MAX = (1 << 17) - 1  # 17-bit unsigned threshold mantissa
    ACT_SHIFT = 6  # a_in << 6 into u
    VTH_SHIFT = 6  # spike on v > vth << 6
    BIAS_MANT_MIN, BIAS_MANT_MAX = -4096, 4095  # 13-bit signed
    BIAS_EXP_MIN, BIAS_EXP_MAX = 0, 7  # 3-bit unsigned
    WEIGHT_EXP_MIN, WEIGHT_EXP_MAX = -8, 7
    WEIGHT_BITS_MIN, WEIGHT_BITS_MAX = 1, 8
    FIXED_MODELS = ("lif", "if", "cuba_lif", "li")

