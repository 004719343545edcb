"""Which signal each node emits: ``spike`` (binary events), ``real`` or ``current``.

Kernels use it to count synaptic operations: every pair a ``spike`` source delivers is an
accumulate (NeuroBench's Effective_ACs) without looking at the values; for any other source the
pairs of each (sample, step) are accumulates or multiply-accumulates (Effective_MACs) by that
step's input values (``numba.backend`` docstring).
"""
from __future__ import annotations

from spike.compiler.ir.nodes import Bernoulli, HostOp, Identity, Input, Node, Pool2d, Population, Projection
from spike.compiler.ir.program import Program


def output_signal(program: Program, name: str, _seen: frozenset[str] = frozenset()) -> str:
    node: Node = program.node(name)
    if isinstance(node, Input):
        return node.signal
    if isinstance(node, Bernoulli):
        return "spike"
    if isinstance(node, Population):
        return "real" if node.model == "li" else "spike"
    if isinstance(node, (Pool2d, Identity)):
        srcs = program.sources(name)
        if not srcs or name in _seen:
            return "real"
        src = output_signal(program, srcs[0], _seen | {name})
        if isinstance(node, Pool2d):
            return "spike" if (node.mode == "max" and src == "spike") else "real"
        return src if node.scale == 1.0 else "real"
    if isinstance(node, Projection):
        return "current"
    if isinstance(node, HostOp):
        return "real"
    srcs = program.sources(name)  # Output, BatchNorm: pass through
    return output_signal(program, srcs[0], _seen | {name}) if srcs and name not in _seen else "real"


def is_event_signal(signal: str) -> bool:
    return signal == "spike"
