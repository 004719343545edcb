"""Spike routing counts of a mapped program, computed after a run from the recorded events.

For every event path (:class:`spike.compiler.mapping.connectivity.Connection`: a source node, a
chain of projections, a destination population or the host) and every source neuron, a spike is
delivered once to each destination core that holds at least one of its synapses (once per path: a
neuron reaching one core through two projections is counted twice). Per sample, summed over steps,
added to the op counts of the path's terminal node (the projection that feeds the destination):

- ``spikes_routed_local``: deliveries whose destination core is the source's own core;
- ``spikes_routed_hops``: over deliveries to other cores, the Manhattan distance in tiles between
  source and destination core (chips side by side, see ``spike.compiler.mapping.place``); deliveries from the host
  (inputs, host ops) start at the host port, deliveries to the host end there;
- ``syn_mem_reads_bytes``: per delivery, the synapses of the source neuron in the destination
  core x weight bits / 8 (the path's bits as partitioned; nothing for deliveries to the host).

An event is a non-zero entry of the source's output (a spike, or a non-zero real value). Only
events delivered within the run count: a path with total delay ``d`` counts events of steps
``0 .. T-1-d``, as the backends count synaptic ops.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from spike.backends.result import ROUTING_KEYS, OpCounts
from spike.compiler.mapping.connectivity import HOST, connections
from spike.compiler.mapping.place import core_positions
from spike.compiler.ir.program import Program


@dataclass(frozen=True)
class RoutePlan:
    """Per-source-neuron costs of one path: events x these vectors give the counts."""

    source: str
    terminal: str
    delay: int
    local: np.ndarray  # [n_source] deliveries to the source's own core
    hops: np.ndarray  # [n_source] sum of hop distances to the other destination cores
    mem_bytes: np.ndarray  # [n_source] synaptic memory read over all destination cores


_PLANS: "weakref.WeakKeyDictionary[Program, list[RoutePlan]]" = weakref.WeakKeyDictionary()


def route_plans(program: Program) -> list[RoutePlan]:
    """The routing plan of every path of a mapped program (cached per program object)."""
    if program in _PLANS:
        return _PLANS[program]
    mapping = program.metadata["mapping"]
    xy = core_positions(mapping)
    host_xy = np.asarray(mapping.get("host_port", [-1, 0]), dtype=np.int64)
    bits = mapping.get("projection_bits", {})
    n_cores = len(xy)
    core_of = {p: np.full(program.node(p).size, -1, dtype=np.int64) for p in program.populations()}
    for c in mapping["cores"]:
        core_of[c["population"]][c["start"] : c["stop"]] = c["id"]
    plans = []
    for conn in connections(program):
        m = conn.matrix.tocoo()
        n_src = conn.matrix.shape[0]
        if conn.dest is None:  # spikes to the host: one delivery per neuron with synapses there
            sends = np.asarray(conn.matrix.getnnz(axis=1) > 0)
            src_xy = xy[core_of[conn.source]]
            dist = np.abs(src_xy - host_xy).sum(axis=1)
            plans.append(RoutePlan(conn.source, conn.terminal, conn.delay, np.zeros(n_src, np.int64),
                                   np.where(sends, dist, 0).astype(np.int64), np.zeros(n_src)))
            continue
        # synapses of each source neuron in each destination core
        per_core = sp.csr_matrix(
            (np.ones(len(m.row), np.int64), (m.row, core_of[conn.dest][m.col])), shape=(n_src, n_cores)
        )
        per_core.sum_duplicates()
        pc = per_core.tocoo()
        if conn.source_on_host:
            src_pos = np.broadcast_to(host_xy, (len(pc.row), 2))
            same = np.zeros(len(pc.row), dtype=bool)
        else:
            src_core = core_of[conn.source][pc.row]
            src_pos = xy[src_core]
            same = src_core == pc.col
        dist = np.abs(src_pos - xy[pc.col]).sum(axis=1)
        local = np.bincount(pc.row, weights=same, minlength=n_src).astype(np.int64)
        hops = np.bincount(pc.row, weights=np.where(same, 0, dist), minlength=n_src).astype(np.int64)
        wbytes = bits.get(conn.terminal, mapping["weight_bits"]) / 8.0
        mem = np.bincount(pc.row, weights=pc.data, minlength=n_src) * wbytes
        plans.append(RoutePlan(conn.source, conn.terminal, conn.delay, local, hops, mem))
    _PLANS[program] = plans
    return plans


def event_counts(events: np.ndarray, delay: int) -> np.ndarray:
    """``[B, n]`` events per sample and neuron from an output ``[T, B, ...]``, steps ``< T-delay``."""
    T, B = events.shape[:2]
    ev = np.asarray(events).reshape(T, B, -1)[: max(T - delay, 0)]
    return np.count_nonzero(ev, axis=0).astype(np.int64)


def add_routing_counts(program: Program, output_of: Callable[[str], np.ndarray], counts: OpCounts) -> None:
    """Add :data:`ROUTING_KEYS` to every counted node of ``counts`` (zeros where nothing routes).

    ``output_of(name)`` returns the node's recorded output as a numpy array ``[T, B, size]``.
    """
    batch = next((len(a) for c in counts.per_node.values() for a in c.values()), 0)
    for node_counts in counts.per_node.values():
        node_counts["spikes_routed_local"] = np.zeros(batch, dtype=np.int64)
        node_counts["spikes_routed_hops"] = np.zeros(batch, dtype=np.int64)
        node_counts["syn_mem_reads_bytes"] = np.zeros(batch, dtype=np.float64)
    cache: dict[tuple[str, int], np.ndarray] = {}
    for plan in route_plans(program):
        key = (plan.source, plan.delay)
        if key not in cache:
            cache[key] = event_counts(output_of(plan.source), plan.delay)
        ev = cache[key]
        target = counts.per_node.setdefault(plan.terminal, {})
        for k in ROUTING_KEYS:
            target.setdefault(k, np.zeros(batch, dtype=np.float64 if k == "syn_mem_reads_bytes" else np.int64))
        target["spikes_routed_local"] += ev @ plan.local
        target["spikes_routed_hops"] += ev @ plan.hops
        target["syn_mem_reads_bytes"] += ev @ plan.mem_bytes


__all__ = ["RoutePlan", "route_plans", "add_routing_counts", "event_counts", "HOST"]
