"""Compiler passes: pure functions ``Program -> Program`` (design brief §5).

A pass never mutates its input: it builds a new graph (same node and edge order, see
:func:`~spike.compiler.ir.program.rebuild_graph`) holding new node objects where something changed
and the same frozen node objects elsewhere. Errors are :class:`ProgramError` naming the node and
the field.

- :func:`canonicalize_neurons`: per-neuron float32 ``beta``/``threshold`` (``alpha`` for cuba_lif).
- :func:`fold_batchnorm`: BatchNorm folded into the Dense/Conv2d that feeds it.
- :func:`infer_shapes`: fills derivable shapes and checks every node against its sources.
- :func:`check_cycles`: every cycle carries a projection with delay >= 1.
- :func:`float_precision`: a float program in float32 or float64 (``compile(precision=...)``).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from spike.compiler.ir import nodes as ir
from spike.compiler.ir.nodes import (
    BatchNorm,
    Conv2d,
    Dense,
    HostOp,
    Identity,
    Node,
    Output,
    Pool2d,
    Population,
    Projection,
    conv_output_hw,
)
from spike.compiler.ir.hostops import ELEMENTWISE_HOST_OPS
from spike.compiler.ir.precision import check_precision, program_precision
from spike.compiler.ir.program import Program, ProgramError, node_error, rebuild_graph
from spike.compiler.ir.validate import check_connections, check_gates, check_graph, check_node

__all__ = [
    "Pass",
    "canonicalize_neurons",
    "fold_batchnorm",
    "infer_shapes",
    "check_cycles",
    "float_precision",
    "DEFAULT_THRESHOLD",
    "LI_THRESHOLD",
]

Pass = Callable[[Program], Program]

# Threshold of a spiking population that does not give one (snnTorch's and SpikingJelly's default).
DEFAULT_THRESHOLD = 1.0
# ``li`` neurons never spike, so their threshold is unused; it is stored as zeros (finite, as
# files require) when not given.
LI_THRESHOLD = 0.0


# ---- canonicalize_neurons ---------------------------------------------------------------
def _per_neuron(name: str, node: Population, field: str, value, default: float | None) -> np.ndarray:
    n = node.size
    if value is None:
        if default is None:
            raise node_error(name, node, field, f"required for model {node.model!r} (no default)")
        value = default
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.dtype.kind == "b":
        raise node_error(name, node, field, f"expected real numbers, got dtype {arr.dtype}")
    if arr.ndim == 0 or (arr.ndim == 1 and arr.shape[0] == 1):
        out = np.full(n, arr.reshape(()), dtype=np.float32)
    elif arr.ndim == 1 and arr.shape[0] == n:
        out = arr.astype(np.float32)  # always a copy
    else:
        raise node_error(name, node, field, f"shape {arr.shape}: expected one value or {n} (the population size)")
    if not np.isfinite(out).all():
        raise node_error(name, node, field, "contains NaN/inf")
    return out


def canonicalize_neurons(program: Program) -> Program:
    """Give every Population per-neuron float32 arrays of length ``size``, and the plainest
    reset rule that computes the same update.

    ``threshold`` always; ``beta`` for the "beta" charge and model ``alpha``; ``alpha`` for
    ``cuba_lif`` and ``alpha``; ``tau`` for the "tau" charges and model ``alpha``; ``rate`` for
    the "rate" charges (None otherwise). Scalars and length-1 arrays are broadcast. Model ``if``
    keeps its name and gets ``beta`` all ones (a given beta must be 1). A missing ``threshold``
    becomes :data:`DEFAULT_THRESHOLD` (1.0); ``li`` gets zeros (:data:`LI_THRESHOLD`: never
    used, and +inf is not allowed in files). Any other missing array is an error. Checks
    ``beta``/``alpha``/``rate`` in [0, 1], ``tau`` > 0, ``gain`` finite, and the enum names.

    Rule "snntorch" becomes "standard" where both give the same update (``spike.semantics``):
    with ``reset_delay`` (the reset signal is the previous spike either way), with reset
    ``none``, and with reset ``zero``/``drop`` in the same step when no threshold is negative
    (the membrane then never stays above threshold after a reset). Reset ``drop`` in the same
    step is reset ``zero``.
    """
    changed: dict[str, Node] = {}
    for name, node in program.nodes():
        if not isinstance(node, Population):
            continue
        for field, allowed in (("model", ir.NEURON_MODELS), ("reset", ir.RESET_MODES), ("precision", ir.PRECISIONS),
                               ("charge", ir.CHARGES), ("reset_rule", ir.RESET_RULES)):
            if getattr(node, field) not in allowed:
                raise node_error(name, node, field, f"{getattr(node, field)!r} is not one of {', '.join(allowed)}")
        for field in ("gain", "v_reset"):
            value = getattr(node, field)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(value)):
                raise node_error(name, node, field, f"must be a finite number, got {value!r}")
        arrays = {"threshold": _per_neuron(name, node, "threshold", node.threshold,
                                           LI_THRESHOLD if node.model == "li" else DEFAULT_THRESHOLD)}
        if node.model == "if":
            arrays["beta"] = _per_neuron(name, node, "beta", node.beta, 1.0)
            if not (arrays["beta"] == 1).all():
                raise node_error(name, node, "beta", "model 'if' requires beta = 1 (use model 'lif' for a leak)")
        uses = {
            "beta": node.charge == "beta" or node.model == "alpha",
            "alpha": node.model in ("cuba_lif", "alpha"),
            "tau": node.charge in ("tau", "tau_input") or node.model == "alpha",
            "rate": node.charge in ("rate", "rate_input"),
        }
        for field, used in uses.items():
            if field in arrays:
                continue
            value = getattr(node, field)
            if used:
                arrays[field] = _per_neuron(name, node, field, value, None)
            elif value is not None and not (field == "beta" and node.charge != "beta"):
                raise node_error(name, node, field, f"unused by model {node.model!r} with charge {node.charge!r}")
            else:
                arrays[field] = None
        for field in ("beta", "alpha", "rate"):
            arr = arrays[field]
            if arr is not None and ((arr < 0).any() or (arr > 1).any()):
                raise node_error(name, node, field, f"values must lie in [0, 1], got range [{arr.min()}, {arr.max()}]")
        if node.charge in ("tau", "tau_input") and not (arrays["tau"] > 0).all():
            raise node_error(name, node, "tau", f"must be > 0 (it divides the charge), got min {arrays['tau'].min()}")
        rule, reset = node.reset_rule, node.reset
        if reset == "drop" and not node.reset_delay:
            reset = "zero"
        if rule == "snntorch" and (node.reset_delay or reset == "none" or node.model == "li" or (
                reset == "zero" and (arrays["threshold"] >= 0).all())):
            rule = "standard"
        changed[name] = node.replace(**arrays, gain=float(node.gain), v_reset=float(node.v_reset), reset=reset,
                                     reset_rule=rule)
    return program.with_graph(rebuild_graph(program, nodes=changed))


# ---- fold_batchnorm ---------------------------------------------------------------------
def _fold_one(bn_name: str, bn: BatchNorm, proj_name: str, proj: Dense | Conv2d) -> Dense | Conv2d:
    c = bn.shape[0] if bn.shape else 1
    for field in ("running_mean", "running_var"):
        if getattr(bn, field) is None:
            raise node_error(bn_name, bn, field, "required to fold the BatchNorm")
    for field in ("weight", "bias", "running_mean", "running_var"):
        arr = getattr(bn, field)
        if arr is not None and np.asarray(arr).shape != (c,):
            raise node_error(bn_name, bn, field, f"shape {np.asarray(arr).shape} does not match ({c},) channels")
    gamma = np.ones(c) if bn.weight is None else np.asarray(bn.weight, dtype=np.float64)
    shift = np.zeros(c) if bn.bias is None else np.asarray(bn.bias, dtype=np.float64)
    mean = np.asarray(bn.running_mean, dtype=np.float64)
    var = np.asarray(bn.running_var, dtype=np.float64)
    scale = gamma / np.sqrt(var + float(bn.eps))

    w = np.asarray(proj.weight, dtype=np.float64)
    if isinstance(proj, Conv2d):
        c_out = w.shape[0]
        if c != c_out:
            raise node_error(bn_name, bn, "shape", f"{c} channels but source {proj_name!r} has C_out {c_out}")
        s, m, t = scale, mean, shift  # per output channel
        new_w = w * s[:, None, None, None]
    else:
        n_out = w.shape[0]
        if n_out % c:
            raise node_error(bn_name, bn, "shape", f"{c} channels do not divide the {n_out} outputs of {proj_name!r}")
        rep = n_out // c  # flattened neuron j belongs to channel j // rep
        s, m, t = np.repeat(scale, rep), np.repeat(mean, rep), np.repeat(shift, rep)
        new_w = w * s[:, None]
    b = np.zeros(len(s)) if proj.bias is None else np.asarray(proj.bias, dtype=np.float64)
    if b.shape != s.shape:
        raise node_error(proj_name, proj, "bias", f"shape {b.shape} does not match {s.shape}")
    new_b = (b - m) * s + t
    return proj.replace(weight=new_w.astype(np.float32), bias=new_b.astype(np.float32))


def fold_batchnorm(program: Program) -> Program:
    """Fold each BatchNorm into the Dense or Conv2d that is its single source.

    ``scale = gamma / sqrt(running_var + eps)``; ``W' = W * scale`` per output channel (per
    output neuron for Dense: neuron ``j`` of a BatchNorm with ``C`` channels over ``n`` neurons
    is in channel ``j // (n/C)``); ``b' = (b - running_mean) * scale + beta`` (``b = 0`` without
    a bias). Computed in float64, stored as float32. The BatchNorm disappears and its consumers
    (and ``outputs``) read the projection. A BatchNorm whose source is not a Dense/Conv2d, or
    whose projection has other consumers, is a :class:`ProgramError` naming it.
    """
    changed: dict[str, Node] = {}
    redirect: dict[str, str] = {}
    for name, node in program.nodes():
        if not isinstance(node, BatchNorm):
            continue
        srcs = program.sources(name)
        if len(srcs) != 1:
            raise node_error(name, node, None, f"cannot fold: needs exactly one source, has {len(srcs)}: {srcs}")
        (src,) = srcs
        proj = program.node(src)
        if not isinstance(proj, (Dense, Conv2d)):
            raise node_error(name, node, None, f"cannot fold: source {src!r} is a {proj.KIND}, not a dense or conv2d projection")
        others = [c for c in program.consumers(src) if c != name]
        if others or src in program.outputs:
            raise node_error(name, node, None, f"cannot fold into {src!r}: it also feeds {others or 'the program outputs'}")
        if proj.weight is None:
            raise node_error(src, proj, "weight", "required array is missing")
        changed[src] = _fold_one(name, node, src, proj)
        redirect[name] = src
    if not redirect:
        return program
    graph = rebuild_graph(program, nodes=changed, drop=redirect, rename_sources=redirect)
    outputs = tuple(redirect.get(o, o) for o in program.outputs)
    return program.with_graph(graph, outputs=outputs)


def float_precision(program: Program, precision: str) -> Program:
    """The float ``program`` in ``precision`` ("float32" or "float64"): every population's
    ``precision`` and the metadata's. Weights and parameters keep their values (a backend makes
    arrays of the precision's dtype from them: float32 values are exact in float64). A float64
    program may hold no FTWT gate and no host op (they run in float32 only; the precision rules,
    ``ir.precision``, say which node)."""
    if precision not in ir.FLOAT_DTYPES:
        raise ProgramError(f"float_precision: {precision!r} is not a float precision ({', '.join(ir.FLOAT_DTYPES)})")
    if program_precision(program) == "fixed":
        raise ProgramError(f"float_precision: the program is fixed point; it has no {precision} form")
    changed = {name: node.replace(precision=precision) for name, node in program.nodes()
               if isinstance(node, Population) and node.precision != precision}
    if not changed and program.metadata.get("precision") == precision:
        return program
    metadata = {**dict(program.metadata), "precision": precision}
    out = program.with_graph(rebuild_graph(program, nodes=changed), metadata=metadata)
    check_precision(out)
    return out


# ---- infer_shapes -----------------------------------------------------------------------
def _fill(program: Program, current: dict[str, Node], name: str, node: Node) -> Node | None:
    """A copy of ``node`` with derivable unset shapes filled from its sources (as they are in
    ``current``), or None."""
    srcs = program.sources(name)
    shapes = [current[s].shape for s in srcs]
    changes: dict = {}
    if isinstance(node, (Output, BatchNorm)) or (isinstance(node, HostOp) and node.op in ELEMENTWISE_HOST_OPS):
        if not node.shape and shapes and shapes[0] and len(set(shapes)) == 1:
            changes["shape"] = shapes[0]
    elif isinstance(node, Projection) and len(srcs) == 1:
        in_shape = node.in_shape
        if not in_shape and shapes[0]:
            if isinstance(node, (Conv2d, Pool2d)) and len(shapes[0]) != 3:
                raise node_error(name, node, "in_shape", f"not set, and source {srcs[0]!r} has shape {shapes[0]}, not (C, H, W)")
            in_shape = changes["in_shape"] = shapes[0]
        if isinstance(node, (Conv2d, Pool2d)) and not node.shape and len(in_shape) == 3:
            if isinstance(node, Pool2d):
                kernel, c = node.kernel, in_shape[0]
            elif node.weight is not None and np.ndim(node.weight) == 4:
                kernel, c = tuple(node.weight.shape[2:]), node.weight.shape[0]
            else:
                kernel = None
            if kernel is not None:
                hw = conv_output_hw(tuple(in_shape[1:]), tuple(int(k) for k in kernel), node.stride, node.padding)
                changes["shape"] = (int(c), *(int(x) for x in hw))
        if isinstance(node, Identity) and not node.shape and in_shape:
            changes["shape"] = tuple(in_shape)
    return node.replace(**changes) if changes else None


def infer_shapes(program: Program) -> Program:
    """Fill derivable shapes and check every node's shape against its sources.

    Filled when unset (``()``): an Output's, BatchNorm's or element-wise HostOp's ``shape`` (from
    its source), a projection's ``in_shape`` (the source's shape; Conv2d/Pool2d need a
    ``(C, H, W)`` source), Conv2d/Pool2d output ``shape`` (via ``conv_output_hw``), an
    Identity's ``shape``. Then checks: Dense/Sparse input size equals the source size, a
    Conv2d/Pool2d ``in_shape`` has as many elements as its source, output H, W follow from
    ``conv_output_hw``, and Population/Identity/element-wise HostOp/Output/BatchNorm have their
    sources' size. A mismatch is a :class:`ProgramError` naming the node, the field and both numbers.
    """
    check_graph(program)
    current = dict(program.nodes())
    order = [n for stage in _stages_or_graph_order(program) for n in stage]
    for _ in range(len(current) + 1):  # until nothing changes (a cycle may fill its sources late)
        changed = False
        for name in order:
            new = _fill(program, current, name, current[name])
            if new is not None:
                current[name] = new
                changed = True
        if not changed:
            break
    for name, node in current.items():
        check_node(name, node)
    new_nodes = {n: v for n, v in current.items() if v is not program.node(n)}
    result = program.with_graph(rebuild_graph(program, nodes=new_nodes))
    check_connections(result)
    return result


def _stages_or_graph_order(program: Program) -> list[tuple[str, ...]]:
    """Node names in dependency order; graph order if the program has an undelayed cycle
    (reported later by ``check_cycles``)."""
    try:
        return [stage.nodes for stage in program.schedule()]
    except ProgramError:
        return [tuple(program.graph.nodes)]


# ---- check_cycles -----------------------------------------------------------------------
def check_cycles(program: Program) -> Program:
    """Raise :class:`ProgramError` naming the nodes of a cycle without a projection of delay
    >= 1, or a gate breaking :func:`~spike.compiler.ir.validate.check_gates`; return the program
    unchanged otherwise."""
    check_graph(program)
    program.schedule()
    check_gates(program)
    return program
