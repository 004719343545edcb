"""Backend-independent execution: schedule stages, hand each node's kernel its arrays.

Every node's output is an array ``[T, B, size]`` (flattened feature dims) allocated by the
backend. A kernel ``fn(ctx, t0, t1)`` computes steps ``t0..t1-1`` of its node; acyclic nodes get
one call over all steps, nodes on a cycle one call per step (see ``Program.schedule``). Each
node's kernel is chosen once per run, by its kind and variant (``registry.node_variants``: the
"gated" kernel for a node an FTWT gate masks), and its context carries what the kernel needs
(``NodeContext.gate``: the gate, resolved from ``Program.gated``), so kernels look nothing up.

A program compiled for a target with synaptic delays trails the trained network by
``program.total_latency`` steps (``spike.compiler.passes.delays``): every backend runs ``T + latency``
steps with the input padded by zeros, counts every step it ran (they happen on chip), and returns
each output and probe from its node's latency on, ``T`` steps aligned with the input.

Buffers hold the program precision's values: float32, int32 in fixed point, float64 in a float64
program, where spike signals (0/1) keep float32 buffers (:func:`signal_dtype`).

Sources: ``Input`` nodes take the run's input arrays; ``Bernoulli`` nodes generate their spikes in
the run (each backend's kernel, the hash of ``spike.semantics``). A program without ``Input``
nodes runs with ``run(program, steps=T, batch=B)``. Neither kind is counted (``RunResult.ops``).

Records (``spike.backends.recording``): ``record={node: "dense" | "counts" | "spikes" | several}``
returns spike counts per neuron and spike lists instead of (or besides) dense outputs; a node
whose kernel lists its spikes as it steps (``Backend.lists_spikes``: numba's populations) is
recorded from those lists, without a second pass over its dense output.

Silent rows: a run writes no zeros where nothing needs them. A node whose kind the backend
``marks_silence``, whose every reader is a kind it ``reads_silence`` (plain variants, a float
program without gates or core mapping, a run that is not chunked) and whose buffer the engine does
not read itself (not an output, probe or densely recorded node; a recorded population lists its
spikes) gets ``ctx.silent``, uint8 ``[rows, B]`` zeros: its kernel may leave an all-zero output
row ``[t, b]`` unwritten (garbage from a recycled buffer) and set ``silent[t, b] = 1``, and its
readers, given the flags in ``ctx.source_silent``, take such a row as zeros without reading it. A
quiet layer then costs neither the write of its zeros nor their reading downstream (numba:
dense projections and populations). Results are those of the written zeros, bit for bit.

Chunks: on a backend that declares ``chunked`` (numba), a run longer than one chunk of a program
without FTWT gates (a mask needs its source's whole run), host ops (their real-valued products
round by the shapes they see) or a core mapping (routing counts read every output after the run),
not run step by step, goes in chunks of ``C`` steps (every node's buffers together about
:data:`CHUNK_BYTES`, or :data:`CYCLIC_CHUNK_BYTES` in a program with a cycle, at least
:data:`MIN_CHUNK_STEPS` steps), so that a chunk's signals stay in the caches from the stage that
writes them to the stages that read them. Measured on the 100k-neuron nets of
``benchmarks/vs_simulators.py`` (1 thread) against the former 32 MB per buffer of the widest node:
the recurrent nets, stepped one step at a time, 15-20% faster with 16 MB (64 MB: 5-10%); the
fan-out-100 feed-forward net 23% faster with 16-64 MB; the fan-out-1000 one, whose long rows
of synapses dominate, 3% slower with 64 MB and 8% with 16 MB (the bytes of each buffer's own
dtype). Every node's buffer holds ``D + C`` steps, ``D`` the longest projection delay, and each
stage runs local steps ``D .. D + c - 1`` (cycles one step at a time, as always); local step ``t``
is global step ``ctx.base + t``, and ``ctx.onset`` is given in local steps. Between chunks each
buffer keeps as the next history its last steps that its readers look back on (the longest delay
of the projections reading it: none for a projection's currents, which populations read in their
step).
Only what is returned densely (outputs, probes) gets ``[T, B, size]`` records (on the host, filled
chunk by chunk); recorded counts and spike lists are taken chunk by chunk. Results equal one call
over all steps bit for bit (every kernel steps its state in order, as the per-step calls of a
cycle do).
"""
from __future__ import annotations

import contextlib
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from spike import semantics
from spike.backends.exact_sums import float32_exact_inputs
from spike.backends.gate_common import GateRef, gate_ref
from spike.backends.recording import Recorder, parse_record
from spike.backends.registry import OP_KEYS, PLAIN, Backend, BackendError, get_backend, node_variants
from spike.backends.result import OpCounts, RunResult
from spike.compiler.ir.nodes import Bernoulli, Gate, HostOp, Input, Node, Output, Population, Projection
from spike.compiler.ir.program import Program
from spike.compiler.ir.signals import output_signal
from spike.compiler.ir.validate import check_initial_state
from spike.compiler.passes.gates import gate_record
from spike.compiler.ir.precision import program_precision
from spike.backends.routing import add_routing_counts

_CACHES: "weakref.WeakKeyDictionary[Node, dict[str, dict]]" = weakref.WeakKeyDictionary()
CHUNK_BYTES = 64 << 20  # a chunked run's buffers hold about this many bytes together
CYCLIC_CHUNK_BYTES = 16 << 20  # the same in a program with a cycle
MIN_CHUNK_STEPS = 8


@dataclass
class NodeContext:
    """What a kernel sees: its node, source outputs, its output, persistent state and counters."""

    name: str
    node: Node
    sources: list[Any]
    out: Any
    counts: dict[str, np.ndarray]
    steps: int
    batch: int
    source_signals: list[str] = field(default_factory=list)  # "spike" | "real" | "current"
    mem: Any = None  # membrane record [T, B, size] when probed (populations)
    state: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # per (backend, node), kept across runs
    precision: str = "float32"  # the program's: "fixed" runs Loihi fixed point on int32 signals
    mem_u: Any = None  # Loihi current u record [T, B, size] when probed ('.u', fixed point only)
    onset: int = 0  # first step of the node's bias (Program.onset): projections, populations (local step)
    base: int = 0  # the global step of local step 0 (a chunked run: engine docstring, "Chunks"; else 0)
    # The FTWT gate of a gate node, or the gate whose mask applies to a gated population or a
    # projection into one (its "gated" kernel); None elsewhere.
    gate: GateRef | None = None
    # The whole run: the program, every node's output array by name (read-only; sources are
    # complete when a node runs: a gate's mask reads its source's), and a dict shared by all
    # kernels of this run (e.g. a gate's mask, computed once).
    program: Any = None
    values: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    # (index [rows, B, size] int32, count [rows, B] int64): the spikes of each step as a list, for a
    # recorded node whose kind the backend ``lists_spikes`` (registry.Backend); None elsewhere.
    spike_list: Any = None
    # Silent rows (module docstring): the node's own flags, uint8 [rows, B] (zeros on entry), where
    # its kernel may leave a zero row unwritten (Backend.marks_silence), else None; and its sources'
    # flags, aligned with ``sources`` (None where a source has none: its rows are all written).
    silent: Any = None
    source_silent: list[Any] = field(default_factory=list)

    def recurrent_sources(self) -> tuple[int, ...]:
        """Positions (ascending), among the node's sources, of the projections that read the node
        itself: a ``late_recurrent`` population's recurrent inputs (found once per run)."""
        if "recurrent_sources" not in self.state:
            srcs = self.program.sources(self.name)
            self.state["recurrent_sources"] = tuple(
                i for i, s in enumerate(srcs) if self.name in self.program.sources(s))
        return self.state["recurrent_sources"]


def _as_inputs(program: Program, inputs: Any, steps: int | None,
               batch: int | None) -> tuple[dict[str, np.ndarray], int, int]:
    """The input arrays by name (checked), the steps ``T`` and the batch ``B`` of the run: from the
    inputs, or ``steps``/``batch`` for a program without ``Input`` nodes."""
    for what, v in (("steps", steps), ("batch", batch)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise ValueError(f"run: {what} must be a whole number >= 1, got {v!r}")
    if not program.inputs:
        if inputs is not None and not (isinstance(inputs, Mapping) and not inputs):
            raise ValueError("the program has no Input node (its sources are generated in the run): it takes no "
                             "inputs; pass steps=T and batch=B")
        if steps is None or batch is None:
            raise ValueError("the program has no Input node (its sources are generated in the run): pass steps=T "
                             "and batch=B to run(...)")
        return {}, int(steps), int(batch)
    if inputs is None:
        raise ValueError(f"missing inputs; the program needs {list(program.inputs)} ([T, B, *shape] arrays)")
    if not isinstance(inputs, Mapping):
        if len(program.inputs) != 1:
            raise ValueError(f"program has inputs {list(program.inputs)}: pass a dict name -> array")
        inputs = {program.inputs[0]: inputs}
    out = {}
    for name in program.inputs:
        if name not in inputs:
            raise ValueError(f"missing input {name!r}; the program needs {list(program.inputs)}")
        arr = inputs[name]
        arr = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
        node = program.node(name)
        if arr.ndim < 2 or tuple(arr.shape[2:]) != tuple(node.shape):
            raise ValueError(
                f"input {name!r}: expected shape [T, B, {', '.join(map(str, node.shape))}], "
                f"got {list(arr.shape)}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"input {name!r} contains NaN or inf")
        out[name] = arr
    shapes = {a.shape[:2] for a in out.values()}
    if len(shapes) != 1:
        raise ValueError(f"inputs disagree on [T, B]: {sorted(shapes)}")
    T, B = next(iter(shapes))
    for what, given, have in (("steps", steps, T), ("batch", batch, B)):
        if given is not None and int(given) != have:
            raise ValueError(f"run: {what}={given} disagrees with the inputs' [T, B] = [{T}, {B}]")
    return out, int(T), int(B)


def _parse_probes(program: Program, probes: Iterable[str]) -> tuple[set[str], set[str], set[str]]:
    signals, membranes, currents = set(), set(), set()
    for p in probes:
        name, what = (p, "") if p in program.graph else p.rpartition(".")[::2]
        node = program.node(name)  # raises naming the probe
        if what in ("", "s", "spikes"):
            signals.add(name)
        elif what in ("v", "u"):
            if not isinstance(node, Population):
                raise ValueError(f"probe {p!r}: only populations have a membrane ('.v') and current ('.u')")
            if what == "u" and program_precision(program) != "fixed":
                raise ValueError(f"probe {p!r}: the Loihi current '.u' is recorded for fixed-point programs only")
            (membranes if what == "v" else currents).add(name)
        else:
            raise ValueError(f"probe {p!r}: expected 'NODE' (output), 'NODE.v' (membrane) or 'NODE.u' (current)")
    return signals, membranes, currents


def _run_stage(cyclic: bool, calls: list[tuple[Any, NodeContext]], t0: int, t1: int) -> None:
    if not cyclic:
        for fn, ctx in calls:
            fn(ctx, t0, t1)
    else:
        for t in range(t0, t1):
            for fn, ctx in calls:
                fn(ctx, t, t + 1)


def run(
    program: Program,
    inputs: Any = None,
    backend: str | Backend = "numba",
    probes: Iterable[str] = (),
    stepwise: bool | None = None,
    progress: bool = False,
    *,
    steps: int | None = None,
    batch: int | None = None,
    record: Mapping[str, Any] | None = None,
) -> RunResult:
    """Execute ``program`` on ``inputs`` (``[T, B, *shape]`` array, or dict by input name).

    ``stepwise`` runs every node one step at a time (token by token), as a streaming device
    would; by default a node runs all its steps in one call unless it lies on a cycle, or the
    program asks for steps (``metadata["stepwise"]``, set for SpikeGPT, whose real-valued matmuls
    then see the shapes of token-by-token inference and round alike). ``progress`` shows a bar
    over the steps of a stepwise run. ``steps``/``batch``: ``T`` and ``B`` of a program without
    ``Input`` nodes (its spikes come from ``Bernoulli`` sources or biases; with inputs they must
    agree with them). ``record``: node -> ``"dense"``, ``"counts"``, ``"spikes"`` or several
    (``spike.backends.recording``): spike counts in ``RunResult.spike_counts``, spike lists in
    ``RunResult.spike_lists``; a program output recorded without ``"dense"`` is not returned densely.
    """
    if stepwise is None:
        stepwise = bool(program.metadata.get("stepwise", False))
    if stepwise:
        gates = [n for n, node in program.nodes() if isinstance(node, Gate)]
        if gates:
            raise BackendError(f"gate(s) {gates}: an FTWT mask needs its source's whole run before the first "
                               "step (it is not causal), so the program cannot run step by step")
    be = get_backend(backend) if isinstance(backend, str) else backend
    memo = _memo(program)
    _check(be, program, memo)
    static = _static(program, memo)
    arrays, T_in, B = _as_inputs(program, inputs, steps, batch)
    arrays = padded_inputs(program, arrays)
    T = T_in + program.total_latency
    sig_probes, mem_probes, cur_probes = _parse_probes(program, probes)
    records = parse_record(program, record)
    outputs = [o for o in program.outputs if "dense" in records.get(o, {"dense"})]
    extra = {n for n, modes in records.items() if n not in outputs and ("dense" in modes or n not in program.outputs)}
    precision = static.precision
    dtype = "int32" if precision == "fixed" else precision  # float32, or float64 for a float64 program
    if precision == "fixed":
        for name, arr in arrays.items():
            if not np.isin(arr, (0, 1)).all():
                raise ValueError(f"input {name!r}: a fixed-point program takes spikes (0/1) only; encode real values first")
    recorders = {n: Recorder(n, modes, tuple(program.node(n).shape), B, program.latency_of(n), T_in)
                 for n, modes in records.items() if modes - {"dense"}}
    if be.runner is not None:  # the backend runs the whole program itself (same RunResult)
        generated = {name: semantics.bernoulli_spikes(node.p, node.size, node.seed, T, B, -program.latency_of(name))
                     .astype(np.float32).reshape(T, B, *node.shape)
                     for name, node in program.nodes() if isinstance(node, Bernoulli)}
        result = be.runner(program, {**arrays, **generated}, sig_probes | extra | set(recorders), mem_probes,
                           cur_probes, steps=T, batch=B)
        for name, rec in recorders.items():
            rec.add(result.probes[name], 0)
        result.outputs = {o: v for o, v in result.outputs.items() if o in outputs}
        result.probes = {k: v for k, v in result.probes.items()
                         if k not in recorders or k in sig_probes or "dense" in records.get(k, ())}
    else:
        with be.run_context(B) if be.run_context is not None else contextlib.nullcontext():
            result = _run_kernels(program, static, be, arrays, T, B, dtype, stepwise, progress,
                                  sig_probes | {n for n in extra if "dense" in records[n]}, mem_probes, cur_probes,
                                  outputs, recorders)
    if result.ops.steps is None:
        result.ops.steps = T
    result.spike_counts = {n: rec.counts() for n, rec in recorders.items() if rec.count is not None}
    result.spike_lists = {n: rec.spikes() for n, rec in recorders.items() if rec.lists is not None}
    return aligned(program, result, T_in)


def padded_inputs(program: Program, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs ``[T, B, ...]`` followed by ``program.total_latency`` steps of zeros."""
    lag = program.total_latency
    if not lag:
        return arrays
    return {k: np.concatenate([a, np.zeros((lag, *a.shape[1:]), a.dtype)]) for k, a in arrays.items()}


def aligned(program: Program, result: RunResult, steps: int) -> RunResult:
    """``result`` of a padded run with every output and probe cut to its node's ``steps`` aligned
    steps (``[latency, latency + steps)``); counts and timing stay those of the whole run."""
    lag = program.total_latency
    if not lag:
        return result

    def cut(key: str, arr: np.ndarray) -> np.ndarray:
        name = key if key in program.graph else key.rpartition(".")[0]
        lo = program.latency_of(name)
        return arr[lo : lo + steps]

    result.outputs = {k: cut(k, v) for k, v in result.outputs.items()}
    result.probes = {k: cut(k, v) for k, v in result.probes.items()}
    result.timing = {**result.timing, "latency_steps": float(lag)}
    return result


_MEMOS: "weakref.WeakKeyDictionary[Program, tuple[tuple, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def _memo(program: Program) -> dict[str, Any]:
    """What a run derives from the program alone (its schedule, a backend's check), kept per
    program while its graph has the same nodes and edges: networkx's sorts and the checks cost
    more than a small network's run."""
    g = program.graph
    nodes = tuple(node for _, node in g.nodes(data="node"))
    key = (tuple(g.nodes), tuple(map(id, nodes)), tuple(g.edges))
    hit = _MEMOS.get(program)
    if hit is None or hit[0] != key:
        hit = _MEMOS[program] = (key, {"nodes": nodes})  # the nodes held: their ids stay theirs
    return hit[1]


def _check(be: Backend, program: Program, memo: dict[str, Any]) -> None:
    """``be.check(program)``, once per backend and program (``memo``: :func:`_memo`'s; a failed
    check raises every time)."""
    if ("check", id(be)) not in memo:
        be.check(program)
        memo["check", id(be)] = be  # held: its id stays its own


@dataclass(frozen=True)
class _Static:
    """What a run needs of the program alone, derived once per program (:func:`_memo`)."""

    schedule: list  # Program.schedule
    staged: tuple  # per stage of the schedule: (cyclic, ((name, node), ...))
    signals: dict[str, str]  # output_signal of every node
    variants: dict[str, str]  # registry.node_variants
    precision: str  # program_precision
    sources: dict[str, tuple[str, ...]]
    source_signals: dict[str, list[str]]
    onsets: dict[str, int]  # Program.onset of every node that a kernel runs
    gated: bool  # FTWT gates: per-run gate references
    max_delay: int  # the longest projection delay (a chunked run's history)
    lookback: dict[str, int]  # per node, the longest delay of the projections that read it (its history)
    exact32: frozenset[str]  # a float64 program's projections whose currents float32 holds (signal_dtype)
    sizes: dict[str, int]  # values per step and sample of every node's buffer (Outputs share their source's: absent)
    chunkable: bool  # no gate, host op or core mapping (engine docstring, "Chunks")
    targets: dict[str, tuple[str, ...]]  # every node's readers (successors)
    mapped: bool  # a core mapping (routing counts read every output after the run)
    # (what, id(backend)) -> (backend, derived): held, its id stays its own (:meth:`_for_backend`)
    per_backend: dict = field(default_factory=dict)

    def _for_backend(self, what: str, be: Backend, derive: Any) -> Any:
        """``derive()``, once per backend."""
        hit = self.per_backend.get((what, id(be)))
        if hit is None:
            hit = self.per_backend[what, id(be)] = (be, derive())
        return hit[1]

    def may_mark(self, be: Backend) -> frozenset[str]:
        """The nodes whose kernel on ``be`` may leave zero rows unwritten (module docstring, "Silent
        rows"): a kind that ``be`` marks, every reader a kind that reads the flags (an Output, a host
        op or a gate reads the buffer itself), plain variants, a float program without gates or
        core mapping."""
        def derive() -> frozenset[str]:
            if self.precision == "fixed" or self.gated or self.mapped:
                return frozenset()
            plain = {name for name, variant in self.variants.items() if variant == PLAIN}
            kinds = {name: node.KIND for _, nodes in self.staged for name, node in nodes}
            return frozenset(name for name in plain if kinds.get(name) in be.marks_silence and all(
                t in plain and kinds.get(t) in be.reads_silence for t in self.targets[name]))
        return self._for_backend("may_mark", be, derive)

    def per_node(self, be: Backend) -> list[list[tuple[dict | None, bool]]]:
        """Per stage of ``staged``, per node: its cache on ``be`` (kept across runs) and whether its
        kernel writes every element of its output; ``(None, False)`` for Inputs and Outputs (the
        kernel itself is looked up per run)."""
        return self._for_backend("per_node", be, lambda: [
            [(None, False) if isinstance(node, (Input, Output)) else (
                _CACHES.setdefault(node, {}).setdefault(be.name, {}),
                be.empty is not None and node.KIND in be.overwrites and self.variants[name] == PLAIN)
             for name, node in nodes]
            for _, nodes in self.staged])


def _static(program: Program, memo: dict[str, Any]) -> _Static:
    """The program's :class:`_Static` (``memo``: :func:`_memo`'s)."""
    if "static" not in memo:
        check_initial_state(program)  # raises on every run until the program changes
        nodes = list(program.nodes())
        sources = {name: tuple(program.sources(name)) for name, _ in nodes}
        targets = {name: tuple(program.graph.successors(name)) for name, _ in nodes}
        signals = {name: output_signal(program, name) for name, _ in nodes}
        schedule = program.schedule()
        precision = program_precision(program)
        lookback = {name: max((int(program.node(t).delay) for t in targets[name]
                               if isinstance(program.node(t), Projection)), default=0) for name, _ in nodes}
        memo["static"] = _Static(
            schedule=schedule,
            staged=tuple((stage.cyclic, tuple((name, program.node(name)) for name in stage.nodes))
                         for stage in schedule),
            signals=signals,
            variants=node_variants(program),
            precision=precision,
            sources=sources,
            source_signals={name: [signals[s] for s in srcs] for name, srcs in sources.items()},
            onsets={name: program.onset(name) for name, node in nodes if not isinstance(node, (Input, Output))},
            gated=bool(gate_record(program)) or any(isinstance(node, Gate) for _, node in nodes),
            max_delay=max(lookback.values(), default=0),  # every projection reads some node
            lookback=lookback,
            sizes={name: node.size for name, node in nodes if not isinstance(node, Output)},
            chunkable=not program.metadata.get("mapping") and not any(isinstance(node, (Gate, HostOp))
                                                                      for _, node in nodes),
            targets=targets,
            exact32=_exact32(program) if precision == "float64" else frozenset(),
            mapped=bool(program.metadata.get("mapping")),
        )
    return memo["static"]


def _exact32(program: Program) -> frozenset[str]:
    """The projections whose every reader is a population with float32-exact input sums
    (:func:`spike.backends.exact_sums.float32_exact_inputs`)."""
    exact = {name for name, node in program.nodes() if isinstance(node, Population)
             and float32_exact_inputs(program, name)}
    return frozenset(name for name, node in program.nodes() if isinstance(node, Projection)
                     and program.graph.out_degree(name) and all(t in exact for t in program.graph.successors(name)))


def _gate_refs(program: Program, T: int) -> dict[str, GateRef]:
    """The gate of every node that needs one in a run of ``T`` steps: each gate node its own, each
    gated node (``Program.gated``) its gate's, with the gate's position among its sources."""
    refs = {name: gate_ref(program, name, T) for name, node in program.nodes() if isinstance(node, Gate)}
    for name, gate in gate_record(program).items():
        sources = program.sources(name)
        position = sources.index(gate) if gate in sources else -1
        refs[name] = gate_ref(program, gate, T, position)
    return refs


def signal_dtype(signal: str, given: np.ndarray | None, dtype: str, exact32: bool = False) -> str:
    """The dtype of a node's buffer in a run of ``dtype``, the node's output ``signal``
    (``output_signal``) and, for an Input, the array ``given``: ``dtype``, except in float64, where
    a spike signal (0/1: a spiking population, a generated source, max pooling or identity of
    spikes, an Input of spikes given in a dtype that float32 holds exactly) and the currents of a
    projection into populations whose input sums float32 holds exactly (``exact32``:
    :mod:`spike.backends.exact_sums`) keep float32 buffers: the same values in half the bytes its
    consumers read."""
    if dtype != "float64":
        return dtype
    if exact32:
        return "float32"
    if signal != "spike":
        return dtype
    if given is not None and not np.can_cast(given.dtype, np.float32, "safe"):
        return dtype  # e.g. an Input given in float64: its values are not scanned for this
    return "float32"


def _chunking(static: _Static, be: Backend, T: int, B: int, stepwise: bool,
              node_dtypes: dict[str, str]) -> tuple[int, int] | None:
    """``(D, C)``: the history and the chunk of a chunked run (module docstring, "Chunks"), or None
    when the program runs over all steps at once."""
    if not be.chunked or stepwise or not static.chunkable:
        return None
    D = static.max_delay
    budget = CYCLIC_CHUNK_BYTES if any(stage.cyclic for stage in static.schedule) else CHUNK_BYTES
    step_bytes = B * sum(n * np.dtype(node_dtypes[name]).itemsize for name, n in static.sizes.items())
    C = max(MIN_CHUNK_STEPS, budget // max(1, step_bytes))
    return (D, C) if D + C < T else None


def _run_kernels(program: Program, static: _Static, be: Backend, arrays: dict[str, np.ndarray], T: int, B: int,
                 dtype: str, stepwise: bool, progress: bool, sig_probes: set[str], mem_probes: set[str],
                 cur_probes: set[str], outputs: list[str], recorders: dict[str, Recorder]) -> RunResult:
    precision = static.precision
    node_dtypes = {name: signal_dtype(static.signals[name], arrays.get(name), dtype, name in static.exact32)
                   for name in static.signals}
    chunks = _chunking(static, be, T, B, stepwise, node_dtypes)
    D, C = chunks if chunks is not None else (0, T)
    rows = D + C  # steps per buffer (T when the run is not chunked)
    values: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    ctxs: dict[str, NodeContext] = {}
    variants = static.variants
    gates = _gate_refs(program, T) if static.gated else {}
    counts = OpCounts()
    t_start = time.perf_counter()
    calls: list[tuple[Any, NodeContext]] = []  # every node's (kernel, context), in schedule order
    stages: list[tuple[bool, list[tuple[Any, NodeContext]]]] = []
    # every buffer of a chunked run, whether a chunk must zero it and the history steps its readers look back on
    buffers: list[tuple[Any, bool, int]] = []
    listed = {_base(program, name) for name in recorders}  # a recorded Output: its source lists the spikes
    per_node = static.per_node(be)
    for (cyclic, stage_nodes), stage_plan in zip(static.staged, per_node):
        stage_ctx = []
        for (name, node), (cache, writes_all) in zip(stage_nodes, stage_plan):
            ndt = node_dtypes[name]
            counts.kinds[name] = node.KIND
            if isinstance(node, Input):
                if chunks is None:
                    values[name] = be.from_numpy(arrays[name].reshape(T, B, node.size).astype(ndt))
                else:
                    values[name] = be.zeros((rows, B, node.size), ndt)
                    buffers.append((values[name], False, static.lookback[name]))  # each chunk copies its steps in
                continue
            if isinstance(node, Output):
                (src,) = static.sources[name]
                values[name] = values[src]
                continue
            overwritten = chunks is None and writes_all  # its kernel writes every element: no zero-filling
            out = (be.empty if overwritten else be.zeros)((rows, B, node.size), ndt)
            values[name] = out
            node_counts = dict(zip(OP_KEYS, np.zeros((len(OP_KEYS), B), dtype=np.int64)))  # one allocation
            if not isinstance(node, Bernoulli):  # generated sources are not counted (as inputs)
                counts.per_node[name] = node_counts
            ctx = NodeContext(
                name=name,
                node=node,
                sources=[],  # filled below: sources on a cycle may be allocated later
                out=out,
                counts=node_counts,
                steps=T,
                batch=B,
                mem=be.zeros((rows, B, node.size), dtype) if name in mem_probes else None,
                cache=cache,
                precision=precision,
                mem_u=be.zeros((rows, B, node.size), dtype) if name in cur_probes else None,
                onset=static.onsets[name],
                gate=gates.get(name),
                program=program,
                values=values,
                shared=shared,
                spike_list=_spike_list(be, node, variants[name], name in listed, rows, B),
            )
            buffers.append((out, not writes_all, static.lookback[name]))
            buffers += [(a, True, 0) for a in (ctx.mem, ctx.mem_u) if a is not None]
            ctxs[name] = ctx
            stage_ctx.append((be.kernels[node.KIND, variants[name]], ctx))
        for _, ctx in stage_ctx:
            ctx.sources = [values[s] for s in static.sources[ctx.name]]
            ctx.source_signals = static.source_signals[ctx.name]
        calls += stage_ctx
        stages.append((cyclic, stage_ctx))

    marking = static.may_mark(be) if chunks is None else frozenset()
    if marking:  # silent rows (module docstring): not for a buffer the engine itself reads
        read_whole = {_base(program, n) for n in (*outputs, *sig_probes)}
        recorded = {_base(program, n) for n in recorders}
        read_whole |= {name for name in recorded if name not in ctxs or ctxs[name].spike_list is None}
        for name in marking - read_whole:
            ctxs[name].silent = be.zeros((rows, B), "uint8")
        for ctx in ctxs.values():
            ctx.source_silent = [ctxs[s].silent if s in ctxs else None for s in static.sources[ctx.name]]

    def shaped(name: str, arr: Any) -> np.ndarray:
        return np.asarray(be.to_numpy(arr)).reshape(T, B, *program.node(name).shape)

    # each recorder with its node's buffer and the context whose kernel lists its spikes (an Output's source)
    feeds = [(rec, values[name], ctxs.get(_base(program, name))) for name, rec in recorders.items()]

    if chunks is None:
        for cyclic, stage_calls in stages:
            if not stepwise:
                _run_stage(cyclic, stage_calls, 0, T)
        if stepwise:  # every node one step at a time, in schedule order
            from tqdm.auto import tqdm

            for t in tqdm(range(T), desc="steps", unit="step", disable=not progress, leave=False):
                for fn, ctx in calls:
                    fn(ctx, t, t + 1)
        for rec, value, lister in feeds:
            _record(rec, be, value, lister, 0, T, 0)
        dense = {name: values[name] for name in {*outputs, *sig_probes}}
        mems = {name: ctxs[name].mem for name in mem_probes}
        currents = {name: ctxs[name].mem_u for name in cur_probes}
    else:
        dense, mems, currents = _run_chunks(program, be, arrays, stages, ctxs, values, buffers, feeds, T, B, D, C,
                                            dtype, node_dtypes, {*outputs, *sig_probes}, mem_probes, cur_probes)
    elapsed = time.perf_counter() - t_start
    if program.metadata.get("mapping"):  # routing counts of a mapped program (design §7)

        add_routing_counts(program, lambda n: np.asarray(be.to_numpy(values[n])), counts)

    counts.steps = T
    result_outputs = {name: shaped(name, dense[name]) for name in outputs}
    probed = {name: shaped(name, dense[name]) for name in sig_probes}
    probed.update({f"{name}.v": shaped(name, mems[name]) for name in mem_probes})
    probed.update({f"{name}.u": shaped(name, currents[name]) for name in cur_probes})
    timing = {"run_s": elapsed, "steps": float(T), "ms_per_step": 1e3 * elapsed / max(T, 1)}
    if chunks is not None:
        timing["chunk_steps"] = float(C)
    return RunResult(outputs=result_outputs, probes=probed, ops=counts, timing=timing, backend=be.name)


def _spike_list(be: Backend, node: Node, variant: str, recorded: bool, rows: int, B: int) -> Any:
    """``NodeContext.spike_list`` for a node: arrays to list its spikes in, where it is recorded and
    its kernel lists them (``Backend.lists_spikes``), else None."""
    if not recorded or variant != PLAIN or node.KIND not in be.lists_spikes:
        return None
    index = (be.empty or be.zeros)((rows, B, node.size), "int32")  # only each step's first count[t, b] are read
    return index, be.zeros((rows, B), "int64")


def _base(program: Program, name: str) -> str:
    """The node whose buffer ``name`` shares: an Output's source (through Outputs), else ``name``."""
    while isinstance(program.node(name), Output):
        (name,) = program.sources(name)
    return name


def _record(rec: Recorder, be: Backend, value: Any, ctx: NodeContext | None, r0: int, r1: int, t0: int) -> None:
    """Feed ``rec`` rows ``r0 .. r1-1`` of a node's buffer (global steps from ``t0``): from the
    kernel's spike lists when it wrote them, else from its dense output."""
    if ctx is not None and ctx.spike_list is not None:
        index, count = ctx.spike_list
        rec.add_listed(be.to_numpy(index), be.to_numpy(count), r0, r1, t0)
    else:
        rec.add(np.asarray(be.to_numpy(value))[r0:r1], t0)


def _run_chunks(program: Program, be: Backend, arrays: dict[str, np.ndarray],
                stages: list[tuple[bool, list[tuple[Any, NodeContext]]]], ctxs: dict[str, NodeContext],
                values: dict[str, Any], buffers: list[tuple[Any, bool, int]],
                feeds: list[tuple[Recorder, Any, NodeContext | None]], T: int, B: int, D: int,
                C: int, dtype: str, node_dtypes: dict[str, str], kept: set[str], mem_probes: set[str],
                cur_probes: set[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A chunked run (module docstring, "Chunks"): the dense records ``[T, B, size]`` of the nodes in
    ``kept`` (an output's is its source's), of the membrane and current probes; the recorders of
    ``feeds`` (:func:`_run_kernels`'s) fed chunk by chunk."""

    full: dict[str, np.ndarray] = {}
    for name in {_base(program, n) for n in kept}:
        if isinstance(program.node(name), Input):
            full[name] = arrays[name].reshape(T, B, -1).astype(node_dtypes[name])  # the input itself
        else:
            full[name] = np.zeros((T, B, program.node(name).size), node_dtypes[name])
    mems = {name: np.zeros((T, B, program.node(name).size), dtype) for name in mem_probes}
    currents = {name: np.zeros((T, B, program.node(name).size), dtype) for name in cur_probes}
    onsets = {name: ctx.onset for name, ctx in ctxs.items()}
    inputs = [n for n, node in program.nodes() if isinstance(node, Input)]
    for g0 in range(0, T, C):
        c = min(C, T - g0)
        if g0:  # the last steps its readers look back on become the history, the rest starts at zero
            for buf, zero, keep in buffers:
                if keep:
                    buf[D - keep:D] = buf[C + D - keep:C + D]
                if zero:
                    buf[D:] = 0
        for name in inputs:
            values[name][D:D + c] = arrays[name][g0:g0 + c].reshape(c, B, -1)
        for name, ctx in ctxs.items():
            ctx.base = g0 - D
            ctx.onset = onsets[name] - ctx.base
        for cyclic, stage_calls in stages:
            _run_stage(cyclic, stage_calls, D, D + c)
        for name, arr in full.items():
            if not isinstance(program.node(name), Input):
                arr[g0:g0 + c] = be.to_numpy(values[name])[D:D + c]
        for name, arr in mems.items():
            arr[g0:g0 + c] = be.to_numpy(ctxs[name].mem)[D:D + c]
        for name, arr in currents.items():
            arr[g0:g0 + c] = be.to_numpy(ctxs[name].mem_u)[D:D + c]
        for rec, value, lister in feeds:
            _record(rec, be, value, lister, D, D + c, g0)
    for ctx in ctxs.values():
        ctx.base, ctx.onset = 0, onsets[ctx.name]
    return {n: full[_base(program, n)] for n in kept}, mems, currents
