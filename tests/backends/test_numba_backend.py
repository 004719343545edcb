"""The numba backend against a naive per-step torch reference written here: exact outputs,
membranes and operation counts (counts derived independently from the delivered inputs)."""
from __future__ import annotations

import zlib

import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spike.backends import BackendError, run
from spike.compiler.ir.nodes import (
    BatchNorm, Conv2d, Dense, HostOp, Identity, Input, Output, Pool2d, Population, Sparse,
)
from spike.compiler.ir.program import Program, ProgramBuilder

from helpers import programs as P
from helpers.programs import DYADIC, KEYS, NEURON_VARIANTS


# ----------------------------------------------------------------------------- reference


def signal_of(program: Program, name: str) -> str:
    node = program.node(name)
    if isinstance(node, Input):
        return node.signal
    if isinstance(node, Population):
        return "real" if node.model == "li" else "spike"
    if isinstance(node, Pool2d):
        src = signal_of(program, program.sources(name)[0])
        return "spike" if node.mode == "max" and src == "spike" else "real"
    if isinstance(node, Identity):
        src = signal_of(program, program.sources(name)[0])
        return src if node.scale == 1.0 else "real"
    return "real" if isinstance(node, HostOp) else "current"


def reference(program: Program, x: np.ndarray):
    """Naive per-step execution with torch ops; returns outputs, values, membranes and counts.

    Steps outermost, nodes in dependency order of the graph without delayed edges; projections
    read their source ``delay`` steps back and deliver nothing, bias included, before that.
    """
    T, B = x.shape[:2]
    t32 = torch.float32
    und = nx.DiGraph()
    und.add_nodes_from(program.graph.nodes)
    for u, v in program.graph.edges:
        node = program.node(v)
        if not (hasattr(node, "delay") and node.delay >= 1):
            und.add_edge(u, v)
    order = list(nx.topological_sort(und))
    hist = {n: [] for n in order}
    mems = {n: [] for n in order}
    state = {}
    counts = {n: {k: np.zeros(B, np.int64) for k in KEYS} for n, _ in program.nodes()}
    for t in range(T):
        for name in order:
            node = program.node(name)
            srcs = program.sources(name)
            n_out = node.size
            if isinstance(node, Input):
                hist[name].append(torch.from_numpy(x[t].reshape(B, -1)))
                continue
            if isinstance(node, Output):
                hist[name].append(hist[srcs[0]][t])
                continue
            c = counts[name]
            if isinstance(node, Population):
                cur = hist[srcs[0]][t].clone()
                for s in srcs[1:]:
                    cur = cur + hist[s][t]
                st = state.setdefault(
                    name, {k: torch.zeros(B, n_out) for k in ("v", "s", "i")}
                )
                beta = torch.from_numpy(node.beta)
                thr = torch.from_numpy(node.threshold)
                gain = torch.tensor(node.gain, dtype=t32)
                if node.model == "cuba_lif":
                    st["i"] = torch.from_numpy(node.alpha) * st["i"] + cur
                    cur = st["i"]
                v, s = st["v"], st["s"]
                if node.model == "li":
                    v = beta * v + gain * cur
                    out = v
                    s = torch.zeros_like(v)
                else:
                    if node.reset_delay:
                        if node.reset == "subtract":
                            v = (beta * v + gain * cur) - thr * s
                        elif node.reset == "zero":
                            v = beta * ((1 - s) * v) + gain * cur
                        else:
                            v = beta * v + gain * cur
                        s = (v >= thr if node.fire_ge else v > thr).to(t32)
                    else:
                        h = beta * v + gain * cur
                        s = (h >= thr if node.fire_ge else h > thr).to(t32)
                        v = {"subtract": h - thr * s, "zero": h * (1 - s), "none": h}[node.reset]
                    out = s
                st["v"], st["s"] = v, s
                hist[name].append(out)
                mems[name].append(v)
                c["neuron_updates"] += n_out
                c["spikes"] += s.sum(1).to(torch.int64).numpy()
                continue
            if isinstance(node, HostOp):
                acc = hist[srcs[0]][t].clone()
                for s in srcs[1:]:
                    acc = acc + hist[s][t]
                    if signal_of(program, s) == "spike":  # one accumulate per event
                        c["syn_ops"] += (hist[s][t] != 0).sum(1).numpy()
                    else:
                        c["host_flops"] += n_out
                hist[name].append(acc)
                continue
            # projections
            src = srcs[0]
            ts = t - node.delay
            xin = hist[src][ts] if ts >= 0 else torch.zeros(B, node.in_size)
            nz = (xin != 0).to(t32)
            key = "syn_ops" if signal_of(program, src) == "spike" else "by_values"
            if isinstance(node, Dense):
                w = torch.from_numpy(node.weight)
                b = None if node.bias is None else torch.from_numpy(node.bias)
                y = F.linear(xin, w, b)
                pairs = (nz @ (w != 0).to(t32).T).sum(1)  # = sum over events of nnz(W[:, i])
                dense = node.in_size * n_out
            elif isinstance(node, Sparse):
                w = torch.zeros(n_out, node.in_size)
                for i in range(node.in_size):
                    for k in range(node.indptr[i], node.indptr[i + 1]):
                        w[node.indices[k], i] += float(node.data[k])
                nnz_row = torch.tensor(
                    [np.count_nonzero(node.data[node.indptr[i]:node.indptr[i + 1]]) for i in range(node.in_size)],
                    dtype=t32,
                )
                b = None if node.bias is None else torch.from_numpy(node.bias)
                y = F.linear(xin, w, b)
                pairs = nz @ nnz_row
                dense = node.in_size * n_out
            elif isinstance(node, Conv2d):
                w = torch.from_numpy(node.weight)
                b = None if node.bias is None else torch.from_numpy(node.bias)
                kw = dict(stride=node.stride, padding=node.padding, groups=node.groups)
                xi = xin.reshape(B, *node.in_shape)
                y = F.conv2d(xi, w, b, **kw).reshape(B, -1)
                pairs = F.conv2d(nz.reshape(B, *node.in_shape), (w != 0).to(t32), **kw).reshape(B, -1).sum(1)
                dense = F.conv2d(torch.ones(1, *node.in_shape), torch.ones_like(w), **kw).sum()
            elif isinstance(node, Pool2d):
                kw = dict(kernel_size=node.kernel, stride=node.stride, padding=node.padding)
                xi = xin.reshape(B, *node.in_shape)
                if node.mode == "max":
                    y = F.max_pool2d(xi, **kw)  # inputs here are >= 0: -inf padding acts as zero
                elif node.mode == "avg":
                    y = F.avg_pool2d(xi, **kw, count_include_pad=True)
                else:
                    y = F.avg_pool2d(xi, **kw, divisor_override=1)
                y = y.reshape(B, -1)
                if node.mode == "max":
                    pairs, dense = torch.zeros(B), 0
                else:
                    # pooling accumulates: pool_ops, no syn_ops/macs nor dense_ops (NeuroBench counts no pooling)
                    pairs, dense = F.avg_pool2d(nz.reshape(B, *node.in_shape), **kw, divisor_override=1).reshape(B, -1).sum(1), 0
                    key = "pool_ops"
            elif isinstance(node, Identity):
                y = xin * node.scale if node.scale != 1.0 else xin.clone()
                pairs = nz.sum(1)
                dense = n_out
            else:
                raise AssertionError(node.KIND)
            if ts < 0:  # the bias travels with the events
                y = torch.zeros_like(y)
            hist[name].append(y)
            if key == "by_values":  # per (step, sample): MACs when a value is outside {-1, 0, 1} (NeuroBench)
                real = ((xin != 0) & (xin != 1) & (xin != -1)).any(1)
                none = torch.zeros_like(pairs)
                c["macs"] += torch.where(real, pairs, none).round().to(torch.int64).numpy()
                c["syn_ops"] += torch.where(real, none, pairs).round().to(torch.int64).numpy()
            else:
                c[key] += pairs.round().to(torch.int64).numpy()
            c["dense_ops"] += int(round(float(dense)))
    stack = {n: torch.stack(v).numpy() for n, v in hist.items() if v}
    mem = {n: torch.stack(v).numpy() for n, v in mems.items() if v}
    return stack, mem, counts


def check(program: Program, x: np.ndarray, *, mem_of=()):
    """Run numba and the reference; compare every node's output, membranes and counts exactly."""
    probes = [n for n, node in program.nodes() if not isinstance(node, (Input, Output))]
    res = run(program, x, backend="numba", probes=probes + [f"{n}.v" for n in mem_of])
    ref, ref_mem, ref_counts = reference(program, x)
    T, B = x.shape[:2]
    for name in probes:
        got = res.probes[name].reshape(T, B, -1)
        np.testing.assert_array_equal(got, ref[name], err_msg=f"output of {name}")
    for name in program.outputs:
        np.testing.assert_array_equal(res.outputs[name].reshape(T, B, -1), ref[name])
    for name in mem_of:
        np.testing.assert_array_equal(res.probes[f"{name}.v"].reshape(T, B, -1), ref_mem[name], err_msg=f"{name}.v")
    for name in probes:
        for k in KEYS:
            np.testing.assert_array_equal(
                res.ops.per_node[name][k], ref_counts[name][k], err_msg=f"{name}: {k}"
            )
    return res, ref


# ----------------------------------------------------------------------------- networks


@pytest.mark.parametrize("seed,batch", [(0, 1), (1, 3), (2, 4)])
def test_dense_mlp(seed, batch):
    rng = np.random.default_rng(seed)
    prog, x = P.mlp(rng, DYADIC, sizes=(24, 20, 6), steps=15, batch=batch)
    res, _ = check(prog, x, mem_of=("p1", "p2"))
    assert res.ops.per_node["fc1"]["syn_ops"].sum() > 0 and res.ops.per_node["p1"]["spikes"].sum() > 0
    # a second run reuses the cached weights and must give the same answer
    res2 = run(prog, x, backend="numba")
    np.testing.assert_array_equal(res2.output, res.output)


@pytest.mark.parametrize("model,reset,reset_delay,fire_ge", NEURON_VARIANTS)
def test_population_models(model, reset, reset_delay, fire_ge):
    """Two projections into one population (summed in source order), non-dyadic beta/threshold:
    the float32 operation order must match exactly."""
    rng = np.random.default_rng(7)
    prog, x = P.neurons(rng, DYADIC, variants=[(model, reset, reset_delay, fire_ge)], steps=20, batch=3)
    res, _ = check(prog, x, mem_of=("p0",))
    if model != "li":
        assert 0 < res.ops.per_node["p0"]["spikes"].sum() < 20 * 3 * 10


@pytest.mark.parametrize(
    "stride,padding,groups,kernel",
    [((1, 1), (0, 0), 1, (3, 3)), ((2, 2), (1, 1), 2, (3, 3)), ((2, 1), (1, 2), 1, (2, 3))],
)
@pytest.mark.parametrize("pool_mode", ["avg", "max", "sum"])
def test_conv_pool(stride, padding, groups, kernel, pool_mode):
    rng = np.random.default_rng(zlib.crc32(repr((stride, padding, groups, pool_mode)).encode()))  # stable
    prog, x = P.conv_pool(rng, pool_mode, stride, padding, groups, kernel, DYADIC, steps=6)
    res, _ = check(prog, x)
    assert res.ops.per_node["conv"]["syn_ops"].sum() > 0
    if pool_mode != "max":
        pc = res.ops.per_node["pool"]
        assert pc["macs"].sum() == 0 and pc["syn_ops"].sum() == 0 and pc["dense_ops"].sum() == 0
        assert pc["pool_ops"].sum() > 0


def test_conv_real_input_counts_macs():
    """A real-valued input (values, not events) counts MACs and multiplies by the values."""
    res, _ = check(*P.real_input(np.random.default_rng(3), DYADIC))
    assert res.ops.per_node["conv"]["syn_ops"].sum() == 0 and res.ops.per_node["conv"]["macs"].sum() > 0


def test_counts_decided_per_step_and_sample():
    """A real-valued input whose (step, sample)s carry real values, 0/1 or -1/0/1 events: a
    projection's pairs of a step are ``macs`` where that sample's values of that step leave
    {-1, 0, 1}, else ``syn_ops`` (NeuroBench's per-call rule with batch size 1), for dense, sparse,
    conv, grouped conv and scaled identity, with delays; numba equals the reference and torch."""
    program, x = P.mixed_input(np.random.default_rng(7), DYADIC, gate=False, steps=10, batch=4)
    res, _ = check(program, x)
    other = run(program, x, backend="torch")
    for name in ("fc", "sp", "conv", "id", "gconv"):
        got = res.ops.per_node[name]
        assert got["syn_ops"].min() > 0 and got["macs"].min() > 0, name
        for k in KEYS:
            np.testing.assert_array_equal(other.ops.per_node[name][k], got[k], err_msg=f"torch {name}: {k}")


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse(seed):
    prog, x = P.sparse(np.random.default_rng(seed), DYADIC, sizes=(16, 12), duplicate=False, steps=12, batch=3)
    check(prog, x, mem_of=("p",))


def test_recurrent_population():
    """A population driving itself through a delay-1 dense projection (stepped one step at a time)."""
    prog, x = P.recurrent(np.random.default_rng(11), DYADIC, n=12, steps=25)
    res, _ = check(prog, x, mem_of=("p",))
    assert res.ops.per_node["rec"]["syn_ops"].sum() > 0


def test_residual_identity_and_hostop():
    prog, x = P.residual(np.random.default_rng(5), DYADIC, n=10, steps=16, batch=3)
    res, _ = check(prog, x)
    # the accumulator "a" is free; "c" and "in" carry spikes: one syn_op per event, no host flops
    assert res.ops.per_node["sum"]["host_flops"].tolist() == [0] * 3
    assert res.ops.per_node["sum"]["syn_ops"].tolist() == np.count_nonzero(x, axis=(0, 2)).__add__(
        res.ops.per_node["c"]["spikes"]).tolist()


def test_unsupported_nodes_rejected_before_running(monkeypatch):
    from spike.backends.numba import backend as numba_backend

    called = []
    monkeypatch.setitem(numba_backend.BACKEND.kernels, ("dense", "plain"),
                        lambda ctx, t0, t1: called.append(ctx.name))
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("fc", Dense(shape=(4,), in_shape=(4,), weight=DYADIC.weights(rng, (4, 4))), "in")
    b.add("bn", BatchNorm(shape=(4,), weight=np.ones(4), bias=np.zeros(4), running_mean=np.zeros(4),
                          running_var=np.ones(4)), "fc")
    b.add("out", Output(shape=(4,)), "bn")
    with pytest.raises(BackendError, match="bn"):
        run(b.build(), P.spikes(rng, 3, 1, (4,)), backend="numba")
    monkeypatch.setattr(numba_backend.BACKEND, "host_ops", frozenset({"add"}))  # a backend without it
    with pytest.raises(BackendError, match="sigmoid"):
        run(P.sigmoid_program(rng, DYADIC), P.spikes(rng, 3, 1, (4,)), backend="numba")
    assert called == []
