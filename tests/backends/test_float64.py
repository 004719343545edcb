"""Float64 programs (``compile(precision="float64")``, ``passes.float_precision``) on the numba
backend: the update of ``spike.semantics`` in double, as NEST and Brian2 compute.

Oracles: a naive float64 loop of the same update (and a float32 one, which the float32 run must
equal: the two precisions part where float32 rounds); dyadic programs, whose every sum is exact,
give the float32 results; the other backends refuse float64 before a run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from helpers import programs as H
from spike.backends import run
from spike.backends.exact_sums import float32_exact_inputs, quantum
from spike.backends.registry import BackendError
from spike.compiler import compile as compile_model
from spike.compiler.io.hdf5 import load_program, save_program
from spike.compiler.ir.nodes import Dense, HostOp, Input, Output, Population, Sparse
from spike.compiler.ir.precision import program_precision
from spike.compiler.ir.program import Program, ProgramBuilder, ProgramError, rebuild_graph
from spike.compiler.ir.signals import output_signal
from spike.compiler.passes import float_precision
from spike.models.random_net import Network, fixed_fan_in, fixed_fan_out, synapses

BETA = 0.9  # not dyadic: beta * v rounds differently in float32 and float64
SIZES = (30, 24, 8)


def lif(n: int) -> Population:
    """NEST's iaf_psc_delta as in benchmarks/vs_simulators.py: ``v = beta*v + I``, spike on
    ``v >= 1``, then ``v = 0``."""
    return Population(shape=(n,), model="lif", beta=np.full(n, BETA, np.float32), threshold=np.ones(n, np.float32),
                      reset="zero", reset_delay=False, fire_ge=True)


def two_layers(rng: np.random.Generator, wdtype: type):
    """Input -> Sparse (CSR) -> LIF -> Dense -> LIF, arbitrary weights of dtype ``wdtype`` (float64:
    most are no float32 value)."""
    n_in, n_hid, n_out = SIZES
    w1 = (rng.standard_normal((n_hid, n_in)) * 0.45).astype(wdtype)
    w2 = (rng.standard_normal((n_out, n_hid)) * 0.6).astype(wdtype)
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    w1[rng.random(w1.shape) < 0.5] = 0
    b.add("fc1", Sparse(shape=(n_hid,), in_shape=(n_in,), **H.csr(w1, wdtype)), "in")
    b.add("p1", lif(n_hid), "fc1")
    b.add("fc2", Dense(shape=(n_out,), in_shape=(n_hid,), weight=w2), "p1")
    b.add("p2", lif(n_out), "fc2")
    b.add("out", Output(shape=(n_out,)), "p2")
    return b.build(), (w1, w2)


def naive(x: np.ndarray, weights: tuple[np.ndarray, ...], dtype: type) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each layer's ``(spikes, v)`` ``[T, B, n]`` in ``dtype``: the current is the sum of the
    weight columns (the weights in ``dtype``) of the spiking inputs in input order, ``v = beta*v + I`` (beta rounded to
    float32 first: the program's array), spike on ``v >= 1``, then ``v = 0``."""
    T, B, _ = x.shape
    beta = dtype(np.float32(BETA))
    out = []
    for w in weights:
        w = w.astype(dtype)
        n = w.shape[0]
        v = np.zeros((B, n), dtype)
        spikes, mems = np.zeros((T, B, n), dtype), np.zeros((T, B, n), dtype)
        for t in range(T):
            for b in range(B):
                i = np.zeros(n, dtype)
                for j in np.flatnonzero(x[t, b]):
                    i = i + w[:, j]
                m = beta * v[b] + i
                s = m >= dtype(1)
                v[b] = np.where(s, dtype(0), m)
                spikes[t, b], mems[t, b] = s, v[b]
        out.append((spikes, mems))
        x = spikes
    return out


@pytest.mark.parametrize("wdtype", [np.float32, np.float64], ids=["float32_weights", "float64_weights"])
def test_float64_runs_the_double_update_where_float32_rounds(wdtype):
    """Float32 weights are float32 values in double too (the numba backend keeps them in float32
    arrays, summed in float64); float64 weights are used as they are, and rounded by a float32 run."""
    rng = np.random.default_rng(7)
    program, weights = two_layers(rng, wdtype)
    x = H.spikes(rng, 40, 2, (SIZES[0],), 0.4)
    probes = ["p1", "p2", "p1.v", "p2.v"]
    runs = {p: run(float_precision(program, p), x, backend="numba", probes=probes) for p in ("float32", "float64")}
    for precision, dtype in (("float32", np.float32), ("float64", np.float64)):
        res = runs[precision]
        for layer, (s, v) in zip(("p1", "p2"), naive(x, weights, dtype)):
            assert res.probes[layer].dtype == np.float32  # spikes: 0/1 in float32 buffers (engine.signal_dtype)
            assert res.probes[f"{layer}.v"].dtype == dtype
            np.testing.assert_array_equal(res.probes[layer], s, err_msg=f"{precision} {layer} spikes")
            np.testing.assert_array_equal(res.probes[f"{layer}.v"], v, err_msg=f"{precision} {layer} membrane")
        pairs = sum(np.count_nonzero(w.astype(dtype)[:, np.flatnonzero(row)])  # (spike, non-zero weight) pairs
                    for w, src in zip(weights, (x, res.probes["p1"])) for row in src.reshape(-1, src.shape[-1]))
        assert res.ops.per_sample_total()["syn_ops"].sum() == pairs
    # the precisions part: the float32 membranes are not the double ones
    assert not np.array_equal(runs["float32"].probes["p1.v"], runs["float64"].probes["p1.v"])


def dyadic_populations(program: Program) -> Program:
    """``program`` with every population's beta and alpha 1/2 (beta 1 for ``if``) and thresholds
    multiples of 1/16: with dyadic weights every value then stays exact in float32 for the few
    steps of these programs (a leak of 1/2 adds one bit a step)."""
    changed = {}
    for name, node in program.nodes():
        if isinstance(node, Population):
            half = lambda a: None if a is None else np.full_like(np.asarray(a), 0.5)  # noqa: E731
            changed[name] = node.replace(beta=np.asarray(node.beta) if node.model == "if" else half(node.beta),
                                         alpha=half(node.alpha),
                                         threshold=np.round(np.asarray(node.threshold) * 16).astype(np.float32) / 16)
    return program.with_graph(rebuild_graph(program, nodes=changed))


@pytest.mark.parametrize("build", [H.mlp, lambda rng, num: H.sparse(rng, num=num, duplicate=False), H.recurrent,
                                   lambda rng, num: H.conv_pool(rng, "max", (2, 2), (1, 1), 1, (3, 3), num=num)],
                         ids=["mlp", "sparse", "recurrent", "conv_maxpool"])
def test_exact_programs_give_the_float32_results(build):
    """Dyadic weights and parameters: every value is exact in both precisions, so the float64 run
    of each node kind (dense with bias and delay, sparse, a cycle, conv2d, pooling, LI) equals the
    float32 run value for value, and counts the same."""
    program, x = build(np.random.default_rng(3), num=H.DYADIC)
    program = dyadic_populations(program)
    probes = [n for n, node in program.nodes() if isinstance(node, Population)]
    probes += [f"{n}.v" for n in probes]
    r32 = run(program, x, backend="numba", probes=probes)
    p64 = float_precision(program, "float64")
    r64 = run(p64, x, backend="numba", probes=probes)
    for name in [*r32.outputs, *probes]:
        a32 = r32.outputs[name] if name in r32.outputs else r32.probes[name]
        a64 = r64.outputs[name] if name in r64.outputs else r64.probes[name]
        spikes = not name.endswith(".v") and output_signal(p64, name) == "spike"  # spikes are float32 buffers
        assert a64.dtype == (np.float32 if spikes else np.float64), name
        np.testing.assert_array_equal(a64, a32.astype(np.float64), err_msg=name)
    assert r64.ops.total() == r32.ops.total()
    assert r32.ops.total()["spikes"] > 0


def test_compile_float64_from_a_torch_model(tmp_path):
    """``compile(precision="float64")``: a traced model's populations and metadata say float64,
    its run equals the float64 run of the float32 program (the same values, in double), and a
    saved file keeps the precision."""
    torch.manual_seed(0)
    import snntorch as snn

    model = nn.Sequential(nn.Linear(12, 10, bias=False), snn.Leaky(beta=BETA, init_hidden=True, output=False))
    example = (torch.rand(6, 2, 12) < 0.5).float()
    p64 = compile_model(model, example[0], precision="float64")
    p32 = compile_model(model, example[0])
    assert program_precision(p64) == "float64" and p64.metadata["precision"] == "float64"
    assert all(n.precision == "float64" for _, n in p64.nodes() if isinstance(n, Population))
    x = example.numpy()
    a = run(p64, x, backend="numba").outputs
    b = run(float_precision(p32, "float64"), x, backend="numba").outputs
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    save_program(p64, tmp_path / "p.h5")
    loaded = load_program(tmp_path / "p.h5")
    assert program_precision(loaded) == "float64"
    c = run(loaded, x, backend="numba").outputs
    assert all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("backend", ["torch", "cuda", "lava"])
def test_other_backends_refuse_float64(backend):
    program, x = H.mlp(np.random.default_rng(0))
    with pytest.raises(BackendError, match="float64"):
        run(float_precision(program, "float64"), x, backend=backend)


def test_float64_refuses_host_ops_and_fixed_point():
    program = H.sigmoid_program(np.random.default_rng(0))
    host = next(n for n, node in program.nodes() if isinstance(node, HostOp))
    with pytest.raises(ProgramError, match=f"{host}.*float32 only"):
        float_precision(program, "float64")
    with pytest.raises(ProgramError, match="not a float precision"):
        float_precision(program, "fixed")


# ---------------------------------------------------------------- float32-exact currents


def brunel_like(J: float, seed: int = 3) -> Program:
    """A small recurrent E/I network of LIF neurons (beta 0.9: float32 and float64 membranes part)
    driven by generated spikes, synaptic weights J, -5J and 2J (external)."""
    net = Network(seed=seed)
    net.poisson("ext", 60, p=0.2)
    net.population("exc", 80, beta=BETA, threshold=1.0, reset="zero", reset_delay=False, fire_ge=True)
    net.population("inh", 20, beta=BETA, threshold=1.0, reset="zero", reset_delay=False, fire_ge=True)
    net.connect("ext", "exc", fixed_fan_in(12), weight=2 * J, delay=1)
    net.connect("ext", "inh", fixed_fan_in(12), weight=2 * J, delay=1)
    for src, w in (("exc", J), ("inh", -5 * J)):
        for dst in ("exc", "inh"):
            net.connect(src, dst, fixed_fan_out(8), weight=w, delay=1 if src == "exc" else 2)
    return net.build()


def naive_network(program: Program, source: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """Each population's double membrane ``[T, B, n]`` from the synapses of ``program`` (every
    delay) and the source's spikes: ``I`` summed in double, ``v = beta*v + I``, spike on ``v >= 1``,
    then ``v = 0`` (the sums are exact, so their order does not matter)."""
    syn = synapses(program)
    pops = {s.target for s in syn.values()}
    B = source.shape[1]
    spikes = {name: np.zeros((steps, B, program.node(name).size)) for name in pops}
    spikes[next(s.source for s in syn.values() if s.source not in pops)] = source.astype(np.float64)
    v = {name: np.zeros((B, program.node(name).size)) for name in pops}
    mem = {name: np.zeros((steps, B, program.node(name).size)) for name in pops}
    beta = np.float64(np.float32(BETA))
    for t in range(steps):
        current = {name: np.zeros_like(v[name]) for name in pops}
        for s in syn.values():
            sent = t - s.delay >= 0
            for b in range(B):
                fired = spikes[s.source][np.maximum(t - s.delay, 0), b, s.pre] * sent
                np.add.at(current[s.target][b], s.post, fired * s.weight.astype(np.float64))
        for name in pops:
            m = beta * v[name] + current[name]
            fire = m >= 1
            v[name] = np.where(fire, 0.0, m)
            spikes[name][t], mem[name][t] = fire, v[name]
    return mem


@pytest.mark.parametrize("J, exact", [(1 / 16, True), (0.1, False)], ids=["dyadic", "float"])
def test_float32_exact_currents_change_no_value(J, exact):
    """Dyadic weights: every current a multiple of 1/16 far below 2**24/16, so a float64 run keeps
    the projections' currents in float32 buffers (half the bytes); weights 0.1 (no such bound) keep
    float64 currents. Either way the double membranes equal a naive double loop's."""
    p64 = float_precision(brunel_like(J), "float64")
    projections = [n for n, node in p64.nodes() if isinstance(node, Sparse)]
    got = run(p64, steps=120, batch=2, backend="numba", probes=["ext", "exc.v", "inh.v", *projections])
    assert all((got.probes[p].dtype == np.float32) is exact for p in projections)
    assert all(float32_exact_inputs(p64, pop) is exact for pop in ("exc", "inh"))
    want = naive_network(p64, got.probes["ext"], 120)
    for name in ("exc", "inh"):
        np.testing.assert_array_equal(got.probes[f"{name}.v"], want[name], err_msg=name)
    assert got.ops.total()["spikes"] > 0
    p32 = run(brunel_like(J), steps=120, batch=2, backend="numba", probes=["exc.v"])
    assert not np.array_equal(p32.probes["exc.v"], got.probes["exc.v"])  # the membranes are double ones


def test_exactness_bound():
    """The quantum of a set of float32 values, and the bound 2**24 quanta on a neuron's input."""
    assert quantum(np.array([0.375, -0.0625, 0.0])) == 0.0625
    assert quantum(np.array([3.0, 1.5])) == 0.5
    assert quantum(np.array([0.1], np.float32)) == 2.0**-27  # 0.1 in float32: 13421773 * 2**-27
    assert quantum(np.array([0.1])) is None  # 0.1 in double is no float32 value
    assert quantum(np.array([1 / 3])) is None and quantum(np.array([np.nan], np.float32)) is None
    assert quantum(np.zeros(3)) == np.inf  # zeros: multiples of any power of two
    for n_in, exact in ((2**16, True), (2**16 + 1, False)):  # n_in * 256 quanta: 2**24 is the limit
        b = ProgramBuilder()
        b.add("in", Input(shape=(n_in,)))
        w = np.full((1, n_in), 1.0, np.float32)
        w[0, 0] = 1 / 256  # the quantum; with the bias (255 quanta) n_in * 256 quanta in all
        b.add("fc", Dense(shape=(1,), in_shape=(n_in,), weight=w, bias=np.array([1 - 1 / 256], np.float32)), "in")
        b.add("p", lif(1), "fc")
        assert float32_exact_inputs(b.build(), "p") is exact, n_in


@pytest.mark.parametrize("beta", [np.float32(BETA), np.float64(BETA)], ids=["float32_beta", "float64_beta"])
def test_population_parameters_keep_their_values(beta):
    """A float64 population's parameters are read as float32 arrays only where they are float32
    values: beta 0.9 given in double decays by 0.9, not by its float32 rounding."""
    rng = np.random.default_rng(11)
    n_in, n = 16, 12
    w = (rng.standard_normal((n, n_in)) * 0.4).astype(np.float32)
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    b.add("fc", Dense(shape=(n,), in_shape=(n_in,), weight=w), "in")
    b.add("p", lif(n).replace(beta=np.full(n, beta)), "fc")
    b.add("out", Output(shape=(n,)), "p")
    x = H.spikes(rng, 30, 2, (n_in,), 0.4)
    got = run(float_precision(b.build(), "float64"), x, backend="numba", probes=["p.v"]).probes["p.v"]
    v, want = np.zeros((2, n)), np.zeros((30, 2, n))
    for t in range(30):
        for s in range(2):
            i = np.zeros(n)
            for j in np.flatnonzero(x[t, s]):
                i = i + w[:, j].astype(np.float64)
            m = np.float64(beta) * v[s] + i
            v[s] = np.where(m >= 1, 0.0, m)
            want[t, s] = v[s]
    np.testing.assert_array_equal(got, want)
