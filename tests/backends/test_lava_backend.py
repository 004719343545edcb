"""The lava backend against the numba backend: fixed point bit for bit (spikes, v, u, outputs and
operation counts) on random MLPs, a spiking CNN with conv and pooling, and a recurrent network;
float32 equal on dyadic programs; programs compiled for Loihi (delays balanced: DelayDense/DelaySparse,
biases from their onsets) equal numba and the generic program; refusals named before anything
starts; raw target delays."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spike.backends import BackendError, run
from spike.backends.lava.backend import lower
from spike.backends.op_counting import count_ops
from spike.compiler import compile as compile_program
from spike.compiler.ir.nodes import Dense, HostOp, Input, Output, Pool2d, Population
from spike.compiler.passes.delays import target_delays
from spike.compiler.pipeline import FIXED_PIPELINE, FLOAT_PIPELINE, run_passes
from spike.compiler.ir.program import ProgramBuilder, rebuild_graph
from spike.layers import TimeDistributed as TD
from spike.neurons import LIF
from spike.recurrent import RecurrentLIF

from helpers.lava import assert_same, loihi, needs_lava
from helpers.models import dyadic_, spikes_in
from helpers.programs import conv_stack, loihi_cnn, loihi_pop, loihi_recurrent, mixed_input, normal
from helpers.reports import validated


# ---------------------------------------------------------------- programs
def mlp(seed: int):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(20, 60)), int(rng.integers(20, 60)), int(rng.integers(10, 40)), 6]
    b = ProgramBuilder()
    b.add("in", Input(shape=(sizes[0],)))
    prev = "in"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        b.add(f"fc{i}", Dense(shape=(n_out,), in_shape=(n_in,), weight=normal(rng, (n_out, n_in), 0.6),
                              bias=normal(rng, n_out, 0.1)), prev)
        last = i == len(sizes) - 2
        b.add(f"p{i}", Population(shape=(n_out,), model="li", beta=np.float32(0.875)) if last
              else loihi_pop(rng, (n_out,), model="cuba_lif" if i == 1 else "lif"), f"fc{i}")
        prev = f"p{i}"
    b.add("out", Output(shape=(6,)), prev)
    return b.build({"precision": "float32"}), (sizes[0],), ["p0", "p1", "p2"]


# ---------------------------------------------------------------- fixed point, bit for bit
@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_mlp_equals_numba_bit_for_bit(seed: int) -> None:
    program, in_shape, pops = mlp(seed)
    fixed = loihi(program)
    x = (np.random.default_rng(seed + 10).random((10, 2, *in_shape)) < 0.3).astype(np.float32)
    probes = pops + [f"{p}.v" for p in pops] + [f"{p}.u" for p in pops]
    res = assert_same(fixed, x, probes)
    assert res["numba"].probes["p0"].any() and res["numba"].probes["p1"].any()


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("make", [loihi_cnn, loihi_recurrent], ids=["cnn", "recurrent"])
def test_fixed_cnn_and_recurrent_equal_numba_bit_for_bit(make) -> None:
    program, in_shape, pops = make(0)
    fixed = loihi(program)
    kinds = {k: p.kind for k, p in lower(fixed).procs.items()}
    if make is loihi_cnn:  # both Conv lowerings and the max pool's OR are exercised
        assert kinds["c1"] == "conv" and kinds["c2"] == "sparse" and kinds["ap"] == "conv"
        assert kinds["mp/sum"] == "conv" and kinds["mp"] == "lif"
    x = (np.random.default_rng(7).random((12, 2, *in_shape)) < 0.3).astype(np.float32)
    neurons = [p for p in pops if isinstance(fixed.node(p), Population)]
    probes = pops + [f"{p}.v" for p in neurons] + [f"{p}.u" for p in neurons]
    res = assert_same(fixed, x, probes)
    assert all(res["numba"].probes[p].any() for p in neurons if fixed.node(p).model != "li")


# ---------------------------------------------------------------- float32, dyadic values
def _dy(rng, shape, k=24, scale=32.0):
    return (rng.integers(-k, k + 1, size=shape) / scale).astype(np.float32)


def _fpop(rng, shape, model="lif", gain=1.0):
    """beta in {0.5, 1}, dyadic thresholds: float32 and Lava's float64 stay exact."""
    n = int(np.prod(shape))
    beta = np.ones(n) if model == "if" else rng.choice([0.5, 1.0], n)
    return Population(shape=shape, model=model, beta=beta.astype(np.float32),
                      threshold=(rng.integers(8, 24, n) / 16).astype(np.float32), reset="zero", reset_delay=False,
                      gain=gain, alpha=rng.choice([0.5, 0.0], n).astype(np.float32) if model == "cuba_lif" else None)


def float_net(seed: int):
    """conv (bias) -> lif -> max pool -> grouped conv -> cuba (gain 0.5) -> avg pool -> lif -> two
    dense branches -> add (a host op) -> dense (real input) -> if with a recurrent dense; li readout."""
    rng = np.random.default_rng(seed)
    b = conv_stack(lambda shape: _dy(rng, shape), lambda shape: _dy(rng, shape, 4),
                   lambda shape, **kw: _fpop(rng, shape, **kw), gain=0.5)
    b.add("da", Dense(shape=(10,), in_shape=(24,), weight=_dy(rng, (10, 24)), bias=_dy(rng, 10, 4)), "p3")
    b.add("pa", _fpop(rng, (10,)), "da")
    b.add("db", Dense(shape=(10,), in_shape=(24,), weight=_dy(rng, (10, 24))), "p3")
    b.add("pb", _fpop(rng, (10,)), "db")
    b.add("add", HostOp(shape=(10,), op="add"), ["pa", "pb"])
    b.add("dc", Dense(shape=(8,), in_shape=(10,), weight=_dy(rng, (8, 10))), "add")
    b.add("pc", _fpop(rng, (8,), model="if"), "dc")
    b.add("rec", Dense(shape=(8,), in_shape=(8,), weight=_dy(rng, (8, 8)), delay=1), "pc")
    b.connect("rec", "pc")
    b.add("fc", Dense(shape=(5,), in_shape=(8,), weight=_dy(rng, (5, 8)), bias=_dy(rng, 5, 4)), "pc")
    b.add("ro", Population(shape=(5,), model="li", beta=np.float32(0.5)), "fc")
    b.add("out", Output(shape=(5,)), "ro")
    b.add("out_pc", Output(shape=(8,)), "pc")
    program = target_delays(run_passes(b.build({"precision": "float32"}), FLOAT_PIPELINE), 1, mode="raw")  # a host add
    return program, (2, 8, 8), ["p1", "mp", "p2", "p3", "pa", "pb", "add", "pc", "ro", "c1", "ap", "dc"]


@pytest.mark.lava
@needs_lava
def test_float_equals_numba_on_dyadic_values() -> None:
    program, in_shape, probes = float_net(4)
    x = (np.random.default_rng(4).random((10, 2, *in_shape)) < 0.4).astype(np.float32)
    neurons = [p for p in probes if isinstance(program.node(p), Population)]
    res = assert_same(program, x, probes + [f"{p}.v" for p in neurons])
    # "dc" reads the host add of two spike trains (a real signal): its pairs of a (step, sample) are
    # macs where the sum leaves {-1, 0, 1} (two spikes on one neuron), else syn_ops (NeuroBench)
    dc = program.node("dc")
    add = res["numba"].probes["add"].reshape(10, 2, -1)[: 10 - dc.delay]
    real = ((add != 0) & (add != 1) & (add != -1)).any(axis=2)
    pairs = (add != 0).astype(np.int64) @ np.count_nonzero(dc.weight, axis=0)
    got = res["numba"].ops.per_node["dc"]
    assert got["macs"].tolist() == np.where(real, pairs, 0).sum(axis=0).tolist()
    assert got["syn_ops"].tolist() == np.where(real, 0, pairs).sum(axis=0).tolist()
    assert got["syn_ops"].sum() + got["macs"].sum() > 0
    # the host add of two spike trains: one accumulate per event of its second operand
    assert res["numba"].ops.per_node["add"]["syn_ops"].sum() == res["numba"].probes["pb"].sum() > 0
    assert all(res["numba"].probes[p].any() for p in ("p1", "p2", "p3", "pa", "pb", "pc"))


def test_counts_from_recordings_decide_ac_or_mac_per_step() -> None:
    """The lava backend's counts (``op_counting.count_ops``, from recorded values) equal numba's on
    an input real on some (step, sample)s and 0/1 or -1/0/1 events on the others (dense, sparse,
    conv, identity, a gated conv with a fully masked group): syn_ops or macs per (sample, step)."""
    program, x = mixed_input(np.random.default_rng(3))
    names = [n for n, node in program.nodes() if node.KIND not in ("input", "output")]
    res = run(program, x, backend="numba", probes=names)
    T, B = x.shape[:2]
    values = {n: res.probes[n].reshape(T, B, -1) for n in names}
    values.update({n: x.reshape(T, B, -1) for n in program.inputs})
    counts = count_ops(program, values, T, B)
    assert list(counts.per_node) == list(res.ops.per_node)
    for name, c in res.ops.per_node.items():
        for key, value in c.items():
            np.testing.assert_array_equal(counts.per_node[name][key], value, err_msg=f"{name} {key}")
    for name in ("fc", "sp", "conv", "id", "gconv"):
        c = res.ops.per_node[name]
        assert c["syn_ops"].sum() > 0 and c["macs"].sum() > 0, name


# ---------------------------------------------------------------- programs compiled for Loihi (delays balanced)
LOIHI_LIF = dict(reset="zero", reset_delay=False)  # what Lava's LIF computes


class LoihiMLP(nn.Module):
    """Linear (bias) -> LIF, three times: latency 3 on Loihi, every bias behind its layer's delay."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(2), nn.Linear(36, 24), LIF(beta=beta, **LOIHI_LIF), nn.Linear(24, 16),
                                 LIF(beta=beta, threshold=0.75, **LOIHI_LIF), nn.Linear(16, 5),
                                 LIF(beta=beta, **LOIHI_LIF))

    def forward(self, x):
        return self.net(x)


class LoihiCNN(nn.Module):
    """conv (bias) -> LIF -> avg pool -> LIF -> conv (bias) -> LIF -> max pool -> linear (bias) -> LIF
    (an average pool feeds neurons: Loihi's synapses deliver only into neurons)."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.conv1 = TD(nn.Conv2d(2, 4, 3, padding=1))
        self.lif1 = LIF(beta=beta, **LOIHI_LIF)
        self.pool1 = TD(nn.AvgPool2d(2))
        self.lifp = LIF(beta=beta, threshold=0.25, **LOIHI_LIF)
        self.conv2 = TD(nn.Conv2d(4, 6, 3, padding=1))
        self.lif2 = LIF(beta=beta, threshold=0.5, **LOIHI_LIF)
        self.pool2 = TD(nn.MaxPool2d(2))
        self.fc = nn.Linear(24, 5)
        self.out = LIF(beta=beta, **LOIHI_LIF)

    def forward(self, x):
        s = self.lifp(self.pool1(self.lif1(self.conv1(x))))
        s = self.pool2(self.lif2(self.conv2(s)))
        return self.out(self.fc(torch.flatten(s, 2)))


class LoihiResidual(nn.Module):
    """conv (bias) -> LIF -> conv -> LIF -> conv, + the identity shortcut (delay 2 on Loihi) -> LIF ->
    linear (bias), + a linear skip from the first LIF (delay 3) -> LIF."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.conv0 = TD(nn.Conv2d(1, 4, 3, padding=1))
        self.lif0 = LIF(beta=beta, **LOIHI_LIF)
        self.conv1 = TD(nn.Conv2d(4, 4, 3, padding=1, bias=False))
        self.lif1 = LIF(beta=beta, threshold=0.5, **LOIHI_LIF)
        self.conv2 = TD(nn.Conv2d(4, 4, 3, padding=1, bias=False))
        self.lif2 = LIF(beta=beta, **LOIHI_LIF)
        self.fc = nn.Linear(4 * 6 * 6, 5)
        self.skip = nn.Linear(4 * 6 * 6, 5, bias=False)
        self.out = LIF(beta=beta, **LOIHI_LIF)

    def forward(self, x):
        s0 = self.lif0(self.conv0(x))
        s2 = self.lif2(self.conv2(self.lif1(self.conv1(s0))) + s0)
        return self.out(self.fc(torch.flatten(s2, 2)) + self.skip(torch.flatten(s0, 2)))


class LoihiRecurrent(nn.Module):
    """Linear (bias) -> recurrent LIF (V s[t-1] + b, bias from step 0) -> linear -> LIF."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.fc = nn.Linear(20, 16)
        self.rec = RecurrentLIF(16, bias=True, beta=beta, **LOIHI_LIF)
        self.fc2 = nn.Linear(16, 5)
        self.out = LIF(beta=beta, **LOIHI_LIF)

    def forward(self, x):
        return self.out(self.fc2(self.rec(self.fc(x))))


# model, input shape [T, B, ...], least latency on Loihi, dyadic scale and spread of the weights
LOIHI_MODELS = {
    "mlp": (LoihiMLP, (10, 2, 1, 6, 6), 3, 256, 96),
    "cnn": (LoihiCNN, (8, 2, 2, 8, 8), 4, 256, 128),
    "residual": (LoihiResidual, (8, 2, 1, 6, 6), 4, 64, 40),
    "recurrent": (LoihiRecurrent, (12, 2, 20), 2, 256, 96),
}


def loihi_case(kind: str, precision: str, seed: int = 0):
    """(generic program, program compiled for loihi2, input spikes) of ``LOIHI_MODELS[kind]``; float:
    beta 0.5 and dyadic weights (numba's float32 and Lava's float64 stay exact)."""
    make, shape, _, scale, spread = LOIHI_MODELS[kind]
    model = dyadic_(make(0.5 if precision == "float32" else 0.75), seed, scale=scale, spread=spread).eval()
    x = spikes_in(shape, seed + 3, p=0.4)
    generic = compile_program(model, x, precision=precision)
    loihi = compile_program(model, x, target="loihi2", precision=precision)
    return generic, loihi, x.numpy()


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("precision", ["fixed", "float32"])
@pytest.mark.parametrize("kind", sorted(LOIHI_MODELS))
def test_loihi_program_on_lava_equals_numba_and_the_generic_program(kind: str, precision: str) -> None:
    generic, loihi, x = loihi_case(kind, precision)
    rec = loihi.metadata["target_delays"]
    assert rec["mode"] == "compensated" and loihi.total_latency >= LOIHI_MODELS[kind][2]
    plan = lower(loihi)
    delays = {n: node.delay for n, node in loihi.nodes() if hasattr(node, "delay")}
    assert min(delays.values()) >= 1
    for name, d in delays.items():  # a delay > 1 is a DelayDense/DelaySparse with the steps beyond one
        key = f"{name}/sum" if f"{name}/sum" in plan.procs else name
        assert plan.procs[key].kind.startswith("delay_") == (d > 1), name
        if d > 1:
            assert plan.procs[key].args["delays"] == d - 1
    if kind == "residual":
        assert sorted(set(delays.values())) == [1, 2, 3]
        assert {plan.procs[n].kind for n, d in delays.items() if d > 1} == {"delay_sparse", "delay_dense"}
    pops = loihi.populations()
    mems = [f"{p}.v" for p in pops] + ([f"{p}.u" for p in pops] if precision == "fixed" else [])
    res = assert_same(loihi, x, pops + mems)
    lv = res["lava"]
    assert all(lv.probes[p].any() for p in pops), "every population fires"
    assert any(on > 0 for parts in plan.bias_parts.values() for _, on, _ in parts)  # biases start late: staged
    ref = run(generic, x, backend="numba", probes=pops + [f"{p}.v" for p in pops])
    assert ref.output.shape == lv.output.shape
    np.testing.assert_array_equal(lv.output, ref.output)  # the trained network, aligned with the input
    for key in ref.probes:
        np.testing.assert_array_equal(lv.probes[key], ref.probes[key], err_msg=key)
    assert lv.ops.total()["neuron_updates"] > ref.ops.total()["neuron_updates"]  # the latency steps run on chip


@pytest.mark.lava
@needs_lava
def test_fixed_delayed_synapses_equal_numba_for_every_form_and_exponent() -> None:
    """DelayDense/DelaySparse (bit-accurate) take Dense's weights 2W and weight_exp - 1: dense, sparse,
    identity, conv2d (Conv-eligible and not) and max pooling of delays 1..5 with weight exponents
    from -3 to 3 equal numba, currents, u and v included."""
    program, in_shape, pops = loihi_cnn(1)
    fixed = run_passes(program, FIXED_PIPELINE)
    base = loihi(program, mode="raw")
    x = (np.random.default_rng(3).random((14, 2, *in_shape)) < 0.3).astype(np.float32)
    neurons = [p for p in pops if isinstance(fixed.node(p), Population)]
    projections = [n for n, node in fixed.nodes() if hasattr(node, "delay")]
    exps = {}
    for delays, shifts in [((2, 3, 5, 2, 4), (0, -2, 1, -1)), ((3, 2, 2, 5, 2), (1, -3, -1, 0))]:
        changed = {}
        for n, d in zip(projections, delays):
            node = base.node(n)
            extra = {}
            if hasattr(node, "weight_exp"):  # c2 (exponent 1) gets a negative one
                extra["weight_exp"] = int(node.weight_exp) + shifts[len(exps) % len(shifts)]
                exps[(n, d)] = extra["weight_exp"]
            changed[n] = node.replace(delay=d, **extra)
        prog = base.with_graph(rebuild_graph(base, nodes=changed))
        kinds = {k: p.kind for k, p in lower(prog).procs.items()}
        assert kinds["mp/sum"] == "delay_sparse" and kinds["fc"] == "delay_dense" and kinds["c1"] == "delay_sparse"
        probes = pops + projections + [f"{p}.v" for p in neurons] + [f"{p}.u" for p in neurons]
        res = assert_same(prog, x, probes)
        assert res["numba"].probes["p1"].any() and res["numba"].probes["mp"].any()
    assert min(exps.values()) < 0 < max(exps.values())


@pytest.mark.lava
@needs_lava
def test_float_biases_with_different_onsets_into_one_population() -> None:
    """Three projections with biases into one LIF, delays 1, 3 and 5 (raw: no latency): the LIF's bias
    grows at steps 1, 3 and 5 (three set between runs), as numba's projections deliver them."""
    rng = np.random.default_rng(8)
    b = ProgramBuilder()
    b.add("in", Input(shape=(6,)))
    for name, d in (("a", 1), ("b", 3), ("c", 5)):
        b.add(name, Dense(shape=(4,), in_shape=(6,), weight=_dy(rng, (4, 6)), bias=_dy(rng, 4, 8, 16), delay=d), "in")
    b.add("p", _fpop(rng, (4,)), ["a", "b", "c"])
    b.add("out", Output(shape=(4,)), "p")
    program = b.build({"precision": "float32"})
    plan = lower(program)
    assert plan.bias_steps(9) == [1, 3, 5] and plan.procs["c"].kind == "delay_dense"
    x = (np.random.default_rng(1).random((9, 2, 6)) < 0.3).astype(np.float32)
    res = assert_same(program, x, ["p", "p.v", "a", "b", "c"])
    assert res["numba"].probes["p.v"][:1].sum() == 0 and res["numba"].probes["c"][:5].sum() == 0


@pytest.mark.lava
@needs_lava
def test_host_mode_program_with_latency_equals_numba() -> None:
    """A host op at latency 0, a fused (fire_ge) population behind a Lava Dense with a bias (added by
    its block from the projection's onset), a Lava LIF fed by a delay-1 Dense and a delay-2 shortcut
    (a DelaySparse repeated per lane), biases from their onsets."""
    rng = np.random.default_rng(2)
    b = ProgramBuilder()
    b.add("in", Input(shape=(12,)))
    b.add("h", HostOp(shape=(12,), op="relu"), "in")
    b.add("d1", Dense(shape=(10,), in_shape=(12,), weight=_dy(rng, (10, 12)), bias=_dy(rng, 10, 4)), "h")
    b.add("p1", Population(shape=(10,), model="lif", beta=np.full(10, 0.5, np.float32),
                           threshold=np.full(10, 0.75, np.float32), reset="zero", reset_delay=False, fire_ge=True), "d1")
    b.add("d2", Dense(shape=(8,), in_shape=(10,), weight=_dy(rng, (8, 10)), bias=_dy(rng, 8, 4)), "p1")
    b.add("skip", Dense(shape=(8,), in_shape=(12,), weight=_dy(rng, (8, 12)), bias=_dy(rng, 8, 4)), "h")
    b.add("p2", _fpop(rng, (8,)), ["d2", "skip"])
    b.add("out", Output(shape=(8,)), "p2")
    program = target_delays(run_passes(b.build({"precision": "float32"}), FLOAT_PIPELINE), 1)
    assert program.total_latency == 2 and program.node("skip").delay == 2
    plan = lower(program)
    assert plan.batched and plan.procs["skip"].kind == "delay_dense" and plan.procs["p2"].kind == "lif"
    assert "d1" in plan.synapse_bias and plan.procs["p1"].kind == "fused"
    x = (np.random.default_rng(6).random((10, 3, 12)) < 0.4).astype(np.float32)
    res = assert_same(program, x, ["p1", "p2", "d1", "d2", "skip", "p1.v", "p2.v"])
    assert res["numba"].probes["p1"].any() and res["numba"].probes["p2"].any()


# ---------------------------------------------------------------- failures
@pytest.mark.lava
@needs_lava
def test_processes_are_stopped_when_a_run_fails(monkeypatch) -> None:
    from lava.proc.monitor.process import Monitor

    program, in_shape, _ = mlp(0)
    fixed = loihi(program)

    def broken(self):  # noqa: ANN001
        raise RuntimeError("reading the monitor failed")

    monkeypatch.setattr(Monitor, "get_data", broken)
    with pytest.raises(RuntimeError, match="reading the monitor failed"):
        run(fixed, np.ones((3, 1, *in_shape)), backend="lava", probes=["p0.v"])
    assert multiprocessing.active_children() == []


def test_refusals_name_the_node_before_anything_starts() -> None:
    program, _, _ = mlp(0)
    with pytest.raises(BackendError, match=r"fc0 \(dense\): delay 0: .*delay >= 1 on every projection.*"
                                           r"target='loihi2'.*target_delays"):
        lower(run_passes(program, FIXED_PIPELINE))
    too_late = loihi(program, mode="raw")
    too_late = too_late.with_graph(rebuild_graph(too_late, nodes={"fc1": too_late.node("fc1").replace(delay=65)}))
    with pytest.raises(BackendError, match=r"fc1 \(dense\): delay 65: Lava's DelayDense/DelaySparse delay a spike "
                                           r"by at most 63 steps"):
        lower(too_late)

    def float_prog(**pop_kw):
        b = ProgramBuilder()
        b.add("in", Input(shape=(2, 4, 4)))
        b.add("pool", Pool2d(shape=(2, 1, 1), in_shape=(2, 4, 4), mode="avg", kernel=(3, 3), stride=(3, 3), delay=1), "in")
        b.add("pop", Population(shape=(2, 1, 1), model="lif", beta=np.float32(0.5), **pop_kw), "pool")
        b.add("d", Dense(shape=(3,), in_shape=(2,), weight=np.ones((3, 2), np.float32), delay=1), "pop")
        b.add("out", Output(shape=(3,)), "d")
        return run_passes(b.build({"precision": "float32"}), FLOAT_PIPELINE)

    with pytest.raises(BackendError) as e:
        lower(float_prog(reset="subtract"))
    msg = str(e.value)
    assert "pop (population): reset 'subtract'" in msg and "reset_delay True" in msg
    assert "pool (pool2d): average pooling over 3x3 = 9 inputs" in msg
    with pytest.raises(BackendError, match=r"pop \(population\): fire_ge True"):
        lower(float_prog(reset="zero", reset_delay=False, fire_ge=True))

    b = ProgramBuilder()
    b.add("in", Input(shape=(4,), signal="real"))
    b.add("ro", Population(shape=(4,), model="li", beta=np.float32(0.5)), "in")
    b.add("d", Dense(shape=(2,), in_shape=(4,), weight=np.ones((2, 4), np.float32), delay=1), "ro")
    b.add("p", Population(shape=(2,), model="lif", beta=np.float32(0.5), reset="zero", reset_delay=False), "d")
    b.add("out", Output(shape=(2,)), "p")
    with pytest.raises(BackendError, match=r"d \(dense\): reads the membrane of li population 'ro'"):
        lower(run_passes(b.build({"precision": "float32"}), FLOAT_PIPELINE))


# ---------------------------------------------------------------- raw target delays
def test_raw_target_delays_make_every_projection_one_step_late() -> None:
    """``mode="raw"``: every delay max(d, 1), no latency; a different network, one step late per layer."""
    program, _, _ = loihi_recurrent(0)
    assert {program.node(n).delay for n in ("sp", "fc", "id")} == {0} and program.node("rec").delay == 1
    out = target_delays(program, 1, mode="raw")
    assert all(out.node(n).delay == 1 for n in ("sp", "rec", "fc", "id", "id2"))  # recurrent stays 1
    assert program.node("sp").delay == 0 and not out.latency  # the input is unchanged; nothing compensated
    assert lower(run_passes(out, FIXED_PIPELINE)).procs["sp"].kind == "sparse"

    net = torch.nn.Sequential(torch.nn.Linear(6, 4, bias=False))
    x = torch.ones(3, 1, 6)
    generic = compile_program(net, x, target="generic")
    raw = compile_program(net, x, target="loihi2", target_delays="raw")
    (d,) = [n for n, node in raw.nodes() if isinstance(node, Dense)]
    assert generic.node(d).delay == 0 and raw.node(d).delay == 1 and raw.total_latency == 0
    a = run(generic, x.numpy()).output
    b = run(raw, x.numpy()).output
    np.testing.assert_array_equal(b[1:], a[:-1])
    assert not b[0].any()


# ---------------------------------------------------------------- command line
@pytest.mark.lava
@needs_lava
def test_cli_run_with_lava_gives_numba_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spike.cli import main
    from spike.compiler.io.hdf5 import save_program

    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input(shape=(1, 8, 8)))
    b.add("fc1", Dense(shape=(32,), in_shape=(64,), weight=normal(rng, (32, 64), 0.4)), "in")
    b.add("h", loihi_pop(rng, (32,)), "fc1")
    b.add("fc2", Dense(shape=(10,), in_shape=(32,), weight=normal(rng, (10, 32), 0.6)), "h")
    b.add("o", loihi_pop(rng, (10,)), "fc2")
    b.add("out", Output(shape=(10,)), "o")
    meta = {"precision": "float32", "target": "loihi2", "dataset": "digits",
            "encoding": {"kind": "rate", "num_steps": 8, "params": {}}}
    h5 = tmp_path / "net.h5"
    save_program(loihi(b.build(meta)), h5)
    reports = {}
    for backend in ("numba", "lava"):
        js = tmp_path / f"{backend}.json"
        assert main(["run", str(h5), "--backend", backend, "--limit", "5", "--batch-size", "3", "--quiet",
                     "--json", str(js)]) == 0
        reports[backend] = validated(js)
    out = capsys.readouterr().out
    assert "backend lava" in out and "backend numba" in out
    nb, lv = reports["numba"], reports["lava"]
    assert lv["backend"] == "lava" and lv["accuracy"] == nb["accuracy"] and lv["data"]["samples"] == 5
    assert lv["ops"] == nb["ops"] and lv["ops"]["total"]["syn_ops"] > 0
    assert lv["energy"] == nb["energy"]  # loihi2 figures from the same counts
