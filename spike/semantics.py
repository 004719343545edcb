"""Design §3 written once: the float32 neuron update that every backend runs (the numba backend
also in float64, for a float64 program: the same operations in double).

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

A population's own constant input ``bias`` (per neuron; none: 0) is added right after the charge,
``m = charge + bias`` (design §3's ``v' = beta*v + gain*I + bias``; before the ``late`` inputs),
from the population's onset on (``Program.onset``: its latency). A population starts from ``v =
v_init`` when given, else ``v = v_reset`` (0 unless a SpikingJelly hard reset says otherwise), and
zero currents (:func:`initial_state`). The Loihi fixed-point update (``precision`` "fixed") is ``spike.compiler.passes.quantize``'s;
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


def neuron_params(node: Any, dtype: type = np.float32) -> np.ndarray:
    """``[N_PARAMS, size]`` in ``dtype`` (float32; float64 for a float64 program): beta, threshold,
    alpha, tau, rate per neuron (unused: 0; beta of ``if``: 1)."""
    n = node.size
    out = np.zeros((N_PARAMS, n), dtype)
    for row, value, default in ((P_BETA, node.beta, 1.0), (P_THR, node.threshold, 1.0), (P_ALPHA, node.alpha, 0.0),
                                (P_TAU, node.tau, 1.0), (P_RATE, node.rate, 0.0)):
        out[row] = default if value is None else np.broadcast_to(np.asarray(value, dtype).reshape(-1), (n,))
    return out


def initial_state(node: Any, batch: int, dtype: type = np.float32) -> np.ndarray:
    """``[N_STATES, batch, size]`` in ``dtype``: ``v = v_init`` (per neuron) when the population has
    one, else ``v_reset``; everything else 0."""
    state = np.zeros((N_STATES, batch, node.size), dtype)
    v_init = getattr(node, "v_init", None)
    if v_init is None:
        state[S_V] = dtype(node.v_reset)
    else:
        state[S_V] = np.broadcast_to(np.asarray(v_init, dtype).reshape(-1), (node.size,))
    return state


def initial_v_fixed(node: Any, batch: int) -> np.ndarray:
    """The int32 membrane ``[batch, size]`` a fixed-point population starts from: its integer
    ``v_init``, else 0 (``u`` starts at 0)."""
    v = np.zeros((batch, node.size), np.int32)
    v_init = getattr(node, "v_init", None)
    if v_init is not None:
        v[:] = np.broadcast_to(np.asarray(v_init).astype(np.int64).reshape(-1), (node.size,)).astype(np.int32)
    return v


def neuron_bias(node: Any, dtype: type = np.float32) -> np.ndarray | None:
    """A population's own ``bias`` as ``[size]`` in ``dtype`` (None when it has none)."""
    bias = getattr(node, "bias", None)
    if bias is None:
        return None
    return np.array(np.broadcast_to(np.asarray(bias, dtype).reshape(-1), (node.size,)))


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
    rate, gain, v_reset, model, reset, reset_delay, fire_ge, charge, rule, has_late, bias=0,
    has_bias=False) -> (out, v, s, i, j)``; ``bias`` is added after the charge when ``has_bias``
    (the caller passes False before the population's onset).

    ``mul(a, b)`` is the backend's float product (float32; float64 in a float64 program);
    ``fire(m, thr, fire_ge)`` the spike of membrane ``m`` (:func:`threshold_fire`; in training a
    surrogate-gradient step of ``m - thr``); ``hold(s)`` the spike as a reset uses it (:func:`same`;
    in training ``s.detach()`` when the reset passes no gradient); ``one`` the value type's 1.
    """

    def step(x, late, v, s, i, j, beta, thr, alpha, tau, rate, gain, v_reset,
             model, reset, reset_delay, fire_ge, charge, rule, has_late, bias=0.0, has_bias=False):
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
        if has_bias:
            m = m + bias
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



# Generated spike sources (IR node ``Bernoulli``): a counter-based hash, exact in integer arithmetic
#
# Neuron ``k`` of sample ``b`` spikes at aligned step ``s`` iff ``h(seed, b, s, k) < floor(p_k * 2^32)``,
# with ``h`` a 32-bit hash built from Chris Wellons' ``lowbias32`` mixer (xor-shift, multiply by an odd
# constant mod 2^32, twice). Every value is a non-negative integer below 2^32 carried in int64, and
# each 32-bit product is formed from 16-bit halves (no intermediate reaches 2^49), so the same source
# gives the same bits as numpy int64 arrays, torch int64 tensors, numba and Numba CUDA int64 scalars:
# no overflow, no signed shifts, no floating point. The probability is exactly
# ``floor(p * 2^32) / 2^32`` (p = 1 always fires, p = 0 never).

HASH_MASK = 0xFFFFFFFF
HASH_MUL_A = 0x7FEB352D
HASH_MUL_B = 0x846CA68B
HASH_ODD = 0x9E3779B9  # added before each absorb: no input maps the chain to the fixed point 0


def _mix32(x):
    """``lowbias32(x)`` for ``0 <= x < 2^32``: ``x ^= x >> 16; x *= A; x ^= x >> 15; x *= B; x ^=
    x >> 16`` (mod 2^32), each product as ``(lo16(x) * c + (lo16(hi16(x) * c) << 16)) mod 2^32``."""
    x = x ^ (x >> 16)
    x = ((x & 0xFFFF) * HASH_MUL_A + ((((x >> 16) * HASH_MUL_A) & 0xFFFF) << 16)) & HASH_MASK
    x = x ^ (x >> 15)
    x = ((x & 0xFFFF) * HASH_MUL_B + ((((x >> 16) * HASH_MUL_B) & 0xFFFF) << 16)) & HASH_MASK
    return x ^ (x >> 16)


def make_spike_hash(compile_fn: Callable[[Callable], Callable] = lambda f: f) -> tuple[Callable, Callable]:
    """``(key, hash)``, compiled by ``compile_fn`` (identity for numpy/torch, ``njit`` or
    ``cuda.jit(device=True)``): ``key(seed_lo, seed_hi, sample, step)`` absorbs the two 32-bit
    halves of the seed, the sample and the aligned step; ``hash(key, neuron)`` absorbs the neuron
    index and mixes once more. ``absorb(k, v) = mix32(((k ^ v) + HASH_ODD) mod 2^32)``; every
    argument is an integer in ``[0, 2^32)`` (or an int64 array/tensor of them)."""
    mix = compile_fn(_mix32)

    def key(seed_lo, seed_hi, sample, step):
        k = mix((seed_lo + HASH_ODD) & HASH_MASK)
        k = mix(((k ^ seed_hi) + HASH_ODD) & HASH_MASK)
        k = mix(((k ^ sample) + HASH_ODD) & HASH_MASK)
        return mix(((k ^ step) + HASH_ODD) & HASH_MASK)

    def hash_(k, neuron):
        return mix(mix(((k ^ neuron) + HASH_ODD) & HASH_MASK))

    return compile_fn(key), compile_fn(hash_)


spike_key, spike_hash = make_spike_hash()  # numpy int64 arrays / torch int64 tensors / Python ints


def seed_words(seed: int) -> tuple[int, int]:
    """The two 32-bit halves ``(lo, hi)`` of a seed ``0 <= seed < 2^63``."""
    seed = int(seed)
    return seed & HASH_MASK, (seed >> 32) & HASH_MASK


def spike_thresholds(p: Any, n: int) -> np.ndarray:
    """``floor(p * 2^32)`` per neuron (int64 ``[n]``) of a probability array ``p`` (one value or
    ``n``, in [0, 1]): neuron ``k`` fires when its hash is below ``thresholds[k]``."""
    q = np.broadcast_to(np.asarray(p, np.float64).reshape(-1), (n,))
    return np.floor(q * 4294967296.0).astype(np.int64)  # a new contiguous array


def bernoulli_spikes(p: Any, n: int, seed: int, steps: int, batch: int, step0: int = 0) -> np.ndarray:
    """``[steps, batch, n]`` bool: the spikes of a ``Bernoulli`` node of ``n`` neurons (``p``: one
    probability or ``n``) at aligned steps ``step0 .. step0 + steps - 1`` (negative steps: silent,
    before the node's latency), in numpy int64."""
    thr = spike_thresholds(p, n)
    lo, hi = seed_words(seed)
    out = np.zeros((steps, batch, n), bool)
    neurons = np.arange(n, dtype=np.int64)
    samples = np.arange(batch, dtype=np.int64)
    for t in range(steps):
        s = t + step0
        if s < 0:
            continue
        keys = spike_key(np.int64(lo), np.int64(hi), samples, np.int64(s))  # [batch]
        out[t] = spike_hash(keys[:, None], neurons[None, :]) < thr
    return out
