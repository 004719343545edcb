"""Target delays (design §4): a target's synaptic delay, balanced so that the program still
computes the network the user trained, with the latency it costs recorded.

On a target whose synapses deliver ``D`` steps after the spike (Loihi: ``D = 1``, Lava's Dense,
Sparse and Conv) no projection can have delay 0. :func:`target_delays` gives every projection
``P`` (source ``s``, trained delay ``d0``) the delay

    d_P = L(P) - L(s) + d0  >=  D

where ``L(n)``, the latency of node ``n``, is the least non-negative solution of: inputs have
``L = 0``; a projection's latency is free (its delay absorbs it); every other node has the latency
of each of its sources (a population sums its inputs in the step they arrive, a host op or an
output reads its sources in the same step); a gate has its source's (an FTWT mask is constant
over the run, so the edge gate -> population is not timed). By induction over the steps,
``out_n[t + L(n)] = trained_n[t]`` for every node, provided every node is silent before its
latency: populations start at rest and do not fire there, a host op is zero-preserving
(``HostOpSpec.zero_preserving``: zeros in, zeros out, e.g. an add or max pooling; no bias, no
state), a projection's bias arrives with its events (``Program.onset``: ``delay`` after its
source's latency), a fixed-point population's own bias applies from its latency, a gate reads its
source's window from the source's latency. Paths
that merge (residual adds, shortcuts, several projections into one population) are thereby
balanced. A recurrent edge keeps its trained delay (``L(P) = L(s)`` on a loop within one node's
latency class), so a loop whose trained delays are shorter than the target's cannot be
compensated: compiling fails naming the projection, unless the caller asks for the plain target
delays (``mode="raw"``: every delay ``max(d0, D)``, no latency, a network that is *not* the
trained one, as the program's record says).

A model trained with the target's delays built in (``spike.layers.Delayed``, ``synaptic_delay``)
already has ``d0 >= D`` everywhere: the least solution is ``L = 0`` and nothing changes. The pass
records which case applies in ``program.metadata["target_delays"]`` (``mode``: ``"as trained"``,
``"compensated"`` or ``"raw"``, ``synaptic_delay``, ``latency``) and the per-node latencies in
``program.latency``; it composes with an earlier application (latencies add).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from spike.compiler.ir.hostops import silent_at_rest as host_op_silent_at_rest
from spike.compiler.ir.nodes import Dense, Gate, HostOp, Input, Node, Population, Projection, Sparse
from spike.compiler.ir.program import MAX_STEPS_DELAY, Program, ProgramError, rebuild_graph

__all__ = ["DELAY_MODES", "target_delays", "node_latencies", "bias_from_start"]

DELAY_MODES = ("balanced", "raw")


class _Classes:
    """Union-find over node names: nodes that must share one latency."""

    def __init__(self, names: list[str]) -> None:
        self.parent = {n: n for n in names}

    def find(self, n: str) -> str:
        while self.parent[n] != n:
            self.parent[n] = self.parent[self.parent[n]]
            n = self.parent[n]
        return n

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def _how_to_avoid(delay: int) -> str:
    return (f"train the model with the target's {delay}-step synaptic delay (spike train ... --target), or "
            "compile with target_delays='raw' (--target-delays raw) to run the plain target delays, which "
            "computes a different network")


def node_latencies(program: Program, delay: int) -> dict[str, int]:
    """The least latency of every node for a target delay ``delay`` (see the module docstring).

    Raises :class:`ProgramError` naming the projection when no latency makes the program equal to
    the trained one (a loop whose trained delays are shorter than the target's)."""
    names = list(program.graph.nodes)
    classes = _Classes(names)
    for name, node in program.nodes():
        if isinstance(node, Projection):
            continue
        for s in program.sources(name):
            if isinstance(program.node(s), Gate) and not isinstance(node, Gate):
                continue  # a mask is constant over the run: not timed
            classes.union(name, s)
    # L[class(P)] >= L[class(s)] + (delay - d0) for every projection P with source s
    edges: list[tuple[str, str, int, str]] = []
    for name, node in program.nodes():
        if not isinstance(node, Projection):
            continue
        (src,) = program.sources(name)
        cp, cs, w = classes.find(name), classes.find(src), delay - node.delay
        if cp == cs and w > 0:
            raise ProgramError(
                f"node {name!r} ({node.KIND}): a recurrent projection with delay {node.delay} on a loop that the "
                f"target runs {delay} step(s) late per synapse; no added delay keeps the loop's timing: "
                + _how_to_avoid(delay))
        if cp != cs:
            edges.append((cs, cp, w, name))
    lat = {classes.find(n): 0 for n in names}
    pinned = {classes.find(n) for n, node in program.nodes() if isinstance(node, Input)}
    last: dict[str, str] = {}
    for _ in range(len(lat) + 1):
        changed = False
        for cs, cp, w, proj in edges:
            if lat[cs] + w > lat[cp]:
                lat[cp] = lat[cs] + w
                last[cp] = proj
                changed = True
        if not changed:
            break
    else:
        proj = next(iter(last.values()))
        raise ProgramError(
            f"node {proj!r}: it lies on a loop whose trained delays are shorter than the target's "
            f"{delay} step(s) per synapse; no added delay keeps the loop's timing: " + _how_to_avoid(delay))
    for c in pinned:
        if lat[c] > 0:
            inputs = [n for n, node in program.nodes() if isinstance(node, Input) and classes.find(n) == c]
            raise ProgramError(
                f"input {inputs[0]!r} is read in the same step as a path that the target delays by {lat[c]} "
                f"step(s) (through {last.get(c)!r}); an input cannot be delayed: " + _how_to_avoid(delay))
    return {n: lat[classes.find(n)] for n in names}


def _silent_at_rest(name: str, node: Node) -> str | None:
    """Why ``node`` would not stay silent with no input before its latency (None: it does)."""
    if isinstance(node, HostOp) and not host_op_silent_at_rest(node):
        return f"host op {node.op!r}, which may compute a non-zero value from zero inputs"
    if isinstance(node, Population) and node.model != "li":
        if node.precision == "fixed":
            vth = np.asarray(node.vth if node.vth is not None else 0)
            if np.any(vth < 0):
                return "a negative threshold fires at rest"
        else:
            thr = np.asarray(node.threshold if node.threshold is not None else 1.0)
            if np.any(thr < 0) or (node.fire_ge and np.any(thr <= 0)):
                return f"a threshold {'<= 0 with >=' if node.fire_ge else '< 0'} fires at rest"
    return None


def target_delays(program: Program, delay: int, max_delay: int | None = None, mode: str = "balanced") -> Program:
    """``program`` for a target whose synapses deliver ``delay`` steps late (see the module docstring).

    ``max_delay`` is the longest delay the target holds (an error names the projection that would
    need more). Returns ``program`` itself when ``delay`` is 0. Never mutates its argument."""
    if mode not in DELAY_MODES:
        raise ValueError(f"target delays {mode!r}: expected one of {', '.join(DELAY_MODES)}")
    if delay <= 0:
        return program
    changed: dict[str, Node] = {}
    latency = {n: program.latency_of(n) for n in program.graph.nodes}
    if mode == "raw":
        for name, node in program.nodes():
            if isinstance(node, Projection) and node.delay < delay:
                changed[name] = node.replace(delay=delay)
        record: dict[str, Any] = {"mode": "raw", "synaptic_delay": delay, "latency": program.total_latency}
    else:
        added = node_latencies(program, delay)
        for name, node in program.nodes():
            if added[name] > 0:
                why = _silent_at_rest(name, node)
                if why is not None:
                    raise ProgramError(f"node {name!r} ({node.KIND}): it would run {added[name]} step(s) before its "
                                       f"inputs arrive and {why}, so delaying it is not exact: " + _how_to_avoid(delay))
            if isinstance(node, Projection):
                (src,) = program.sources(name)
                d = added[name] - added[src] + node.delay
                if d != node.delay:
                    changed[name] = node.replace(delay=d)
        latency = {n: latency[n] + added[n] for n in latency}
        total = max(latency.values(), default=0)
        record = {"mode": "compensated" if changed else "as trained", "synaptic_delay": delay, "latency": total}
    limit = min(max_delay, MAX_STEPS_DELAY) if max_delay is not None else MAX_STEPS_DELAY
    for name, node in program.nodes():
        node = changed.get(name, node)
        if isinstance(node, Projection) and node.delay > limit:
            raise ProgramError(
                f"node {name!r} ({node.KIND}), field delay: {node.delay} steps (trained delay plus what balancing the "
                f"paths into it adds); the target holds at most {limit}")
    graph = rebuild_graph(program, nodes=changed) if changed else program.graph
    return program.with_graph(graph, metadata={**program.metadata, "target_delays": record},
                              latency={n: v for n, v in latency.items() if v})


def bias_from_start(program: Program, names: list[str]) -> Program:
    """Projections ``names`` (delay >= 1, e.g. a recurrent layer's ``V s[t-1] + b``) whose source
    framework adds their bias from step 0 (snnTorch's RLeaky, ``spike.recurrent.RecurrentLIF``, a
    NIR cycle closed by the Euler step), while in the IR a bias travels with its delay: the bias
    moves onto the delay-0 dense or sparse projection that feeds the same population alone, which
    delivers it from step 0 (``b_ff + b_rec``: equal to the framework's sum for dyadic values).
    Raises :class:`ProgramError` naming the projection when there is no such projection."""
    changed: dict[str, Node] = {}
    for name in names:
        node = changed.get(name, program.node(name))
        bias = getattr(node, "bias", None)
        if bias is None or not np.any(np.asarray(bias) != 0):
            continue
        targets = program.consumers(name)
        hosts = [
            q for q in (program.sources(targets[0]) if len(targets) == 1 else [])
            if q != name and isinstance(program.node(q), (Dense, Sparse)) and program.node(q).delay == 0
            and program.consumers(q) == targets and program.node(q).size == node.size
        ]
        if not hosts:
            raise ProgramError(
                f"node {name!r} ({node.KIND}): its bias is added from step 0 in the source model, but it delivers "
                f"{node.delay} step(s) late and no undelayed dense projection feeds the same population alone to "
                "carry the bias")
        host = changed.get(hosts[0], program.node(hosts[0]))
        b = np.asarray(bias, np.float32).reshape(-1)
        hb = np.zeros(host.size, np.float32) if host.bias is None else np.asarray(host.bias, np.float32).reshape(-1)
        changed[hosts[0]] = host.replace(bias=hb + b)
        changed[name] = node.replace(bias=None)
    if not changed:
        return program
    return program.with_graph(rebuild_graph(program, nodes=changed))
