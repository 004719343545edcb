"""Running a lowered program on Lava: build the graph, run every sample, read back, count.

:func:`execute` builds the process graph (``build``), adds what records the result (every
population, the sources of projections, host ops and gates, outputs, probes: a
``lava.proc.io.sink.RingBuffer`` each, ``.v``/``.u`` probes and ``li`` readouts a ``Monitor``;
host ops and fused blocks record themselves), runs it for ``T`` steps per sample under
``Loihi2SimCfg(select_tag="fixed_pt")`` (bit-accurate Loihi, programs of precision "fixed") or
``"floating_pt"`` (float32 programs), then stops it, also when the run fails. The result is the
same ``RunResult`` as numba's: outputs and probes ``[T, B, *shape]`` (int32 in fixed point,
float32 otherwise) and the same operation counts, derived from the recorded spike trains and the
weights (``op_counting``).

A program with a latency (``Program.latency``) arrives padded with zero steps and its outputs are
realigned by the engine (``engine.padded_inputs``, ``engine.aligned``); the backend runs all
``T + latency`` steps and counts them. Each run of ``T`` steps is split at the steps where some
LIF's bias starts (``LavaPlan.bias_steps``; ``plan`` docstring, "Biases"), gated programs run
each sample in stages (``gates``). ``timing["processes"]`` of the result counts the Lava
processes built (sinks, monitors included).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from spike.backends.lava.build import LavaGraph
from spike.backends.lava.gates import GateStages
from spike.backends.registry import BackendError
from spike.backends.result import RunResult
from spike.compiler.ir.nodes import Gate, HostOp, Input, Output, Population, Projection
from spike.semantics import LOIHI

__all__ = ["execute"]

_TAGS = {"fixed": "fixed_pt", "float32": "floating_pt"}


def execute(program, plan, arrays, T, B, sig_probes, mem_probes, cur_probes, count_ops) -> RunResult:
    """Run ``plan`` (the program's ``LavaPlan``) on Lava for ``arrays`` (``[T, B, ...]`` per input):
    the outputs, the signal, ``.v`` and ``.u`` probes, the counts (``count_ops``) and the timing."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.monitor.process import Monitor

    fixed = plan.precision == "fixed"
    out_dtype = np.int32 if fixed else np.float32
    reps = plan.stages  # runs per sample (gates: one per level of masks, then the final run)
    lanes, passes = (B, 1) if plan.batched else (1, B)  # host mode: the batch side by side, one pass
    span = T * passes * reps

    def resolve(name: str) -> str:  # Output nodes read their source
        while isinstance(program.node(name), Output):
            (name,) = program.sources(name)
        return name

    # what to record: every population (counts), projection and gate sources, outputs, probes
    need: set[str] = set()
    for name, node in program.nodes():
        if isinstance(node, Population):
            need.add(name)
        elif isinstance(node, (Projection, Gate, HostOp)):
            need.update(program.sources(name))
    need.update(resolve(o) for o in program.outputs)
    need.update(resolve(p) for p in sig_probes)
    need = {n for n in need if not isinstance(program.node(n), Input) and n not in arrays}  # sources: given

    t_build = time.perf_counter()
    g = LavaGraph(program, plan, arrays, T, B, reps, record=frozenset(need), record_v=frozenset(mem_probes))
    sinks: dict[str, Any] = {}
    monitors: dict[tuple[str, str], Any] = {}
    for name in sorted(need):
        node = program.node(name)
        if isinstance(node, (HostOp, Gate)) or name in plan.fused:
            continue  # records itself / its mask is read after each run / its fused block records it
        proc = g.procs[plan.output_proc[name]]
        if isinstance(node, Population) and node.model == "li":
            monitors[(name, "v")] = None
            if fixed:  # Lava's li is a LIF at the largest threshold: it must never fire
                sinks[f"{name}/guard"] = (proc.s_out, node.size)
        else:
            sinks[name] = (g._port(name, "flat", None), node.size)
    for name in mem_probes:
        if name not in plan.fused:
            monitors[(name, "v")] = None
    for name in cur_probes:
        monitors[(name, "u")] = None
    sink_procs = {}
    for key, (port, n) in sinks.items():
        s = Sink(shape=(n * lanes,), buffer=span)
        port.connect(s.a_in)
        sink_procs[key] = s
    for (name, var) in list(monitors):
        m = Monitor()
        m.probe(getattr(g.procs[plan.output_proc[name]], var), span)
        monitors[(name, var)] = m

    masks = {gate: np.ones((B, program.node(gate).shape[0]), bool) for gate in plan.gate_level}
    gates = GateStages(plan, g, masks)
    cuts = plan.bias_steps(T)  # a run of T steps is split where a LIF's bias starts (``plan`` docstring, "Biases")
    segments = list(zip([0] + cuts, cuts + [T]))
    anchor = next(iter(g.procs.values()))
    cfg = Loihi2SimCfg(select_tag=_TAGS[plan.precision], exception_proc_model_map=dict(g.model_map))
    run_s = final_s = 0.0
    try:
        anchor.create_runtime(run_cfg=cfg)
        build_s = time.perf_counter() - t_build
        for b in range(passes):
            for stage in range(reps):
                if b or stage:
                    for proc, var, value in g.resets:
                        getattr(proc, var).set(np.zeros(getattr(proc, var).shape) + value)
                t0 = time.perf_counter()
                gates.apply(b, stage)
                final = 0.0
                for lo, hi in segments:
                    t1 = time.perf_counter()
                    gates.apply_biases(b, stage, lo)
                    anchor.run(condition=RunSteps(num_steps=hi - lo))
                    final += time.perf_counter() - t1
                gates.read(b, stage)
                run_s += time.perf_counter() - t0
                if stage == reps - 1:
                    final_s += final
        recorded: dict[str, np.ndarray] = {}
        fused_v: dict[str, np.ndarray] = {}
        for key, s in sink_procs.items():
            recorded[key] = np.asarray(s.data.get())  # [n, B*reps*T]
        for key, p in plan.procs.items():
            if p.kind == "host":
                recorded[key] = np.asarray(g.procs[key].data.get())
            elif p.kind == "fused" and g.records[key]:
                data, row = np.asarray(g.procs[key].data.get()), 0
                for name, what, rows in g.records[key]:
                    if what == "out":
                        recorded[name] = data[row:row + rows]
                    else:
                        fused_v[name] = data[row:row + rows]
                    row += rows
        mem: dict[tuple[str, str], np.ndarray] = {}
        for (name, var), m in monitors.items():
            data = m.get_data()
            target = getattr(g.procs[plan.output_proc[name]], var)
            mem[(name, var)] = np.asarray(data[target.process.name][target.name])  # [B*reps*T, n]
    finally:
        try:
            anchor.stop()
        except Exception:  # noqa: BLE001 - never hide the run's own error behind a failed stop
            pass

    def from_ring(a: np.ndarray) -> np.ndarray:  # [lanes*n, passes*reps*T] -> [T, B, n], each sample's final run
        a = a.reshape(lanes, a.shape[0] // lanes, passes, reps, T)[:, :, :, -1]  # [lanes, n, passes, T]
        return a.transpose(3, 2, 0, 1).reshape(T, B, -1)

    values: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        values[name] = np.asarray(arr).reshape(T, B, -1)
    membranes = {(name, "v"): from_ring(a) for name, a in fused_v.items()}  # fused populations
    for key, a in recorded.items():
        if key.endswith("/guard"):
            if np.any(a):
                name = key[: -len("/guard")]
                raise BackendError(
                    f"li population {name!r} reached v > {LOIHI.VTH_MAX << LOIHI.VTH_SHIFT} on Lava, where a readout is a "
                    "LIF at the largest threshold and resets; numba's li does not (lower the readout's input scale)")
            continue
        v = from_ring(a)
        fix = plan.recorded.get(key)
        values[key] = (fix(v) if fix is not None else v)
    for conv, gate in plan.gated_convs.items():  # masked channels deliver 0 (no bias), as numba
        if conv in values:
            keep = np.repeat(masks[gate], program.node(conv).size // masks[gate].shape[1], axis=1)
            values[conv] = np.where(keep[None], values[conv], 0)
    for gate, keep in masks.items():  # a gate's output: its mask at every step
        values[gate] = np.broadcast_to(keep[None].astype(np.float32), (T, *keep.shape))
    for (name, var), a in mem.items():  # [passes*reps*T, lanes*n]
        a = a.reshape(passes, reps, T, lanes, -1)[:, -1]  # [passes, T, lanes, n]
        membranes[(name, var)] = a.transpose(1, 0, 2, 3).reshape(T, B, -1)
        node = program.node(name)
        if var == "v" and node.model == "li":
            values[name] = membranes[(name, var)]
    for name in mem_probes:  # a fused li's membrane is its output
        if name in plan.fused and (name, "v") not in membranes:
            membranes[(name, "v")] = values[name]

    def get(name: str) -> np.ndarray:
        name = resolve(name)
        if name not in values:
            raise BackendError(f"internal: the lava backend recorded no output for node {name!r}")
        return values[name]

    counts = count_ops(program, get, T, B, masks=masks) if masks else count_ops(program, get, T, B)
    if program.metadata.get("mapping"):
        from spike.backends.routing import add_routing_counts

        add_routing_counts(program, get, counts)

    def shaped(name: str, arr: np.ndarray) -> np.ndarray:
        return np.asarray(arr).astype(out_dtype).reshape(T, B, *program.node(name).shape)

    outputs = {name: shaped(name, get(name)) for name in program.outputs}
    probed = {name: shaped(name, get(name)) for name in sig_probes}
    probed.update({f"{n}.v": shaped(n, membranes[(n, "v")]) for n in mem_probes})
    probed.update({f"{n}.u": shaped(n, membranes[(n, "u")]) for n in cur_probes})
    timing = {"run_s": run_s, "steps": float(T), "ms_per_step": 1e3 * run_s / max(T, 1), "build_s": build_s,
              "stages": float(reps), "final_stage_run_s": final_s,
              "processes": float(len(g.procs) + len(sink_procs) + len(monitors))}
    return RunResult(outputs=outputs, probes=probed, ops=counts, timing=timing, backend="lava")
