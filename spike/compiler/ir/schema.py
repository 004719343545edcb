"""The field schema of the IR node dataclasses: what validation checks and serialisation writes.

The field types come from each node class's annotations (:func:`field_specs`), so a new field of a
supported type (int, float, bool, str, tuple of ints, ``np.ndarray | None``, or an optional
scalar) is validated (``validate``) and serialised (``spike.compiler.io.hdf5``) without changes
here. The tables below add what annotations cannot say: required arrays, integer arrays, weight
arrays that are integer in fixed-point programs, and the allowed values of enum fields.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from spike.compiler.ir import nodes as ir
from spike.compiler.ir.nodes import Bernoulli, BatchNorm, Conv2d, Dense, Gate, Input, Node, Pool2d, Population, Sparse

__all__ = [
    "FieldSpec",
    "field_specs",
    "REQUIRED_ARRAYS",
    "INTEGER_ARRAYS",
    "ENUM_FIELDS",
    "FIXED_POINT_FIELDS",
    "FIXED_WEIGHT_ARRAYS",
]

# Array fields that must be present (not None) for the node to mean anything.
REQUIRED_ARRAYS: dict[type[Node], tuple[str, ...]] = {
    Dense: ("weight",),
    Sparse: ("indptr", "indices", "data"),
    Conv2d: ("weight",),
    BatchNorm: ("running_mean", "running_var"),
    Gate: ("weight", "bias"),
    Bernoulli: ("p",),
}
# Array fields holding integers (CSR structure); every other array field holds floats.
INTEGER_ARRAYS: dict[type[Node], tuple[str, ...]] = {Sparse: ("indptr", "indices")}
# Loihi fixed-point parameters of a Population (precision "fixed"): integer arrays.
FIXED_POINT_FIELDS = ("du", "dv", "vth", "bias_mant", "bias_exp")
INTEGER_ARRAYS[Population] = FIXED_POINT_FIELDS
# Arrays that are floating in float32 programs and integer in fixed-point programs: weights, and a
# population's initial membrane (the integer 24-bit v in fixed point).
FIXED_WEIGHT_ARRAYS: dict[type[Node], tuple[str, ...]] = {
    Dense: ("weight",), Sparse: ("data",), Conv2d: ("weight",), Population: ("v_init",),
}
# (class, field) -> allowed values.
ENUM_FIELDS: dict[tuple[type[Node], str], tuple[str, ...]] = {
    (Input, "signal"): ir.SIGNALS,
    (Population, "model"): ir.NEURON_MODELS,
    (Population, "reset"): ir.RESET_MODES,
    (Population, "charge"): ir.CHARGES,
    (Population, "reset_rule"): ir.RESET_RULES,
    (Population, "precision"): ir.PRECISIONS,
    (Pool2d, "mode"): ir.POOL_MODES,
}


# ---- field declarations -----------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    """How one dataclass field is typed: ``kind`` is ``int``/``float``/``bool``/``str``/``tuple``/
    ``array``; ``optional`` when ``None`` is allowed; ``length`` fixes a tuple's length."""

    name: str
    kind: str
    optional: bool
    required: bool  # no default value: must always be given
    length: int | None = None


_SCALARS = {int: "int", float: "float", bool: "bool", str: "str"}


def _spec_of(name: str, hint: Any, required: bool) -> FieldSpec:
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"field {name}: unsupported type {hint!r}")
        hint = args[0]
        origin = typing.get_origin(hint)
    if hint is np.ndarray:
        return FieldSpec(name, "array", optional, required)
    if hint is tuple or origin is tuple:
        args = typing.get_args(hint)
        if args and args[-1] is Ellipsis:
            length = None
        else:
            length = len(args) if args else None
        return FieldSpec(name, "tuple", optional, required, length)
    if hint in _SCALARS:
        return FieldSpec(name, _SCALARS[hint], optional, required)
    raise TypeError(f"field {name}: unsupported type {hint!r}")


@lru_cache(maxsize=None)
def field_specs(cls: type[Node]) -> tuple[FieldSpec, ...]:
    """The declared fields of an IR node class, in declaration order."""
    hints = typing.get_type_hints(cls, globalns=vars(ir))
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append(_spec_of(f.name, hints[f.name], required))
    return tuple(out)
