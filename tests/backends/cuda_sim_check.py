"""Runs small programs on the "cuda" and "numba" backends and checks that every node's output,
every population's membrane and every operation count agree exactly (bit for bit).

Run by ``tests/backends/test_cuda_backend.py`` in a subprocess, with ``NUMBA_ENABLE_CUDASIM=1`` (Numba's
CUDA simulator: any machine) or on a real GPU. Weights here are NOT dyadic: float sums depend on
their order, so equality shows that the cuda kernels add in the numba kernels' order (and that no
multiply-add is fused on the GPU). Programs with target delays (``compiler/delays.py``: biases
behind delays, latency, programs compiled for loihi2) are also checked against their generic
program. ``--large`` adds programs wider than a GPU thread block.

    NUMBA_ENABLE_CUDASIM=1 python tests/backends/cuda_sim_check.py [--large] [--only NAME ...] [--skip NAME ...]
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from spike.backends import run
from spike.compiler.ir.nodes import Conv2d, Dense, Gate, Identity, Input, Output, Pool2d, Population, Sparse
from spike.compiler.ir.program import Program, ProgramBuilder
from spike.compiler.pipeline import FIXED_PIPELINE, run_passes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared builders
from helpers.models import ConvMaxPoolLIF, ConvResidual, dyadic_  # noqa: E402
from helpers.programs import (  # noqa: E402
    FLOATS, KEYS, conv_pool, loihi_pop, mixed_input, mlp, neurons, normal, pop, real_input, recurrent, residual,
    sigmoid_program, sparse, spikes,
)

weights = FLOATS.weights
# charges, reset rules and models beyond the plain LIF family (spike.semantics): field overrides
NEURON_FORMS = (
    dict(charge="tau_input", reset="zero", reset_delay=False, fire_ge=True, v_reset=-0.25),
    dict(charge="tau", reset="subtract", reset_delay=False, fire_ge=True),
    dict(charge="rate_input", reset="zero", reset_delay=False, fire_ge=True),
    dict(charge="rate", reset="none", reset_delay=False),
    dict(reset="subtract", reset_delay=False, reset_rule="snntorch"),
    dict(model="cuba_lif", reset="drop"),
    dict(model="alpha", reset="subtract"),
    dict(model="alpha", reset="zero"),
    dict(model="li", charge="tau_input"),
)


# ----------------------------------------------------------------------------- programs
#
# Those of ``helpers.programs`` (mlp, real and mixed input, conv + pooling, recurrent, residual,
# every neuron variant, sparse) with float32 weights, and the ones below.


def neuron_forms(rng):
    """Every charge, reset rule and model of ``NEURON_FORMS`` fed by a dense projection and a scaled
    identity, and a population that adds its recurrent input after its charge (snnTorch's RLeaky)."""
    return neurons(rng, FLOATS, NEURON_FORMS, scale=0.9, gain=1.0, late=True, p=0.5)


def _gate(rng, c_in: int, c_out: int, window: int, shape_in) -> Gate:
    """A gate head whose mask mixes channels always kept (bias +2), always masked (bias -2) and
    channels that depend on the sample's counts (bias 0, random weights)."""
    bias = np.zeros(c_out, np.float32)
    bias[0::3], bias[1::3] = 2.0, -2.0
    return Gate(shape=(c_out,), in_shape=tuple(shape_in), weight=weights(rng, (c_out, c_in), 1.5), bias=bias,
                window=window)


def ftwt(rng):
    """FTWT gates (float32): a gate on the input masking a conv population (spike input), and a
    windowed gate masking a population fed by two convs of its source (grouped, strided, with
    bias; one with delay 1), CUBA neurons with zero reset; a dense LI readout of the gated layer."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 6, 6)))
    b.add("c1", Conv2d(shape=(4, 6, 6), in_shape=(2, 6, 6), weight=weights(rng, (4, 2, 3, 3)),
                       bias=weights(rng, 4, 0.1), padding=(1, 1)), "in")
    b.add("g1", _gate(rng, 2, 4, 0, (2, 6, 6)), "in")
    b.add("p1", pop(rng, (4, 6, 6)), ["c1", "g1"])
    b.add("c2", Conv2d(shape=(6, 3, 3), in_shape=(4, 6, 6), weight=weights(rng, (6, 2, 3, 3)),
                       bias=weights(rng, 6, 0.1), stride=(2, 2), padding=(1, 1), groups=2), "p1")
    b.add("c2b", Conv2d(shape=(6, 3, 3), in_shape=(4, 6, 6), weight=weights(rng, (6, 4, 2, 2)),
                        stride=(2, 2), delay=1), "p1")
    b.add("g2", _gate(rng, 4, 6, 3, (4, 6, 6)), "p1")
    b.add("p2", pop(rng, (6, 3, 3), model="cuba_lif", reset="zero", reset_delay=False), ["c2", "g2", "c2b"])
    b.add("fc", Dense(shape=(5,), in_shape=(54,), weight=weights(rng, (5, 54))), "p2")
    b.add("ro", pop(rng, (5,), model="li"), "fc")
    b.add("out", Output(shape=(5,)), "ro")
    return b.build(), spikes(rng, 6, 3, (2, 6, 6), 0.35)


def fixed_conv(rng):
    """Loihi fixed point (``quantize``): conv, max pooling (an OR), grouped conv, average pooling
    (a depthwise conv once quantised), dense, an LI readout."""
    w = partial(normal, rng)
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 6, 6)))
    b.add("c1", Conv2d(shape=(4, 6, 6), in_shape=(2, 6, 6), weight=w((4, 2, 3, 3)), padding=(1, 1)), "in")
    b.add("p1", loihi_pop(rng, (4, 6, 6)), "c1")
    b.add("mp", Pool2d(shape=(4, 3, 3), in_shape=(4, 6, 6), mode="max", kernel=(2, 2), stride=(2, 2)), "p1")
    b.add("c2", Conv2d(shape=(6, 3, 3), in_shape=(4, 3, 3), weight=w((6, 2, 3, 3)), padding=(1, 1), groups=2), "mp")
    b.add("p2", loihi_pop(rng, (6, 3, 3), "cuba_lif"), "c2")
    b.add("fc", Dense(shape=(5,), in_shape=(54,), weight=w((5, 54))), "p2")
    b.add("ro", loihi_pop(rng, (5,), "li"), "fc")
    b.add("out", Output(shape=(5,)), "ro")
    return run_passes(b.build({"precision": "float32"}), FIXED_PIPELINE), spikes(rng, 6, 2, (2, 6, 6), 0.3)


def fixed_recurrent(rng, bias: bool = False):
    """Loihi fixed point: sparse (with a bias: the population's once quantised), recurrent dense
    (delay 1), identities, two sources."""
    w = partial(normal, rng)
    n_in, n = 20, 12
    mask = rng.random((n_in, n)) < 0.3
    rows, cols = np.nonzero(mask)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64)
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    b.add("sp", Sparse(shape=(n,), in_shape=(n_in,), indptr=indptr, indices=cols.astype(np.int64),
                       data=w(len(cols), 0.6), bias=w(n, 0.2) if bias else None), "in")
    b.add("pop", loihi_pop(rng, (n,)), "sp")
    b.add("rec", Dense(shape=(n,), in_shape=(n,), weight=w((n, n), 0.3), delay=1), "pop")
    b.connect("rec", "pop")
    b.add("id", Identity(shape=(n,), in_shape=(n,), scale=1.5, delay=1), "pop")
    b.add("id2", Identity(shape=(n,), in_shape=(n,), scale=-0.25), "pop")
    b.add("pop3", loihi_pop(rng, (n,)), ["id", "id2"])
    b.add("out3", Output(shape=(n,)), "pop3")
    return run_passes(b.build({"precision": "float32"}), FIXED_PIPELINE), spikes(rng, 8, 2, (n_in,), 0.3)


# ----------------------------------------------------------------------------- target delays
#
# Programs with biases behind delays and programs compiled for Loihi (``compiler/delays.py``): a
# projection's bias arrives with its events (``Program.onset`` = delay + its source's latency), a
# fixed-point population's own bias from its latency on. A case returning a third value (the
# generic program) is also checked to compute the same outputs and population records as it.


def bias_delays(rng):
    """Biases behind delays 2 and 3 (dense, sparse, conv into two populations): nothing, bias
    included, arrives before the delay."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 4, 4)))
    b.add("conv", Conv2d(shape=(3, 4, 4), in_shape=(2, 4, 4), weight=weights(rng, (3, 2, 3, 3)),
                         bias=weights(rng, 3, 0.3), padding=(1, 1), delay=2), "in")
    b.add("pc", pop(rng, (3, 4, 4)), "conv")
    b.add("fc", Dense(shape=(10,), in_shape=(32,), weight=weights(rng, (10, 32)), bias=weights(rng, 10, 0.3),
                      delay=2), "in")
    b.add("p1", pop(rng, (10,)), "fc")
    w = weights(rng, (8, 10)) * (rng.random((8, 10)) < 0.5)
    rows, cols = np.nonzero(w.T)
    indptr = np.concatenate([[0], np.cumsum(np.count_nonzero(w.T, axis=1))]).astype(np.int64)
    b.add("sp", Sparse(shape=(8,), in_shape=(10,), indptr=indptr, indices=cols.astype(np.int64),
                       data=w.T[rows, cols].astype(np.float32), bias=weights(rng, 8, 0.3), delay=3), "p1")
    b.add("p2", pop(rng, (8,), model="li"), "sp")
    b.add("out", Output(shape=(3, 4, 4)), "pc")
    b.add("out2", Output(shape=(8,)), "p2")
    return b.build(), spikes(rng, 7, 2, (2, 4, 4), 0.3)


def _balanced(make):
    """``make``'s program with Loihi's one-step synaptic delay, balanced (latency > 0)."""
    from spike.compiler.passes.delays import target_delays

    def case(rng):
        generic, x = make(rng)
        program = target_delays(generic, 1)
        assert program.total_latency > 0, "no latency to compensate (test too weak)"
        return program, x, generic

    return case


def _loihi_pair(model, x: np.ndarray, precision: str, delays: tuple[int, ...]):
    """The model compiled for loihi2 (checked: compensated latency, delays ``delays``), its input
    and the generic compile."""
    import torch

    from spike.compiler import compile as compile_model

    xt = torch.from_numpy(x)
    generic = compile_model(model, xt, precision=precision)
    loihi = compile_model(model, xt, target="loihi2", precision=precision)
    rec = loihi.metadata["target_delays"]
    assert rec["mode"] == "compensated" and loihi.total_latency >= 2, rec
    found = tuple(sorted({node.delay for _, node in loihi.nodes() if hasattr(node, "delay")}))
    assert found == delays, f"delays {found}, expected {delays}"
    return loihi, x, generic


def loihi_mlp(rng, precision: str = "float32"):
    """``build_model("mlp")`` with biases (dyadic), compiled for loihi2: latency 3."""
    from spike.models import build_model

    model = build_model("mlp", in_features=16, num_classes=4, hidden=[12, 8], beta=0.875, threshold=1.0,
                        reset="zero", reset_delay=False)
    dyadic_(model, int(rng.integers(1 << 30)), spread=160)
    return _loihi_pair(model.eval(), spikes(rng, 8, 2, (16,), 0.4), precision, (1,))


def loihi_residual(rng, precision: str = "float32"):
    """conv (bias) -> LIF -> conv -> conv -> LIF (+ Identity shortcut: delay 2) -> fc -> LIF."""
    model = ConvResidual(3, side=4, classes=4, conv1_bias=precision == "float32")
    dyadic_(model, int(rng.integers(1 << 30)), scale=64, spread=40)
    return _loihi_pair(model.eval(), spikes(rng, 6, 2, (1, 4, 4), 0.5), precision, (1, 2))


def large_mlp(rng):
    """Wider than a GPU block (several chunks in the compaction, several target tiles)."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(700,)))
    b.add("fc1", Dense(shape=(300,), in_shape=(700,), weight=weights(rng, (300, 700), 0.2), bias=weights(rng, 300, 0.1)), "in")
    b.add("p1", pop(rng, (300,)), "fc1")
    b.add("fc2", Dense(shape=(260,), in_shape=(300,), weight=weights(rng, (260, 300), 0.2), delay=1), "p1")
    b.add("p2", pop(rng, (260,), model="cuba_lif"), "fc2")
    b.add("fc3", Dense(shape=(10,), in_shape=(260,), weight=weights(rng, (10, 260), 0.3)), "p2")
    b.add("p3", pop(rng, (10,), model="li"), "fc3")
    b.add("out", Output(shape=(10,)), "p3")
    return b.build(), spikes(rng, 30, 5, (700,), 0.1)


def large_conv(rng):
    C, H, W = 8, 20, 20
    b = ProgramBuilder()
    b.add("in", Input(shape=(C, H, W)))
    b.add("conv", Conv2d(shape=(32, 20, 20), in_shape=(C, H, W), weight=weights(rng, (32, C, 3, 3), 0.3),
                         bias=weights(rng, 32, 0.1), padding=(1, 1)), "in")
    b.add("p1", pop(rng, (32, 20, 20)), "conv")
    b.add("pool", Pool2d(shape=(32, 10, 10), in_shape=(32, 20, 20), mode="avg", kernel=(2, 2), stride=(2, 2)), "p1")
    b.add("p2", pop(rng, (32, 10, 10)), "pool")
    b.add("out", Output(shape=(32, 10, 10)), "p2")
    return b.build(), spikes(rng, 12, 3, (C, H, W), 0.1)


def maxpool_currents(rng, target: str = "generic"):
    """snnTorch-style conv -> max pooling of currents (a host op) -> LIF compiled for ``target``;
    the numba run equals the model (and the cuda run numba)."""
    import torch

    from spike.compiler import compile as compile_model

    model = dyadic_(ConvMaxPoolLIF(1, 3, 2), int(rng.integers(1 << 30)), spread=128).eval()
    x = spikes(rng, 5, 2, (2, 8, 8), 0.5)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert expected.sum() > 0
    program = compile_model(model, torch.from_numpy(x), target=target)
    assert np.array_equal(run(program, x, backend="numba").output, expected), target
    return program, x


def spikegpt(rng):
    """A small SpikeGPT (host ops: LayerNorm, token mix, matmuls, WKV, sigmoid, squared ReLU),
    run token by token; output projections scaled up so that SN1/SN2 fire."""
    import torch

    from spike.models.spikegpt.lowering import lower_spikegpt
    from spike.models.spikegpt.model import build_spikegpt

    torch.manual_seed(int(rng.integers(1 << 30)))
    model = build_spikegpt("tiny", vocab_size=11, n_layer=2, n_embd=8).eval()
    with torch.no_grad():
        for blk in model.blocks:
            blk.att.output.weight.mul_(8)
            blk.ffn.value.weight.mul_(8)
    T, B = 6, 2
    x = np.zeros((T, B, 11), np.float32)
    x[np.arange(T)[:, None], np.arange(B)[None], rng.integers(0, 11, (T, B))] = 1
    return lower_spikegpt(model), x


CASES: dict[str, Callable] = {
    "mlp": mlp,
    "real_input": real_input,
    "mixed_input": mixed_input,
    "conv_avg": lambda rng: conv_pool(rng, "avg", (2, 2), (1, 1), 2, (3, 3)),
    "conv_max": lambda rng: conv_pool(rng, "max", (1, 1), (0, 0), 1, (3, 3)),
    "conv_sum": lambda rng: conv_pool(rng, "sum", (2, 1), (1, 2), 1, (2, 3)),
    "recurrent": recurrent,
    "residual": residual,
    "neurons": neurons,
    "neuron_forms": neuron_forms,
    "sparse": sparse,
    "fixed_conv": fixed_conv,
    "fixed_recurrent": fixed_recurrent,
    "ftwt": ftwt,
    "spikegpt": spikegpt,
    "maxpool_currents": maxpool_currents,
    "maxpool_loihi2": lambda rng: maxpool_currents(rng, "loihi2"),
    "bias_delays": bias_delays,
    "latency_fixed": _balanced(lambda rng: fixed_recurrent(rng, bias=True)),
    "latency_ftwt": _balanced(ftwt),
    "loihi_mlp": loihi_mlp,
    "loihi_mlp_fixed": lambda rng: loihi_mlp(rng, "fixed"),
    "loihi_residual": loihi_residual,
    "loihi_res_fixed": lambda rng: loihi_residual(rng, "fixed"),
}
LARGE: dict[str, Callable] = {"large_mlp": large_mlp, "large_conv": large_conv}
#: cases run twice, the second time on the weights cached on the device and recycled arrays: one per
#: kind of kernel (dense, sparse, conv, pool, gates, host ops, fixed point, recurrence)
RERUN = {"mlp", "sparse", "conv_max", "recurrent", "ftwt", "fixed_conv", "spikegpt", "large_mlp", "large_conv"}


# ----------------------------------------------------------------------------- comparison


def compare(name: str, program: Program, x: np.ndarray, generic: Program | None = None) -> list[str]:
    """Differences between the cuda and numba runs of ``program`` (empty: identical), and with
    ``generic`` (the program before target delays): differences between its outputs and
    population records (spikes, v) and those of ``program`` on cuda."""
    nodes = [n for n, node in program.nodes() if not isinstance(node, (Input, Output))]
    probes = nodes + [f"{n}.v" for n in program.populations()]
    if program.metadata.get("precision") == "fixed":
        probes += [f"{n}.u" for n in program.populations()]
    ref = run(program, x, backend="numba", probes=probes)
    got = run(program, x, backend="cuda", probes=probes)
    runs = [(got, "run 1")]
    if generic is None and name in RERUN:  # cached weights, recycled arrays (with a generic program, its run below)
        runs.append((run(program, x, backend="cuda", probes=probes), "run 2"))
    errors = []
    for res, label in runs:
        for key in probes:
            a, b = res.probes[key], ref.probes[key]
            if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=True) \
                    or not np.array_equal(np.signbit(a), np.signbit(b)):
                bad = np.argwhere(a != b)[:3].tolist() if a.shape == b.shape else "shape"
                errors.append(f"{name} {label}: {key} differs (first at {bad})")
        for out in program.outputs:
            if not np.array_equal(res.outputs[out], ref.outputs[out]):
                errors.append(f"{name} {label}: output {out} differs")
        for node in nodes:
            for k in KEYS:
                a, b = res.ops.per_node[node][k], ref.ops.per_node[node][k]
                if not np.array_equal(a, b):
                    errors.append(f"{name} {label}: {node}.{k} cuda {a.tolist()} numba {b.tolist()}")
    total = ref.ops.total()
    if total["neuron_updates"] <= 0 or total["syn_ops"] + total["macs"] <= 0:
        errors.append(f"{name}: the program did no work (test too weak)")
    if generic is not None:
        pops = generic.populations()
        keys = pops + [f"{n}.v" for n in pops]
        base = run(generic, x, backend="cuda", probes=keys)
        for out in generic.outputs:
            if not np.array_equal(got.outputs[out], base.outputs[out]):
                errors.append(f"{name}: output {out} differs from the generic program's")
        for key in keys:
            if not np.array_equal(got.probes[key], base.probes[key]):
                errors.append(f"{name}: {key} differs from the generic program's")
        if not any(base.outputs[out].any() for out in generic.outputs):
            errors.append(f"{name}: silent outputs (test too weak)")
    return errors


def check_onsets() -> list[str]:
    """A bias behind a delay (dense, sparse, conv, gated conv; zero weights, zero input) is 0
    before the delay and the bias from then on, on cuda; a fixed-point population's bias waits
    for its latency."""
    from spike.compiler.passes.delays import target_delays

    errors = []
    d, T = 3, 6
    bias = np.array([0.5, -0.25, 0.75], np.float32)
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 2, 2)))
    b.add("fc", Dense(shape=(3,), in_shape=(8,), weight=np.zeros((3, 8), np.float32), bias=bias, delay=d), "in")
    b.add("sp", Sparse(shape=(3,), in_shape=(8,), indptr=np.zeros(9, np.int64), indices=np.zeros(0, np.int64),
                       data=np.zeros(0, np.float32), bias=bias, delay=d), "in")
    b.add("conv", Conv2d(shape=(3, 2, 2), in_shape=(2, 2, 2), weight=np.zeros((3, 2, 1, 1), np.float32), bias=bias,
                         delay=d), "in")
    b.add("gconv", Conv2d(shape=(3, 2, 2), in_shape=(2, 2, 2), weight=np.zeros((3, 2, 1, 1), np.float32), bias=bias,
                          delay=d), "in")
    b.add("gate", Gate(shape=(3,), in_shape=(2, 2, 2), weight=np.zeros((3, 2), np.float32),
                       bias=np.array([1, -1, 1], np.float32)), "in")
    b.add("gp", pop(np.random.default_rng(0), (3, 2, 2)), ["gconv", "gate"])
    for k in ("fc", "sp", "conv"):
        b.add(f"p_{k}", pop(np.random.default_rng(0), (3,) if k != "conv" else (3, 2, 2)), k)
        b.add(f"o_{k}", Output(shape=(3,) if k != "conv" else (3, 2, 2)), f"p_{k}")
    b.add("o_g", Output(shape=(3, 2, 2)), "gp")
    res = run(b.build(), np.zeros((T, 1, 2, 2, 2), np.float32), backend="cuda", probes=["fc", "sp", "conv", "gconv"])
    per_step = np.concatenate([np.zeros((d, 3), np.float32), np.tile(bias, (T - d, 1))])
    expected = {"fc": per_step, "sp": per_step, "conv": np.repeat(per_step, 4, axis=1),
                "gconv": np.repeat(per_step * np.array([1, 0, 1], np.float32), 4, axis=1)}
    for k, want in expected.items():
        got = res.probes[k][:, 0].reshape(T, -1)
        if not np.array_equal(got, want):
            errors.append(f"onset: {k} delivers {got.tolist()}, expected {want.tolist()}")
    # fixed point: the population's bias (from the projection's) waits for its latency
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("fc1", Dense(shape=(4,), in_shape=(4,), weight=np.eye(4, dtype=np.float32)), "in")
    b.add("p1", loihi_pop(np.random.default_rng(1), (4,)), "fc1")
    b.add("fc2", Dense(shape=(3,), in_shape=(4,), weight=np.zeros((3, 4), np.float32),
                       bias=np.full(3, 0.25, np.float32)), "p1")
    b.add("p2", Population(shape=(3,), model="li", beta=np.float32(0.5)), "fc2")
    b.add("out", Output(shape=(3,)), "p2")
    program = target_delays(run_passes(b.build({"precision": "float32"}), FIXED_PIPELINE), 1)
    if program.latency_of("p2") != 2:
        errors.append(f"onset: latency of p2 {program.latency_of('p2')}, expected 2")
    x = np.zeros((4, 1, 4), np.float32)
    raw = run(program.with_graph(program.graph, latency={}), x, backend="cuda", probes=["p2.v"]).probes["p2.v"]
    ref = run(program.with_graph(program.graph, latency={}), x, backend="numba", probes=["p2.v"]).probes["p2.v"]
    got = run(program, x, backend="cuda", probes=["p2.v"]).probes["p2.v"]
    if not raw[0].any() or not np.array_equal(raw, ref) or not np.array_equal(got, raw):
        errors.append(f"onset: fixed-point bias, aligned {got[:, 0].tolist()} vs no latency {raw[:, 0].tolist()}")
    return errors


def check_rules() -> list[str]:
    """Errors raised before a run, the utility kernels, and the result's bookkeeping."""
    from spike.backends import BackendError
    from spike.backends.cuda import kernels as K
    from spike.backends.cuda import backend as cuda_backend

    errors = []
    rng = np.random.default_rng(0)
    be = cuda_backend.BACKEND
    supported, be.host_ops = be.host_ops, frozenset({"add"})  # a backend without sigmoid
    try:
        run(sigmoid_program(rng), spikes(rng, 3, 1, (4,)), backend="cuda")
        errors.append("a sigmoid host op was not rejected")
    except BackendError as e:
        if "sigmoid" not in str(e):
            errors.append(f"unclear error for a sigmoid host op: {e}")
    finally:
        be.host_ops = supported
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("fc", Dense(shape=(4,), in_shape=(4,), weight=weights(rng, (4, 4))), "in")
    b.add("p", pop(rng, (4,)), "fc")
    b.add("out", Output(shape=(4,)), "p")
    prog = b.build()
    res = run(prog, spikes(rng, 3, 2, (4,)), backend="cuda")
    if res.backend != "cuda" or res.output.shape != (3, 2, 4) or res.output.dtype != np.float32:
        errors.append(f"result: backend {res.backend}, output {res.output.shape} {res.output.dtype}")
    fixed = prog.with_graph(prog.graph, metadata={"precision": "fixed"})  # float populations, bias
    try:
        run(fixed, spikes(rng, 3, 1, (4,)), backend="cuda")
        errors.append("a malformed fixed-point program was not rejected")
    except BackendError as e:
        if "fixed" not in str(e):
            errors.append(f"unclear error for a malformed fixed-point program: {e}")
    a = cuda_backend.to_device(np.arange(1, 50, dtype=np.int64))
    K.fill_zero[K.blocks_for(49), K.TPB](a)
    if a.copy_to_host().any():
        errors.append("fill_zero left non-zero values")
    return errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", action="store_true", help="add programs wider than a GPU block")
    ap.add_argument("--only", nargs="*", help="run only these cases")
    ap.add_argument("--skip", nargs="*", default=(), help="run every case but these")
    args = ap.parse_args(argv)
    from spike.backends.cuda import kernels as cuda_kernels

    every = dict(CASES, **(LARGE if args.large else {}))
    unknown = set(args.only or ()).union(args.skip) - set(every)
    if unknown:
        ap.error(f"unknown cases {sorted(unknown)}; the cases: {', '.join(every)}")
    seeds = {name: 100 + k for k, name in enumerate(every)}  # a case's program is the same in any selection
    cases = {k: v for k, v in every.items() if (not args.only or k in args.only) and k not in args.skip}
    if cuda_kernels.SIMULATING:  # simulated threads hand the GIL over at every barrier
        sys.setswitchinterval(5e-5)
    print(f"cuda backend check: simulator={cuda_kernels.SIMULATING} TPB={cuda_kernels.TPB}", flush=True)
    errors = check_rules()
    print(f"  {'rules':12s} {'OK' if not errors else 'FAILED'}", flush=True)
    errs = check_onsets()
    errors += errs
    print(f"  {'onsets':12s} {'OK' if not errs else 'FAILED'}", flush=True)
    for name, make in cases.items():
        t = time.perf_counter()
        made = make(np.random.default_rng(seeds[name]))
        errs = compare(name, *made)
        errors += errs
        print(f"  {name:12s} {'OK' if not errs else 'FAILED'} ({time.perf_counter() - t:.1f} s)", flush=True)
    for e in errors:
        print("ERROR", e)
    print("ALL EQUAL" if not errors else f"{len(errors)} DIFFERENCES")
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
