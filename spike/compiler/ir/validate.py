"""Structural validation of a :class:`~spike.compiler.ir.program.Program` (design brief §4, §9).

:func:`validate_program` checks everything a program must satisfy whatever its origin (built by
the frontend, produced by a pass, or read from a file): every graph node carries an IR node of a
registered kind; every field has its declared type; enum fields hold allowed values; arrays are
real-valued (floating, or integer for CSR indices), finite and of the shape the node implies;
each node's sources agree with it in size and shape; inputs/outputs name existing nodes; and every
cycle carries a delay. Errors are :class:`ProgramError` naming the node and the field.

Sizes are bounded before anything is computed from them, so a program that declares absurd sizes
is refused here and never allocated by a backend or the mapping: every ``shape`` and ``in_shape``
holds at most ``MAX_NODE_SIZE`` (2^31 - 1) elements, a pooling window (``pool2d``, a windowed host
op) at most ``MAX_NODE_SIZE`` (input, output) pairs ``C x H_out x W_out x kh x kw``, and every delay
and latency is 0..``MAX_STEPS_DELAY`` steps (``spike.compiler.ir.program``).

Two shape values mean "not inferred yet" and are skipped by the cross-node checks (``infer_shapes``
fills them): an ``Output`` with ``shape == ()`` and a projection with ``in_shape == ()``. Population
parameter arrays may be per-population (0-d or length 1) or per-neuron (length ``size``);
``canonicalize_neurons`` broadcasts them to per-neuron.

The field types come from each node class's annotations (``schema.field_specs``); the precision
rules are ``precision``'s.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from spike.compiler.ir import nodes as ir
from spike.compiler.ir.nodes import (
    BatchNorm,
    Bernoulli,
    Conv2d,
    Dense,
    Gate,
    HostOp,
    Identity,
    Input,
    Node,
    Output,
    Pool2d,
    Population,
    Projection,
    Sparse,
    conv_output_hw,
)
from spike.compiler.ir.hostops import ELEMENTWISE_HOST_OPS, HOST_OPS
from spike.compiler.ir.precision import check_precision
from spike.compiler.ir.program import MAX_NODE_SIZE, MAX_STEPS_DELAY, Program, ProgramError, node_error
from spike.compiler.ir.schema import (
    ENUM_FIELDS, FIXED_POINT_FIELDS, FIXED_WEIGHT_ARRAYS, INTEGER_ARRAYS, REQUIRED_ARRAYS, FieldSpec, field_specs,
)

__all__ = [
    "validate_program",
    "check_graph",
    "check_io",
    "check_node",
    "check_connections",
    "check_latency",
    "check_gates",
    "check_initial_state",
    "gate_of",
]


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(int(d) for d in shape)


# ---- per-node checks --------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_field_type(name: str, node: Node, spec: FieldSpec, value: Any) -> None:
    def bad(expected: str) -> ProgramError:
        return node_error(name, node, spec.name, f"expected {expected}, got {type(value).__name__} {value!r}")

    if value is None:
        if not spec.optional:
            raise bad(spec.kind)
        return
    if spec.kind == "int":
        if not _is_int(value):
            raise bad("an int")
    elif spec.kind == "float":
        if not (_is_int(value) or isinstance(value, (float, np.floating))):
            raise bad("a float")
        if not math.isfinite(float(value)):
            raise node_error(name, node, spec.name, f"must be finite, got {value!r}")
    elif spec.kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise bad("a bool")
    elif spec.kind == "str":
        if not isinstance(value, str):
            raise bad("a str")
    elif spec.kind == "tuple":
        if not isinstance(value, tuple) or not all(_is_int(x) for x in value):
            raise bad("a tuple of ints")
        if spec.length is not None and len(value) != spec.length:
            raise node_error(name, node, spec.name, f"expected {spec.length} ints, got {value!r}")
    elif spec.kind == "array":
        if not isinstance(value, np.ndarray):
            raise bad("a numpy array")
        integer = spec.name in INTEGER_ARRAYS.get(type(node), ())
        kind = value.dtype.kind
        if spec.name in FIXED_WEIGHT_ARRAYS.get(type(node), ()) and kind in "iu":
            return  # fixed-point weights; check_precision decides whether they belong here
        if integer and kind not in "iu":
            raise node_error(name, node, spec.name, f"expected an integer array, got dtype {value.dtype}")
        if not integer and kind != "f":
            raise node_error(name, node, spec.name, f"expected a floating array, got dtype {value.dtype}")
        if kind == "f" and value.size and not np.isfinite(value).all():
            bad_count = int((~np.isfinite(value)).sum())
            raise node_error(name, node, spec.name, f"contains {bad_count} NaN/inf value(s)")


def _check_shape_tuple(name: str, node: Node, field: str, shape: tuple[int, ...]) -> None:
    """Every dimension >= 1 and at most ``MAX_NODE_SIZE`` elements in all."""
    if any(int(d) < 1 for d in shape):
        raise node_error(name, node, field, f"dimensions must be >= 1, got {shape}")
    if _size(shape) > MAX_NODE_SIZE:
        raise node_error(name, node, field, f"{shape} holds {_size(shape)} elements, over the limit of "
                         f"{MAX_NODE_SIZE} (2^31 - 1) per node")


def _check_window_pairs(name: str, node: Pool2d | HostOp) -> None:
    """A pooling window's (input, output) pairs ``C x H_out x W_out x kh x kw`` (what the backends
    loop over and the mapping expands into synapses) are at most ``MAX_NODE_SIZE``."""
    pairs = _size(node.shape) * _size(node.kernel)
    if pairs > MAX_NODE_SIZE:
        raise node_error(name, node, "kernel", f"{node.kernel} over output {node.shape} makes {pairs} window "
                         f"(input, output) pairs, over the limit of {MAX_NODE_SIZE} (2^31 - 1) per node")


def _expect_shape(name: str, node: Node, field: str, arr: np.ndarray | None, want: tuple, why: str) -> None:
    if arr is not None and tuple(arr.shape) != tuple(want):
        raise node_error(name, node, field, f"shape {tuple(arr.shape)} does not match {tuple(want)} ({why})")


def _check_population(name: str, node: Population) -> None:
    n = node.size
    for f in ("beta", "threshold", "alpha", "tau", "rate", *FIXED_POINT_FIELDS, "bias", "v_init"):
        arr = getattr(node, f)
        if arr is not None and not (arr.ndim == 0 or (arr.ndim == 1 and arr.shape[0] in (1, n))):
            raise node_error(name, node, f, f"shape {arr.shape}: expected per-neuron length {n} (size) or one value")
    for f in ("beta", "alpha", "rate"):
        arr = getattr(node, f)
        if arr is not None and arr.size and ((arr < 0).any() or (arr > 1).any()):
            raise node_error(name, node, f, f"values must lie in [0, 1], got range [{arr.min()}, {arr.max()}]")
    if node.model == "if" and node.beta is not None and not (node.beta == 1).all():
        raise node_error(name, node, "beta", "model 'if' requires beta = 1 (use model 'lif' for a leak)")
    if node.model not in ("cuba_lif", "alpha") and node.alpha is not None:
        raise node_error(name, node, "alpha", f"only models 'cuba_lif' and 'alpha' have a synaptic decay alpha, model is {node.model!r}")
    uses_tau = node.charge in ("tau", "tau_input") or node.model == "alpha"
    uses_rate = node.charge in ("rate", "rate_input")
    for f, used in (("tau", uses_tau), ("rate", uses_rate)):
        arr = getattr(node, f)
        if arr is not None and not used:
            raise node_error(name, node, f, f"unused by model {node.model!r} with charge {node.charge!r}")
    if node.charge in ("tau", "tau_input") and node.tau is not None and node.tau.size and not (node.tau > 0).all():
        raise node_error(name, node, "tau", f"must be > 0 (it divides the charge), got min {node.tau.min()}")
    if not math.isfinite(float(node.v_reset)):
        raise node_error(name, node, "v_reset", f"must be finite, got {node.v_reset}")
    if node.v_reset != 0 and (node.reset not in ("zero", "none") or node.reset_delay or node.reset_rule != "standard"):
        raise node_error(name, node, "v_reset", f"{node.v_reset}: a non-zero reset value needs reset 'zero' (or 'none') in the "
                   "step that fires (reset_delay False) and reset_rule 'standard' (SpikingJelly's hard reset)")
    if node.charge != "beta" and node.model != "li":
        for f, bad, why in (("reset_delay", node.reset_delay and node.reset != "none", "False (SpikingJelly resets in the "
                             "step that fires)"), ("reset_rule", node.reset_rule != "standard", "'standard'")):
            if bad:
                raise node_error(name, node, f, f"charge {node.charge!r} needs {f} {why}")
    if node.model == "alpha":
        for f, bad, why in (("charge", node.charge != "beta", "'beta'"), ("reset_delay", not node.reset_delay, "True"),
                            ("reset_rule", node.reset_rule != "standard", "'standard'"),
                            ("reset", node.reset not in ("subtract", "zero", "none"), "subtract, zero or none"),
                            ("late_recurrent", node.late_recurrent, "False")):
            if bad:
                raise node_error(name, node, f, f"model 'alpha' (snnTorch's Alpha) needs {f} {why}")
    if node.model == "alpha":
        for f in ("bias", "v_init"):
            if getattr(node, f) is not None:
                raise node_error(name, node, f, "model 'alpha' (snnTorch's Alpha) has no bias or initial membrane: its "
                                 "membrane is tau*(e + n) of its two currents")
    if node.model == "li" and node.reset_rule != "standard":
        raise node_error(name, node, "reset_rule", "model 'li' never fires or resets: reset_rule must be 'standard'")


def _check_conv_geometry(name: str, node: Conv2d | Pool2d | HostOp, kernel: tuple[int, int]) -> tuple[int, int]:
    if len(node.in_shape) != 3:
        raise node_error(name, node, "in_shape", f"expected (C, H, W), got {node.in_shape}")
    if len(node.shape) != 3:
        raise node_error(name, node, "shape", f"expected (C, H, W), got {node.shape}")
    if any(s < 1 for s in node.stride):
        raise node_error(name, node, "stride", f"must be >= 1, got {node.stride}")
    if any(p < 0 for p in node.padding):
        raise node_error(name, node, "padding", f"must be >= 0, got {node.padding}")
    hw = conv_output_hw(node.in_shape[1:], kernel, node.stride, node.padding)
    if min(hw) < 1:
        raise node_error(name, node, "in_shape", f"input {node.in_shape} too small for kernel {kernel} with padding {node.padding}")
    if tuple(node.shape[1:]) != tuple(hw):
        raise node_error(
            name, node, "shape",
            f"output H, W {tuple(node.shape[1:])} do not match {tuple(hw)} computed from in_shape "
            f"{node.in_shape}, kernel {kernel}, stride {node.stride}, padding {node.padding}",
        )
    return hw


def check_node(name: str, node: Any) -> None:
    """Check one node on its own: field types, enum values, array dtypes/values and shapes."""
    if not isinstance(node, Node) or ir.NODE_TYPES.get(type(node).KIND) is not type(node):
        raise ProgramError(f"node {name!r}: not an IR node of a registered kind: {type(node).__name__}")
    cls = type(node)
    for spec in field_specs(cls):
        _check_field_type(name, node, spec, getattr(node, spec.name))
    for (ecls, f), allowed in ENUM_FIELDS.items():
        if isinstance(node, ecls) and getattr(node, f) not in allowed:
            raise node_error(name, node, f, f"{getattr(node, f)!r} is not one of {', '.join(allowed)}")
    for f in REQUIRED_ARRAYS.get(cls, ()):
        if getattr(node, f) is None:
            raise node_error(name, node, f, "required array is missing")
    _check_shape_tuple(name, node, "shape", node.shape)

    if isinstance(node, Projection):
        _check_shape_tuple(name, node, "in_shape", node.in_shape)
        if not 0 <= node.delay <= MAX_STEPS_DELAY:
            raise node_error(name, node, "delay", f"must be a whole number of steps 0..{MAX_STEPS_DELAY}, got {node.delay}")
    if isinstance(node, Population):
        _check_population(name, node)
    elif isinstance(node, Dense):
        w = node.weight
        if w.ndim != 2 or w.shape[0] != node.size or (node.in_shape and w.shape[1] != node.in_size):
            want = f"[{node.size}, {node.in_size if node.in_shape else 'n_in'}]"
            raise node_error(name, node, "weight", f"shape {w.shape} does not match {want} = [prod(shape), prod(in_shape)]")
        _expect_shape(name, node, "bias", node.bias, (node.size,), "one per output neuron")
    elif isinstance(node, Sparse):
        _check_csr(name, node)
    elif isinstance(node, Conv2d):
        w = node.weight
        if w.ndim != 4:
            raise node_error(name, node, "weight", f"expected [C_out, C_in/groups, kh, kw], got shape {w.shape}")
        if node.groups < 1:
            raise node_error(name, node, "groups", f"must be >= 1, got {node.groups}")
        _check_conv_geometry(name, node, (int(w.shape[2]), int(w.shape[3])))
        c_in, c_out = node.in_shape[0], node.shape[0]
        if c_in % node.groups or c_out % node.groups:
            raise node_error(name, node, "groups", f"{node.groups} does not divide C_in {c_in} and C_out {c_out}")
        want = (c_out, c_in // node.groups, w.shape[2], w.shape[3])
        _expect_shape(name, node, "weight", w, want, f"[C_out, C_in/groups, kh, kw] for in_shape {node.in_shape}, shape {node.shape}")
        _expect_shape(name, node, "bias", node.bias, (c_out,), "one per output channel")
    elif isinstance(node, Pool2d):
        if any(k < 1 for k in node.kernel):
            raise node_error(name, node, "kernel", f"must be >= 1, got {node.kernel}")
        _check_conv_geometry(name, node, node.kernel)
        if node.shape[0] != node.in_shape[0]:
            raise node_error(name, node, "shape", f"channels {node.shape[0]} differ from in_shape channels {node.in_shape[0]}")
        _check_window_pairs(name, node)
    elif isinstance(node, Identity):
        if node.in_shape and node.in_size != node.size:
            raise node_error(name, node, "in_shape", f"size {node.in_size} differs from output size {node.size}")
    elif isinstance(node, BatchNorm):
        c = node.shape[0] if node.shape else 1
        for f in ("weight", "bias", "running_mean", "running_var"):
            _expect_shape(name, node, f, getattr(node, f), (c,), f"one per channel, shape {node.shape}")
        if (node.running_var < 0).any():
            raise node_error(name, node, "running_var", "must be >= 0")
        if node.eps <= 0:
            raise node_error(name, node, "eps", f"must be > 0, got {node.eps}")
    elif isinstance(node, HostOp):
        _check_hostop(name, node)
    elif isinstance(node, Gate):
        _check_gate(name, node)
    elif isinstance(node, Bernoulli):
        _check_bernoulli(name, node)


def _check_bernoulli(name: str, node: Bernoulli) -> None:
    p = node.p
    if not (p.ndim == 0 or (p.ndim == 1 and p.shape[0] in (1, node.size))):
        raise node_error(name, node, "p", f"shape {p.shape}: expected one probability or one per neuron ({node.size})")
    if p.size and ((p < 0).any() or (p > 1).any()):
        raise node_error(name, node, "p", f"probabilities per step must lie in [0, 1], got range [{p.min()}, {p.max()}]")
    if not 0 <= node.seed < 2**63:
        raise node_error(name, node, "seed", f"must lie in 0 .. 2^63 - 1, got {node.seed}")


def _check_hostop(name: str, node: HostOp) -> None:
    spec = HOST_OPS.get(node.op)
    if spec is None:
        raise node_error(name, node, "op", f"unknown host op {node.op!r}; known: {', '.join(sorted(HOST_OPS))}")
    allowed = {**spec.params, **spec.optional}
    for f in ("weight", "bias"):
        value = getattr(node, f)
        if value is None:
            if f in spec.params:
                raise node_error(name, node, f, f"required by host op {node.op!r}: {spec.params[f]}")
            continue
        if f not in allowed:
            raise node_error(name, node, f, f"host op {node.op!r} takes no {f}")
    if node.op == "matmul":
        w = node.weight
        if w.ndim != 2 or w.shape[0] != node.size:
            raise node_error(name, node, "weight", f"shape {w.shape} does not match [{node.size}, n_in] = [prod(shape), n_in]")
        _expect_shape(name, node, "bias", node.bias, (node.size,), "one per output")
    else:
        for f in spec.params:
            _expect_shape(name, node, f, getattr(node, f), (node.size,), spec.params[f])
    if node.op == "layernorm" and not node.eps > 0:
        raise node_error(name, node, "eps", f"must be > 0, got {node.eps}")
    window = ("in_shape", "kernel", "stride", "padding")
    if not spec.window:
        for f in window:
            if getattr(node, f):
                raise node_error(name, node, f, f"host op {node.op!r} takes no pooling window")
        return
    for f in window[1:]:
        if len(getattr(node, f)) != 2:
            raise node_error(name, node, f, f"expected 2 values (height, width), got {getattr(node, f)}")
    if any(k < 1 for k in node.kernel):
        raise node_error(name, node, "kernel", f"must be >= 1, got {node.kernel}")
    if any(2 * p > k for p, k in zip(node.padding, node.kernel)):
        raise node_error(name, node, "padding", f"{node.padding} exceeds half the kernel {node.kernel}")
    _check_shape_tuple(name, node, "in_shape", node.in_shape)
    _check_conv_geometry(name, node, node.kernel)
    if node.shape[0] != node.in_shape[0]:
        raise node_error(name, node, "shape", f"channels {node.shape[0]} differ from in_shape channels {node.in_shape[0]}")
    _check_window_pairs(name, node)


def _check_gate(name: str, node: Gate) -> None:
    if len(node.shape) != 1:
        raise node_error(name, node, "shape", f"expected (C_out,) (one mask entry per channel), got {node.shape}")
    _check_shape_tuple(name, node, "in_shape", node.in_shape)
    if not node.in_shape:
        raise node_error(name, node, "in_shape", "required: the source's shape (C_in, ...)")
    c_out, c_in = node.shape[0], node.in_shape[0]
    _expect_shape(name, node, "weight", node.weight, (c_out, c_in), "[C_out, C_in] of the head's 1x1 conv")
    _expect_shape(name, node, "bias", node.bias, (c_out,), "one per output channel")
    if node.window < 0:
        raise node_error(name, node, "window", f"must be >= 0 (0 = all steps), got {node.window}")


def _check_csr(name: str, node: Sparse) -> None:
    indptr, indices, data = node.indptr, node.indices, node.data
    for f, arr in (("indptr", indptr), ("indices", indices), ("data", data)):
        if arr.ndim != 1:
            raise node_error(name, node, f, f"expected a 1-D array, got shape {arr.shape}")
    if node.in_shape and indptr.shape[0] != node.in_size + 1:
        raise node_error(name, node, "indptr", f"length {indptr.shape[0]} does not match n_in + 1 = {node.in_size + 1}")
    if indptr.shape[0] < 1 or indptr[0] != 0:
        raise node_error(name, node, "indptr", "must start with 0")
    if (np.diff(indptr.astype(np.int64)) < 0).any():
        raise node_error(name, node, "indptr", "must be non-decreasing")
    nnz = int(indptr[-1])
    if indices.shape[0] != nnz:
        raise node_error(name, node, "indices", f"length {indices.shape[0]} does not match indptr[-1] = {nnz}")
    if data.shape[0] != nnz:
        raise node_error(name, node, "data", f"length {data.shape[0]} does not match indptr[-1] = {nnz}")
    if nnz and (indices.min() < 0 or indices.max() >= node.size):
        raise node_error(name, node, "indices", f"values must lie in [0, {node.size}), got [{indices.min()}, {indices.max()}]")
    _expect_shape(name, node, "bias", node.bias, (node.size,), "one per output neuron")


# ---- graph checks -----------------------------------------------------------------------
def check_graph(program: Program) -> None:
    """Every graph node carries an IR node (an edge to a name without one is dangling)."""
    for name, data in program.graph.nodes(data=True):
        if not isinstance(name, str) or not name:
            raise ProgramError(f"node {name!r}: node names must be non-empty strings")
        if "node" not in data:
            near = [f"{u} -> {v}" for u, v in list(program.graph.in_edges(name)) + list(program.graph.out_edges(name))]
            raise ProgramError(
                f"node {name!r} does not exist (no IR node); dangling edge(s): {', '.join(near) or 'none'}"
            )


def check_io(program: Program) -> None:
    """``inputs`` name Input nodes and ``outputs`` name existing nodes, each once."""
    for field, names in (("inputs", program.inputs), ("outputs", program.outputs)):
        if len(set(names)) != len(names):
            raise ProgramError(f"program {field} list names a node twice: {list(names)}")
        for n in names:
            if n not in program.graph or "node" not in program.graph.nodes[n]:
                raise ProgramError(f"program {field} names node {n!r}, which does not exist")
    for n in program.inputs:
        if not isinstance(program.node(n), Input):
            raise ProgramError(f"program inputs names node {n!r}, which is a {program.node(n).KIND}, not an input")


def _n_sources(program: Program, name: str, node: Node, want: str) -> list[str]:
    srcs = program.sources(name)
    ok = {"0": len(srcs) == 0, "1": len(srcs) == 1, "2": len(srcs) == 2, "1+": len(srcs) >= 1}[want]
    if not ok:
        need = {"0": "no sources", "1": "exactly one source", "2": "exactly two sources",
                "1+": "at least one source"}[want]
        raise node_error(name, node, None, f"needs {need}, has {len(srcs)}: {srcs}")
    return srcs


def check_connections(program: Program) -> None:
    """Source counts and the agreement of each node's shape with its sources' shapes."""
    for name, node in program.nodes():
        if isinstance(node, (Input, Bernoulli)):
            _n_sources(program, name, node, "0")
            continue
        if isinstance(node, (Projection, Output, BatchNorm)):
            (src,) = _n_sources(program, name, node, "1")
            sn = program.node(src)
            if isinstance(node, Output):
                if node.shape and node.size != sn.size:
                    raise node_error(name, node, "shape", f"size {node.size} {node.shape} differs from source {src!r} size {sn.size} {sn.shape}")
            elif isinstance(node, BatchNorm):
                if node.size != sn.size:
                    raise node_error(name, node, "shape", f"size {node.size} {node.shape} differs from source {src!r} size {sn.size} {sn.shape}")
            elif isinstance(node, Dense):
                n_in = node.weight.shape[1]
                if n_in != sn.size:
                    raise node_error(name, node, "in_shape", f"expects {n_in} inputs (weight columns) but source {src!r} has size {sn.size}")
            elif isinstance(node, Sparse):
                n_in = node.indptr.shape[0] - 1
                if n_in != sn.size:
                    raise node_error(name, node, "in_shape", f"expects {n_in} inputs (len(indptr) - 1) but source {src!r} has size {sn.size}")
            elif node.in_shape and node.in_size != sn.size:
                raise node_error(name, node, "in_shape", f"{node.in_shape} has {node.in_size} elements but source {src!r} has size {sn.size} {sn.shape}")
            elif not node.in_shape and node.size != sn.size and isinstance(node, Identity):
                raise node_error(name, node, "shape", f"size {node.size} differs from source {src!r} size {sn.size}")
            continue
        if isinstance(node, Gate):
            (src,) = _n_sources(program, name, node, "1")
            sn = program.node(src)
            if node.in_size != sn.size:
                raise node_error(name, node, "in_shape", f"{node.in_shape} has {node.in_size} elements but source {src!r} has size {sn.size} {sn.shape}")
            continue
        if isinstance(node, HostOp):
            srcs = _n_sources(program, name, node, HOST_OPS[node.op].sources)
            if node.op == "matmul":
                n_in = node.weight.shape[1]
                if program.node(srcs[0]).size != n_in:
                    raise node_error(name, node, "weight", f"expects {n_in} inputs (weight columns) but source "
                               f"{srcs[0]!r} has size {program.node(srcs[0]).size}")
                continue
            if HOST_OPS[node.op].window:
                sn = program.node(srcs[0])
                if sn.size != _size(node.in_shape):
                    raise node_error(name, node, "in_shape", f"{node.in_shape} has {_size(node.in_shape)} elements but "
                               f"source {srcs[0]!r} has size {sn.size} {sn.shape}")
                continue
        if isinstance(node, Population) or (isinstance(node, HostOp) and node.op in ELEMENTWISE_HOST_OPS):
            for src in program.sources(name):
                sn = program.node(src)
                if isinstance(sn, Gate):
                    continue  # a channel mask, not a current (check_gates)
                if sn.size != node.size:
                    raise node_error(name, node, "shape", f"size {node.size} {node.shape} differs from source {src!r} size {sn.size} {sn.shape}")


def validate_program(program: Program) -> None:
    """Raise :class:`ProgramError` naming the node and field if ``program`` breaks an IR rule."""
    check_graph(program)
    for name, node in program.nodes():
        check_node(name, node)
    check_io(program)
    check_connections(program)
    check_precision(program)
    program.schedule()  # raises ProgramError on a cycle without delay
    check_gates(program)
    check_latency(program)
    check_initial_state(program)


def check_latency(program: Program) -> None:
    """``program.latency`` names existing nodes with whole numbers of steps in range."""
    for name, steps in program.latency.items():
        if name not in program.graph:
            raise ProgramError(f"latency names node {name!r}, which does not exist")
        if isinstance(steps, bool) or int(steps) != steps or not 0 <= steps <= MAX_STEPS_DELAY:
            raise ProgramError(f"node {name!r}, latency: expected a whole number of steps 0..{MAX_STEPS_DELAY}, "
                               f"got {steps!r}")


def check_initial_state(program: Program) -> None:
    """A population that starts away from rest (``v_init`` other than its rest value: ``v_reset``,
    0 in fixed point) has no latency: a program with latency runs its populations for ``latency``
    steps before the trained network's first step, and such a membrane would leak meanwhile."""
    for name, node in program.nodes():
        if not isinstance(node, Population) or node.v_init is None or not program.latency_of(name):
            continue
        rest = 0 if node.precision == "fixed" else node.v_reset
        if np.any(np.asarray(node.v_init) != rest):
            raise node_error(name, node, "v_init", f"the population trails the trained network by "
                             f"{program.latency_of(name)} step(s) (latency), during which a membrane started away "
                             f"from rest ({rest}) would leak; give every projection into it the target's delay in "
                             "the model (then no latency), or start it at rest")


# ---- FTWT gates -------------------------------------------------------------------------
def gate_of(program: Program, population: str) -> str | None:
    """The Gate that masks ``population`` (None when it has none)."""
    gates = [s for s in program.sources(population) if isinstance(program.node(s), Gate)]
    return gates[0] if gates else None


def check_gates(program: Program) -> None:
    """Rules of ``Gate`` nodes (see :class:`~spike.compiler.ir.nodes.Gate`), naming the node:

    every consumer of a gate is a Population whose size is a multiple of the gate's channels (and,
    when the population has a channel axis, ``shape[0] == C_out``); a population has at most one
    gate; every other input of a gated population is a conv2d projection (possibly through the
    BatchNorm folded into it later) reading the gate's source; no gate or gated population lies on
    a cycle.
    """
    cyclic: set[str] = set()
    gates = [(n, node) for n, node in program.nodes() if isinstance(node, Gate)]
    if not gates:
        return
    for stage in program.schedule():
        if stage.cyclic:
            cyclic.update(stage.nodes)
    for name, node in gates:
        consumers = program.consumers(name)
        if not consumers:
            raise node_error(name, node, None, "masks nothing: a gate must feed a population")
        (src,) = program.sources(name) or [None]
        if name in cyclic:
            raise node_error(name, node, None, "lies on a cycle; gates need their source's counts before the masked layer runs")
        c_out = node.shape[0] if node.shape else 0
        for pop in consumers:
            pn = program.node(pop)
            if not isinstance(pn, Population):
                raise node_error(name, node, None, f"feeds {pop!r} ({pn.KIND}); a gate masks populations only")
            if c_out < 1 or pn.size % c_out or (len(pn.shape) > 1 and pn.shape[0] != c_out):
                raise node_error(pop, pn, "shape", f"{pn.shape} does not split into the {c_out} channels of gate {name!r}")
            if pop in cyclic:
                raise node_error(pop, pn, None, f"is gated by {name!r} and lies on a cycle (not supported)")
            for other in program.sources(pop):
                on = program.node(other)
                if other == name:
                    continue
                if isinstance(on, Gate):
                    raise node_error(pop, pn, None, f"has two gates ({name!r}, {other!r}); at most one is allowed")
                proj = other
                if isinstance(on, BatchNorm) and len(program.sources(other)) == 1:  # not folded yet
                    proj = program.sources(other)[0]
                if not isinstance(program.node(proj), Conv2d) or program.sources(proj) != [src]:
                    raise node_error(pop, pn, None, f"is gated by {name!r}, so its inputs must be conv2d projections reading "
                               f"the gate's source {src!r}; input {other!r} ({on.KIND}) is not")
