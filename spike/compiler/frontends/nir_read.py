"""Reading a NIR graph for ``nir_import``: the file, metadata values, fields, nested graphs, names
and shapes.

A ``.nir`` file is read with ``nir.read`` (:func:`read_nir_file`); metadata values come back as
plain Python (h5py gives bytes and numpy scalars); a field is a finite numeric array or an error
naming the node (:func:`field_array`). Nested NIRGraphs are flattened (:func:`flatten_graph`):
inner names become ``outer.inner``, their Input/Output nodes and every Flatten become
:class:`PassThrough` nodes that disappear (arrays are flat in C order; only shapes change);
:func:`undot_names` then turns the dots into ``_`` (node names lose their dots, which separate a
probe's node from its field). :func:`infer_shapes` gives every node its output shape from its
inputs' shapes, declared shapes and parameter arrays.

Errors are :class:`NIRImportError`, naming the node (and file).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from spike.compiler.ir.nodes import conv_output_hw

__all__ = [
    "NIRImportError", "node_failure", "nir_module", "read_nir_file", "plain", "node_metadata", "size_of",
    "declared_shape", "field_array", "int_pair", "per_neuron", "PassThrough", "flatten_graph", "undot_names",
    "conv_input_shape", "conv_geometry", "pool_geometry", "SHAPE_PARAMS", "infer_shapes",
]


class NIRImportError(ValueError):
    """A NIR graph this importer cannot lower; the message names the node (and file)."""


def node_failure(name: str, node: Any, msg: str) -> NIRImportError:
    return NIRImportError(f"node {name!r} ({type(node).__name__}): {msg}")


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


def size_of(shape: Iterable[int]) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64)) if tuple(shape) else 1


def _shape(v: Any) -> tuple[int, ...] | None:
    if v is None:
        return None
    arr = np.asarray(v)
    if arr.dtype == object:
        return None
    return tuple(int(x) for x in arr.reshape(-1))


def declared_shape(types: Any, key: str) -> tuple[int, ...] | None:
    if isinstance(types, dict):
        return _shape(types.get(key))
    return _shape(types)


def field_array(node_name: str, node: Any, field: str) -> np.ndarray:
    v = getattr(node, field, None)
    if v is None:
        raise NIRImportError(f"node {node_name!r} ({type(node).__name__}): field {field} is missing")
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    arr = np.asarray(v)
    if arr.dtype.kind not in "iuf" or arr.dtype.kind == "b":
        raise NIRImportError(f"node {node_name!r} ({type(node).__name__}): field {field} must be numeric, got {arr.dtype}")
    if not np.isfinite(arr.astype(np.float64)).all() and field not in ("tau", "tau_mem", "tau_syn", "r", "w_in"):
        raise NIRImportError(f"node {node_name!r} ({type(node).__name__}): field {field} contains NaN/inf")
    return arr


def int_pair(node_name: str, node: Any, field: str, value: Any) -> tuple[int, int]:
    arr = np.asarray(value).reshape(-1)
    if arr.dtype.kind not in "iuf" or arr.size not in (1, 2) or not np.all(arr == np.round(arr)):
        raise NIRImportError(
            f"node {node_name!r} ({type(node).__name__}): {field} must be one or two integers, got {value!r}"
        )
    vals = [int(x) for x in arr]
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


def per_neuron(node_name: str, node: Any, field: str, arr: np.ndarray, n: int, dtype=np.float32) -> np.ndarray:
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
def flatten_graph(graph: Any, prefix: str, nodes: dict[str, Any], edges: list[tuple[str, str]]) -> None:
    nir = nir_module()
    sub_io: dict[str, tuple[list[str], list[str]]] = {}
    for name, node in graph.nodes.items():
        name = str(plain(name))
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
        raise NIRImportError(f"edge {edge} in graph {prefix.rstrip('.') or '<top>'!r}: no node named {ref!r}")

    for edge in graph.edges:
        a, b = edge
        edges.append((resolve(a, "src", tuple(edge)), resolve(b, "dst", tuple(edge))))


# ---- shapes ---------------------------------------------------------------------------------
def conv_input_shape(name: str, node: Any, src: tuple[int, ...] | None, dims: int) -> tuple[int, ...] | None:
    w = field_array(name, node, "weight")
    groups = int(np.asarray(node.groups).reshape(()))
    c_in = int(w.shape[1]) * groups
    declared = getattr(node, "input_shape", None)
    if declared is not None and np.asarray(declared).dtype != object:
        spatial = tuple(int(x) for x in np.asarray(declared).reshape(-1))
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
    groups = int(np.asarray(node.groups).reshape(()))
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
    start, end = int(plain(node.start_dim)), int(plain(node.end_dim))
    s, e = (start + nd if start < 0 else start), (end + nd if end < 0 else end)
    if not (0 <= s < max(nd, 1)) or not (s <= e < max(nd, 1)):
        raise NIRImportError(f"node {name!r} (Flatten): start_dim {start}, end_dim {end} do not fit input shape {src}")
    return (*src[:s], size_of(src[s : e + 1]), *src[e + 1 :])


def _out_shape(name: str, node: Any, srcs: list[tuple[int, ...] | None]) -> tuple[int, ...] | None:
    nir = nir_module()
    known = [s for s in srcs if s is not None]
    first = known[0] if known else None
    if isinstance(node, PassThrough):
        if node.kind == "input":
            return declared_shape(node.nir.input_type, "input") or first
        if node.kind == "output":
            return first or declared_shape(node.nir.output_type, "output")
        src = first or declared_shape(node.nir.input_type, "input")
        return None if src is None else _flatten_shape(name, node.nir, src)
    if isinstance(node, nir.Input):
        shape = declared_shape(node.input_type, "input")
        if shape is None:
            raise NIRImportError(f"node {name!r} (Input): its shape is not given")
        return shape
    if isinstance(node, nir.Output):
        return first or declared_shape(node.output_type, "output")
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = field_array(name, node, "weight")
        if w.ndim != 2:
            raise node_failure(name, node, f"weight must be 2-D [out, in], has shape {w.shape}")
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
        arr = np.asarray(getattr(node, field))
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


# ---- entry point ----------------------------------------------------------------------------
def read_nir_file(path: str | os.PathLike) -> Any:
    nir = nir_module()
    if not os.path.exists(path):
        raise NIRImportError(f"{os.fspath(path)}: no such NIR file")
    try:
        return nir.read(path, type_check=False)
    except Exception as e:  # h5py and nir raise many kinds
        raise NIRImportError(f"{os.fspath(path)}: not a readable NIR file ({type(e).__name__}: {e})") from e
