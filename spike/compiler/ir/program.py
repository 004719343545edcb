"""A compiled ``Program``: the IR graph plus its inputs, outputs and metadata.

Edges point from producer to consumer (``v`` reads ``u``'s output); the node object lives in the
``"node"`` attribute. A projection's ``delay`` applies to the edge entering it. Programs are
treated as immutable: passes build new ones with :meth:`Program.with_graph`, their graphs with
:func:`rebuild_graph` (same node and edge order, :func:`ordered_edges`). :func:`node_error` is the
:class:`ProgramError` that names a node and its field.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import networkx as nx

from spike.compiler.ir.nodes import Node, Output, Population, Projection, Input

PRODUCER = "spike-sim"
MAX_STEPS_DELAY = 65535  # the longest delay or latency, in steps, a program may declare
MAX_NODE_SIZE = 2**31 - 1  # the most elements a node's shape or in_shape may hold (indices fit int32, as in
#   lava's ports and scipy's CSR); also the most (input, output) pairs of a pooling window


class ProgramError(ValueError):
    """A program that breaks an IR rule; the message names the node and the field."""


def node_label(name: str, node: Node | None = None) -> str:
    return f"node {name!r}" + (f" ({node.KIND})" if node is not None and node.KIND else "")


def node_error(name: str, node: Node | None, field: str | None, msg: str) -> ProgramError:
    """A :class:`ProgramError` naming the node, its kind and (when given) the field."""
    where = node_label(name, node) + (f", field {field}" if field else "")
    return ProgramError(f"{where}: {msg}")


@dataclass(frozen=True)
class Stage:
    """Nodes executed together: a single node over all steps, or a cycle stepped jointly."""

    nodes: tuple[str, ...]
    cyclic: bool


@dataclass(frozen=True, eq=False)
class Program:
    """The graph, its inputs and outputs, descriptive metadata, and the timing of each node.

    ``latency[n]`` (absent: 0) is the number of steps by which node ``n``'s output trails the
    network the user trained, set by the delay pass (``spike.compiler.passes.delays``) for a target
    whose synapses deliver late: ``out_n[t + latency[n]] == trained_n[t]``, and ``n`` is silent
    before ``latency[n]``. A run feeds ``T + total_latency`` steps (the input padded with zeros)
    and returns each output and probe from its latency on, aligned with the input. The bias of a
    projection arrives with its events (:meth:`onset`); a fixed-point population's own bias
    applies from its latency on.

    ``gated[n]`` names the FTWT ``Gate`` whose channel mask applies to node ``n``: each gated
    population and each projection into one, as the gate pass (``spike.compiler.passes.gates``)
    records them; backends run those nodes with their "gated" kernels.
    """

    graph: nx.DiGraph
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    latency: Mapping[str, int] = field(default_factory=dict)
    gated: Mapping[str, str] = field(default_factory=dict)

    # ---- access -------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self.graph.nodes[name]["node"]
        except KeyError:
            raise ProgramError(f"program has no node {name!r}") from None

    def nodes(self) -> Iterable[tuple[str, Node]]:
        for name, data in self.graph.nodes(data=True):
            yield name, data["node"]

    def sources(self, name: str) -> list[str]:
        return list(self.graph.predecessors(name))

    def consumers(self, name: str) -> list[str]:
        return list(self.graph.successors(name))

    def populations(self) -> list[str]:
        return [n for n, node in self.nodes() if isinstance(node, Population)]

    def with_graph(self, graph: nx.DiGraph, **changes: Any) -> "Program":
        return Program(
            graph=graph,
            inputs=changes.get("inputs", self.inputs),
            outputs=changes.get("outputs", self.outputs),
            metadata=changes.get("metadata", self.metadata),
            latency=changes.get("latency", self.latency),
            gated=changes.get("gated", self.gated),
        )

    # ---- timing -------------------------------------------------------------------------
    def latency_of(self, name: str) -> int:
        """Steps by which ``name``'s output trails the trained network (0 unless compensated)."""
        return int(self.latency.get(name, 0))

    @property
    def total_latency(self) -> int:
        """Extra steps a run needs so that every node's aligned output is complete."""
        return max((int(v) for v in self.latency.values()), default=0)

    def onset(self, name: str) -> int:
        """First step at which node ``name`` delivers or applies a bias: a projection's bias
        travels with its events (``delay`` after its source's first aligned step), except the
        recurrent synapses of a ``late_recurrent`` population, whose term ``V s[t-1] + b`` holds
        ``b`` from the population's first aligned step (``s[-1] = 0``: snnTorch's RLeaky); any
        other node's from its own latency."""
        node = self.node(name)
        if isinstance(node, Projection):
            (src,) = self.sources(name)
            pop = self.node(src)
            if isinstance(pop, Population) and pop.late_recurrent and self.consumers(name) == [src]:
                return self.latency_of(src)
            return node.delay + self.latency_of(src)
        return self.latency_of(name)

    # ---- structure ----------------------------------------------------------------------
    def is_delayed_edge(self, u: str, v: str) -> bool:
        node = self.node(v)
        return isinstance(node, Projection) and node.delay >= 1

    def undelayed_graph(self) -> nx.DiGraph:
        """The graph without edges that enter a projection with delay >= 1."""
        g = nx.DiGraph()
        g.add_nodes_from(self.graph.nodes)
        g.add_edges_from((u, v) for u, v in self.graph.edges if not self.is_delayed_edge(u, v))
        return g

    def schedule(self) -> list[Stage]:
        """Execution stages in dependency order (deterministic: ties keep insertion order).

        Acyclic nodes run over all time steps at once; a strongly connected component (which
        must contain a delay >= 1, see ``check_cycles``) is stepped one time step at a time.
        """
        order = {name: i for i, name in enumerate(self.graph.nodes)}
        cond = nx.condensation(self.graph)
        undelayed = self.undelayed_graph()
        stages = []
        for c in nx.lexicographical_topological_sort(
            cond, key=lambda c: min(order[n] for n in cond.nodes[c]["members"])
        ):
            members = cond.nodes[c]["members"]
            if len(members) == 1 and not self.graph.has_edge(next(iter(members)), next(iter(members))):
                stages.append(Stage(tuple(members), cyclic=False))
                continue
            sub = undelayed.subgraph(members)
            if not nx.is_directed_acyclic_graph(sub):
                cycle = nx.find_cycle(sub)
                raise ProgramError(
                    f"cycle without delay: {' -> '.join(u for u, _ in cycle)} -> {cycle[0][0]}; "
                    "every cycle needs a projection with delay >= 1"
                )
            nodes = tuple(nx.lexicographical_topological_sort(sub, key=lambda n: order[n]))
            stages.append(Stage(nodes, cyclic=True))
        return stages

    def summary(self) -> str:
        """A one-screen description: nodes, neurons and synapses."""
        from spike.compiler.ir.stats import program_stats

        return program_stats(self).render()


class ProgramBuilder:
    """Builds a Program node by node; ``add(name, node, sources)`` keeps source order."""

    def __init__(self) -> None:
        self.graph = nx.DiGraph()
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    def add(self, name: str, node: Node, sources: str | Iterable[str] = ()) -> str:
        if name in self.graph:
            raise ProgramError(f"duplicate node name {name!r}")
        if isinstance(sources, str):
            sources = [sources]
        self.graph.add_node(name, node=node)
        for src in sources:
            if src not in self.graph:
                raise ProgramError(f"node {name!r}: source {src!r} does not exist")
            self.graph.add_edge(src, name)
        if isinstance(node, Input):
            self.inputs.append(name)
        if isinstance(node, Output):
            self.outputs.append(name)
        return name

    def connect(self, src: str, dst: str) -> None:
        """Add an edge after both nodes exist (for recurrent connections)."""
        for n in (src, dst):
            if n not in self.graph:
                raise ProgramError(f"connect: node {n!r} does not exist")
        self.graph.add_edge(src, dst)

    def build(self, metadata: Mapping[str, Any] | None = None) -> Program:
        return Program(self.graph, tuple(self.inputs), tuple(self.outputs), dict(metadata or {}))


# ---- edge order and rebuilding ----------------------------------------------------------
def ordered_edges(graph: nx.DiGraph) -> list[tuple[str, str]]:
    """The edges in an order that, re-added to an empty graph with the same nodes, reproduces
    both every node's consumer order (``graph.edges`` order) and every node's source order
    (``graph.predecessors``, which ``ProgramBuilder.add`` keeps and ops like ``matmul`` rely on).

    Plain ``list(graph.edges)`` loses the source order when a node's sources were added out of
    node order. Both orders are insertion orders of the same edge additions, so an order
    consistent with both exists; this is a topological sort of those two chains, ties broken by
    ``graph.edges`` order.
    """
    edges = list(graph.edges)
    index = {e: i for i, e in enumerate(edges)}
    after: dict[tuple, list[tuple]] = {e: [] for e in edges}
    indeg = {e: 0 for e in edges}
    for u in graph.nodes:
        chain = [(u, v) for v in graph.successors(u)]
        for a, b in zip(chain, chain[1:]):
            after[a].append(b)
            indeg[b] += 1
    for v in graph.nodes:
        chain = [(u, v) for u in graph.predecessors(v)]
        for a, b in zip(chain, chain[1:]):
            after[a].append(b)
            indeg[b] += 1
    heap = [index[e] for e in edges if indeg[e] == 0]
    heapq.heapify(heap)
    out = []
    while heap:
        e = edges[heapq.heappop(heap)]
        out.append(e)
        for b in after[e]:
            indeg[b] -= 1
            if indeg[b] == 0:
                heapq.heappush(heap, index[b])
    if len(out) != len(edges):  # cannot happen for a graph built by insertions; keep source order
        return [(u, v) for v in graph.nodes for u in graph.predecessors(v)]
    return out


def rebuild_graph(
    program: Program,
    nodes: dict[str, Node] | None = None,
    drop: Iterable[str] = (),
    rename_sources: dict[str, str] | None = None,
) -> nx.DiGraph:
    """A new graph in the same node and edge order, with some nodes replaced (``nodes``), some
    dropped with their edges (``drop``), and edges out of a dropped node redirected to another
    source (``rename_sources``: dropped name -> replacement source name)."""
    nodes = nodes or {}
    drop = set(drop)
    rename_sources = rename_sources or {}
    g = nx.DiGraph()
    for name, data in program.graph.nodes(data=True):
        if name in drop:
            continue
        attrs = dict(data)
        if name in nodes:
            attrs["node"] = nodes[name]
        g.add_node(name, **attrs)
    for u, v in ordered_edges(program.graph):
        data = program.graph.edges[u, v]
        if v in drop:
            continue
        if u in drop:
            if u not in rename_sources:
                continue
            u = rename_sources[u]
        g.add_edge(u, v, **data)
    return g
