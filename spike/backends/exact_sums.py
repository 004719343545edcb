"""Input sums that float32 holds exactly, so that a float64 run may keep them in float32 buffers.

A float64 program (``passes.float_precision``) computes every current in double, as NEST and Brian2
do. A population's input is exact in float32 too, in any order of summation, when

* every source is a dense or sparse projection of spikes (each input 0 or 1), and
* every weight and bias of those projections is a float32 value and a multiple of one power of
  two ``q`` (the smallest quantum among them), and
* for every neuron ``j``, ``sum over its projections p of (|b_pj| + sum_i |W_p[j, i]|) <= 2**24 q``:

then every partial sum is an integer multiple of ``q`` of magnitude at most ``2**24 q``, which
float32 represents exactly. The projections into such a population may then write float32 currents
in a float64 run: the same values in half the bytes (``engine.signal_dtype``). Random networks
with a few synaptic weights (``spike.models.random_net``: Brunel's J and -gJ) qualify; arbitrary
float weights do not.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from spike.compiler.ir.nodes import Dense, Population, Sparse
from spike.compiler.ir.program import Program
from spike.compiler.ir.signals import output_signal

__all__ = ["float32_exact_inputs", "quantum"]

MANTISSA = 24  # float32's significand bits


def quantum(values: np.ndarray) -> float | None:
    """The largest power of two of which every value is an integer multiple (``values``: float32 or
    float64; ``inf`` when all are zero), or None when some value is no float32 value or not finite."""
    v = np.ascontiguousarray(values).reshape(-1)
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    found, exponent = _min_quantum_exponent(v)
    if found < 0:
        return None
    return math.ldexp(1.0, exponent) if found else math.inf


@njit(cache=True)
def _min_quantum_exponent(v):
    """``(found, e)``: ``found`` 1 and ``2**e`` the quantum of the non-zero values (float32 values:
    significand ``M`` of 24 bits, ``|x| = M 2**(k - 24)``, quantum ``2**(k - 24 + ctz(M))``); 0 when
    all are zero; -1 when one is no float32 value or not finite."""
    best = 1 << 30
    found = 0
    last = v.dtype.type(0)
    for i in range(v.shape[0]):
        x = v[i]
        if x == 0 or x == last:  # a repeated value (a network of a few weights): known already
            continue
        last = x
        if not math.isfinite(x) or np.float64(np.float32(x)) != np.float64(x):
            return -1, 0
        frac, k = math.frexp(abs(np.float64(x)))
        m = np.int64(frac * 16777216.0)  # 2**MANTISSA: exact for a float32 value
        low = m & -m
        e = k - MANTISSA
        while low > 1:
            low >>= 1
            e += 1
        if e < best:
            best = e
        found = 1
    return found, best


def _weights(node: Dense | Sparse) -> np.ndarray:
    return np.asarray(node.weight if isinstance(node, Dense) else node.data)


def _abs_sums(node: Dense | Sparse) -> np.ndarray:
    """Per target ``j``: ``|b_j| + sum_i |W[j, i]|`` (float64)."""
    w = np.abs(_weights(node).astype(np.float64))
    if isinstance(node, Dense):
        total = w.reshape(node.size, -1).sum(axis=1)
    else:
        total = np.bincount(np.asarray(node.indices, np.int64), weights=w, minlength=node.size)
    if node.bias is not None:
        total = total + np.abs(np.asarray(node.bias, np.float64).reshape(-1))
    return total


def float32_exact_inputs(program: Program, name: str) -> bool:
    """Whether population ``name``'s input sums are exact in float32 (module docstring)."""
    node = program.node(name)
    sources = program.sources(name)
    if not isinstance(node, Population) or not sources:
        return False
    projections = [program.node(s) for s in sources]
    if not all(isinstance(p, (Dense, Sparse)) for p in projections):
        return False
    if not all(output_signal(program, program.sources(s)[0]) == "spike" for s in sources):
        return False
    parts = [_weights(p) for p in projections] + [p.bias for p in projections if p.bias is not None]
    quanta = [quantum(np.asarray(a)) for a in parts]
    if any(q is None for q in quanta):
        return False
    q = min(quanta)
    total = sum(_abs_sums(p) for p in projections)
    # every term a multiple of q below 2**24 q: the float64 sums of the bound are exact
    return bool(np.max(total) <= q * 2.0**MANTISSA)
