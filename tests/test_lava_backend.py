"""The lava backend against the numba backend: fixed point bit for bit (spikes, v, u, outputs and
operation counts) on random MLPs, a spiking CNN with conv and pooling, and a recurrent network;
float32 equal on dyadic programs; refusals named before anything starts; the loihi_delays pass."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from spike.backends import BackendError, run
from spike.backends.lava_backend import lower
from spike.compiler import compile as compile_program
from spike.compiler.ir import Conv2d, Dense, HostOp, Identity, Input, Output, Pool2d, Population, Sparse
from spike.compiler.loihi import is_loihi_target, loihi_delays
from spike.compiler.passes import FLOAT_PIPELINE, run_passes
from spike.compiler.program import ProgramBuilder, ProgramError
from spike.compiler.quantize import quantize
from spike.compat.lava import lava_available

needs_lava = pytest.mark.skipif(lava_available() is not None, reason="lava-nc is not importable here")


# ---------------------------------------------------------------- programs
def _lif(rng, shape, model="lif", **kw):
    n = int(np.prod(shape))
    extra = {"alpha": rng.uniform(0, 1, n).astype(np.float32)} if model == "cuba_lif" else {}
    return Population(shape=shape, model=model, beta=rng.uniform(0.5, 1.0, n).astype(np.float32),
                      threshold=np.float32(rng.uniform(0.5, 1.5)), reset="zero", reset_delay=False, **extra, **kw)


def _w(rng, shape, s=0.5):
    return rng.normal(0, s, shape).astype(np.float32)


def mlp(seed: int):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(20, 60)), int(rng.integers(20, 60)), int(rng.integers(10, 40)), 6]
    b = ProgramBuilder()
    b.add("in", Input(shape=(sizes[0],)))
    prev = "in"
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        b.add(f"fc{i}", Dense(shape=(n_out,), in_shape=(n_in,), weight=_w(rng, (n_out, n_in), 0.6),
                              bias=_w(rng, n_out, 0.1)), prev)
        last = i == len(sizes) - 2
        b.add(f"p{i}", Population(shape=(n_out,), model="li", beta=np.float32(0.875)) if last
              else _lif(rng, (n_out,), model="cuba_lif" if i == 1 else "lif"), f"fc{i}")
        prev = f"p{i}"
    b.add("out", Output(shape=(6,)), prev)
    return b.build({"precision": "float32"}), (sizes[0],), ["p0", "p1", "p2"]


def cnn(seed: int):
    """conv -> lif -> max pool -> grouped conv (weight_exp < 0 on Loihi: lowered as Sparse) -> cuba
    -> avg pool (a depthwise conv after quantize) -> lif -> dense -> li."""
    rng = np.random.default_rng(seed)
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 8, 8)))
    b.add("c1", Conv2d(shape=(4, 8, 8), in_shape=(2, 8, 8), weight=_w(rng, (4, 2, 3, 3)), bias=_w(rng, 4, 0.1),
                       padding=(1, 1)), "in")
    b.add("p1", _lif(rng, (4, 8, 8)), "c1")
    b.add("mp", Pool2d(shape=(4, 4, 4), in_shape=(4, 8, 8), mode="max", kernel=(2, 2), stride=(2, 2)), "p1")
    b.add("c2", Conv2d(shape=(6, 4, 4), in_shape=(4, 4, 4), weight=_w(rng, (6, 2, 3, 3)), padding=(1, 1),
                       groups=2), "mp")
    b.add("p2", _lif(rng, (6, 4, 4), model="cuba_lif"), "c2")
    b.add("ap", Pool2d(shape=(6, 2, 2), in_shape=(6, 4, 4), mode="avg", kernel=(2, 2), stride=(2, 2)), "p2")
    b.add("p3", _lif(rng, (6, 2, 2)), "ap")
    b.add("fc", Dense(shape=(5,), in_shape=(24,), weight=_w(rng, (5, 24)), bias=_w(rng, 5, 0.2)), "p3")
    b.add("ro", Population(shape=(5,), model="li", beta=np.float32(0.75)), "fc")
    b.add("out", Output(shape=(5,)), "ro")
    return b.build({"precision": "float32"}), (2, 8, 8), ["p1", "mp", "p2", "p3", "ro"]


def recurrent(seed: int):
    rng = np.random.default_rng(seed)
    n_in, n = 40, 24
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    mask = rng.random((n_in, n)) < 0.3
    rows, cols = np.nonzero(mask)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
    b.add("sp", Sparse(shape=(n,), in_shape=(n_in,), indptr=indptr, indices=cols.astype(np.int64),
                       data=_w(rng, len(cols), 0.6), bias=_w(rng, n, 0.05)), "in")
    b.add("pop", _lif(rng, (n,)), "sp")
    b.add("rec", Dense(shape=(n,), in_shape=(n,), weight=_w(rng, (n, n), 0.3), delay=1), "pop")
    b.connect("rec", "pop")
    b.add("id", Identity(shape=(n,), in_shape=(n,), scale=1.5), "pop")
    b.add("fc", Dense(shape=(8,), in_shape=(n,), weight=_w(rng, (8, n))), "pop")
    b.add("pop2", _lif(rng, (8,), model="cuba_lif"), "fc")
    b.add("id2", Identity(shape=(n,), in_shape=(n,), scale=-0.25), "pop")
    b.add("pop3", _lif(rng, (n,)), ["id", "id2"])
    b.add("out", Output(shape=(8,)), "pop2")
    b.add("out3", Output(shape=(n,)), "pop3")
    return b.build({"precision": "float32"}), (n_in,), ["pop", "pop2", "pop3"]


def _loihi(program):
    return loihi_delays(quantize(program))


def _assert_same(program, x, probes) -> dict:
    res = {be: run(program, x, backend=be, probes=probes) for be in ("numba", "lava")}
    nb, lv = res["numba"], res["lava"]
    assert lv.backend == "lava" and set(lv.outputs) == set(nb.outputs) and set(lv.probes) == set(nb.probes)
    for name in nb.outputs:
        assert lv.outputs[name].dtype == nb.outputs[name].dtype, name
        np.testing.assert_array_equal(lv.outputs[name], nb.outputs[name], err_msg=name)
    for key in probes:
        np.testing.assert_array_equal(lv.probes[key], nb.probes[key], err_msg=key)
    assert list(lv.ops.per_node) == list(nb.ops.per_node) and lv.ops.kinds == nb.ops.kinds
    for name, counts in nb.ops.per_node.items():
        assert set(lv.ops.per_node[name]) == set(counts), name
        for key, value in counts.items():
            np.testing.assert_array_equal(lv.ops.per_node[name][key], value, err_msg=f"{name} {key}")
    assert lv.ops.total()["syn_ops"] > 0
    assert multiprocessing.active_children() == []  # every Lava process was stopped
    return res


# ---------------------------------------------------------------- fixed point, bit for bit
@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixed_mlp_equals_numba_bit_for_bit(seed: int) -> None:
    program, in_shape, pops = mlp(seed)
    fixed = _loihi(program)
    x = (np.random.default_rng(seed + 10).random((10, 2, *in_shape)) < 0.3).astype(np.float32)
    probes = pops + [f"{p}.v" for p in pops] + [f"{p}.u" for p in pops]
    res = _assert_same(fixed, x, probes)
    assert res["numba"].probes["p0"].any() and res["numba"].probes["p1"].any()


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("make", [cnn, recurrent])
def test_fixed_cnn_and_recurrent_equal_numba_bit_for_bit(make) -> None:
    program, in_shape, pops = make(0)
    fixed = _loihi(program)
    kinds = {k: p.kind for k, p in lower(fixed).procs.items()}
    if make is cnn:  # both Conv lowerings and the max pool's OR are exercised
        assert kinds["c1"] == "conv" and kinds["c2"] == "sparse" and kinds["ap"] == "conv"
        assert kinds["mp/sum"] == "conv" and kinds["mp"] == "lif"
    x = (np.random.default_rng(7).random((12, 2, *in_shape)) < 0.3).astype(np.float32)
    neurons = [p for p in pops if isinstance(fixed.node(p), Population)]
    probes = pops + [f"{p}.v" for p in neurons] + [f"{p}.u" for p in neurons]
    res = _assert_same(fixed, x, probes)
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
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 8, 8)))
    b.add("c1", Conv2d(shape=(4, 8, 8), in_shape=(2, 8, 8), weight=_dy(rng, (4, 2, 3, 3)), bias=_dy(rng, 4, 4),
                       padding=(1, 1)), "in")
    b.add("p1", _fpop(rng, (4, 8, 8)), "c1")
    b.add("mp", Pool2d(shape=(4, 4, 4), in_shape=(4, 8, 8), mode="max", kernel=(2, 2), stride=(2, 2)), "p1")
    b.add("c2", Conv2d(shape=(6, 4, 4), in_shape=(4, 4, 4), weight=_dy(rng, (6, 2, 3, 3)), padding=(1, 1),
                       groups=2), "mp")
    b.add("p2", _fpop(rng, (6, 4, 4), model="cuba_lif", gain=0.5), "c2")
    b.add("ap", Pool2d(shape=(6, 2, 2), in_shape=(6, 4, 4), mode="avg", kernel=(2, 2), stride=(2, 2)), "p2")
    b.add("p3", _fpop(rng, (6, 2, 2)), "ap")
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
    program = loihi_delays(run_passes(b.build({"precision": "float32"}), FLOAT_PIPELINE))
    return program, (2, 8, 8), ["p1", "mp", "p2", "p3", "pa", "pb", "add", "pc", "ro", "c1", "ap", "dc"]


@pytest.mark.lava
@needs_lava
def test_float_equals_numba_on_dyadic_values() -> None:
    program, in_shape, probes = float_net(4)
    x = (np.random.default_rng(4).random((10, 2, *in_shape)) < 0.4).astype(np.float32)
    neurons = [p for p in probes if isinstance(program.node(p), Population)]
    res = _assert_same(program, x, probes + [f"{p}.v" for p in neurons])
    assert res["numba"].ops.total()["macs"] > 0
    # the host add of two spike trains: one accumulate per event of its second operand
    assert res["numba"].ops.per_node["add"]["syn_ops"].sum() == res["numba"].probes["pb"].sum() > 0
    assert all(res["numba"].probes[p].any() for p in ("p1", "p2", "p3", "pa", "pb", "pc"))


# ---------------------------------------------------------------- failures
@pytest.mark.lava
@needs_lava
def test_processes_are_stopped_when_a_run_fails(monkeypatch) -> None:
    from lava.proc.monitor.process import Monitor

    program, in_shape, _ = mlp(0)
    fixed = _loihi(program)

    def broken(self):  # noqa: ANN001
        raise RuntimeError("reading the monitor failed")

    monkeypatch.setattr(Monitor, "get_data", broken)
    with pytest.raises(RuntimeError, match="reading the monitor failed"):
        run(fixed, np.ones((3, 1, *in_shape)), backend="lava", probes=["p0.v"])
    assert multiprocessing.active_children() == []


def test_refusals_name_the_node_before_anything_starts() -> None:
    program, _, _ = mlp(0)
    with pytest.raises(BackendError, match=r"fc0 \(dense\): delay 0: .*delay 1 on every projection.*loihi"):
        lower(quantize(program))

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


# ---------------------------------------------------------------- the Loihi delay pass
def test_loihi_delays_makes_every_projection_one_step_late() -> None:
    program, _, _ = recurrent(0)
    assert {program.node(n).delay for n in ("sp", "fc", "id")} == {0} and program.node("rec").delay == 1
    out = loihi_delays(program)
    assert all(out.node(n).delay == 1 for n in ("sp", "rec", "fc", "id", "id2"))  # recurrent stays 1
    assert program.node("sp").delay == 0  # the input is unchanged
    assert loihi_delays(out) is out
    too_long = loihi_delays(program).with_graph(program.graph.copy())
    too_long.graph.nodes["fc"]["node"] = too_long.node("fc").replace(delay=2)
    with pytest.raises(ProgramError, match=r"node 'fc' \(dense\), field delay: 2 steps"):
        loihi_delays(too_long)
    assert is_loihi_target("loihi2") and is_loihi_target("Loihi1") and not is_loihi_target("generic")


def test_compile_for_loihi_sets_delays_and_numba_honours_them() -> None:
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(6, 4, bias=False))
    x = torch.ones(3, 1, 6)
    generic = compile_program(net, x, target="generic")
    loihi = compile_program(net, x, target="loihi2")
    (d,) = [n for n, node in loihi.nodes() if isinstance(node, Dense)]
    assert generic.node(d).delay == 0 and loihi.node(d).delay == 1
    a = run(generic, x.numpy()).output
    b = run(loihi, x.numpy()).output
    np.testing.assert_array_equal(b[1:], a[:-1])
    assert not b[0].any()


# ---------------------------------------------------------------- command line
@pytest.mark.lava
@needs_lava
def test_cli_run_with_lava_gives_numba_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spike.cli import main
    from spike.compiler.serialize import save_program

    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input(shape=(1, 8, 8)))
    b.add("fc1", Dense(shape=(32,), in_shape=(64,), weight=_w(rng, (32, 64), 0.4)), "in")
    b.add("h", _lif(rng, (32,)), "fc1")
    b.add("fc2", Dense(shape=(10,), in_shape=(32,), weight=_w(rng, (10, 32), 0.6)), "h")
    b.add("o", _lif(rng, (10,)), "fc2")
    b.add("out", Output(shape=(10,)), "o")
    meta = {"precision": "float32", "target": "loihi2", "dataset": "digits",
            "encoding": {"kind": "rate", "num_steps": 8, "params": {}}}
    h5 = tmp_path / "net.h5"
    save_program(_loihi(b.build(meta)), h5)
    reports = {}
    for backend in ("numba", "lava"):
        js = tmp_path / f"{backend}.json"
        assert main(["run", str(h5), "--backend", backend, "--limit", "5", "--batch-size", "3", "--quiet",
                     "--json", str(js)]) == 0
        reports[backend] = json.loads(js.read_text())
    out = capsys.readouterr().out
    assert "backend lava" in out and "backend numba" in out
    nb, lv = reports["numba"], reports["lava"]
    assert lv["backend"] == "lava" and lv["accuracy"] == nb["accuracy"] and lv["num_samples"] == 5
    assert lv["ops"] == nb["ops"] and lv["ops"]["total"]["syn_ops"] > 0
    assert lv["energy"] == nb["energy"]  # loihi2 figures from the same counts
