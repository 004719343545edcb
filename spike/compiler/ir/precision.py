"""Precision rules of a Program: float programs (float32, float64) hold float weights and
populations of the program's precision (float64: no FTWT gates and no host ops, which run in
float32 only); fixed-point programs obey Loihi's ranges (:class:`spike.semantics.LOIHI`), checked
node by node, naming the node and the field (design brief §3, §4).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from spike.compiler.ir import nodes as ir
from spike.compiler.ir.nodes import BatchNorm, Conv2d, Dense, Gate, HostOp, Identity, Input, Node, Pool2d, Population, Sparse
from spike.compiler.ir.program import Program, ProgramError, node_error
from spike.compiler.ir.schema import FIXED_WEIGHT_ARRAYS
from spike.semantics import LOIHI

__all__ = ["program_precision", "check_precision", "check_fixed_point"]


def program_precision(program: Program) -> str:
    """``metadata["precision"]`` when given, else ``fixed`` if any population is fixed point."""
    p = program.metadata.get("precision")
    if p is not None:
        return str(p)
    kinds = {n.precision for _, n in program.nodes() if isinstance(n, Population)}
    return "fixed" if "fixed" in kinds else "float64" if "float64" in kinds else "float32"


def check_precision(program: Program) -> None:
    """A float program has float weights and populations of its precision (a float64 one no gates
    and no host ops); a fixed one obeys :func:`check_fixed_point`."""
    precision = program_precision(program)
    if precision not in ir.PRECISIONS:
        raise ProgramError(f"program metadata precision {precision!r} is not one of {', '.join(ir.PRECISIONS)}")
    if precision == "fixed":
        check_fixed_point(program)
        return
    for name, node in program.nodes():
        if isinstance(node, Population) and node.precision != precision:
            raise node_error(name, node, "precision", f"{node.precision!r} in a {precision} program (metadata precision)")
        if precision == "float64" and isinstance(node, (Gate, HostOp)):
            raise node_error(name, node, None, f"a {node.KIND} runs in float32 only; compile with precision='float32'")
        for f in FIXED_WEIGHT_ARRAYS.get(type(node), ()):
            arr = getattr(node, f)
            if arr is not None and arr.dtype.kind in "iu":
                what = "an integer initial membrane" if f == "v_init" else "integer weights"
                raise node_error(name, node, f, f"{what} (dtype {arr.dtype}) belong(s) to fixed-point programs; "
                           f"this program's precision is {precision}")


def _int_values(name: str, node: Node, field: str, arr: Any, lo: int, hi: int, why: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        if a.size and not np.array_equal(a, np.round(a)):
            raise node_error(name, node, field, f"fixed point needs integer values ({why})")
    elif a.dtype.kind not in "iu":
        raise node_error(name, node, field, f"fixed point needs an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < lo or a.max() > hi):
        raise node_error(name, node, field, f"values must lie in [{lo}, {hi}] ({why}), got [{a.min()}, {a.max()}]")
    return a


def _check_fixed_node(name: str, node: Node, program: Program) -> None:
    L = LOIHI
    if isinstance(node, Population):
        if node.precision != "fixed":
            raise node_error(name, node, "precision", f"{node.precision!r} in a fixed-point program: run spike.compiler.passes.quantize")
        if node.model not in L.FIXED_MODELS:
            raise node_error(name, node, "model", f"{node.model!r} has no fixed-point form")
        beyond = node.beyond_lif()
        if beyond:
            raise node_error(name, node, beyond[0], f"{beyond[1]!r} has no fixed-point form")
        if node.model != "li":
            if node.reset != "zero":
                raise node_error(name, node, "reset", f"{node.reset!r}: Loihi's LIF resets to zero")
            if node.reset_delay:
                raise node_error(name, node, "reset_delay", "must be False: Loihi resets in the step it spikes")
            if node.fire_ge:
                raise node_error(name, node, "fire_ge", "must be False: Loihi spikes on v > vth << 6")
        ranges = {
            "du": (0, L.DECAY_MAX, "12-bit current decay"),
            "dv": (0, L.DECAY_MAX, "12-bit voltage decay"),
            "vth": (0, L.VTH_MAX, "17-bit unsigned threshold"),
            "bias_mant": (L.BIAS_MANT_MIN, L.BIAS_MANT_MAX, "13-bit signed bias mantissa"),
            "bias_exp": (L.BIAS_EXP_MIN, L.BIAS_EXP_MAX, "3-bit bias exponent"),
        }
        for f, (lo, hi, why) in ranges.items():
            if getattr(node, f) is None:
                raise node_error(name, node, f, "required for a fixed-point population (run spike.compiler.passes.quantize)")
            _int_values(name, node, f, getattr(node, f), lo, hi, why)
        if node.bias is not None:
            raise node_error(name, node, "bias", "must be None in fixed point: Loihi's bias is bias_mant << bias_exp "
                             "(spike.compiler.passes.quantize maps a float bias there)")
        if node.v_init is not None:
            _int_values(name, node, "v_init", node.v_init, -(L.UV_MAX - 1), L.UV_MAX - 1, "the 24-bit integer membrane v")
        return
    if isinstance(node, Input):
        if node.signal != "spike":
            raise node_error(name, node, "signal", "fixed-point programs take spike inputs (Loihi cores take spikes)")
        return
    if isinstance(node, HostOp):
        raise node_error(name, node, None, "host ops have no fixed-point form")
    if isinstance(node, Gate):
        raise node_error(name, node, None, "FTWT gates run in float32 programs only (no fixed-point form yet)")
    if isinstance(node, BatchNorm):
        raise node_error(name, node, None, "fold BatchNorm before quantising")
    if isinstance(node, Pool2d):
        if node.mode != "max":
            raise node_error(name, node, "mode", f"{node.mode!r} pooling has no fixed-point form (quantize turns it into a depthwise conv2d)")
        return
    if isinstance(node, (Dense, Sparse, Conv2d, Identity)):
        nb = node.num_weight_bits
        if not (L.WEIGHT_BITS_MIN <= nb <= L.WEIGHT_BITS_MAX):
            raise node_error(name, node, "num_weight_bits", f"must lie in [{L.WEIGHT_BITS_MIN}, {L.WEIGHT_BITS_MAX}], got {nb}")
        if not (L.WEIGHT_EXP_MIN <= node.weight_exp <= L.WEIGHT_EXP_MAX):
            raise node_error(name, node, "weight_exp", f"must lie in [{L.WEIGHT_EXP_MIN}, {L.WEIGHT_EXP_MAX}], got {node.weight_exp}")
        lo, hi = -(1 << (nb - 1)), (1 << (nb - 1)) - 1
        why = f"{nb}-bit signed weights"
        if isinstance(node, Identity):
            _int_values(name, node, "scale", np.asarray(node.scale), lo, hi, why)
        else:
            for f in FIXED_WEIGHT_ARRAYS[type(node)]:
                _int_values(name, node, f, getattr(node, f), lo, hi, why)
            if node.bias is not None:
                raise node_error(name, node, "bias", "must be None in fixed point: Loihi adds biases in the neuron (bias_mant)")


def check_fixed_point(program: Program) -> None:
    """Rules of a fixed-point program (precision "fixed"), naming the node and field:
    fixed populations with in-range Loihi parameters (``du``, ``dv`` 0..4095, ``vth`` 0..2^17-1,
    ``bias_mant`` 13-bit signed, ``bias_exp`` 0..7, no float ``bias``, an integer ``v_init`` within
    24 bits; reset zero without delay, strict ``>``);
    projections with integer-valued weights in their signed ``num_weight_bits`` range, no bias
    and ``weight_exp`` in -8..7; spike inputs; no host ops; pooling only ``max`` (an OR)."""
    for name, node in program.nodes():
        _check_fixed_node(name, node, program)
