"""Export a Program (or a torch model, compiled first) as a NIR graph, and save it atomically.

``to_nir(program_or_model, example_input=None, dt=None) -> nir.NIRGraph``; ``save_nir(graph,
path)``. The discretisation is the inverse of the import's (:mod:`spike.compiler.frontends.nir_discretize`):
``tau = dt/(1-beta)``, ``r = gain*tau/dt`` (LIF, LI), ``r = gain/dt`` (IF, I), CubaLIF
``tau_syn = dt/(1-alpha)``, ``tau_mem = dt/(1-beta)``, ``r = gain*tau_mem/dt``,
``w_in = tau_syn/dt``; ``v_leak = 0``, ``v_reset = 0``. ``dt`` defaults to the program's ``dt``
metadata, else 1e-4 s.

Mapping (IR -> NIR):
- Population ``lif`` -> LIF (IF when every beta is 1), ``if`` -> IF, ``cuba_lif`` -> CubaLIF,
  ``li`` -> LI (I when every beta is 1). Node metadata carries what NIR has no field for:
  ``dt``, ``discretization`` ("euler": the taus are Euler's), ``reset``, ``reset_delay``,
  ``fire_ge``, ``gain`` (the exact float behind ``r``) and ``model`` where the NIR type does not say it.
- Dense -> Affine (with bias) or Linear; Sparse -> Scale when diagonal, else Affine/Linear with
  the dense matrix (metadata ``ir_kind: sparse``); Conv2d -> Conv2d (a missing bias is written as
  zeros with metadata ``has_bias: false``); Pool2d avg/sum -> AvgPool2d/SumPool2d (max pooling has
  no NIR node: an error naming it); Identity -> Scale; host ``add`` -> Scale(1) with several input
  edges (NIR sums them; metadata ``ir_kind: hostop``); other host ops are an error.
- Where a node's input is flat but its source is not (e.g. pooling -> Affine), a Flatten node
  ``<node>.flatten`` is inserted.
- Delays: a projection with delay d on a cycle relies on the one-step delay NIR graphs have
  implicitly on cycles (metadata ``implicit_delay: 1``) and gets a Delay node ``<node>.delay`` of
  ``(d-1)*dt`` when d > 1; elsewhere a Delay node of ``d*dt`` precedes it.
- Graph metadata ``spike_sim`` (JSON): the node order and the program metadata, so that
  ``from_nir(to_nir(p))`` equals ``p`` (HDF5 does not keep the order of nodes).

Errors (:class:`NIRExportError`) name the node.
"""
from __future__ import annotations

import io
import json
import os
from typing import Any

import networkx as nx
import numpy as np

from spike.atomic import atomic_write_bytes
from spike.compiler.ir.nodes import (
    BatchNorm, Conv2d, Dense, HostOp, Identity, Input, Node, Output, Pool2d, Population, Projection,
    Sparse,
)
from spike.compiler.frontends.nir_discretize import dt_seconds, r_from_gain, tau_from_decay
from spike.compiler.frontends.nir_import import DEFAULT_DT, META_KEY
from spike.compiler.ir.program import PRODUCER, Program, ordered_edges
from spike.compiler.pipeline import FLOAT_PIPELINE, compile, run_passes
from spike.compiler.ir.precision import program_precision

__all__ = ["NIRExportError", "to_nir", "save_nir"]


class NIRExportError(ValueError):
    """A program (node) that has no NIR equivalent; the message names the node."""


def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - nir is a dependency
        raise NIRExportError("the 'nir' package is needed to export NIR graphs") from e
    return nir


def _err(name: str, node: Node, msg: str) -> NIRExportError:
    return NIRExportError(f"node {name!r} ({node.KIND}): {msg}")


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def _population(name: str, node: Population, dt: float) -> Any:
    nir = _nir()
    if node.precision != "float32":
        raise _err(name, node, f"precision {node.precision!r}: only float32 populations can be exported to NIR")
    beyond = node.beyond_lif()
    if beyond:
        raise _err(name, node, f"{beyond[0]} {beyond[1]!r} has no NIR form (NIR's LIF/CubaLIF/IF/LI: v' = beta*v + "
                               "gain*I, reset to 0)")
    for field in ("bias", "v_init"):
        if getattr(node, field) is not None:
            raise _err(name, node, f"{field}: this exporter writes no constant input or initial membrane (NIR's "
                                   "neurons here have v_leak = 0 and start at rest)")
    shape = tuple(node.shape)
    n = node.size
    md: dict[str, Any] = {
        "dt": float(dt), "discretization": "euler", "reset": str(node.reset), "reset_delay": bool(node.reset_delay),
        "fire_ge": bool(node.fire_ge), "gain": float(node.gain),
    }
    beta = np.asarray(node.beta, dtype=np.float32).reshape(n)
    thr = np.asarray(node.threshold, dtype=np.float32).reshape(n)
    zeros = np.zeros(shape, np.float64)

    def arr(a: np.ndarray) -> np.ndarray:
        return np.asarray(a).reshape(shape)

    ones = (beta == 1).all()
    if node.model in ("lif", "li") and (beta == 1).any() and not ones:
        raise _err(name, node, "some neurons have beta = 1 and others not: NIR has no time constant for "
                               "a neuron without leak inside a leaky population")
    if node.model == "if" or (node.model == "lif" and ones):
        if node.model == "lif":
            md["model"] = "lif"
        r = r_from_gain(node.gain, np.ones(n), dt)
        return nir.IF(r=arr(r), v_threshold=arr(thr), v_reset=zeros.copy(), metadata=md)
    if node.model == "li" and ones:
        return nir.I(r=arr(r_from_gain(node.gain, np.ones(n), dt)), metadata=md)
    tau = tau_from_decay(beta, dt)
    if node.model == "lif":
        r = r_from_gain(node.gain, tau, dt)
        return nir.LIF(tau=arr(tau), r=arr(r), v_leak=zeros.copy(), v_threshold=arr(thr), v_reset=zeros.copy(), metadata=md)
    if node.model == "li":
        r = r_from_gain(node.gain, tau, dt)
        return nir.LI(tau=arr(tau), r=arr(r), v_leak=zeros.copy(), metadata=md)
    if node.model == "cuba_lif":
        alpha = np.asarray(node.alpha, dtype=np.float32).reshape(n)
        if (beta == 1).any() or (alpha == 1).any():
            raise _err(name, node, "beta or alpha = 1 (no decay) has no finite NIR time constant")
        tau_syn = tau_from_decay(alpha, dt)
        r = r_from_gain(node.gain, tau, dt)
        w_in = r_from_gain(1.0, tau_syn, dt)
        return nir.CubaLIF(
            tau_syn=arr(tau_syn), tau_mem=arr(tau), r=arr(r), v_leak=zeros.copy(), v_threshold=arr(thr),
            v_reset=zeros.copy(), w_in=arr(w_in), metadata=md,
        )
    raise _err(name, node, f"neuron model {node.model!r} has no NIR node")


def _is_diagonal(node: Sparse) -> bool:
    n = node.in_size
    return (
        node.size == n and node.bias is None and len(node.indptr) == n + 1
        and np.array_equal(node.indptr, np.arange(n + 1)) and np.array_equal(node.indices, np.arange(n))
    )


def _node(
    name: str, node: Node, program: Program, dt: float, on_cycle: bool
) -> tuple[Any, tuple[int, ...], tuple[int, ...], dict]:
    """(NIR node, its NIR input shape, its NIR output shape, metadata) for one IR node."""
    nir = _nir()
    shape = tuple(int(x) for x in node.shape)
    md: dict[str, Any] = {}
    if isinstance(node, Projection) and getattr(node, "weight_exp", 0):
        raise _err(name, node, "quantised weights (weight_exp != 0) cannot be exported: export the float program")
    if isinstance(node, Projection) and node.delay >= 1 and on_cycle:
        md["implicit_delay"] = 1
    if isinstance(node, Input):
        if node.signal != "spike":
            md["signal"] = node.signal
        return nir.Input(input_type=np.array(shape), metadata=md), shape, shape, md
    if isinstance(node, Output):
        return nir.Output(output_type=np.array(shape), metadata=md), shape, shape, md
    if isinstance(node, Population):
        return _population(name, node, dt), shape, shape, md
    if isinstance(node, Dense):
        w = np.asarray(node.weight)
        kw = dict(weight=w, metadata=md)
        out = nir.Affine(bias=np.asarray(node.bias), **kw) if node.bias is not None else nir.Linear(**kw)
        return out, (int(w.shape[1]),), (int(w.shape[0]),), md
    if isinstance(node, Sparse):
        md["ir_kind"] = "sparse"
        if _is_diagonal(node):
            return nir.Scale(scale=np.asarray(node.data).reshape(shape), metadata=md), shape, shape, md
        w = np.zeros((node.size, node.in_size), np.float32)
        for i in range(node.in_size):
            lo, hi = int(node.indptr[i]), int(node.indptr[i + 1])
            w[node.indices[lo:hi], i] = node.data[lo:hi]
        kw = dict(weight=w, metadata=md)
        out = nir.Affine(bias=np.asarray(node.bias), **kw) if node.bias is not None else nir.Linear(**kw)
        return out, (node.in_size,), (node.size,), md
    if isinstance(node, Conv2d):
        w = np.asarray(node.weight)
        bias = node.bias
        if bias is None:
            md["has_bias"] = False
            bias = np.zeros(w.shape[0], w.dtype)
        in_shape = tuple(int(x) for x in node.in_shape)
        conv = nir.Conv2d(
            input_shape=in_shape[1:], weight=w, stride=tuple(node.stride), padding=tuple(node.padding),
            dilation=(1, 1), groups=int(node.groups), bias=np.asarray(bias), metadata=md,
        )
        return conv, in_shape, shape, md
    if isinstance(node, Pool2d):
        if node.mode == "max":
            raise _err(name, node, "max pooling has no NIR node (NIR has SumPool2d and AvgPool2d)")
        cls = nir.AvgPool2d if node.mode == "avg" else nir.SumPool2d
        pool = cls(
            kernel_size=np.array(node.kernel), stride=np.array(node.stride), padding=np.array(node.padding),
            metadata=md,
        )
        in_shape = tuple(int(x) for x in node.in_shape)
        pool.input_type = {"input": np.array(in_shape)}
        pool.output_type = {"output": np.array(shape)}
        return pool, in_shape, shape, md
    if isinstance(node, Identity):
        return nir.Scale(scale=np.full(shape, float(node.scale)), metadata=md), shape, shape, md
    if isinstance(node, HostOp):
        if node.op != "add":
            raise _err(name, node, f"host op {node.op!r} has no NIR node (only 'add', as edges that sum)")
        md.update(ir_kind="hostop", op="add")
        return nir.Scale(scale=np.ones(shape), metadata=md), shape, shape, md
    if isinstance(node, BatchNorm):
        raise _err(name, node, "BatchNorm must be folded first (run the compiler passes)")
    raise _err(name, node, "has no NIR equivalent")


def _program_of(program_or_model: Any, example_input: Any) -> Program:
    if isinstance(program_or_model, Program):
        return run_passes(program_or_model, FLOAT_PIPELINE)
    if isinstance(program_or_model, (str, os.PathLike)):
        return compile(program_or_model)
    if example_input is None:
        raise NIRExportError("to_nir(model, example_input): a torch model needs an example input to compile")
    return compile(program_or_model, example_input)


def to_nir(program_or_model: Any, example_input: Any = None, dt: float | None = None) -> Any:
    """A ``nir.NIRGraph`` for a Program, a saved program path, or a torch model (compiled first
    with ``spike.compiler.compile(model, example_input)``)."""
    nir = _nir()
    program = _program_of(program_or_model, example_input)
    if program_precision(program) == "fixed":
        raise NIRExportError("a fixed-point (quantised) program cannot be exported to NIR: export the float program")
    dt = dt_seconds(program.metadata.get("dt", DEFAULT_DT) if dt is None else dt, NIRExportError)
    try:
        meta_json = json.dumps(
            {"version": 1, "node_order": list(program.graph.nodes), "metadata": dict(program.metadata)},
            allow_nan=False,
        )
    except (TypeError, ValueError) as e:
        raise NIRExportError(f"program metadata is not JSON-serialisable: {e}") from None

    cyclic: set[str] = set()
    for comp in nx.strongly_connected_components(program.graph):
        if len(comp) > 1 or any(program.graph.has_edge(n, n) for n in comp):
            cyclic |= comp

    nodes: dict[str, Any] = {}
    in_shape: dict[str, tuple[int, ...]] = {}
    out_shape: dict[str, tuple[int, ...]] = {}
    delay_steps: dict[str, int] = {}
    names = set(program.graph.nodes)
    for name, node in program.nodes():
        nnode, i_s, o_s, md = _node(name, node, program, dt, name in cyclic)
        nodes[name] = nnode
        in_shape[name], out_shape[name] = i_s, o_s
        if isinstance(node, Projection) and node.delay >= 1:
            delay_steps[name] = node.delay - int(md.get("implicit_delay", 0))

    def unique(base: str) -> str:
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}{i}"
        names.add(name)
        return name

    extra_before: dict[str, list[tuple[str, Any]]] = {}
    edges: list[tuple[str, str]] = []
    for u, v in ordered_edges(program.graph):
        chain = [u]
        have, want = out_shape[u], in_shape[v]
        if have != want:
            if _size(have) != _size(want):
                raise _err(v, program.node(v), f"its input {u!r} has shape {have}, it expects {want}")
            if len(want) != 1:
                raise _err(v, program.node(v), f"its input {u!r} has shape {have} but it expects {want}: NIR has "
                                               "no reshape node other than Flatten")
            f = unique(f"{v}.flatten")
            extra_before.setdefault(v, []).append((f, nir.Flatten(input_type={"input": np.array(have)}, start_dim=0, end_dim=-1)))
            chain.append(f)
        if delay_steps.get(v, 0) > 0:
            d = unique(f"{v}.delay")
            delay = nir.Delay(delay=np.full(want, delay_steps[v] * dt, dtype=np.float64), metadata={"into": "consumer"})
            extra_before.setdefault(v, []).append((d, delay))
            chain.append(d)
        chain.append(v)
        edges.extend(zip(chain, chain[1:]))

    ordered: dict[str, Any] = {}
    for name in program.graph.nodes:
        for extra, enode in extra_before.get(name, []):
            ordered[extra] = enode
        ordered[name] = nodes[name]
    metadata = {"producer": PRODUCER, "dt": dt, META_KEY: meta_json}
    graph = nir.NIRGraph(nodes=ordered, edges=edges, metadata=metadata, type_check=False)
    try:
        graph.check_types()
    except (ValueError, NotImplementedError) as e:  # a bug here, not the user's: say what
        raise NIRExportError(f"the exported NIR graph fails NIR's type check: {e}") from e
    return graph


def save_nir(graph: Any, path: str | os.PathLike) -> None:
    """Write ``graph`` with ``nir.write`` into memory, then to ``path`` atomically
    (:func:`spike.atomic.atomic_write_bytes`: an interrupted or failed save, a full disk included,
    leaves the old file)."""
    nir = _nir()
    buffer = io.BytesIO()
    nir.write(buffer, graph)
    atomic_write_bytes(os.fspath(path), buffer.getbuffer())
