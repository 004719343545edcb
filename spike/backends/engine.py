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
"""
from __future__ import annotations

import contextlib
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from spike.backends.gate_common import GateRef, gate_ref
from spike.backends.registry import OP_KEYS, Backend, BackendError, get_backend, node_variants
from spike.backends.result import OpCounts, RunResult
from spike.compiler.ir.nodes import Gate, Input, Node, Output, Population
from spike.compiler.ir.program import Program
from spike.compiler.ir.signals import output_signal
from spike.compiler.passes.gates import gate_record
from spike.compiler.ir.precision import program_precision
from spike.backends.routing import add_routing_counts

_CACHES: "weakref.WeakKeyDictionary[Node, dict[str, dict]]" = weakref.WeakKeyDictionary()


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
    onset: int = 0  # first step of the node's bias (Program.onset): projections, fixed-point populations
    # The FTWT gate of a gate node, or the gate whose mask applies to a gated population or a
    # projection into one (its "gated" kernel); None elsewhere.
    gate: GateRef | None = None
    # The whole run: the program, every node's output array by name (read-only; sources are
    # complete when a node runs: a gate's mask reads its source's), and a dict shared by all
    # kernels of this run (e.g. a gate's mask, computed once).
    program: Any = None
    values: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    def recurrent_sources(self) -> tuple[int, ...]:
        """Positions (ascending), among the node's sources, of the projections that read the node
        itself: a ``late_recurrent`` population's recurrent inputs (found once per run)."""
        if "recurrent_sources" not in self.state:
            srcs = self.program.sources(self.name)
            self.state["recurrent_sources"] = tuple(
                i for i, s in enumerate(srcs) if self.name in self.program.sources(s))
        return self.state["recurrent_sources"]


def _as_inputs(program: Program, inputs: Any) -> dict[str, np.ndarray]:
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
    return out


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


def _run_stage(cyclic: bool, calls: list[tuple[Any, NodeContext]], T: int) -> None:
    if not cyclic:
        for fn, ctx in calls:
            fn(ctx, 0, T)
    else:
        for t in range(T):
            for fn, ctx in calls:
                fn(ctx, t, t + 1)


def run(
    program: Program,
    inputs: Any,
    backend: str | Backend = "numba",
    probes: Iterable[str] = (),
    stepwise: bool | None = None,
    progress: bool = False,
) -> RunResult:
    """Execute ``program`` on ``inputs`` (``[T, B, *shape]`` array, or dict by input name).

    ``stepwise`` runs every node one step at a time (token by token), as a streaming device
    would; by default a node runs all its steps in one call unless it lies on a cycle, or the
    program asks for steps (``metadata["stepwise"]``, set for SpikeGPT, whose real-valued matmuls
    then see the shapes of token-by-token inference and round alike). ``progress`` shows a bar
    over the steps of a stepwise run.
    """
    if stepwise is None:
        stepwise = bool(program.metadata.get("stepwise", False))
    if stepwise:
        gates = [n for n, node in program.nodes() if isinstance(node, Gate)]
        if gates:
            raise BackendError(f"gate(s) {gates}: an FTWT mask needs its source's whole run before the first "
                               "step (it is not causal), so the program cannot run step by step")
    be = get_backend(backend) if isinstance(backend, str) else backend
    be.check(program)
    arrays = _as_inputs(program, inputs)
    T_in = next(iter(arrays.values())).shape[0]
    arrays = padded_inputs(program, arrays)
    T, B = next(iter(arrays.values())).shape[:2]
    sig_probes, mem_probes, cur_probes = _parse_probes(program, probes)
    precision = program_precision(program)
    dtype = "int32" if precision == "fixed" else "float32"
    if precision == "fixed":
        for name, arr in arrays.items():
            if not np.isin(arr, (0, 1)).all():
                raise ValueError(f"input {name!r}: a fixed-point program takes spikes (0/1) only; encode real values first")
    if be.runner is not None:  # the backend runs the whole program itself (same RunResult)
        return aligned(program, be.runner(program, arrays, sig_probes, mem_probes, cur_probes), T_in)

    with be.run_context(B) if be.run_context is not None else contextlib.nullcontext():
        return aligned(program, _run_kernels(program, be, arrays, T, B, dtype, precision, stepwise, progress,
                                             sig_probes, mem_probes, cur_probes), T_in)


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


def _gate_refs(program: Program, T: int) -> dict[str, GateRef]:
    """The gate of every node that needs one in a run of ``T`` steps: each gate node its own, each
    gated node (``Program.gated``) its gate's, with the gate's position among its sources."""
    refs = {name: gate_ref(program, name, T) for name, node in program.nodes() if isinstance(node, Gate)}
    for name, gate in gate_record(program).items():
        sources = program.sources(name)
        position = sources.index(gate) if gate in sources else -1
        refs[name] = gate_ref(program, gate, T, position)
    return refs


def _run_kernels(program: Program, be: Backend, arrays: dict[str, np.ndarray], T: int, B: int, dtype: str,
                 precision: str, stepwise: bool, progress: bool, sig_probes: set[str], mem_probes: set[str],
                 cur_probes: set[str]) -> RunResult:
    values: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    ctxs: dict[str, NodeContext] = {}
    variants = node_variants(program)
    gates = _gate_refs(program, T)
    counts = OpCounts()
    t_start = time.perf_counter()
    calls: list[tuple[Any, NodeContext]] = []  # every node's (kernel, context), in schedule order
    for stage in program.schedule():
        stage_ctx = []
        for name in stage.nodes:
            node = program.node(name)
            counts.kinds[name] = node.KIND
            if isinstance(node, Input):
                values[name] = be.from_numpy(arrays[name].reshape(T, B, node.size).astype(dtype))
                continue
            if isinstance(node, Output):
                (src,) = program.sources(name)
                values[name] = values[src]
                continue
            out = be.zeros((T, B, node.size), dtype)
            values[name] = out
            node_counts = {k: np.zeros(B, dtype=np.int64) for k in OP_KEYS}
            counts.per_node[name] = node_counts
            cache = _CACHES.setdefault(node, {}).setdefault(be.name, {})
            ctx = NodeContext(
                name=name,
                node=node,
                sources=[],  # filled below: sources on a cycle may be allocated later
                out=out,
                counts=node_counts,
                steps=T,
                batch=B,
                mem=be.zeros((T, B, node.size), dtype) if name in mem_probes else None,
                cache=cache,
                precision=precision,
                mem_u=be.zeros((T, B, node.size), dtype) if name in cur_probes else None,
                onset=program.onset(name),
                gate=gates.get(name),
                program=program,
                values=values,
                shared=shared,
            )
            ctxs[name] = ctx
            stage_ctx.append(ctx)
        for ctx in stage_ctx:
            ctx.sources = [values[s] for s in program.sources(ctx.name)]
            ctx.source_signals = [output_signal(program, s) for s in program.sources(ctx.name)]
        stage_calls = [(be.kernels[c.node.KIND, variants[c.name]], c) for c in stage_ctx]
        calls += stage_calls
        if not stepwise:
            _run_stage(stage.cyclic, stage_calls, T)
    if stepwise:  # every node one step at a time, in schedule order
        from tqdm.auto import tqdm

        for t in tqdm(range(T), desc="steps", unit="step", disable=not progress, leave=False):
            for fn, ctx in calls:
                fn(ctx, t, t + 1)
    elapsed = time.perf_counter() - t_start
    if program.metadata.get("mapping"):  # routing counts of a mapped program (design §7)

        add_routing_counts(program, lambda n: np.asarray(be.to_numpy(values[n])), counts)

    def shaped(name: str, arr: Any) -> np.ndarray:
        return np.asarray(be.to_numpy(arr)).reshape(T, B, *program.node(name).shape)

    outputs = {name: shaped(name, values[name]) for name in program.outputs}
    probed = {name: shaped(name, values[name]) for name in sig_probes}
    probed.update({f"{name}.v": shaped(name, ctxs[name].mem) for name in mem_probes})
    probed.update({f"{name}.u": shaped(name, ctxs[name].mem_u) for name in cur_probes})
    timing = {"run_s": elapsed, "steps": float(T), "ms_per_step": 1e3 * elapsed / max(T, 1)}
    return RunResult(outputs=outputs, probes=probed, ops=counts, timing=timing, backend=be.name)
