"""Host ops on the lava backend (host mode, ``lava.fusion`` docstring): a 2-layer
SpikeGPT runs on Lava as a handful of fused Python processes and equals the numba backend bit for
bit (logits, spikes of every spiking layer, a membrane, every operation count); a stepwise program
mixing Lava's own synapses and LIFs with fused host ops and neurons does too. Without Lava: the
plan (which nodes fuse into which process, the process count, no cycle between processes), the
blocks' arithmetic replayed in Python against numba, and what still follows the old rules."""
from __future__ import annotations

import multiprocessing
import time

import networkx as nx
import numpy as np
import pytest
import torch

from spike.backends import BackendError, run
from spike.backends.lava.backend import lower
from spike.backends.lava.fusion import BlockStep, host_mode
from spike.models.spikegpt.lowering import lower_spikegpt
from spike.compiler.ir.nodes import Conv2d, Dense, HostOp, Identity, Input, Output, Population, Sparse
from spike.compiler.ir.program import ProgramBuilder
from spike.compiler.ir.validate import validate_program
from spike.models.spikegpt.model import build_spikegpt

from helpers.lava import needs_lava

V, C, LAYERS = 11, 12, 2


def _model(n_layer: int = LAYERS):
    torch.manual_seed(0)
    m = build_spikegpt("tiny", vocab_size=V, n_layer=n_layer, n_embd=C, spiking=True).eval()
    with torch.no_grad():  # random weights rarely reach the threshold: scale the LIF inputs up
        for blk in m.blocks:
            blk.att.output.weight.mul_(20)
            blk.ffn.value.weight.mul_(40)
    return m


def _tokens(T: int, B: int, seed: int = 1) -> np.ndarray:
    ids = np.random.default_rng(seed).integers(0, V, (T, B))
    x = np.zeros((T, B, V), np.float32)
    x[np.arange(T)[:, None], np.arange(B)[None], ids] = 1
    return x


def _spiking_layers(program) -> list[str]:
    layers = program.metadata["layers"]
    return [layers["emb"], *layers["sn1"], *layers["sn2"]]


def _dy(rng, shape, s=96):
    return (rng.integers(-s, s, shape) / 64).astype(np.float32)


def mixed_program(seed: int = 0):
    """Stepwise: in -> dense (delay 1) -> pA (a Lava LIF, gain folded) -> dense (delay 1, bias) ->
    pB (fire_ge: fused) -> dense (delay 0) -> pC (cuba, subtract, reset_delay: fused with that
    dense); pA -> matmul -> sigmoid; add(sigmoid, pC) -> li readout."""
    rng = np.random.default_rng(seed)
    n = 8

    def pop(**kw):
        beta = kw.pop("beta", 0.5)
        return Population(shape=(n,), beta=np.full(n, beta, np.float32),
                          threshold=np.full(n, kw.pop("thr", 0.5), np.float32), **kw)

    b = ProgramBuilder()
    b.add("in", Input(shape=(6,), signal="spike"))
    b.add("fc1", Dense(shape=(n,), in_shape=(6,), weight=_dy(rng, (n, 6)), delay=1), "in")
    b.add("pA", pop(model="lif", thr=0.75, gain=0.5, reset="zero", reset_delay=False), "fc1")
    b.add("fc2", Dense(shape=(n,), in_shape=(n,), weight=_dy(rng, (n, n)), bias=_dy(rng, n, 16), delay=1), "pA")
    b.add("pB", pop(model="lif", gain=0.5, reset="zero", reset_delay=False, fire_ge=True), "fc2")
    b.add("mm", HostOp(shape=(n,), op="matmul", weight=rng.normal(0, 1, (n, n)).astype(np.float32),
                       bias=rng.normal(0, 1, n).astype(np.float32)), "pA")
    b.add("sig", HostOp(shape=(n,), op="sigmoid"), "mm")
    b.add("fc3", Dense(shape=(n,), in_shape=(n,), weight=_dy(rng, (n, n)), delay=0), "pB")
    b.add("pC", pop(model="cuba_lif", beta=0.75, alpha=np.full(n, 0.5, np.float32), reset="subtract",
                    reset_delay=True), "fc3")
    b.add("add", HostOp(shape=(n,), op="add"), ["sig", "pC"])
    b.add("ro", Population(shape=(n,), model="li", beta=np.full(n, 0.5, np.float32)), "add")
    b.add("out", Output(shape=(n,)), "ro")
    program = b.build({"precision": "float32", "stepwise": True})
    validate_program(program)
    return program


def _process_graph(program, plan) -> nx.DiGraph:
    """Process -> process edges of the plan, without those leaving a Lava synapse (delay 1: it
    sends before it receives, so it cannot take part in a deadlock)."""
    g = nx.DiGraph()
    for key, p in plan.procs.items():
        g.add_node(key)
        if p.kind in ("dense", "sparse"):
            continue
        for src in p.inputs:
            g.add_edge(plan.output_proc.get(src, src), key)
    for key, p in plan.procs.items():
        if p.kind in ("dense", "sparse"):
            g.remove_edges_from(list(g.out_edges(key)))
            for src in p.inputs:
                g.add_edge(plan.output_proc.get(src, src), key)
    return g


def _replay(program, plan, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run a plan made of one source and fused blocks in Python, each block's ``BlockStep`` (what
    its Lava process runs) once per step when its inputs of that step are there (zero delay):
    every member's values ``[T, B, size]``."""
    assert {p.kind for p in plan.procs.values()} == {"source", "fused"}
    (name,) = program.inputs
    T, B = x.shape[:2]
    blocks = {k: BlockStep(p.args["spec"], B, T) for k, p in plan.procs.items() if p.kind == "fused"}
    rec: dict[str, list[np.ndarray]] = {}
    for t in range(T):
        vals = {name: x[t].reshape(B, -1)}
        pending = list(blocks)
        while pending:
            key = next(k for k in pending if all(s in vals for s in blocks[k].spec.inputs))
            spec = blocks[key].spec
            for m, v in zip(spec.members, blocks[key].step([vals[s] for s in spec.inputs])):
                vals[m.name] = v
                rec.setdefault(m.name, []).append(v)
            pending.remove(key)
    return {k: np.stack(v) for k, v in rec.items()}


def _assert_same(ref, res, probes) -> None:
    for name in ref.outputs:
        assert np.array_equal(ref.outputs[name], res.outputs[name]), name
    for p in probes:
        assert np.array_equal(ref.probes[p], res.probes[p]), p
    assert list(ref.ops.per_node) == list(res.ops.per_node)
    for name, counts in ref.ops.per_node.items():
        for key, value in counts.items():
            assert np.array_equal(value, res.ops.per_node[name][key]), (name, key)


# ---------------------------------------------------------------- without Lava
@pytest.mark.parametrize("layers", [2, 3])
def test_spikegpt_plan_fuses_host_ops_per_block_half(layers: int) -> None:
    program = lower_spikegpt(_model(layers))
    assert host_mode(program)
    plan = lower(program)
    assert plan.batched and plan.stages == 1
    kinds = [p.kind for p in plan.procs.values()]
    assert kinds.count("source") == 1 and set(kinds) == {"source", "fused"}
    roles = sorted(p.args["spec"].role for p in plan.procs.values() if p.kind == "fused")
    assert roles == ["host"] * (2 * layers + 1) + ["neurons"] * (2 * layers + 1)
    assert len(plan.procs) == 4 * layers + 3  # 11 for two layers, and no sinks (blocks record)
    # every host op and population in exactly one block; a neuron block = one population (+ emb)
    members = [m.name for p in plan.procs.values() if p.kind == "fused" for m in p.args["spec"].members]
    fused = [n for n, node in program.nodes() if isinstance(node, (HostOp, Population))] + ["emb"]
    assert sorted(members) == sorted(fused)
    neuron_blocks = {k: [m.name for m in p.args["spec"].members] for k, p in plan.procs.items()
                     if p.kind == "fused" and p.args["spec"].role == "neurons"}
    assert neuron_blocks["emb_spike"] == ["emb", "emb_spike"]
    assert all(v == [k] for k, v in neuron_blocks.items() if k != "emb_spike")
    first = [k for k, p in plan.procs.items() if p.kind == "fused" and p.args["spec"].role == "host"]
    assert first == ["host:ln0"] + [f"host:blocks.{i}.add{j}" for i in range(layers) for j in (1, 2)]
    assert nx.is_directed_acyclic_graph(_process_graph(program, plan))


def test_spikegpt_blocks_replayed_in_python_equal_numba() -> None:
    """The plan's blocks stepped in Python (``BlockStep``, what each Lava process runs) give numba's
    logits and spikes exactly: the lowering and the arithmetic, checked without starting Lava."""
    program = lower_spikegpt(_model())
    T, B = 6, 2
    x = _tokens(T, B)
    ref = run(program, x, backend="numba", probes=_spiking_layers(program))
    got = _replay(program, lower(program), x)
    assert np.array_equal(got["head"], ref.outputs["logits"])
    for name in _spiking_layers(program):
        assert np.array_equal(got[name], ref.probes[name]), name


def test_zero_delay_synapses_replayed_in_python_equal_numba() -> None:
    """Dense (bias), sparse (repeated targets) and identity projections of delay 0 on real inputs,
    into populations of every reset kind: numba's float32 sums in numba's order."""
    rng = np.random.default_rng(3)
    n_in, n = 9, 7
    indptr = np.concatenate([[0], np.cumsum(rng.integers(0, 4, n_in))])
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,), signal="real"))
    b.add("dn", Dense(shape=(n,), in_shape=(n_in,), weight=rng.normal(0, 1, (n, n_in)).astype(np.float32),
                      bias=rng.normal(0, 1, n).astype(np.float32)), "in")
    b.add("sp", Sparse(shape=(n,), in_shape=(n_in,), indptr=indptr, indices=rng.integers(0, n, indptr[-1]),
                       data=rng.normal(0, 1, indptr[-1]).astype(np.float32)), "in")
    b.add("id", Identity(shape=(n_in,), in_shape=(n_in,), scale=0.3), "in")
    beta = rng.uniform(0.3, 0.9, n).astype(np.float32)
    for i, (reset, delay, ge) in enumerate([("subtract", True, False), ("zero", False, True), ("none", False, False)]):
        b.add(f"p{i}", Population(shape=(n,), model="lif", beta=beta, threshold=np.full(n, 0.7, np.float32),
                                  gain=0.9, reset=reset, reset_delay=delay, fire_ge=ge), ["dn", "sp"])
    b.add("q", Population(shape=(n_in,), model="if", threshold=np.full(n_in, 1.1, np.float32), reset="zero",
                          reset_delay=False), "id")
    b.add("mul", HostOp(shape=(n,), op="mul"), ["p0", "p1"])
    b.add("out", Output(shape=(n,)), "mul")
    b.add("out_q", Output(shape=(n_in,)), "q")
    program = b.build({"precision": "float32", "stepwise": True})
    validate_program(program)
    x = rng.normal(0.3, 1, (10, 3, n_in)).astype(np.float32)
    names = ["dn", "sp", "id", "p0", "p1", "p2", "q", "mul"]
    ref = run(program, x, backend="numba", probes=names + ["p0.v", "p2.v"])
    got = _replay(program, lower(program), x)
    for name in names:
        assert np.array_equal(got[name], ref.probes[name]), name
    for name in ("p0", "p1", "p2", "q"):
        assert 0 < ref.probes[name].mean() < 1, name


def test_mixed_plan_keeps_lava_synapses_and_lifs() -> None:
    plan = lower(mixed_program())
    kinds = {k: p.kind for k, p in plan.procs.items()}
    assert kinds == {"in": "source", "fc1": "dense", "pA": "lif", "fc2": "dense", "pB": "fused",
                     "host:mm": "fused", "pC": "fused", "ro": "fused"}
    assert [m.name for m in plan.procs["pC"].args["spec"].members] == ["fc3", "pC"]
    assert [m.name for m in plan.procs["host:mm"].args["spec"].members] == ["mm", "sig", "add"]
    assert np.allclose(plan.procs["fc1"].args["weights"], mixed_program().node("fc1").weight * 0.5)  # gain folded
    assert plan.procs["fc2"].args["weights"].max() <= 1.5 and "fc2" in plan.synapse_bias  # gain 1, bias in pB


def test_ordinary_programs_follow_the_old_rules() -> None:
    """Not stepwise, no host op but add: no host mode, the delay-1 rule and Lava's LIF as before;
    in host mode, what Lava's Conv cannot batch is refused by name."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("fc", Dense(shape=(3,), in_shape=(4,), weight=np.ones((3, 4), np.float32)), "in")
    b.add("p", Population(shape=(3,), model="lif", beta=np.full(3, 0.5, np.float32), reset="zero",
                          reset_delay=False, fire_ge=True), "fc")
    b.add("out", Output(shape=(3,)), "p")
    plain = b.build({"precision": "float32"})
    assert not host_mode(plain)
    with pytest.raises(BackendError) as e:
        lower(plain)
    assert "fc (dense): delay 0" in str(e.value) and "p (population): fire_ge True" in str(e.value)
    stepwise = plain.with_graph(plain.graph.copy(), metadata={**plain.metadata, "stepwise": True})
    plan = lower(stepwise)  # host mode: the delay-0 dense and the fire_ge LIF run in one neuron block
    assert [p.kind for p in plan.procs.values()] == ["source", "fused"]
    fixed = plain.with_graph(plain.graph.copy(), metadata={**plain.metadata, "stepwise": True, "precision": "fixed"})
    assert not host_mode(fixed)  # host mode is float32 only

    b = ProgramBuilder()
    b.add("in", Input(shape=(1, 4, 4)))
    b.add("conv", Conv2d(shape=(2, 4, 4), in_shape=(1, 4, 4), weight=np.ones((2, 1, 1, 1), np.float32),
                         padding=(0, 0), delay=1), "in")
    b.add("sig", HostOp(shape=(2, 4, 4), op="sigmoid"), "conv")
    b.add("out", Output(shape=(2, 4, 4)), "sig")
    with pytest.raises(BackendError, match=r"conv \(conv2d\): not supported in a program with host ops"):
        lower(b.build({"precision": "float32"}))


# ---------------------------------------------------------------- on Lava
@pytest.mark.lava
@needs_lava
def test_spikegpt_on_lava_equals_numba() -> None:
    program = lower_spikegpt(_model())
    T, B = 8, 2
    x = _tokens(T, B)
    probes = _spiking_layers(program) + ["blocks.1.sn2.v", "blocks.0.att.wkv"]
    t0 = time.perf_counter()
    ref = run(program, x, backend="numba", probes=probes)
    t1 = time.perf_counter()
    res = run(program, x, backend="lava", probes=probes)
    t2 = time.perf_counter()
    print(f"\nSpikeGPT L={LAYERS} C={C} V={V} T={T} B={B}: numba {t1 - t0:.3f} s, lava {t2 - t1:.3f} s "
          f"(build {res.timing['build_s']:.2f} s, run {res.timing['run_s']:.2f} s), "
          f"{res.timing['processes']:.0f} Lava processes")
    for name in _spiking_layers(program):  # every spiking layer fires, and not always
        assert 0 < ref.probes[name].mean() < 1, name
    _assert_same(ref, res, probes)
    assert res.timing["processes"] == 4 * LAYERS + 3  # source + 5 neuron blocks + 5 host blocks
    assert multiprocessing.active_children() == []


@pytest.mark.lava
@needs_lava
def test_mixed_stepwise_program_on_lava_equals_numba() -> None:
    program = mixed_program()
    T, B = 12, 3
    x = (np.random.default_rng(5).random((T, B, 6)) < 0.5).astype(np.float32)
    probes = ["pA", "pB", "pC", "mm", "sig", "add", "fc2", "pA.v", "pB.v", "pC.v", "ro.v"]
    ref = run(program, x, backend="numba", probes=probes)
    res = run(program, x, backend="lava", probes=probes)
    for name in ("pA", "pB", "pC"):
        assert 0 < ref.probes[name].mean() < 1, name
    _assert_same(ref, res, probes)
