"""Reading a NIR graph for ``nir_import``: the file, metadata values, fields, nested graphs, names
and shapes.

A ``.nir`` file is read node by node (:func:`read_nir_file`, the HDF5 layout ``nir.write``
writes), so that a bad file is refused naming the file and the node: a node needs a ``type`` among
NIR's (:data:`NIR_NODE_TYPES`) and the fields that type requires, no others; edges are pairs of
node names; each node is then built by ``nir`` itself. Metadata values come back as plain Python
(h5py gives bytes and numpy scalars; :func:`meta_value` checks one's type); a field is a finite
numeric array (no NaN, no inf, whatever the field) or an error naming the node and the field
(:func:`field_array`); declared shapes are positive integers. Nested NIRGraphs are flattened
(:func:`flatten_graph`): inner names become ``outer.inner``, their Input/Output nodes and every
Flatten become :class:`PassThrough` nodes that disappear (arrays are flat in C order; only shapes
change); every edge must name existing nodes; :func:`undot_names` then turns the dots into ``_``
(node names lose their dots, which separate a probe's node from its field). :func:`infer_shapes`
gives every node its output shape from its inputs' shapes, declared shapes and parameter arrays.

Errors are :class:`NIRImportError`, naming the node (and file).
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
from dataclasses import dataclass
from typing import Any, Iterable

import h5py
import numpy as np

from spike.compiler.ir.nodes import conv_output_hw

__all__ = [
    "NIRImportError", "node_failure", "nir_module", "read_nir_file", "plain", "node_metadata", "meta_value",
    "size_of", "declared_shape", "field_array", "as_float32", "FLOAT32_MAX", "int_value", "int_pair", "per_neuron",
    "PassThrough", "node_label", "graph_edges", "flatten_graph", "undot_names", "conv_input_shape", "conv_geometry",
    "pool_geometry", "SHAPE_PARAMS", "infer_shapes", "NIR_NODE_TYPES", "SUPPORTED_NODES",
]

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_DIM = 2**31 - 1  # the largest size, stride or padding read from a graph
#: the node types of NIR 1.0 (``nir.ir``)
NIR_NODE_TYPES = (
    "Input", "Output", "NIRGraph", "Affine", "Linear", "Scale", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d",
    "Flatten", "Delay", "LIF", "CubaLIF", "CubaLI", "IF", "LI", "I", "Threshold",
)
#: the NIR node types this importer lowers (``nir_lower``)
SUPPORTED_NODES = (
    "Input", "Output", "Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten",
    "Scale", "LIF", "CubaLIF", "IF", "LI", "I", "Threshold", "Delay", "NIRGraph",
)


class NIRImportError(ValueError):
    """A NIR graph this importer cannot lower; the message names the node (and file)."""


def node_failure(name: str, node: Any, msg: str) -> NIRImportError:
    """An error naming the node and its NIR type."""
    return NIRImportError(f"{node_label(name, node)}: {msg}")


def node_label(name: str, node: Any) -> str:
    """``node 'name' (NIRType)``."""
    kind = type(node.nir if isinstance(node, PassThrough) else node).__name__
    return f"node {name!r} ({kind})"


def nir_module():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - nir is a dependency
        raise NIRImportError("the 'nir' package is needed to import NIR graphs") from e
    return nir


# ---- small helpers ------------------------------------------------------------------------
def plain(x: Any) -> Any:
    """Metadata values as plain Python (h5py gives bytes and numpy scalars)."""
    if isinstance(x, bytes):
        return x.decode("utf8")
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def node_metadata(node: Any) -> dict:
    md = getattr(node, "metadata", None)
    return {str(plain(k)): plain(v) for k, v in md.items()} if isinstance(md, dict) else {}


_META_KINDS = {"str": "a string", "bool": "true or false", "number": "a number", "int": "an integer"}


def meta_value(where: str, md: dict, key: str, kind: str, default: Any = None) -> Any:
    """``md[key]`` checked to be of ``kind`` ("str", "bool" (also 0 or 1), "number" (finite) or
    "int"), else ``default`` when absent; ``where`` leads the error (e.g. ``"node 'lif' (LIF): "``)."""
    if key not in md:
        return default
    v = md[key]
    ok = {
        "str": isinstance(v, str),
        "bool": isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)),
        "number": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "int": isinstance(v, int) and not isinstance(v, bool),
    }[kind]
    if not ok:
        raise NIRImportError(f"{where}metadata {key} must be {_META_KINDS[kind]}, got {_brief(v)}")
    return bool(v) if kind == "bool" else v


def size_of(shape: Iterable[int]) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64)) if tuple(shape) else 1


def _shape(v: Any, what: str) -> tuple[int, ...] | None:
    if v is None:
        return None
    arr = np.asarray(v)
    if arr.dtype == object and arr.ndim == 0:
        return None
    flat = arr.reshape(-1)
    if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(flat)) or not np.all(flat == np.round(flat)) \
            or not np.all(flat >= 1) or not np.all(flat <= MAX_DIM):
        raise NIRImportError(f"{what} must be positive integers (at most {MAX_DIM}), got {_brief(v)}")
    return tuple(int(x) for x in flat)


def declared_shape(types: Any, key: str, where: str = "") -> tuple[int, ...] | None:
    """The shape an Input/Output/Flatten declares (``types`` a dict of ``key`` or the array), or None."""
    what = f"{where}{key} shape"
    if isinstance(types, dict):
        return _shape(types.get(key), what)
    return _shape(types, what)


def field_array(node_name: str, node: Any, field: str) -> np.ndarray:
    """Field ``field`` of a node as a numeric array; missing, non-numeric, NaN or inf values are refused."""
    v = getattr(node, field, None)
    if v is None:
        raise node_failure(node_name, node, f"field {field} is missing")
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    arr = np.asarray(v)
    if arr.dtype.kind not in "iuf":
        raise node_failure(node_name, node, f"field {field} must be numeric, got {arr.dtype} ({_brief(v)})")
    bad = ~np.isfinite(arr.astype(np.float64))
    if bad.any():
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        value = arr[at] if at else arr[()]
        what = "NaN" if np.isnan(value) else "inf"
        index = f" at index {at if len(at) > 1 else at[0]}" if at else ""
        raise node_failure(node_name, node, f"field {field} contains {what}{index} (expected finite numbers)")
    return arr


def _names(names: Iterable[Any], limit: int = 12) -> str:
    listed = [str(plain(n)) for n in names]
    return ", ".join(listed[:limit]) + (f", ... ({len(listed)} in all)" if len(listed) > limit else "")


def _brief(v: Any) -> str:
    """``repr(v)`` on one line, cut at 60 characters."""
    text = " ".join(repr(v).split())
    return text if len(text) <= 60 else text[:57] + "..."


def int_value(node_name: str, node: Any, field: str) -> int:
    """A field that must hold one integer (``groups``, ``start_dim``, ...)."""
    v = plain(getattr(node, field, None))
    arr = np.asarray(v)
    if arr.dtype.kind not in "iuf" or arr.size != 1 or not np.isfinite(arr).all() or not np.all(arr == np.round(arr)) \
            or not np.all(np.abs(arr) <= MAX_DIM):
        raise node_failure(node_name, node, f"field {field} must be one integer, got {_brief(v)}")
    return int(arr.reshape(()))


def int_pair(node_name: str, node: Any, field: str, value: Any) -> tuple[int, int]:
    arr = np.asarray(plain(value)).reshape(-1)
    if arr.dtype.kind not in "iuf" or arr.size not in (1, 2) or not np.isfinite(arr).all() \
            or not np.all(arr == np.round(arr)) or not np.all(np.abs(arr) <= MAX_DIM):
        raise node_failure(node_name, node, f"{field} must be one or two integers, got {_brief(value)}")
    vals = [int(x) for x in arr]
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


def as_float32(node_name: str, node: Any, field: str, arr: np.ndarray) -> np.ndarray:
    """``arr`` as float32; values beyond float32's range are refused (they would become inf)."""
    big = float(np.abs(np.asarray(arr, np.float64)).max()) if np.size(arr) else 0.0
    if big > FLOAT32_MAX:
        raise node_failure(node_name, node, f"field {field} holds {big:g}, beyond float32's range "
                                            f"(|x| <= {FLOAT32_MAX:g})")
    return np.asarray(arr).astype(np.float32)


def per_neuron(node_name: str, node: Any, field: str, arr: np.ndarray, n: int, dtype=np.float32) -> np.ndarray:
    if np.dtype(dtype) == np.float32 and arr.size in (1, n):
        arr = as_float32(node_name, node, field, arr)
    if arr.size == 1:
        return np.full(n, arr.reshape(()), dtype=dtype)
    if arr.size == n:
        return np.ascontiguousarray(arr.reshape(n), dtype=dtype)
    raise NIRImportError(
        f"node {node_name!r} ({type(node).__name__}): {field} has {arr.size} values {tuple(arr.shape)}, "
        f"but the node has {n} neurons"
    )


@dataclass
class PassThrough:
    """A node that disappears: a nested graph's Input/Output, or a Flatten."""

    nir: Any
    kind: str  # "input" | "output" | "flatten"


# ---- flattening nested graphs -------------------------------------------------------------
def graph_edges(graph: Any, where: str) -> list[tuple[str, str]]:
    """A graph's edges as (source, destination) name pairs; anything else is refused."""
    edges = getattr(graph, "edges", None)
    try:
        pairs = [tuple(plain(x) for x in e) for e in edges]
    except TypeError:
        raise NIRImportError(
            f"{where}: edges must be a list of (source, destination) node names, got {_brief(edges)}") from None
    for e in pairs:
        if len(e) != 2 or not all(isinstance(x, str) for x in e):
            raise NIRImportError(f"{where}: edge {_brief(e)} is not a (source, destination) pair of node names")
    return pairs  # type: ignore[return-value]


def flatten_graph(graph: Any, prefix: str, nodes: dict[str, Any], edges: list[tuple[str, str]]) -> None:
    """Add ``graph``'s nodes and edges to ``nodes``/``edges``, nested graphs flattened (names ``prefix`` +
    name). Every edge must name existing nodes (or a subgraph with one Input/Output)."""
    nir = nir_module()
    where = f"graph {prefix.rstrip('.')!r}" if prefix else "the top-level graph"
    if not isinstance(getattr(graph, "nodes", None), dict):
        got = _brief(getattr(graph, "nodes", None))
        raise NIRImportError(f"{where}: nodes must be a dict of named NIR nodes, got {got}")
    graph_edge_list = graph_edges(graph, where)
    sub_io: dict[str, tuple[list[str], list[str]]] = {}
    for name, node in graph.nodes.items():
        name = str(plain(name))
        if not isinstance(node, nir.NIRNode):
            raise NIRImportError(f"node {prefix + name!r}: not a NIR node ({type(node).__name__})")
        full = prefix + name
        if full in nodes:
            raise NIRImportError(f"node {full!r}: name clashes with a node of a flattened subgraph")
        if isinstance(node, nir.NIRGraph):
            flatten_graph(node, full + ".", nodes, edges)
            ins = [f"{full}.{k}" for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            outs = [f"{full}.{k}" for k, n in node.nodes.items() if isinstance(n, nir.Output)]
            sub_io[name] = (ins, outs)
        elif prefix and isinstance(node, nir.Input):
            nodes[full] = PassThrough(node, "input")
        elif prefix and isinstance(node, nir.Output):
            nodes[full] = PassThrough(node, "output")
        elif isinstance(node, nir.Flatten):
            nodes[full] = PassThrough(node, "flatten")
        else:
            nodes[full] = node

    def resolve(ref: Any, end: str, edge: tuple) -> str:
        ref = str(plain(ref))
        if ref in sub_io:
            ins, outs = sub_io[ref]
            cands = outs if end == "src" else ins
            if len(cands) != 1:
                what = "Output" if end == "src" else "Input"
                raise NIRImportError(
                    f"edge {edge}: subgraph {prefix + ref!r} has {len(cands)} {what} nodes "
                    f"({cands}); name one as '{ref}.<name>'"
                )
            return cands[0]
        if prefix + ref in nodes:
            return prefix + ref
        raise NIRImportError(f"edge {edge} in {where}: no node named {ref!r} (nodes: {_names(graph.nodes)})")

    for edge in graph_edge_list:
        a, b = edge
        edges.append((resolve(a, "src", edge), resolve(b, "dst", edge)))


# ---- shapes ---------------------------------------------------------------------------------
def conv_input_shape(name: str, node: Any, src: tuple[int, ...] | None, dims: int) -> tuple[int, ...] | None:
    w = field_array(name, node, "weight")
    if w.ndim != dims + 2 or 0 in w.shape:
        raise node_failure(name, node, f"weight should be a {dims + 2}-D [out, in, *kernel] array, has shape {w.shape}")
    groups = int_value(name, node, "groups")
    if groups < 1:
        raise node_failure(name, node, f"groups must be >= 1, got {groups}")
    c_in = int(w.shape[1]) * groups
    declared = getattr(node, "input_shape", None)
    if declared is not None and np.asarray(declared).dtype != object:
        spatial = _shape(declared, f"{node_label(name, node)}: input_shape")
        if len(spatial) != dims:
            raise node_failure(name, node, f"input_shape {spatial} should have {dims} entries")
        return (c_in, *spatial)
    if src is None:
        return None
    if len(src) != dims + 1:
        raise NIRImportError(
            f"node {name!r} ({type(node).__name__}): its input has shape {src}, expected "
            f"({'C, H, W' if dims == 2 else 'C, N'}); set input_shape"
        )
    return src


def conv_geometry(name: str, node: Any, in_shape: tuple[int, ...], dims: int):
    """(in_shape as (C, H, W), kernel, stride, padding, out_shape as (C_out, H, W)) for the IR."""
    w = field_array(name, node, "weight")
    if w.ndim != dims + 2:
        raise node_failure(name, node, f"weight should have {dims + 2} dimensions, has shape {w.shape}")
    if dims == 1:
        in3 = (in_shape[0], 1, in_shape[1])
        kernel = (1, int(w.shape[2]))
        s = int_pair(name, node, "stride", node.stride)[0]
        dil = int_pair(name, node, "dilation", node.dilation)[0]
        stride, dilation = (1, s), (1, dil)
    else:
        in3 = tuple(in_shape)
        kernel = (int(w.shape[2]), int(w.shape[3]))
        stride = int_pair(name, node, "stride", node.stride)
        dilation = int_pair(name, node, "dilation", node.dilation)
    if min(stride) < 1:
        raise node_failure(name, node, f"stride {stride} must be >= 1")
    if dilation != (1, 1):
        raise node_failure(name, node, f"dilation {dilation} is not supported (only 1)")
    pad = plain(node.padding)
    if isinstance(pad, str):
        if pad == "valid":
            padding = (0, 0)
        elif pad == "same":
            if stride != (1, 1) or any(k % 2 == 0 for k in kernel):
                raise NIRImportError(
                    f"node {name!r} ({type(node).__name__}): padding 'same' needs stride 1 and odd "
                    f"kernel sizes, got stride {stride}, kernel {kernel}"
                )
            padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
        else:
            raise node_failure(name, node, f"padding {pad!r} (expected int, pair, 'same' or 'valid')")
    elif dims == 1:
        padding = (0, int_pair(name, node, "padding", pad)[0])
    else:
        padding = int_pair(name, node, "padding", pad)
    if min(padding) < 0:
        raise node_failure(name, node, f"padding {padding} must be >= 0")
    groups = int_value(name, node, "groups")
    if groups < 1 or in3[0] % groups or w.shape[0] % groups or w.shape[1] * groups != in3[0]:
        raise NIRImportError(
            f"node {name!r} ({type(node).__name__}): weight {tuple(w.shape)} with groups={groups} does not fit "
            f"{in3[0]} input channels"
        )
    if in3[1] + 2 * padding[0] < kernel[0] or in3[2] + 2 * padding[1] < kernel[1]:
        raise node_failure(name, node, f"input {in_shape} is smaller than the kernel {kernel}")
    hw = conv_output_hw(in3[1:], kernel, stride, padding)
    return in3, kernel, stride, padding, (int(w.shape[0]), *hw)


def pool_geometry(name: str, node: Any, in_shape: tuple[int, ...]):
    if len(in_shape) != 3:
        raise node_failure(name, node, f"its input has shape {in_shape}, expected (C, H, W)")
    kernel = int_pair(name, node, "kernel_size", node.kernel_size)
    stride = int_pair(name, node, "stride", node.stride if node.stride is not None else node.kernel_size)
    padding = int_pair(name, node, "padding", node.padding if node.padding is not None else 0)
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise node_failure(name, node, f"kernel {kernel}, stride {stride}, padding {padding} out of range")
    if in_shape[1] + 2 * padding[0] < kernel[0] or in_shape[2] + 2 * padding[1] < kernel[1]:
        raise node_failure(name, node, f"input {in_shape} is smaller than the kernel {kernel}")
    hw = conv_output_hw(in_shape[1:], kernel, stride, padding)
    return kernel, stride, padding, (in_shape[0], *hw)


SHAPE_PARAMS = {  # the parameter array that gives an element-wise node its shape
    "LIF": "v_threshold", "CubaLIF": "v_threshold", "IF": "v_threshold", "LI": "tau", "I": "r",
    "Threshold": "threshold", "Scale": "scale", "Delay": "delay", "CubaLI": "tau_mem",
}


def _flatten_shape(name: str, node: Any, src: tuple[int, ...]) -> tuple[int, ...]:
    nd = len(src)
    start, end = int_value(name, node, "start_dim"), int_value(name, node, "end_dim")
    s, e = (start + nd if start < 0 else start), (end + nd if end < 0 else end)
    if not (0 <= s < max(nd, 1)) or not (s <= e < max(nd, 1)):
        raise NIRImportError(f"node {name!r} (Flatten): start_dim {start}, end_dim {end} do not fit input shape {src}")
    return (*src[:s], size_of(src[s : e + 1]), *src[e + 1 :])


def _out_shape(name: str, node: Any, srcs: list[tuple[int, ...] | None]) -> tuple[int, ...] | None:
    nir = nir_module()
    known = [s for s in srcs if s is not None]
    first = known[0] if known else None
    where = f"{node_label(name, node)}: "
    if isinstance(node, PassThrough):
        if node.kind == "input":
            return declared_shape(node.nir.input_type, "input", where) or first
        if node.kind == "output":
            return first or declared_shape(node.nir.output_type, "output", where)
        src = first or declared_shape(node.nir.input_type, "input", where)
        return None if src is None else _flatten_shape(name, node.nir, src)
    if isinstance(node, nir.Input):
        shape = declared_shape(node.input_type, "input", where)
        if shape is None:
            raise node_failure(name, node, "its shape is not given")
        return shape
    if isinstance(node, nir.Output):
        return first or declared_shape(node.output_type, "output", where)
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = field_array(name, node, "weight")
        if w.ndim != 2 or 0 in w.shape:
            raise node_failure(name, node, f"weight must be a 2-D [out, in] array, has shape {w.shape}")
        return (int(w.shape[0]),)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        dims = 1 if isinstance(node, nir.Conv1d) else 2
        in_shape = conv_input_shape(name, node, first, dims)
        if in_shape is None:
            return None
        out = conv_geometry(name, node, in_shape, dims)[4]
        return (out[0], out[2]) if dims == 1 else out
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        return None if first is None else pool_geometry(name, node, first)[3]
    field = SHAPE_PARAMS.get(type(node).__name__)
    if field is not None:  # element-wise: the input's shape, else the parameters'
        if first is not None:
            return first
        arr = field_array(name, node, field)
        return tuple(int(x) for x in arr.shape) if arr.size > 1 else None
    return first


def infer_shapes(nodes: dict[str, Any], srcs: dict[str, list[str]]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...] | None] = {n: None for n in nodes}
    for _ in range(len(nodes) + 1):
        changed = False
        for name, node in nodes.items():
            if shapes[name] is not None:
                continue
            out = _out_shape(name, node, [shapes[s] for s in srcs[name]])
            if out is not None:
                shapes[name] = out
                changed = True
        if not changed:
            break
    missing = [n for n, s in shapes.items() if s is None]
    if missing:
        raise node_failure(missing[0], nodes[missing[0]], "cannot infer its shape (no input of known shape)")
    return shapes  # type: ignore[return-value]


def undot_names(nodes: dict[str, Any], edges: list[tuple[str, str]]):
    taken = {n for n in nodes if "." not in n}
    rename: dict[str, str] = {}
    for n in nodes:
        if "." in n:
            base = new = n.replace(".", "_")
            i = 1
            while new in taken:
                i += 1
                new = f"{base}_{i}"
            taken.add(new)
            rename[n] = new
    if not rename:
        return nodes, edges
    return ({rename.get(n, n): v for n, v in nodes.items()},
            [(rename.get(u, u), rename.get(v, v)) for u, v in edges])


# ---- reading a file ---------------------------------------------------------------------------
_TOP = ""  # the name of the top-level graph while reading
_OPTIONAL_FIELDS = {"v_reset", "w_in", "input_shape", "input_type", "start_dim", "end_dim"}
_FILE_FIELDS = {"Input": ("shape",), "Output": ("shape",)}  # what nir.write names input_type/output_type


def _type_fields(cls: type) -> tuple[list[str], list[str]]:
    """(required, optional) fields of a NIR node type as ``nir.write`` stores them."""
    name = cls.__name__
    if name in _FILE_FIELDS:
        return list(_FILE_FIELDS[name]), []
    required, optional = [], []
    for f in dataclasses.fields(cls):
        if not f.init or f.name == "metadata":
            continue
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        (optional if has_default or f.name in _OPTIONAL_FIELDS else required).append(f.name)
    return required, optional


def _read_group(group: h5py.Group) -> dict:
    """An HDF5 group as a dict: sub-groups as dicts, datasets as arrays, strings as str."""
    out: dict = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_group(item)
        elif isinstance(item, h5py.Dataset):
            v = item[()]
            out[key] = v.decode("utf8") if isinstance(v, bytes) else v
    return out


def _field_shapes(kw: dict) -> str:
    return ", ".join(f"{k} {np.shape(v)}" for k, v in kw.items() if k != "metadata" and not isinstance(v, (str, dict)))


_GEOMETRY = {"stride": 1, "dilation": 1, "groups": 1, "kernel_size": 1, "padding": 0, "input_shape": 1}


def _check_geometry(where: str, kw: dict) -> None:
    """Convolution and pooling geometry (which nir computes with as it builds the node): integers,
    at least 1 (padding: at least 0, or 'same'/'valid'; input_shape may be absent)."""
    for field, low in _GEOMETRY.items():
        v = kw.get(field)
        if v is None or (field == "padding" and isinstance(v, str)):
            continue
        arr = np.asarray(v)
        if arr.dtype.kind not in "iuf" or arr.size == 0 or not np.isfinite(arr).all() \
                or not np.all(arr == np.round(arr)) or not np.all(arr >= low) or not np.all(arr <= MAX_DIM):
            raise NIRImportError(f"{where}: field {field} must be integers >= {low}, got {_brief(v)}")


def _build_node(path: str, name: str, d: Any) -> Any:
    """The NIR node stored as ``d`` (a group read by :func:`_read_group`), named ``name``."""
    nir = nir_module()
    where = f"{path}: the top-level graph" if name == _TOP else f"{path}: node {name!r}"
    if not isinstance(d, dict):
        raise NIRImportError(f"{where}: expected an HDF5 group with the node's fields, found a dataset")
    kind = d.get("type")
    if kind is None:
        raise NIRImportError(f"{where}: has no 'type' field (a NIR node type: {', '.join(SUPPORTED_NODES)})")
    if not isinstance(kind, str) or kind not in NIR_NODE_TYPES:
        raise NIRImportError(f"{where}: unknown NIR node type {_brief(kind)} (supported: {', '.join(SUPPORTED_NODES)})")
    kw = {k: v for k, v in d.items() if k != "type"}
    md = kw.get("metadata", {})
    if not isinstance(md, dict):
        raise NIRImportError(f"{where} ({kind}): metadata must be an HDF5 group of named values")
    if kind == "NIRGraph":
        children = kw.get("nodes")
        if not isinstance(children, dict) or "edges" not in kw:
            raise NIRImportError(f"{where} (NIRGraph): needs a 'nodes' group and an 'edges' dataset")
        edges = np.asarray(kw["edges"])
        if edges.size == 0:
            pairs: list[tuple[str, str]] = []
        elif edges.ndim != 2 or edges.shape[1] != 2 or not all(isinstance(x, (bytes, str)) for x in edges.flat):
            raise NIRImportError(
                f"{where} (NIRGraph): edges must be an [n, 2] array of node names, got {edges.dtype} {edges.shape}"
            )
        else:
            pairs = [tuple(x.decode("utf8") if isinstance(x, bytes) else x for x in e) for e in edges]
        inner = "" if name == _TOP else f"{name}."
        nodes = {k: _build_node(path, inner + k, v) for k, v in children.items()}
        return nir.NIRGraph(nodes=nodes, edges=pairs, metadata=md, type_check=False)
    cls = getattr(nir, kind)
    required, optional = _type_fields(cls)
    missing = [f for f in required if f not in kw]
    if missing:
        raise NIRImportError(
            f"{where} ({kind}): field {missing[0]} is missing (a {kind} node has {', '.join(required + optional)})"
        )
    unknown = [f for f in kw if f not in required and f not in optional and f != "metadata"]
    if unknown:
        raise NIRImportError(
            f"{where} ({kind}): unknown field {unknown[0]!r} (a {kind} node has {', '.join(required + optional)})"
        )
    if kind in ("Conv1d", "Conv2d"):
        kw.setdefault("input_shape", None)
    _check_geometry(f"{where} ({kind})", kw)
    try:
        return cls.from_dict({"type": kind, **kw})
    except Exception as e:  # nir's checks are asserts and constructor errors
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NIRImportError(f"{where} ({kind}): its fields do not make a {kind} node: {detail} "
                             f"({_field_shapes(kw)})") from None


#: seconds the HDF5 library gets to read a NIR file before the file is called damaged
READ_TIMEOUT_S = 120.0


def _read_root(path: str) -> dict | None:
    """The file's ``node`` group as plain data (:func:`_read_group`), None when there is none."""
    with h5py.File(path, "r") as f:
        root = f.get("node")
        return _read_group(root) if isinstance(root, h5py.Group) else None


def _read_root_in_child(path: str, conn: Any) -> None:
    try:
        conn.send(("ok", _read_root(path)))
    except BaseException as e:  # everything goes back to the parent as a message
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def _read_root_isolated(path: str, timeout: float | None = None) -> dict | None:
    """:func:`_read_root` in a forked child process: NIR files come from other tools, and a damaged
    one can make the HDF5 library loop forever, crash or allocate what the file only declares;
    that costs the child (killed after ``timeout`` seconds, default :data:`READ_TIMEOUT_S`), and this
    process reports it."""
    timeout = READ_TIMEOUT_S if timeout is None else timeout
    if "fork" not in multiprocessing.get_all_start_methods():  # no fork: read here
        return _read_root(path)
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_read_root_in_child, args=(path, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise NIRImportError(f"{path}: not a readable NIR file (HDF5 did not finish reading it in "
                                 f"{timeout:.0f} s: a damaged file?)")
        status, value = receive.recv()
    except EOFError:
        child.join()
        raise NIRImportError(f"{path}: not a readable NIR file (HDF5 stopped with exit code {child.exitcode} "
                             "reading it: a damaged file?)") from None
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    if status == "error":
        raise NIRImportError(f"{path}: not a readable NIR file ({value})")
    return value


def read_nir_file(path: str | os.PathLike) -> Any:
    """The ``nir.NIRGraph`` in a ``.nir`` file (``nir.write``'s layout), read node by node; a
    missing or unreadable file (read in a child process: :func:`_read_root_isolated`), an unknown
    node type, a missing or unknown field, fields nir refuses and malformed edges raise
    :class:`NIRImportError` naming the file and the node."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise NIRImportError(f"{path}: no such NIR file")
    if not h5py.is_hdf5(path):
        raise NIRImportError(f"{path}: not a NIR file (not HDF5)")
    data = _read_root_isolated(path)
    if data is None:
        raise NIRImportError(f"{path}: not a NIR file (no 'node' group at its root)")
    kind = data.get("type")
    if not (isinstance(kind, str) and kind == "NIRGraph"):
        raise NIRImportError(f"{path}: the root node is a {_brief(kind)}, not a NIRGraph")
    return _build_node(path, _TOP, data)
