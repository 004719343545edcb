"""Import a NIR graph (Neuromorphic Intermediate Representation, ``nir`` 1.0) as an IR Program.

``from_nir(graph_or_path, dt=1e-4, reset=None)`` reads a ``nir.NIRGraph`` (or a ``.nir`` file),
lowers it to IR nodes; ``spike.compiler.compile`` runs the passes after it.

Discretisation: forward Euler with step ``dt`` seconds, as snnTorch's exporter writes it (details
and the exact inversion of rounded parameters in :mod:`spike.compiler.frontends.nir_discretize`):
``beta = 1 - dt/tau``, ``gain = r*dt/tau`` (LIF, LI), ``beta = 1``, ``gain = r*dt`` (IF, I),
CubaLIF ``alpha = 1 - dt/tau_syn``, ``beta = 1 - dt/tau_mem``,
``gain = (r*dt/tau_mem)*(w_in*dt/tau_syn)``. snnTorch writes ``tau = dt/(1-beta)``,
``r = tau/dt``, ``v_leak = 0``: its beta comes back bit for bit and the gain is exactly 1.
A node's ``dt`` metadata (our exporter writes it) overrides the ``dt`` argument, as does the
graph's ``dt`` metadata. ``discretization="exp"`` (node metadata ``discretization`` wins) integrates
LIF and LI exactly instead: ``beta = exp(-dt/tau)``, ``gain = r*(1 - beta)``, as Sinabs computes
(CubaLIF is refused in that mode).

Neuron semantics NIR leaves open (design §3):
- reset mode: node metadata ``reset`` (our exporter writes it), else the ``reset`` argument, else
  ``"zero"`` (NIR's ``v = v_reset``; ``v_reset`` must then be 0). snnTorch's NIR export drops its
  default ``"subtract"``: import its graphs with ``reset="subtract"``.
- ``reset_delay``: metadata, else the ``reset_delay`` argument, default True (snnTorch's default:
  the reset of step t-1's spike lands at step t). With a zero reset both choices give the same
  spikes; with subtract they differ, and True reproduces snnTorch.
- firing: ``v > v_threshold`` (NIR), or ``>=`` when metadata ``fire_ge`` (else the ``fire_ge``
  argument) is true (Sinabs's SingleSpike fires on ``>=``).
- ``v_leak != 0`` becomes a constant current ``(1-beta)*v_leak/gain``, added to the bias of the
  Affine/Linear that feeds the neurons (an error if none does; not for CubaLIF). The membrane
  starts at 0 (NIR leaves the initial state open; Norse starts it at ``v_leak``).
- a per-neuron gain that is not uniform is folded into the weights of the projections feeding
  the neurons (the IR's gain is one number per population).

Nodes: Input, Output, Affine and Linear (Dense), Conv1d (a Conv2d with H = 1), Conv2d, SumPool2d
and AvgPool2d (Pool2d), Flatten (no node: arrays are flat in C order; only shapes change), Scale
(Identity; a Sparse diagonal when the scale varies), LIF, CubaLIF, IF, LI, I (``li`` with
beta 1), Threshold (``lif`` with beta 0 and no reset: spike = input > threshold), Delay (a
projection delay of ``round(delay/dt)`` steps; it must be a whole number of steps, the same for
every element; it goes on the projection before it when that feeds only the Delay, so that
projection's output, bias included, is delayed; else on the projections after it; else it
becomes an Identity projection) and nested NIRGraphs (flattened; inner names become
``outer_inner``: node names lose their dots, which separate a probe's node from its field).
Several edges into one node sum (NIR semantics): into a projection or Output through a host
``add`` ``<node>_sum``. A population fed by something other than a projection gets an Identity
projection ``<population>_in`` (so its events are counted as synaptic operations).

Cycles: a Delay inside a cycle is honoured; a cycle without one gets the one-step delay of the
Euler discretisation (the recurrent projection reads the previous step's spikes, as snnTorch's
RLeaky export means it): found by depth-first search from the inputs, it goes on the projection
that closes the cycle (or on a new Identity ``<source>_delay`` when that projection feeds others).

Unsupported nodes, bad parameters and inconsistent shapes raise :class:`NIRImportError`, which
names the node.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from spike.compiler.ir.nodes import (
    RESET_MODES, Conv2d, Dense, HostOp, Identity, Input, Node, Output, Pool2d, Population,
    Projection, Sparse, conv_output_hw,
)
from spike.compiler.passes.delays import bias_from_start
from spike.compiler.frontends.nir_discretize import decay_exp, decay_from_tau, gain_exp, gain_from_r, gain_matches
from spike.compiler.ir.program import Program, ProgramBuilder, ProgramError

__all__ = ["NIRImportError", "from_nir", "DEFAULT_DT", "DISCRETIZATIONS", "META_KEY", "SUPPORTED_NODES"]

DEFAULT_DT = 1e-4
DISCRETIZATIONS = ("euler", "exp")
META_KEY = "spike_sim"  # graph metadata our exporter writes: JSON with node order and metadata
SUPPORTED_NODES = (
    "Input", "Output", "Affine", "Linear", "Conv1d", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten",
    "Scale", "LIF", "CubaLIF", "IF", "LI", "I", "Threshold", "Delay", "NIRGraph",
)


class NIRImportError(ValueError):
    """A NIR graph this importer cannot lower; the message names the node (and file)."""


def _fail(name: str, node: Any, msg: str) -> NIRImportError:
    return NIRImportError(f"node {name!r} ({type(node).__name__}): {msg}")


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - nir is a dependency
        raise NIRImportError("the 'nir' package is needed to import NIR graphs") from e
    return nir


# ---- small helpers ------------------------------------------------------------------------
def _s(x: Any) -> Any:
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


def _meta(node: Any) -> dict:
    md = getattr(node, "metadata", None)
    return {str(_s(k)): _s(v) for k, v in md.items()} if isinstance(md, dict) else {}


def _size(shape: Iterable[int]) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64)) if tuple(shape) else 1


def _shape(v: Any) -> tuple[int, ...] | None:
    if v is None:
        return None
    arr = np.asarray(v)
    if arr.dtype == object:
        return None
    return tuple(int(x) for x in arr.reshape(-1))


def _declared(types: Any, key: str) -> tuple[int, ...] | None:
    if isinstance(types, dict):
        return _shape(types.get(key))
    return _shape(types)


def _arr(node_name: str, node: Any, field: str) -> np.ndarray:
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


def _pair(node_name: str, node: Any, field: str, value: Any) -> tuple[int, int]:
    arr = np.asarray(value).reshape(-1)
    if arr.dtype.kind not in "iuf" or arr.size not in (1, 2) or not np.all(arr == np.round(arr)):
        raise NIRImportError(
            f"node {node_name!r} ({type(node).__name__}): {field} must be one or two integers, got {value!r}"
        )
    vals = [int(x) for x in arr]
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


def _per_neuron(node_name: str, node: Any, field: str, arr: np.ndarray, n: int, dtype=np.float32) -> np.ndarray:
    if arr.size == 1:
        return np.full(n, arr.reshape(()), dtype=dtype)
    if arr.size == n:
        return np.ascontiguousarray(arr.reshape(n), dtype=dtype)
    raise NIRImportError(
        f"node {node_name!r} ({type(node).__name__}): {field} has {arr.size} values {tuple(arr.shape)}, "
        f"but the node has {n} neurons"
    )


@dataclass
class _Pass:
    """A node that disappears: a nested graph's Input/Output, or a Flatten."""

    nir: Any
    kind: str  # "input" | "output" | "flatten"


@dataclass
class _DelayMark:
    shape: tuple[int, ...]
    steps: int
    into: str = ""  # "consumer": our exporter's Delay in front of a projection


@dataclass
class _PopExtras:
    """What a population needs from the projections feeding it (see ``_fold_into_sources``)."""

    gain: np.ndarray | None  # per-neuron gain when not uniform (float64)
    const: np.ndarray | None  # per-neuron constant input (float64), from v_leak


# ---- flattening nested graphs -------------------------------------------------------------
def _flatten(graph: Any, prefix: str, nodes: dict[str, Any], edges: list[tuple[str, str]]) -> None:
    nir = _nir()
    sub_io: dict[str, tuple[list[str], list[str]]] = {}
    for name, node in graph.nodes.items():
        name = str(_s(name))
        full = prefix + name
        if full in nodes:
            raise NIRImportError(f"node {full!r}: name clashes with a node of a flattened subgraph")
        if isinstance(node, nir.NIRGraph):
            _flatten(node, full + ".", nodes, edges)
            ins = [f"{full}.{k}" for k, n in node.nodes.items() if isinstance(n, nir.Input)]
            outs = [f"{full}.{k}" for k, n in node.nodes.items() if isinstance(n, nir.Output)]
            sub_io[name] = (ins, outs)
        elif prefix and isinstance(node, nir.Input):
            nodes[full] = _Pass(node, "input")
        elif prefix and isinstance(node, nir.Output):
            nodes[full] = _Pass(node, "output")
        elif isinstance(node, nir.Flatten):
            nodes[full] = _Pass(node, "flatten")
        else:
            nodes[full] = node

    def resolve(ref: Any, end: str, edge: tuple) -> str:
        ref = str(_s(ref))
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
def _conv_in(name: str, node: Any, src: tuple[int, ...] | None, dims: int) -> tuple[int, ...] | None:
    w = _arr(name, node, "weight")
    groups = int(np.asarray(node.groups).reshape(()))
    c_in = int(w.shape[1]) * groups
    declared = getattr(node, "input_shape", None)
    if declared is not None and np.asarray(declared).dtype != object:
        spatial = tuple(int(x) for x in np.asarray(declared).reshape(-1))
        if len(spatial) != dims:
            raise _fail(name, node, f"input_shape {spatial} should have {dims} entries")
        return (c_in, *spatial)
    if src is None:
        return None
    if len(src) != dims + 1:
        raise NIRImportError(
            f"node {name!r} ({type(node).__name__}): its input has shape {src}, expected "
            f"({'C, H, W' if dims == 2 else 'C, N'}); set input_shape"
        )
    return src


def _conv_geometry(name: str, node: Any, in_shape: tuple[int, ...], dims: int):
    """(in_shape as (C, H, W), kernel, stride, padding, out_shape as (C_out, H, W)) for the IR."""
    w = _arr(name, node, "weight")
    if w.ndim != dims + 2:
        raise _fail(name, node, f"weight should have {dims + 2} dimensions, has shape {w.shape}")
    if dims == 1:
        in3 = (in_shape[0], 1, in_shape[1])
        kernel = (1, int(w.shape[2]))
        s = _pair(name, node, "stride", node.stride)[0]
        dil = _pair(name, node, "dilation", node.dilation)[0]
        stride, dilation = (1, s), (1, dil)
    else:
        in3 = tuple(in_shape)
        kernel = (int(w.shape[2]), int(w.shape[3]))
        stride = _pair(name, node, "stride", node.stride)
        dilation = _pair(name, node, "dilation", node.dilation)
    if dilation != (1, 1):
        raise _fail(name, node, f"dilation {dilation} is not supported (only 1)")
    pad = _s(node.padding)
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
            raise _fail(name, node, f"padding {pad!r} (expected int, pair, 'same' or 'valid')")
    elif dims == 1:
        padding = (0, _pair(name, node, "padding", pad)[0])
    else:
        padding = _pair(name, node, "padding", pad)
    groups = int(np.asarray(node.groups).reshape(()))
    if groups < 1 or in3[0] % groups or w.shape[0] % groups or w.shape[1] * groups != in3[0]:
        raise NIRImportError(
            f"node {name!r} ({type(node).__name__}): weight {tuple(w.shape)} with groups={groups} does not fit "
            f"{in3[0]} input channels"
        )
    if in3[1] + 2 * padding[0] < kernel[0] or in3[2] + 2 * padding[1] < kernel[1]:
        raise _fail(name, node, f"input {in_shape} is smaller than the kernel {kernel}")
    hw = conv_output_hw(in3[1:], kernel, stride, padding)
    return in3, kernel, stride, padding, (int(w.shape[0]), *hw)


def _pool_geometry(name: str, node: Any, in_shape: tuple[int, ...]):
    if len(in_shape) != 3:
        raise _fail(name, node, f"its input has shape {in_shape}, expected (C, H, W)")
    kernel = _pair(name, node, "kernel_size", node.kernel_size)
    stride = _pair(name, node, "stride", node.stride if node.stride is not None else node.kernel_size)
    padding = _pair(name, node, "padding", node.padding if node.padding is not None else 0)
    if min(kernel) < 1 or min(stride) < 1 or min(padding) < 0:
        raise _fail(name, node, f"kernel {kernel}, stride {stride}, padding {padding} out of range")
    if in_shape[1] + 2 * padding[0] < kernel[0] or in_shape[2] + 2 * padding[1] < kernel[1]:
        raise _fail(name, node, f"input {in_shape} is smaller than the kernel {kernel}")
    hw = conv_output_hw(in_shape[1:], kernel, stride, padding)
    return kernel, stride, padding, (in_shape[0], *hw)


_PARAM_OF = {  # the parameter array that gives an element-wise node its shape
    "LIF": "v_threshold", "CubaLIF": "v_threshold", "IF": "v_threshold", "LI": "tau", "I": "r",
    "Threshold": "threshold", "Scale": "scale", "Delay": "delay", "CubaLI": "tau_mem",
}


def _flatten_shape(name: str, node: Any, src: tuple[int, ...]) -> tuple[int, ...]:
    nd = len(src)
    start, end = int(_s(node.start_dim)), int(_s(node.end_dim))
    s, e = (start + nd if start < 0 else start), (end + nd if end < 0 else end)
    if not (0 <= s < max(nd, 1)) or not (s <= e < max(nd, 1)):
        raise NIRImportError(f"node {name!r} (Flatten): start_dim {start}, end_dim {end} do not fit input shape {src}")
    return (*src[:s], _size(src[s : e + 1]), *src[e + 1 :])


def _out_shape(name: str, node: Any, srcs: list[tuple[int, ...] | None]) -> tuple[int, ...] | None:
    nir = _nir()
    known = [s for s in srcs if s is not None]
    first = known[0] if known else None
    if isinstance(node, _Pass):
        if node.kind == "input":
            return _declared(node.nir.input_type, "input") or first
        if node.kind == "output":
            return first or _declared(node.nir.output_type, "output")
        src = first or _declared(node.nir.input_type, "input")
        return None if src is None else _flatten_shape(name, node.nir, src)
    if isinstance(node, nir.Input):
        shape = _declared(node.input_type, "input")
        if shape is None:
            raise NIRImportError(f"node {name!r} (Input): its shape is not given")
        return shape
    if isinstance(node, nir.Output):
        return first or _declared(node.output_type, "output")
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _arr(name, node, "weight")
        if w.ndim != 2:
            raise _fail(name, node, f"weight must be 2-D [out, in], has shape {w.shape}")
        return (int(w.shape[0]),)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        dims = 1 if isinstance(node, nir.Conv1d) else 2
        in_shape = _conv_in(name, node, first, dims)
        if in_shape is None:
            return None
        out = _conv_geometry(name, node, in_shape, dims)[4]
        return (out[0], out[2]) if dims == 1 else out
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        return None if first is None else _pool_geometry(name, node, first)[3]
    field = _PARAM_OF.get(type(node).__name__)
    if field is not None:  # element-wise: the input's shape, else the parameters'
        if first is not None:
            return first
        arr = np.asarray(getattr(node, field))
        return tuple(int(x) for x in arr.shape) if arr.size > 1 else None
    return first


def _infer_shapes(nodes: dict[str, Any], srcs: dict[str, list[str]]) -> dict[str, tuple[int, ...]]:
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
        raise _fail(missing[0], nodes[missing[0]], "cannot infer its shape (no input of known shape)")
    return shapes  # type: ignore[return-value]


# ---- lowering one node ----------------------------------------------------------------------
@dataclass
class _Options:
    dt: float
    reset: str | None
    reset_delay: bool
    input_signal: str | None
    fire_ge: bool = False
    discretization: str = "euler"


def _node_dt(name: str, md: dict, opts: _Options) -> float:
    dt = md.get("dt", opts.dt)
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise NIRImportError(f"node {name!r}: metadata dt {dt!r} is not a number") from None
    if not (math.isfinite(dt) and dt > 0):
        raise NIRImportError(f"node {name!r}: dt must be a positive number of seconds, got {dt!r}")
    return dt


def _decay(name: str, node: Any, field: str, n: int, dt: float, exact: bool = False) -> np.ndarray:
    """Per-neuron float32 decay of time constant ``field``: Euler ``1 - dt/tau``, or ``exp(-dt/tau)``
    when ``exact`` (discretization "exp")."""
    tau = _per_neuron(name, node, field, _arr(name, node, field), n, np.asarray(getattr(node, field)).dtype)
    if np.isnan(tau).any() or (tau <= 0).any():
        raise _fail(name, node, f"{field} must be > 0 (seconds), got min {np.nanmin(tau)}")
    if exact:
        return decay_exp(tau, dt)
    d = decay_from_tau(tau, dt)
    if (d < 0).any():
        bad = float(tau[d < 0].min())
        raise NIRImportError(
            f"node {name!r} ({type(node).__name__}): {field} = {bad} s is shorter than the time step "
            f"dt = {dt} s (the decay 1 - dt/{field} would be negative); import with a smaller dt"
        )
    return d.astype(np.float32)


def _gain(name: str, node: Any, field: str, scale: np.ndarray | float, n: int, dt: float, md_gain: Any) -> np.ndarray:
    r = _per_neuron(name, node, field, _arr(name, node, field), n, np.asarray(getattr(node, field)).dtype)
    if isinstance(scale, np.ndarray) and np.isinf(scale).any():
        raise _fail(name, node, f"an infinite time constant leaves {field} undefined")
    if md_gain is not None and gain_matches(float(md_gain), r, scale, dt):
        return np.full(n, float(md_gain))
    g = gain_from_r(r, scale, dt).astype(np.float64)
    if not np.isfinite(g).all():
        raise _fail(name, node, f"{field} gives a non-finite input gain")
    return g


def _gain_exp(name: str, node: Any, tau: np.ndarray, beta: np.ndarray, n: int) -> np.ndarray:
    """Exact integration's input gain ``r*(1 - beta)`` (float32 arithmetic, as Sinabs's)."""
    if np.isinf(tau).any():
        raise _fail(name, node, "an infinite time constant leaves r undefined")
    return gain_exp(_per_neuron(name, node, "r", _arr(name, node, "r"), n), beta)


def _population(name: str, node: Any, shape: tuple[int, ...], opts: _Options) -> tuple[Population, _PopExtras]:
    nir = _nir()
    md = _meta(node)
    dt = _node_dt(name, md, opts)
    n = _size(shape)
    kind = type(node).__name__
    reset = md.get("reset", opts.reset or "zero")
    if reset not in RESET_MODES:
        raise NIRImportError(f"node {name!r} ({kind}): reset {reset!r} is not one of {', '.join(RESET_MODES)}")
    reset_delay = bool(md.get("reset_delay", opts.reset_delay))
    fire_ge = bool(md.get("fire_ge", opts.fire_ge))
    discretization = md.get("discretization", opts.discretization)
    if discretization not in DISCRETIZATIONS:
        raise NIRImportError(
            f"node {name!r} ({kind}): discretization {discretization!r} is not one of {', '.join(DISCRETIZATIONS)}"
        )
    exact = discretization == "exp"
    md_gain = md.get("gain")
    alpha = None
    const = None
    threshold = None
    if isinstance(node, nir.Threshold):
        model, reset, reset_delay = "lif", "none", False
        beta = np.zeros(n, np.float32)
        gain = np.ones(n)
        threshold = _per_neuron(name, node, "threshold", _arr(name, node, "threshold"), n)
    elif isinstance(node, (nir.IF, nir.I)):
        model = "li" if isinstance(node, nir.I) else md.get("model", "if")
        if model not in ("if", "lif", "li") or (model == "li") != isinstance(node, nir.I):
            raise NIRImportError(f"node {name!r} ({kind}): metadata model {model!r} does not fit an {kind} node")
        beta = np.ones(n, np.float32)
        gain = _gain(name, node, "r", 1.0, n, dt, md_gain)
        if isinstance(node, nir.IF):
            threshold = _per_neuron(name, node, "v_threshold", _arr(name, node, "v_threshold"), n)
    elif isinstance(node, (nir.LIF, nir.LI)):
        model = "lif" if isinstance(node, nir.LIF) else "li"
        tau = _per_neuron(name, node, "tau", _arr(name, node, "tau"), n, np.asarray(node.tau).dtype)
        beta = _decay(name, node, "tau", n, dt, exact)
        gain = _gain_exp(name, node, tau, beta, n) if exact else _gain(name, node, "r", tau, n, dt, md_gain)
        v_leak = _per_neuron(name, node, "v_leak", _arr(name, node, "v_leak"), n, np.float64)
        if (v_leak != 0).any():  # the drive (1 - beta)*v_leak, with the decay as recovered (exactly)
            const = (1.0 - beta.astype(np.float64)) * v_leak
        if isinstance(node, nir.LIF):
            threshold = _per_neuron(name, node, "v_threshold", _arr(name, node, "v_threshold"), n)
    elif isinstance(node, nir.CubaLIF):
        if exact:
            raise NIRImportError(
                f"node {name!r} (CubaLIF): discretization 'exp' has no CubaLIF form in the IR (its current decays "
                "within the step); import it with discretization='euler'"
            )
        model = "cuba_lif"
        tau_mem = _per_neuron(name, node, "tau_mem", _arr(name, node, "tau_mem"), n, np.asarray(node.tau_mem).dtype)
        tau_syn = _per_neuron(name, node, "tau_syn", _arr(name, node, "tau_syn"), n, np.asarray(node.tau_syn).dtype)
        beta = _decay(name, node, "tau_mem", n, dt)
        alpha = _decay(name, node, "tau_syn", n, dt)
        gain = _gain(name, node, "r", tau_mem, n, dt, md_gain) * _gain(name, node, "w_in", tau_syn, n, dt, None)
        v_leak = _per_neuron(name, node, "v_leak", _arr(name, node, "v_leak"), n, np.float64)
        if (v_leak != 0).any():
            raise NIRImportError(
                f"node {name!r} (CubaLIF): v_leak != 0 is not supported (no constant drive of the membrane in the IR)"
            )
        threshold = _per_neuron(name, node, "v_threshold", _arr(name, node, "v_threshold"), n)
    else:  # pragma: no cover - guarded by the caller
        raise NIRImportError(f"node {name!r}: {kind} is not a neuron")
    v_reset = getattr(node, "v_reset", None)
    if v_reset is not None and reset == "zero" and (np.asarray(v_reset) != 0).any():
        raise NIRImportError(
            f"node {name!r} ({kind}): v_reset != 0 is not supported (the IR resets to 0); "
            "use reset='subtract' or 'none' if the graph does not rely on it"
        )
    uniform = bool((gain == gain[0]).all()) if n else True
    pop = Population(
        shape=tuple(shape), model=model, beta=beta, threshold=threshold, alpha=alpha,
        gain=float(gain[0]) if (uniform and n) else 1.0, reset=reset, reset_delay=reset_delay,
        fire_ge=fire_ge,
    )
    return pop, _PopExtras(gain=None if uniform else gain, const=const)


def _lower(name: str, node: Any, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...], opts: _Options):
    """The IR node (or _DelayMark / _Pass) for one NIR node, plus population extras."""
    nir = _nir()
    md = _meta(node)
    kind = type(node).__name__
    src = in_shapes[0] if in_shapes else None
    for s in in_shapes[1:]:
        if _size(s) != _size(src):
            raise NIRImportError(f"node {name!r} ({kind}): its inputs have different sizes {in_shapes} (they are summed)")
    if isinstance(node, _Pass):
        if src is not None and _size(src) != _size(out_shape):
            raise NIRImportError(f"node {name!r}: its input has size {_size(src)}, but its shape is {out_shape}")
        return node, None
    if isinstance(node, nir.Input):
        signal = md.get("signal", opts.input_signal or "spike")
        if signal not in ("spike", "real"):
            raise NIRImportError(f"node {name!r} (Input): signal {signal!r} is not 'spike' or 'real'")
        return Input(shape=out_shape, signal=signal), None
    if isinstance(node, nir.Output):
        declared = _declared(node.output_type, "output")
        shape = declared if (declared and src is not None and _size(declared) == _size(src)) else out_shape
        if src is not None and _size(shape) != _size(src):
            raise NIRImportError(f"node {name!r} (Output): shape {shape} but its input has size {_size(src)}")
        return Output(shape=tuple(shape)), None
    if src is None:
        raise NIRImportError(f"node {name!r} ({kind}): has no input edge")
    delay = int(md.get("implicit_delay", 0))
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _arr(name, node, "weight").astype(np.float32)
        if _size(src) != w.shape[1]:
            raise NIRImportError(
                f"node {name!r} ({kind}): weight {tuple(w.shape)} expects {w.shape[1]} inputs, its input has "
                f"shape {src} ({_size(src)} values)"
            )
        bias = None
        if isinstance(node, nir.Affine):
            b = _arr(name, node, "bias").astype(np.float32)
            if b.size not in (1, w.shape[0]):
                raise NIRImportError(f"node {name!r} (Affine): bias has {b.size} values, weight has {w.shape[0]} rows")
            bias = np.ascontiguousarray(np.broadcast_to(b.reshape(-1), (w.shape[0],)), dtype=np.float32)
        if md.get("ir_kind") == "sparse":
            rows, cols = np.nonzero(w.T)  # CSR over source neurons
            indptr = np.zeros(w.shape[1] + 1, np.int64)
            np.add.at(indptr, rows + 1, 1)
            return Sparse(
                shape=(int(w.shape[0]),), in_shape=(int(w.shape[1]),), delay=delay, indptr=np.cumsum(indptr),
                indices=cols.astype(np.int64), data=w.T[rows, cols].astype(np.float32), bias=bias,
            ), None
        return Dense(shape=(int(w.shape[0]),), in_shape=(int(w.shape[1]),), delay=delay, weight=w, bias=bias), None
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        dims = 1 if isinstance(node, nir.Conv1d) else 2
        in_shape = _conv_in(name, node, src, dims)
        if _size(in_shape) != _size(src):
            raise NIRImportError(f"node {name!r} ({kind}): expects input {in_shape}, its input has shape {src}")
        in3, _, stride, padding, out3 = _conv_geometry(name, node, in_shape, dims)
        w = _arr(name, node, "weight").astype(np.float32)
        if dims == 1:
            w = w[:, :, None, :]
        bias = None
        if md.get("has_bias", True) and getattr(node, "bias", None) is not None:
            b = _arr(name, node, "bias").astype(np.float32).reshape(-1)
            if b.size not in (1, w.shape[0]):
                raise NIRImportError(f"node {name!r} ({kind}): bias has {b.size} values for {w.shape[0]} output channels")
            bias = np.ascontiguousarray(np.broadcast_to(b, (w.shape[0],)), dtype=np.float32)
        return Conv2d(
            shape=out3, in_shape=in3, delay=delay, weight=np.ascontiguousarray(w), bias=bias,
            stride=stride, padding=padding, groups=int(np.asarray(node.groups).reshape(())),
        ), None
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        kernel, stride, padding, out3 = _pool_geometry(name, node, src)
        mode = "sum" if isinstance(node, nir.SumPool2d) else "avg"
        return Pool2d(shape=out3, in_shape=src, delay=delay, mode=mode, kernel=kernel, stride=stride, padding=padding), None
    if isinstance(node, nir.Scale):
        scale = _arr(name, node, "scale").astype(np.float64).reshape(-1)
        n = _size(src)
        shape = out_shape
        if scale.size not in (1, n):
            raise NIRImportError(f"node {name!r} (Scale): scale has {scale.size} values, its input has {n}")
        if md.get("ir_kind") == "hostop":
            if not (scale == 1).all():
                raise NIRImportError(f"node {name!r} (Scale): a host add must have scale 1")
            return HostOp(shape=shape, op=str(md.get("op", "add"))), None
        if md.get("ir_kind") != "sparse" and (scale == scale[0]).all():
            return Identity(shape=shape, in_shape=shape, delay=delay, scale=float(scale[0])), None
        data = np.broadcast_to(scale, (n,)).astype(np.float32)
        return Sparse(
            shape=shape, in_shape=shape, delay=delay, indptr=np.arange(n + 1, dtype=np.int64),
            indices=np.arange(n, dtype=np.int64), data=data,
        ), None
    if isinstance(node, nir.Delay):
        d = _arr(name, node, "delay").astype(np.float64).reshape(-1)
        dt = _node_dt(name, md, opts)
        steps = d / dt
        k = np.round(steps)
        if (np.abs(steps - k) > 1e-6 * np.maximum(1.0, np.abs(k))).any() or (k < 0).any():
            bad = float(d[(np.abs(steps - k) > 1e-6 * np.maximum(1.0, np.abs(k))) | (k < 0)][0])
            raise NIRImportError(
                f"node {name!r} (Delay): delay {bad} s is not a whole non-negative number of time steps of dt = {dt} s"
            )
        if not (k == k[0]).all():
            raise NIRImportError(
                f"node {name!r} (Delay): delays differ between elements ({sorted(set(k.astype(int)))} steps); "
                "the IR has one delay per projection"
            )
        if d.size not in (1, _size(src)):
            raise NIRImportError(f"node {name!r} (Delay): delay has {d.size} values, its input has {_size(src)}")
        return _DelayMark(shape=out_shape, steps=int(k[0]), into=str(md.get("into", ""))), None
    if isinstance(node, (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.I, nir.Threshold)):
        shape = src
        arr = np.asarray(getattr(node, _PARAM_OF[kind]))
        if arr.ndim >= 1 and arr.size == _size(src) and tuple(arr.shape) != tuple(src):
            shape = tuple(int(x) for x in arr.shape)
        return _population(name, node, shape, opts)
    raise NIRImportError(
        f"node {name!r}: NIR node type {kind} is not supported (supported: {', '.join(SUPPORTED_NODES)})"
    )


# ---- graph surgery --------------------------------------------------------------------------
class _Work:
    """Ordered nodes and ordered edges while the IR graph takes shape."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.extras: dict[str, _PopExtras] = {}

    def sources(self, n: str) -> list[str]:
        return [u for u, v in self.edges if v == n]

    def consumers(self, n: str) -> list[str]:
        return [v for u, v in self.edges if u == n]

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.nodes:
            i += 1
            name = f"{base}{i}"
        return name

    def insert_before(self, name: str, node: Any, before: str) -> None:
        self.order.insert(self.order.index(before), name)
        self.nodes[name] = node

    def collapse(self, x: str) -> None:
        """Remove ``x``, connecting each of its sources to each of its consumers (in the
        position of the consumer edge)."""
        srcs = self.sources(x)
        out: list[tuple[str, str]] = []
        for u, v in self.edges:
            if v == x:
                continue
            if u == x:
                for s in srcs:
                    if (s, v) in out or (s, v) in self.edges:
                        raise NIRImportError(f"node {v!r} would receive node {s!r} twice once {x!r} is removed")
                    out.append((s, v))
            else:
                out.append((u, v))
        self.edges = out
        self.order.remove(x)
        del self.nodes[x]

    def splice(self, u: str, v: str, mid: str) -> None:
        """Replace edge (u, v) by (u, mid), (mid, v) in its position."""
        i = self.edges.index((u, v))
        self.edges[i : i + 1] = [(u, mid), (mid, v)]


def _fold_delays(w: _Work) -> None:
    for x in [n for n in w.order if isinstance(w.nodes[n], _DelayMark)]:
        mark: _DelayMark = w.nodes[x]
        srcs, cons = w.sources(x), w.consumers(x)
        into_source = len(srcs) == 1 and isinstance(w.nodes[srcs[0]], Projection) and w.consumers(srcs[0]) == [x]
        into_consumers = len(srcs) == 1 and bool(cons) and all(
            isinstance(w.nodes[c], Projection) and w.sources(c) == [x] for c in cons
        )
        if mark.steps == 0:
            w.collapse(x)
        elif into_source and not (into_consumers and mark.into == "consumer"):
            # Affine -> Delay: the projection's output (bias included) is delayed
            s = srcs[0]
            w.nodes[s] = w.nodes[s].replace(delay=w.nodes[s].delay + mark.steps)
            w.collapse(x)
        elif into_consumers:  # Delay -> projection(s): their input is delayed
            for c in cons:
                w.nodes[c] = w.nodes[c].replace(delay=w.nodes[c].delay + mark.steps)
            w.collapse(x)
        else:
            w.nodes[x] = Identity(shape=mark.shape, in_shape=mark.shape, delay=mark.steps)


def _fix_sources(w: _Work) -> None:
    for name in list(w.order):
        node = w.nodes[name]
        srcs = w.sources(name)
        if isinstance(node, (Projection, Output)):
            if not srcs:
                raise NIRImportError(f"node {name!r}: has no input edge")
            if len(srcs) > 1:
                s = w.unique(f"{name}_sum")
                w.insert_before(s, HostOp(shape=w.nodes[srcs[0]].shape, op="add"), name)
                w.edges = [(u, s) if v == name else (u, v) for u, v in w.edges]
                w.edges.insert(max(i for i, e in enumerate(w.edges) if e[1] == s) + 1, (s, name))
        elif isinstance(node, Population):
            for s in srcs:
                if isinstance(w.nodes[s], Projection):
                    continue
                ident = w.unique(f"{name}_in")
                shape = w.nodes[s].shape
                w.insert_before(ident, Identity(shape=shape, in_shape=shape), name)
                w.splice(s, name, ident)
        elif isinstance(node, HostOp) and not srcs:
            raise NIRImportError(f"node {name!r}: has no input edge")


def _fold_into_sources(w: _Work) -> None:
    """Per-neuron gains and v_leak constants go into the projections that feed a population."""
    for name, ex in w.extras.items():
        if ex.gain is None and ex.const is None:
            continue
        pop: Population = w.nodes[name]
        srcs = w.sources(name)
        if ex.gain is not None:
            for s in srcs:
                w.nodes[s] = _scaled(w, s, name, ex.gain, "its per-neuron gain varies")
            pop = w.nodes[name] = pop.replace(gain=1.0)
        if ex.const is not None:
            if pop.gain == 0:
                raise NIRImportError(f"node {name!r}: v_leak != 0 with an input gain of 0 cannot be lowered")
            add = ex.const / float(pop.gain)
            target = next(
                (s for s in srcs if isinstance(w.nodes[s], (Dense, Sparse, Identity)) and w.consumers(s) == [name]), None
            )
            if target is None:
                raise NIRImportError(
                    f"node {name!r}: v_leak != 0 needs an Affine, Linear or Scale input that feeds only this node "
                    "(its constant drive becomes that projection's bias)"
                )
            node = w.nodes[target]
            if isinstance(node, Identity):
                node = _scaled(w, target, name, np.ones(pop.size), "")
            bias = np.zeros(node.size, np.float64) if node.bias is None else node.bias.astype(np.float64)
            w.nodes[target] = node.replace(bias=(bias + add).astype(np.float32))


def _scaled(w: _Work, s: str, pop: str, gain: np.ndarray, why: str) -> Node:
    node = w.nodes[s]
    if w.consumers(s) != [pop] or not isinstance(node, (Dense, Sparse, Identity)):
        raise NIRImportError(
            f"node {pop!r}: {why or 'a constant drive'} and input {s!r} ({node.KIND}) cannot absorb it "
            "(needs Affine, Linear or Scale inputs that feed only this node)"
        )
    g = gain.astype(np.float64)
    bias = None if getattr(node, "bias", None) is None else (node.bias * g).astype(np.float32)
    if isinstance(node, Dense):
        return node.replace(weight=(node.weight * g[:, None]).astype(np.float32), bias=bias)
    if isinstance(node, Sparse):
        return node.replace(data=(node.data * g[node.indices]).astype(np.float32), bias=bias)
    n = node.size
    return Sparse(
        shape=node.shape, in_shape=node.in_shape or node.shape, delay=node.delay,
        indptr=np.arange(n + 1, dtype=np.int64), indices=np.arange(n, dtype=np.int64),
        data=(node.scale * g).astype(np.float32),
    )


def _break_cycles(w: _Work, inputs: list[str]) -> list[str]:
    """Give every cycle without a delay the Euler step: delay 1 where a DFS closes it. Returns the
    projections that got it (their bias is added from step 0, as NIR's continuous graph does)."""
    closers: list[str] = []
    for _ in range(len(w.edges) + 1):
        def delayed(u: str, v: str) -> bool:
            node = w.nodes[v]
            return isinstance(node, Projection) and node.delay >= 1

        succ: dict[str, list[str]] = {n: [] for n in w.order}
        for u, v in w.edges:
            if not delayed(u, v):
                succ[u].append(v)
        back = _first_back_edge(succ, inputs + [n for n in w.order if n not in inputs])
        if back is None:
            return closers
        u, v = back
        un, vn = w.nodes[u], w.nodes[v]
        if isinstance(un, Projection) and w.consumers(u) == [v]:
            w.nodes[u] = un.replace(delay=1)
            closers.append(u)
        elif isinstance(vn, Projection) and w.consumers(v) and len(w.consumers(v)) == 1:
            w.nodes[v] = vn.replace(delay=1)
            closers.append(v)
        else:
            ident = w.unique(f"{u}_delay")
            w.insert_before(ident, Identity(shape=un.shape, in_shape=un.shape, delay=1), v)
            w.splice(u, v, ident)
    raise NIRImportError("could not give every cycle a delay")  # pragma: no cover


def _first_back_edge(succ: dict[str, list[str]], roots: list[str]) -> tuple[str, str] | None:
    state: dict[str, int] = {}  # 1 on stack, 2 done
    for root in roots:
        if root in state:
            continue
        stack = [(root, iter(succ[root]))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return node, nxt
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))
    return None


def _undot(nodes: dict[str, Any], edges: list[tuple[str, str]]):
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
def _read(path: str | os.PathLike) -> Any:
    nir = _nir()
    if not os.path.exists(path):
        raise NIRImportError(f"{os.fspath(path)}: no such NIR file")
    try:
        return nir.read(path, type_check=False)
    except Exception as e:  # h5py and nir raise many kinds
        raise NIRImportError(f"{os.fspath(path)}: not a readable NIR file ({type(e).__name__}: {e})") from e


def from_nir(
    graph_or_path: Any,
    dt: float = DEFAULT_DT,
    reset: str | None = None,
    *,
    reset_delay: bool = True,
    input_signal: str | None = None,
    fire_ge: bool = False,
    discretization: str = "euler",
) -> Program:
    """Lower a NIR graph (a ``nir.NIRGraph`` or a path to a ``.nir`` file) to an (un-optimised)
    Program; ``spike.compiler.compile(graph, nir_options=...)`` runs the passes after it.

    ``dt``: the time step in seconds (node and graph ``dt`` metadata take precedence).
    ``reset``: reset mode for neurons whose metadata has none (default ``"zero"``; pass
    ``"subtract"`` for snnTorch exports). ``reset_delay``: likewise (default True, snnTorch's).
    ``input_signal``: ``"spike"`` (default) or ``"real"`` for Inputs without ``signal`` metadata.
    ``fire_ge``: fire on ``v >= v_threshold`` (Sinabs, SpikingJelly) instead of NIR's ``>``, for
    neurons without ``fire_ge`` metadata. ``discretization``: ``"euler"`` (default, snnTorch's and
    Norse's) or ``"exp"`` (exact integration, Sinabs's) for neurons without such metadata; see
    :mod:`spike.compiler.frontends.nir_discretize`.
    """
    nir = _nir()
    where = ""
    if isinstance(graph_or_path, (str, os.PathLike)):
        where = f"{os.fspath(graph_or_path)}: "
        graph = _read(graph_or_path)
    else:
        graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise NIRImportError(f"{where}expected a nir.NIRGraph, got {type(graph).__name__}")
    if reset is not None and reset not in RESET_MODES:
        raise NIRImportError(f"reset {reset!r} is not one of {', '.join(RESET_MODES)}")
    if input_signal is not None and input_signal not in ("spike", "real"):
        raise NIRImportError(f"input_signal {input_signal!r} is not 'spike' or 'real'")
    if discretization not in DISCRETIZATIONS:
        raise NIRImportError(f"discretization {discretization!r} is not one of {', '.join(DISCRETIZATIONS)}")
    opts = _Options(dt=dt, reset=reset, reset_delay=bool(reset_delay), input_signal=input_signal,
                    fire_ge=bool(fire_ge), discretization=discretization)
    try:
        return _from_graph(graph, opts)
    except NIRImportError as e:
        if where:
            raise NIRImportError(where + str(e)) from e
        raise
    except ProgramError as e:
        raise NIRImportError(where + str(e)) from e


def _from_graph(graph: Any, opts: _Options) -> Program:
    nir = _nir()
    gmd = _meta(graph)
    opts = dataclasses.replace(opts, dt=float(gmd.get("dt", opts.dt)))
    if not (math.isfinite(opts.dt) and opts.dt > 0):
        raise NIRImportError(f"dt must be a positive number of seconds, got {opts.dt!r}")
    ours = None
    if isinstance(gmd.get(META_KEY), str):
        try:
            ours = json.loads(gmd[META_KEY])
        except ValueError:
            ours = None

    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    _flatten(graph, "", nodes, edges)
    if not ours:  # '.' separates a probe's node from its field ("pop.v"): keep it out of names
        nodes, edges = _undot(nodes, edges)
    seen: set[tuple[str, str]] = set()
    for e in edges:
        if e in seen:
            raise NIRImportError(f"edge {e} appears twice")
        seen.add(e)
    srcs: dict[str, list[str]] = {n: [] for n in nodes}
    for u, v in edges:
        srcs[v].append(u)
    shapes = _infer_shapes(nodes, srcs)

    w = _Work()
    for name, node in nodes.items():
        ir_node, extras = _lower(name, node, [shapes[s] for s in srcs[name]], shapes[name], opts)
        if isinstance(ir_node, Input) and srcs[name]:
            raise NIRImportError(f"node {name!r} (Input): has input edges")
        w.order.append(name)
        w.nodes[name] = ir_node
        if extras is not None:
            w.extras[name] = extras
    w.edges = list(edges)
    for name in [n for n in w.order if isinstance(w.nodes[n], _Pass)]:
        w.collapse(name)
    _fold_delays(w)
    _fix_sources(w)
    _fold_into_sources(w)
    inputs = [n for n in w.order if isinstance(w.nodes[n], Input)]
    if not inputs:
        raise NIRImportError("the graph has no Input node")
    euler_closed = _break_cycles(w, inputs)

    order = w.order
    if ours and isinstance(ours.get("node_order"), list) and sorted(ours["node_order"]) == sorted(order):
        order = list(ours["node_order"])
    b = ProgramBuilder()
    for name in order:
        b.add(name, w.nodes[name])
    for u, v in w.edges:
        b.connect(u, v)
    if ours and isinstance(ours.get("metadata"), dict):
        metadata = dict(ours["metadata"])
    else:
        metadata = {"frontend": "nir", "dt": opts.dt}
    return bias_from_start(b.build(metadata), euler_closed)
