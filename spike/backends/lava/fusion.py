"""Host mode of the lava backend: the fused blocks that compute what Lava's own processes cannot.

Host ops (host mode): a float32 program that is stepwise (``metadata["stepwise"]``, e.g. SpikeGPT)
or has a host op other than ``add`` runs in host mode. Its real-valued parts run as custom Lava
Python processes, ``FusedBlock`` (``lava.procs``): float, zero delay (each step: receive every
input port, compute, send, in the same step), computing with ``BlockStep`` exactly what the numba
backend computes, a host op by ``host_ops.run_host_op`` (the shared torch kernel), a population
or a zero-delay projection with the numba kernels' float32 operations in their order.

- What a block computes ("fused" nodes): every host op; every dense/sparse/identity projection of
  delay 0 (Lava's synapses are one step late); and every population Lava's LIF cannot reproduce
  exactly: float32 SpikingJelly/snnTorch neurons (``fire_ge``, ``reset_delay``, resets other than
  zero), ``li`` readouts, and any population fed by a fused node (host ops send real values, which
  Lava's float64 LIF would round differently from numba's float32). Populations fed only by
  projections of delay 1 whose readers are all such populations stay Lava LIFs (gain and bias
  folded as ``plan`` does), and those projections stay Lava synapses (for ``B`` > 1 a ``Sparse`` repeating
  the weights once per sample, LIF parameters tiled); a Lava projection read by blocks keeps gain 1
  and its bias is added by them.
- Fusing, to keep the process count small: each fused population is its own "neurons" block,
  together with the zero-delay projections only it reads (synapses and neurons of one core, e.g.
  SpikeGPT's one-hot ``emb`` Dense with ``emb_spike``). The other fused nodes are merged in
  topological order: a node joins the block of one of its fused sources unless that closes a
  cycle between processes (zero-delay processes on a cycle would wait for each other forever;
  cycles through a Lava synapse, which sends before it receives, do not count), else it starts a
  new block (``fuse``). A 2-layer SpikeGPT becomes 11 processes: the token source, 5 neuron
  blocks (``emb_spike`` with ``emb``, each SN1/SN2) and 5 host blocks (``ln0`` .. ``att.output``
  of block 0; then one per residual ``add``: ``add1`` .. ``ffn.gated``, ``add2`` .. the next
  block's ``att.output``, the last ``add2`` .. ``head``), ``4L + 3`` for ``L`` layers, and no sinks:
  a block records the members the backend reads back (every population, the sources of
  projections and host ops, outputs, probes, ``.v`` probes) in its ``data`` Var.
- Exactness: a block holds all samples side by side (``[1, B, size]`` per host-op call), since
  MKL's matrix product rounds differently for another batch size, and hands each host op step t
  of a ``[T, B, size]`` array of its source, as numba's stepwise run does (the product also
  depends on the operands' strides and address modulo 16 bytes). So a stepwise program equals the
  numba backend bit for bit (outputs, spikes, membranes, every operation count); a program that is
  not stepwise runs its host ops on all steps at once on numba, which can round differently.
- Lava runs each process in a fork of this process; ``lava.procs._fork_safe_kernels`` keeps the
  host-op kernels off OpenMP thread pools there (torch on one thread, the WKV kernel serial).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spike import semantics
from spike.backends.registry import BackendError
from spike.compiler.ir.nodes import Dense, HostOp, Identity, Node, Output, Population, Projection, Sparse
from spike.compiler.ir.program import Program
from spike.compiler.ir.precision import program_precision

__all__ = ["NATIVE_HOST_OPS", "FusedMember", "FusedSpec", "BlockStep", "host_mode", "fuse"]

NATIVE_HOST_OPS = ("add",)  # host ops Lava runs as their own process (``HostAdd``) outside host mode


# ---------------------------------------------------------------------------- host mode: fused blocks
@dataclass
class FusedMember:
    """One IR node computed inside a fused block: ``kind`` is "hostop", "population", "dense",
    "sparse" or "identity"; ``srcs`` its sources in the IR's order, each ("ext", input port) or
    ("int", index of an earlier member)."""

    name: str
    kind: str
    node: Node
    srcs: list[tuple[str, int]]


@dataclass
class FusedSpec:
    """A fused block (module docstring): its members in topological order, the IR nodes
    feeding its input ports ``in0, in1, ...`` (with the bias of a Lava projection to add, if any)
    and the members sent on its output ports ``out0, out1, ...``. ``role``: "host" (host ops and
    zero-delay projections) or "neurons" (one population and the zero-delay synapses only it reads)."""

    role: str
    members: list[FusedMember]
    inputs: list[str]
    input_bias: list[np.ndarray | None]
    outputs: list[int]
    # Program.onset of each member (a projection delivers nothing before it, bias included) and of
    # each input's Lava projection (its bias is added from then on); empty: all 0
    member_onset: list[int] = field(default_factory=list)
    input_onset: list[int] = field(default_factory=list)

    def index(self, name: str) -> int:
        return next(i for i, m in enumerate(self.members) if m.name == name)


class BlockStep:
    """The steps of a fused block for ``lanes`` samples side by side: every member computed in
    order with the numba backend's float32 arithmetic (populations, zero-delay projections) or the
    shared host-op kernels (``host_ops.run_host_op``). A host op gets exactly the tensors the
    numba backend gives it when it runs a program step by step: step ``t`` of a ``[steps, lanes,
    size]`` float32 array holding its source's values (MKL's matrix product rounds differently
    with the operands' shape, strides and even their address modulo 16 bytes, so the block keeps
    such an array per host-op source). Pure numpy/torch: the Lava process model (``lava.procs``)
    calls it, and so can a test without Lava. ``reset()`` starts a new run (zero state, step 0)."""

    def __init__(self, spec: FusedSpec, lanes: int, steps: int) -> None:
        self.spec, self.lanes, self.steps = spec, int(lanes), max(int(steps), 1)
        self.consts = [self._prepare(m) for m in spec.members]
        self.hist_keys = {tuple(src) for m in spec.members if m.kind == "hostop" for src in m.srcs}
        self.hist: dict[tuple[str, int], np.ndarray] = {}
        self.state: list[dict[str, Any]] = []
        self.t = 0
        self.reset()

    def reset(self) -> None:
        self.state = [{} for _ in self.spec.members]
        self.hist = {}  # fresh arrays, as every numba run allocates its own
        self.t = 0

    def _keep(self, key: tuple[str, int], value: np.ndarray) -> np.ndarray:
        """``value`` ``[lanes, size]`` stored at this step of its source's ``[steps, lanes, size]``
        array; the ``[1, lanes, size]`` view a host op reads (as numba's ``out[t:t+1]``)."""
        h = self.hist.get(key)
        if h is None:
            h = self.hist[key] = np.zeros((self.steps, *value.shape), np.float32)
        t = self.t % self.steps
        h[t] = value
        return h[t:t + 1]

    @staticmethod
    def _prepare(m: FusedMember) -> dict[str, Any]:
        node = m.node
        if m.kind == "population":
            bias = semantics.neuron_bias(node)
            return dict(params=list(semantics.neuron_params(node)), flags=semantics.neuron_flags(node),
                        gain=np.float32(node.gain), v_reset=np.float32(node.v_reset),
                        bias=np.float32(0) if bias is None else bias, biased=bias is not None)
        bias = getattr(node, "bias", None)
        bias = None if bias is None else np.ascontiguousarray(np.asarray(bias, np.float32).reshape(-1))
        if m.kind == "dense":
            return dict(wt=np.ascontiguousarray(np.asarray(node.weight, np.float32).T), bias=bias)
        if m.kind == "sparse":
            return dict(indptr=np.asarray(node.indptr, np.int64), indices=np.asarray(node.indices, np.int64),
                        data=np.asarray(node.data, np.float32), bias=bias)
        if m.kind == "identity":
            return dict(scale=np.float32(node.scale))
        return {}

    def step(self, ext: list[Any]) -> list[np.ndarray]:
        """The values ``[lanes, size]`` (float32) of every member, given the input ports' values."""
        L, t = self.lanes, self.t
        xs = []
        views: dict[tuple[str, int], np.ndarray] = {}
        for i, (a, bias) in enumerate(zip(ext, self.spec.input_bias)):
            a = np.asarray(a).reshape(L, -1)
            if bias is not None and t >= self._onset(self.spec.input_onset, i):
                a = a.astype(np.float64) + bias  # a Lava projection's bias (Lava synapses have none), from its onset
            xs.append(np.ascontiguousarray(a, dtype=np.float32))
            if ("ext", i) in self.hist_keys:
                views[("ext", i)] = self._keep(("ext", i), xs[-1])
        vals: list[np.ndarray] = []
        for j, m in enumerate(self.spec.members):
            if m.kind == "hostop":
                srcs = [views[(where, i)] for where, i in m.srcs]
            else:
                srcs = [xs[i] if where == "ext" else vals[i] for where, i in m.srcs]
            if m.kind in ("dense", "sparse", "identity") and t < self._onset(self.spec.member_onset, j):
                vals.append(np.zeros((L, m.node.size), np.float32))  # before its onset: nothing, bias included
            else:
                vals.append(getattr(self, "_" + m.kind)(j, m.node, srcs))
            if ("int", j) in self.hist_keys:
                views[("int", j)] = self._keep(("int", j), vals[-1])
        self.t += 1
        return vals

    @staticmethod
    def _onset(onsets: list[int], i: int) -> int:
        return int(onsets[i]) if i < len(onsets) else 0

    # ---- members
    def _hostop(self, j: int, node: HostOp, srcs: list[np.ndarray]) -> np.ndarray:
        import torch

        from spike.backends.host_ops import fresh_input, run_host_op

        xs = [fresh_input(torch.from_numpy(s)) for s in srcs]  # [1, lanes, size], as numba's
        return np.array(run_host_op(node, xs, self.state[j]).numpy()[0], np.float32)

    def membrane(self, j: int) -> np.ndarray:
        """The membrane ``v`` of member ``j`` (a population) after the last step."""
        return self.state[j]["state"][semantics.S_V]

    def _population(self, j: int, node: Population, srcs: list[np.ndarray]) -> np.ndarray:
        c, st = self.consts[j], self.state[j]
        if not st:
            st["state"] = list(semantics.initial_state(node, self.lanes))  # v, s, i, j
        if not srcs:
            x = np.zeros((self.lanes, node.size), np.float32)
        else:  # ((s0 + s1) + s2), as numba
            x = srcs[0]
            for s in srcs[1:]:
                x = x + s
        biased = c["biased"] and self.t >= self._onset(self.spec.member_onset, j)  # its own bias, from its onset
        out, *st["state"] = semantics.numpy_step(x, x, *st["state"], *c["params"], c["gain"], c["v_reset"], *c["flags"],
                                                 c["bias"], biased)
        return out

    def _dense(self, j: int, node: Dense, srcs: list[np.ndarray]) -> np.ndarray:
        c = self.consts[j]
        (x,) = srcs
        init = c["bias"] if c["bias"] is not None else np.zeros(node.size, np.float32)
        out = np.empty((self.lanes, node.size), np.float32)
        for b in range(self.lanes):  # bias, then the rows of the active inputs in index order (numba)
            idx = np.flatnonzero(x[b])
            rows = c["wt"][idx] * x[b, idx][:, None]
            out[b] = np.add.accumulate(np.vstack([init[None], rows]), axis=0)[-1] if len(idx) else init
        return out

    def _sparse(self, j: int, node: Sparse, srcs: list[np.ndarray]) -> np.ndarray:
        c = self.consts[j]
        (x,) = srcs
        out = np.empty((self.lanes, node.size), np.float32)
        indptr, indices, data = c["indptr"], c["indices"], c["data"]
        for b in range(self.lanes):
            acc = c["bias"].copy() if c["bias"] is not None else np.zeros(node.size, np.float32)
            idx = np.flatnonzero(x[b])
            if len(idx):
                counts = indptr[idx + 1] - indptr[idx]
                ks = np.concatenate([np.arange(indptr[i], indptr[i + 1]) for i in idx])
                np.add.at(acc, indices[ks], data[ks] * np.repeat(x[b, idx], counts))  # in order, unbuffered
            out[b] = acc
        return out

    def _identity(self, j: int, node: Identity, srcs: list[np.ndarray]) -> np.ndarray:
        (x,) = srcs
        scale = self.consts[j]["scale"]
        return x.copy() if scale == 1 else scale * x


def host_mode(program: Program) -> bool:
    """Whether the program runs in host mode (module docstring): a float32 program that
    is stepwise or has host ops other than ``add``."""
    if program_precision(program) == "fixed":
        return False
    return bool(program.metadata.get("stepwise")) or any(
        isinstance(node, HostOp) and node.op not in NATIVE_HOST_OPS for _, node in program.nodes())


def _zero_delay_synapse(node: Node) -> bool:
    return isinstance(node, (Dense, Sparse, Identity)) and int(node.delay) == 0


def _lava_lif_populations(program: Program) -> set[str]:
    """Host mode: the populations that stay Lava LIFs: float ``lif``/``if``/``cuba_lif`` with the
    reset Lava's LIF computes (zero, in the step it fires on ``v > vth``), fed only by projections of
    delay >= 1 (Lava's own synapses) all of whose other consumers are such populations too."""
    ok = set()
    for name, node in program.nodes():
        if not isinstance(node, Population) or node.model not in ("lif", "if", "cuba_lif"):
            continue
        if node.reset != "zero" or node.reset_delay or node.fire_ge or node.beyond_lif():
            continue
        srcs = program.sources(name)
        if srcs and all(isinstance(program.node(s), Projection) and int(program.node(s).delay) >= 1 for s in srcs):
            ok.add(name)
    changed = True
    while changed:
        changed = False
        for name in sorted(ok):
            for s in program.sources(name):
                if any(c not in ok and not isinstance(program.node(c), Output) for c in program.consumers(s)):
                    ok.discard(name)
                    changed = True
                    break
    return ok


def fuse(program: Program) -> tuple[dict[str, str], dict[str, FusedSpec], set[str]]:
    """Host mode: (IR node -> key of its fused block, block key -> spec, Lava LIF populations).

    Fused are host ops, zero-delay projections and the populations Lava's LIF cannot compute. Each
    such population is its own "neurons" block, with the zero-delay projections that only it reads.
    The other fused nodes are merged greedily in topological order: a node joins the block of one of
    its fused sources unless that would close a cycle between processes (a path from the block back
    to another source of the node); else it starts a new block. Cycles through a projection of
    delay >= 1 do not count: Lava's synapses send before they receive."""
    import networkx as nx

    nodes = dict(program.nodes())
    lif = _lava_lif_populations(program)
    pops = [n for n, node in nodes.items() if isinstance(node, Population) and n not in lif]
    fused = {n for n, node in nodes.items() if isinstance(node, HostOp) or _zero_delay_synapse(node)} | set(pops)
    g0 = program.undelayed_graph().copy()
    g0.remove_nodes_from([n for n, node in nodes.items() if isinstance(node, Output)])
    order_ix = {n: i for i, n in enumerate(program.graph.nodes)}
    order = list(nx.lexicographical_topological_sort(g0, key=lambda n: order_ix[n]))
    group: dict[str, str] = {p: p for p in pops}
    role = {p: "neurons" for p in pops}
    for n in fused:
        if _zero_delay_synapse(nodes[n]):
            cons = program.consumers(n)
            if len(cons) == 1 and cons[0] in role:
                group[n] = cons[0]
    quot = nx.DiGraph()

    def qid(n: str) -> str:
        return group.get(n, n)

    for n in order:
        preds = list(g0.predecessors(n))
        if n in fused and n not in group:
            target = None
            for c in dict.fromkeys(group[p] for p in preds if p in group and role[group[p]] == "host"):
                if all(qid(p) == c or not nx.has_path(quot, c, qid(p)) for p in preds):
                    target = c
                    break
            if target is None:
                target = f"host:{n}"
                role[target] = "host"
            group[n] = target
        g = qid(n)
        quot.add_node(g)
        for p in preds:
            if qid(p) != g:
                quot.add_edge(qid(p), g)
    if not nx.is_directed_acyclic_graph(quot):  # pragma: no cover - the greedy merge never closes a cycle
        raise BackendError("internal: the fused blocks of the lava backend form a cycle")
    specs: dict[str, FusedSpec] = {}
    members: dict[str, list[str]] = {}
    for n in order:
        if n in fused:
            members.setdefault(group[n], []).append(n)
    for key, names in members.items():
        inside = {m: i for i, m in enumerate(names)}
        inputs: list[str] = []
        ms = []
        for m in names:
            srcs = []
            for s in program.sources(m):
                if s in inside:
                    srcs.append(("int", inside[s]))
                else:
                    if s not in inputs:
                        inputs.append(s)
                    srcs.append(("ext", inputs.index(s)))
            node = nodes[m]
            kind = "hostop" if isinstance(node, HostOp) else "population" if isinstance(node, Population) else node.KIND
            ms.append(FusedMember(m, kind, node, srcs))
        outputs = [i for i, m in enumerate(names)
                   if any(c not in inside and not isinstance(nodes[c], Output) for c in program.consumers(m))]
        specs[key] = FusedSpec(role[key], ms, inputs, [None] * len(inputs), outputs,
                               member_onset=[program.onset(m) for m in names],
                               input_onset=[program.onset(s) for s in inputs])
    return {n: group[n] for n in fused}, specs, lif
