"""The quantisation pass: per-layer report, purity, exactness on representable networks, and the
fixed-point validation rules."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.ir.nodes import Conv2d, Dense, Identity, Input, Output, Pool2d, Population
from spike.compiler.pipeline import FLOAT_PIPELINE, run_passes
from spike.compiler.ir.program import ProgramBuilder, ProgramError
from spike.compiler.passes.quantize import quantize
from spike.compiler.io.hdf5 import assert_programs_equal, load_program, save_program
from spike.compiler.ir.validate import validate_program


def _pop(shape, model="lif", **kw):
    kw.setdefault("beta", np.float32(0.9))
    return Population(shape=shape, model=model, reset="zero", reset_delay=False, **kw)


def _program(seed: int = 0):
    rng = np.random.default_rng(seed)
    b = ProgramBuilder()
    b.add("in", Input(shape=(1, 6, 6)))
    b.add("conv", Conv2d(shape=(3, 6, 6), in_shape=(1, 6, 6), padding=(1, 1),
                         weight=rng.normal(0, 0.6, (3, 1, 3, 3)).astype(np.float32),
                         bias=rng.normal(0, 0.1, 3).astype(np.float32)), "in")
    b.add("c1", _pop((3, 6, 6), threshold=np.float32(0.75)), "conv")
    b.add("pool", Pool2d(shape=(3, 3, 3), in_shape=(3, 6, 6), mode="sum", kernel=(2, 2), stride=(2, 2)), "c1")
    b.add("c2", _pop((3, 3, 3), model="cuba_lif", alpha=np.linspace(0, 1, 27).astype(np.float32),
                     beta=np.linspace(0, 1, 27).astype(np.float32)), "pool")
    b.add("fc", Dense(shape=(4,), in_shape=(27,), weight=rng.normal(0, 0.3, (4, 27)).astype(np.float32),
                      bias=rng.normal(0, 0.2, 4).astype(np.float32)), "c2")
    b.add("small", Dense(shape=(4,), in_shape=(27,), weight=rng.normal(0, 0.01, (4, 27)).astype(np.float32)), "c2")
    b.add("out_pop", _pop((4,), threshold=np.array([0.5, 1.0, 1.5, 2.0], np.float32)), ["fc", "small"])
    b.add("out", Output(shape=(4,)), "out_pop")
    return run_passes(b.build({"precision": "float32", "target": "loihi2"}), FLOAT_PIPELINE)


def _float_weights(node) -> np.ndarray:
    return np.asarray(node.weight if hasattr(node, "weight") else node.data, np.float64)


def test_report_weight_exponents_and_errors() -> None:
    program = _program()
    fixed = quantize(program)
    rep = fixed.metadata["quantization"]
    assert fixed.metadata["precision"] == "fixed" and fixed.metadata["target"] == "loihi2"
    for name in ("conv", "fc", "small"):
        r, node = rep[name], fixed.node(name)
        w = _float_weights(program.node(name))
        w_int = np.asarray(node.weight)
        assert node.weight.dtype == np.int8 and node.bias is None and node.num_weight_bits == 8
        assert node.weight_exp == r["weight_exp"]
        np.testing.assert_array_equal(w_int, np.rint(w * r["scale"]))  # w_int = round(w * scale)
        assert np.abs(w_int).max() == r["max_abs_weight_int"] <= 127
        if node.weight_exp > -8:  # the smallest exponent: one less would overflow 127
            assert np.rint(np.abs(w).max() * r["scale"] * 2) > 127
        assert r["max_abs_weight_error"] == pytest.approx(np.abs(w_int / r["scale"] - w).max())
        assert r["max_abs_weight_error"] <= 0.5 * r["lsb"] * (1 + 1e-9)
        assert r["lsb"] == pytest.approx(2.0 ** node.weight_exp / rep[r["targets"][0]]["scale"])
    # the group's largest weight fills the 8-bit range; the 30x smaller one gets its own exponent
    assert rep["fc"]["max_abs_weight_int"] == 127 and rep["small"]["max_abs_weight_int"] >= 64
    assert rep["small"]["weight_exp"] < rep["fc"]["weight_exp"]
    # the sum pool became a depthwise conv with one weight
    pool = fixed.node("pool")
    assert isinstance(pool, Conv2d) and pool.groups == 3 and rep["pool"]["from_pool"]
    assert np.unique(pool.weight).tolist() == [127]


def test_report_neuron_parameters() -> None:
    program = _program()
    fixed = quantize(program)
    rep = fixed.metadata["quantization"]
    for name in ("c1", "c2", "out_pop"):
        f, r, S = fixed.node(name), rep[name], rep[name]["scale"]
        src = program.node(name)
        thr = np.broadcast_to(np.asarray(src.threshold, np.float64), (f.size,))
        assert f.precision == "fixed" and r["v_scale"] == 64 * S
        np.testing.assert_array_equal(f.vth, np.rint(thr * S))
        assert r["threshold_error"] == pytest.approx(np.abs(f.vth / S - thr).max())
        assert r["threshold_error"] <= 0.5 / S
        beta = np.broadcast_to(np.asarray(src.beta, np.float64), (f.size,))
        np.testing.assert_array_equal(f.dv, np.clip(np.rint(4096 * (1 - beta)), 0, 4095))
        bias_v = f.bias_mant.astype(np.int64) << f.bias_exp
        assert np.abs(f.bias_mant).max() <= 4095 and 0 <= f.bias_exp.min() and f.bias_exp.max() <= 7
    # one shared threshold: the scale is snapped so that it is exact
    assert rep["c1"]["threshold_error"] == 0.0 and fixed.node("c1").vth[0] == rep["c1"]["scale"] * 0.75
    # decay extremes: beta 0 -> dv 4095, beta 1 -> dv 0; alpha 0 -> du 4095, alpha 1 -> du 0
    c2 = fixed.node("c2")
    assert (c2.dv[0], c2.dv[-1], c2.du[0], c2.du[-1]) == (4095, 0, 4095, 0)
    assert (fixed.node("c1").du == 4095).all()
    # the conv bias lands in the population: bias_mant << bias_exp = round(64 * S * b) (to its exponent)
    c1 = fixed.node("c1")
    b = np.repeat(program.node("conv").bias.astype(np.float64), 36)
    bias_v = c1.bias_mant.astype(np.int64) << c1.bias_exp
    assert np.abs(bias_v - 64 * rep["c1"]["scale"] * b).max() <= 2.0 ** (c1.bias_exp.max() - 1)
    assert rep["c1"]["bias_error"] <= 2.0 ** (c1.bias_exp.max() - 1) / (64 * rep["c1"]["scale"]) + 1e-12
    assert rep["c2"]["notes"] == [] and "alpha_error" in rep["c2"]


def test_quantize_is_pure_and_deterministic() -> None:
    program = _program()
    before = copy.deepcopy(program)
    nodes_before = {n: node for n, node in program.nodes()}
    a = quantize(program)
    b = quantize(program)
    assert_programs_equal(program, before)  # arrays, fields, metadata untouched
    assert all(program.node(n) is node for n, node in nodes_before.items())
    assert "quantization" not in program.metadata and program.metadata["precision"] == "float32"
    assert_programs_equal(a, b)
    with pytest.raises(ProgramError, match="already fixed point"):
        quantize(a)


def test_exactly_representable_network_is_lossless() -> None:
    """IF neurons (beta 1: exact decay), weights and biases on a 1/64 grid with max 127/64: every
    quantity is exact on the integer grid, so float and fixed spike trains are identical, as is
    the li readout's membrane (v_int = v * v_scale)."""
    rng = np.random.default_rng(3)

    def grid(shape, top=127):
        w = rng.integers(-top, top + 1, shape)
        w.flat[0] = 127
        return (w / 64).astype(np.float32)

    b = ProgramBuilder()
    b.add("in", Input(shape=(20,)))
    b.add("fc1", Dense(shape=(16,), in_shape=(20,), weight=grid((16, 20)), bias=grid(16, 8)), "in")
    b.add("h", _pop((16,), model="if", beta=None, threshold=np.float32(2.0)), "fc1")
    b.add("rec", Dense(shape=(16,), in_shape=(16,), weight=grid((16, 16), 40), delay=1), "h")
    b.connect("rec", "h")
    b.add("fc2", Dense(shape=(5,), in_shape=(16,), weight=grid((5, 16), 6)), "h")
    b.add("ro", Population(shape=(5,), model="li", beta=np.float32(1.0)), "fc2")
    b.add("out", Output(shape=(5,)), "ro")
    program = run_passes(b.build({"precision": "float32"}), FLOAT_PIPELINE)
    fixed = quantize(program)
    x = (rng.random((30, 4, 20)) < 0.3).astype(np.float32)
    rf = run(program, x, backend="numba", probes=["h"])
    v_scale = fixed.metadata["quantization"]["ro"]["v_scale"]
    assert np.abs(rf.output).max() * v_scale < 2**23 - 1  # the readout stays inside 24 bits (no clip)
    for backend in ("numba", "torch"):
        rq = run(fixed, x, backend=backend, probes=["h"])
        np.testing.assert_array_equal(rq.probes["h"], rf.probes["h"])
        np.testing.assert_array_equal(rq.output, rf.output * v_scale)
    assert 0.05 < rf.probes["h"].mean() < 0.9


def test_weight_bits_and_arguments() -> None:
    fixed = quantize(_program(), weight_bits=4)
    for name in ("conv", "fc", "small"):
        node = fixed.node(name)
        assert node.num_weight_bits == 4 and np.abs(node.weight).max() <= 7
    validate_program(fixed)
    with pytest.raises(ValueError, match="weight_bits"):
        quantize(_program(), weight_bits=9)


def test_fixed_program_validation_and_files(tmp_path) -> None:
    fixed = quantize(_program())
    validate_program(fixed)
    path = tmp_path / "fixed.h5"
    save_program(fixed, path)
    loaded = load_program(path)
    assert_programs_equal(fixed, loaded)
    x = (np.random.default_rng(0).random((6, 2, 1, 6, 6)) < 0.4).astype(np.float32)
    np.testing.assert_array_equal(run(loaded, x, backend="numba").output, run(fixed, x, backend="numba").output)

    def broken(name: str, **changes):
        g = fixed.graph.copy()
        g.nodes[name]["node"] = fixed.node(name).replace(**changes)
        return fixed.with_graph(g)

    cases = [
        (broken("c1", dv=np.full(108, 5000, np.int32)), r"'c1'.*dv.*\[0, 4095\]"),
        (broken("c1", vth=np.full(108, 2**17, np.int32)), r"'c1'.*vth.*17-bit"),
        (broken("c1", bias_exp=np.full(108, 8, np.int32)), r"'c1'.*bias_exp"),
        (broken("c1", reset="subtract"), r"'c1'.*reset"),
        (broken("c1", precision="float32"), r"'c1'.*precision"),
        (broken("fc", weight=np.full((4, 27), 200, np.int16)), r"'fc'.*weight.*\[-128, 127\]"),
        (broken("fc", weight=np.full((4, 27), 0.5, np.float32)), r"'fc'.*integer values"),
        (broken("fc", bias=np.zeros(4, np.float32)), r"'fc'.*bias.*bias_mant"),
        (broken("fc", weight_exp=9), r"'fc'.*weight_exp"),
    ]
    for prog, match in cases:
        with pytest.raises(ProgramError, match=match):
            validate_program(prog)
    # integer weights in a float program
    program = _program()
    g = program.graph.copy()
    g.nodes["fc"]["node"] = program.node("fc").replace(weight=np.ones((4, 27), np.int8))
    with pytest.raises(ProgramError, match=r"'fc'.*integer weights"):
        validate_program(program.with_graph(g))


def test_compile_fixed_from_torch() -> None:
    from spike.neurons import LIF

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(2), nn.Linear(12, 10), LIF(beta=0.875, reset="zero", reset_delay=False),
                          nn.Linear(10, 4), LIF(beta=0.75, reset="zero", reset_delay=False))
    x = (torch.rand(10, 3, 12) < 0.4).float()
    fixed = compile_model(model, x, precision="fixed")
    assert fixed.metadata["precision"] == "fixed" and set(fixed.metadata["quantization"]) >= set(fixed.populations())
    outs = [run(fixed, x, backend=be).output for be in ("numba", "torch")]
    np.testing.assert_array_equal(outs[0], outs[1])
    bad = nn.Sequential(nn.Flatten(2), nn.Linear(12, 4), LIF(beta=0.875))  # snnTorch-style defaults
    with pytest.raises(ProgramError, match=r"reset='zero', reset_delay=False"):
        compile_model(bad, x, precision="fixed")
