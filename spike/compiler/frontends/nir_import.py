"""Import a NIR graph (Neuromorphic Intermediate Representation, ``nir`` 1.0) as an IR Program.

``from_nir(graph_or_path, dt=1e-4, reset=None)`` reads a ``nir.NIRGraph`` (or a ``.nir`` file),
lowers it to IR nodes; ``spike.compiler.compile`` runs the passes after it.

How each NIR node type lowers (discretisation, the neuron semantics NIR leaves open, the node
table) is ``nir_lower``'s docstring; reading the graph (files, nested graphs, names, shapes)
``nir_read``'s. Here the lowered nodes are put together: pass-through nodes collapse, Delays go
onto projections (``nir_lower``, "Nodes"), per-neuron gains and ``v_leak`` drives fold into the
projections feeding a population, and:

Several edges into one node sum (NIR semantics): into a projection or Output through a host
``add`` ``<node>_sum``. A population fed by something other than a projection gets an Identity
projection ``<population>_in`` (so its events are counted as synaptic operations).

Cycles: a Delay inside a cycle is honoured; a cycle without one gets the one-step delay of the
Euler discretisation (the recurrent projection reads the previous step's spikes, as snnTorch's
RLeaky export means it): found by depth-first search from the inputs, it goes on the projection
that closes the cycle (or on a new Identity ``<source>_delay`` when that projection feeds others).

Refused with a :class:`NIRImportError` (a ``ValueError``) naming the file, the node and the field:
a graph without an Input or an Output node at its top level, unknown or unsupported node types,
missing, non-numeric, NaN or infinite fields, inconsistent shapes, edges naming no node, bad
metadata, and a ``dt`` that is not a positive finite number of seconds.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from spike.compiler.frontends.nir_discretize import dt_seconds
from spike.compiler.frontends.nir_lower import DISCRETIZATIONS, DelayMark, ImportOptions, PopExtras, lower_node
from spike.compiler.frontends.nir_read import (
    NIRImportError, PassThrough, flatten_graph, infer_shapes, nir_module, node_metadata, read_nir_file, undot_names,
)
from spike.compiler.ir.nodes import RESET_MODES, Dense, HostOp, Identity, Input, Node, Output, Population, Projection, Sparse
from spike.compiler.ir.program import Program, ProgramBuilder, ProgramError
from spike.compiler.passes.delays import bias_from_start

__all__ = ["from_nir", "DEFAULT_DT", "META_KEY"]

DEFAULT_DT = 1e-4
META_KEY = "spike_sim"  # graph metadata our exporter writes: JSON with node order and metadata


# ---- graph surgery --------------------------------------------------------------------------
class _Work:
    """Ordered nodes and ordered edges while the IR graph takes shape."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.extras: dict[str, PopExtras] = {}

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
    for x in [n for n in w.order if isinstance(w.nodes[n], DelayMark)]:
        mark: DelayMark = w.nodes[x]
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


def _check_ends(graph: Any) -> None:
    """A graph must have nodes, among them an Input and an Output at its top level (where the
    program's inputs and outputs come from)."""
    nir = nir_module()
    nodes = getattr(graph, "nodes", None)
    if not isinstance(nodes, dict) or not nodes:
        raise NIRImportError("the graph has no nodes")
    for kind in (nir.Input, nir.Output):
        if not any(isinstance(n, kind) for n in nodes.values()):
            raise NIRImportError(
                f"the graph has no {kind.__name__} node at its top level (a NIR graph names its "
                f"{'inputs' if kind is nir.Input else 'results'} with {kind.__name__} nodes)"
            )


# ---- entry point ----------------------------------------------------------------------------
def from_nir(
    graph_or_path: Any,
    dt: float | None = None,
    reset: str | None = None,
    *,
    reset_delay: bool = True,
    input_signal: str | None = None,
    fire_ge: bool = False,
    discretization: str = "euler",
) -> Program:
    """Lower a NIR graph (a ``nir.NIRGraph`` or a path to a ``.nir`` file) to an (un-optimised)
    Program; ``spike.compiler.compile(graph, nir_options=...)`` runs the passes after it.

    ``dt``: the time step in seconds. NIR is continuous-time (no step in the format), so a given
    ``dt`` is honoured: it discretises every node, whatever ``dt`` metadata the graph carries (the
    producer's exact discrete network comes back at the producer's step only). ``None``: a node's
    ``dt`` metadata, else the graph's, else ``DEFAULT_DT`` (1e-4 s).
    ``reset``: reset mode for neurons whose metadata has none (default ``"zero"``; pass
    ``"subtract"`` for snnTorch exports). ``reset_delay``: likewise (default True, snnTorch's).
    ``input_signal``: ``"spike"`` (default) or ``"real"`` for Inputs without ``signal`` metadata.
    ``fire_ge``: fire on ``v >= v_threshold`` (Sinabs, SpikingJelly) instead of NIR's ``>``, for
    neurons without ``fire_ge`` metadata. ``discretization``: ``"euler"`` (default, snnTorch's and
    Norse's) or ``"exp"`` (exact integration, Sinabs's) for neurons without such metadata; see
    :mod:`spike.compiler.frontends.nir_discretize`.
    """
    nir = nir_module()
    where = ""
    if isinstance(graph_or_path, (str, os.PathLike)):
        where = f"{os.fspath(graph_or_path)}: "
        graph = read_nir_file(graph_or_path)
    else:
        graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise NIRImportError(f"{where}expected a nir.NIRGraph, got {type(graph).__name__}")
    if dt is not None:
        dt = dt_seconds(dt, NIRImportError, where)
    if reset is not None and reset not in RESET_MODES:
        raise NIRImportError(f"{where}reset {reset!r} is not one of {', '.join(RESET_MODES)}")
    if input_signal is not None and input_signal not in ("spike", "real"):
        raise NIRImportError(f"{where}input_signal {input_signal!r} is not 'spike' or 'real'")
    if discretization not in DISCRETIZATIONS:
        raise NIRImportError(f"{where}discretization {discretization!r} is not one of {', '.join(DISCRETIZATIONS)}")
    opts = ImportOptions(dt=DEFAULT_DT if dt is None else dt, reset=reset, reset_delay=bool(reset_delay),
                         input_signal=input_signal, fire_ge=bool(fire_ge), discretization=discretization,
                         dt_given=dt is not None)
    try:
        return _from_graph(graph, opts)
    except NIRImportError as e:
        if where:
            raise NIRImportError(where + str(e)) from e
        raise
    except ProgramError as e:
        raise NIRImportError(where + str(e)) from e


def _from_graph(graph: Any, opts: ImportOptions) -> Program:
    nir = nir_module()
    gmd = node_metadata(graph)
    if "dt" in gmd and not opts.dt_given:
        opts = dataclasses.replace(opts, dt=dt_seconds(gmd["dt"], NIRImportError, "graph metadata "))
    ours = None
    if isinstance(gmd.get(META_KEY), str):
        try:
            ours = json.loads(gmd[META_KEY])
        except ValueError:
            ours = None
    if not isinstance(ours, dict):
        ours = None
    _check_ends(graph)

    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    flatten_graph(graph, "", nodes, edges)
    if not ours:  # '.' separates a probe's node from its field ("pop.v"): keep it out of names
        nodes, edges = undot_names(nodes, edges)
    seen: set[tuple[str, str]] = set()
    for e in edges:
        if e in seen:
            raise NIRImportError(f"edge {e} appears twice")
        seen.add(e)
        if isinstance(nodes[e[0]], nir.Output):
            raise NIRImportError(f"node {e[0]!r} (Output): has an output edge to {e[1]!r} (an Output ends the graph)")
    srcs: dict[str, list[str]] = {n: [] for n in nodes}
    for u, v in edges:
        srcs[v].append(u)
    shapes = infer_shapes(nodes, srcs)

    w = _Work()
    for name, node in nodes.items():
        ir_node, extras = lower_node(name, node, [shapes[s] for s in srcs[name]], shapes[name], opts)
        if isinstance(ir_node, Input) and srcs[name]:
            raise NIRImportError(f"node {name!r} (Input): has input edges")
        w.order.append(name)
        w.nodes[name] = ir_node
        if extras is not None:
            w.extras[name] = extras
    w.edges = list(edges)
    for name in [n for n in w.order if isinstance(w.nodes[n], PassThrough)]:
        w.collapse(name)
    _fold_delays(w)
    _fix_sources(w)
    _fold_into_sources(w)
    inputs = [n for n in w.order if isinstance(w.nodes[n], Input)]
    euler_closed = _break_cycles(w, inputs)

    order = w.order
    given = ours.get("node_order") if ours else None
    if isinstance(given, list) and all(isinstance(n, str) for n in given) and sorted(given) == sorted(order):
        order = list(given)
    b = ProgramBuilder()
    for name in order:
        b.add(name, w.nodes[name])
    for u, v in w.edges:
        b.connect(u, v)
    if ours and isinstance(ours.get("metadata"), dict):
        metadata = dict(ours["metadata"])
        if "dt" in metadata or opts.dt_given:
            metadata["dt"] = opts.dt
    else:
        metadata = {"frontend": "nir", "dt": opts.dt}
    return bias_from_start(b.build(metadata), euler_closed)
