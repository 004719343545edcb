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

import numpy as np

from spike.compiler.ir.nodes import Dense, Population, Sparse
from spike.compiler.ir.program import Program
from spike.compiler.ir.signals import output_signal

__all__ = ["float32_exact_inputs", "quantum"]

MANTISSA = 24  # float32's significand bits


def quantum(values: np.ndarray) -> float | None:
    """The largest power of two of which every value is an integer multiple (float64 ``values``
    that are float32 values), or None when some value is no float32 value, not finite, or all are
    zero."""
    v = np.asarray(values, np.float64).reshape(-1)
    v = v[v != 0]
    if not v.size or not np.all(np.isfinite(v)) or not np.array_equal(v.astype(np.float32), v):
        return None
    frac, exp = np.frexp(np.abs(v))  # |v| = frac * 2**exp, frac in [0.5, 1)
    mant = (frac * 2.0**MANTISSA).astype(np.int64)  # exact: a float32 significand
    low = mant & -mant  # its lowest set bit
    return float(np.min(np.ldexp(low.astype(np.float64), exp - MANTISSA)))


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
    parts = [_weights(p).reshape(-1) for p in projections]
    parts += [np.asarray(p.bias).reshape(-1) for p in projections if p.bias is not None]
    q = quantum(np.concatenate([np.asarray(a, np.float64) for a in parts]))
    if q is None:
        return False
    total = sum(_abs_sums(p) for p in projections)
    # every term a multiple of q below 2**24 q: the float64 sums of the bound are exact
    return bool(np.max(total) <= q * 2.0**MANTISSA)
