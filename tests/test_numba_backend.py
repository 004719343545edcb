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

KEYS = ("syn_ops", "macs", "dense_ops", "pool_ops", "neuron_updates", "spikes", "host_flops")


# ----------------------------------------------------------------------------- helpers


def dyadic(rng, shape, k=48):
    """Weights that are multiples of 2^-8: float sums are exact in any order."""
    return (rng.integers(-k, k + 1, size=shape) / 256.0).astype(np.float32)


def spikes(rng, T, B, shape, p=0.3):
    return (rng.random((T, B, *shape)) < p).astype(np.float32)


def pop(rng, shape, model="lif", reset="subtract", reset_delay=True, fire_ge=False, gain=1.0):
    n = int(np.prod(shape))
    return Population(
        shape=tuple(shape),
        model=model,
        beta=(np.ones(n) if model == "if" else rng.uniform(0.5, 0.95, n)).astype(np.float32),
        threshold=rng.uniform(0.25, 0.75, n).astype(np.float32),
        alpha=rng.uniform(0.3, 0.8, n).astype(np.float32) if model == "cuba_lif" else None,
        gain=gain,
        reset=reset,
        reset_delay=reset_delay,
        fire_ge=fire_ge,
    )


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
    b = ProgramBuilder()
    b.add("in", Input(shape=(24,)))
    b.add("fc1", Dense(shape=(20,), in_shape=(24,), weight=dyadic(rng, (20, 24)), bias=dyadic(rng, 20, 8)), "in")
    b.add("p1", pop(rng, (20,)), "fc1")
    w2 = dyadic(rng, (6, 20))
    w2[:, :3] = 0  # columns without synapses: no syn_ops
    b.add("fc2", Dense(shape=(6,), in_shape=(20,), weight=w2, delay=2), "p1")
    b.add("p2", pop(rng, (6,), model="li"), "fc2")
    b.add("out", Output(shape=(6,)), "p2")
    prog = b.build()
    x = spikes(rng, 15, batch, (24,))
    res, _ = check(prog, x, mem_of=("p1", "p2"))
    assert res.ops.per_node["fc1"]["syn_ops"].sum() > 0 and res.ops.per_node["p1"]["spikes"].sum() > 0
    # a second run reuses the cached weights and must give the same answer
    res2 = run(prog, x, backend="numba")
    np.testing.assert_array_equal(res2.output, res.output)


@pytest.mark.parametrize(
    "model,reset,reset_delay,fire_ge",
    [
        ("lif", "subtract", True, False),
        ("lif", "zero", True, True),
        ("lif", "none", True, False),
        ("lif", "subtract", False, True),
        ("lif", "zero", False, False),
        ("if", "none", False, False),
        ("cuba_lif", "subtract", True, False),
        ("cuba_lif", "zero", False, True),
        ("li", "none", True, False),
    ],
)
def test_population_models(model, reset, reset_delay, fire_ge):
    """Two projections into one population (summed in source order), non-dyadic beta/threshold:
    the float32 operation order must match exactly."""
    rng = np.random.default_rng(7)
    b = ProgramBuilder()
    b.add("in", Input(shape=(10,)))
    b.add("fc", Dense(shape=(10,), in_shape=(10,), weight=dyadic(rng, (10, 10), 96)), "in")
    b.add("id", Identity(shape=(10,), in_shape=(10,), scale=0.5), "in")
    b.add("p", pop(rng, (10,), model, reset, reset_delay, fire_ge, gain=0.75), ["fc", "id"])
    b.add("out", Output(shape=(10,)), "p")
    x = spikes(rng, 20, 3, (10,), 0.4)
    res, _ = check(b.build(), x, mem_of=("p",))
    if model != "li":
        assert 0 < res.ops.per_node["p"]["spikes"].sum() < 20 * 3 * 10


@pytest.mark.parametrize(
    "stride,padding,groups,kernel",
    [((1, 1), (0, 0), 1, (3, 3)), ((2, 2), (1, 1), 2, (3, 3)), ((2, 1), (1, 2), 1, (2, 3))],
)
@pytest.mark.parametrize("pool_mode", ["avg", "max", "sum"])
def test_conv_pool(stride, padding, groups, kernel, pool_mode):
    rng = np.random.default_rng(zlib.crc32(repr((stride, padding, groups, pool_mode)).encode()))  # stable
    C, H, W, C_out = 2, 7, 8, 4
    Ho = (H + 2 * padding[0] - kernel[0]) // stride[0] + 1
    Wo = (W + 2 * padding[1] - kernel[1]) // stride[1] + 1
    w = dyadic(rng, (C_out, C // groups, *kernel), 64)
    w[1, 0, 0, :] = 0  # some zero weights: not counted as pairs
    b = ProgramBuilder()
    b.add("in", Input(shape=(C, H, W)))
    b.add(
        "conv",
        Conv2d(shape=(C_out, Ho, Wo), in_shape=(C, H, W), weight=w, bias=dyadic(rng, C_out, 8),
               stride=stride, padding=padding, groups=groups),
        "in",
    )
    b.add("p1", pop(rng, (C_out, Ho, Wo)), "conv")
    Po, Qo = (Ho + 2 - 2) // 2 + 1, (Wo + 2 - 3) // 1 + 1  # kernel (2, 3), stride (2, 1), padding (1, 1)
    b.add(
        "pool",
        Pool2d(shape=(C_out, Po, Qo), in_shape=(C_out, Ho, Wo), mode=pool_mode, kernel=(2, 3),
               stride=(2, 1), padding=(1, 1)),
        "p1",
    )
    b.add("p2", pop(rng, (C_out, Po, Qo)), "pool")
    b.add("out", Output(shape=(C_out, Po, Qo)), "p2")
    x = spikes(rng, 6, 2, (C, H, W), 0.3)
    res, _ = check(b.build(), x)
    assert res.ops.per_node["conv"]["syn_ops"].sum() > 0
    if pool_mode != "max":
        pc = res.ops.per_node["pool"]
        assert pc["macs"].sum() == 0 and pc["syn_ops"].sum() == 0 and pc["dense_ops"].sum() == 0
        assert pc["pool_ops"].sum() > 0


def test_conv_real_input_counts_macs():
    """A real-valued input (values, not events) counts MACs and multiplies by the values."""
    rng = np.random.default_rng(3)
    b = ProgramBuilder()
    b.add("in", Input(shape=(3, 5, 5), signal="real"))
    b.add("conv", Conv2d(shape=(2, 5, 5), in_shape=(3, 5, 5), weight=dyadic(rng, (2, 3, 3, 3)),
                         padding=(1, 1)), "in")
    b.add("fc", Dense(shape=(4,), in_shape=(75,), weight=dyadic(rng, (4, 75))), "in")
    b.add("p", pop(rng, (2, 5, 5)), "conv")
    b.add("q", pop(rng, (4,)), "fc")
    b.add("out", Output(shape=(2, 5, 5)), "p")
    b.add("out2", Output(shape=(4,)), "q")
    x = (rng.integers(0, 5, size=(5, 2, 3, 5, 5)) / 4.0).astype(np.float32)  # exact sums
    res, _ = check(b.build(), x)
    assert res.ops.per_node["conv"]["syn_ops"].sum() == 0 and res.ops.per_node["conv"]["macs"].sum() > 0


def mixed_values(rng, T, B, shape):
    """``[T, B, *shape]``: per (step, sample) real values (multiples of 1/4), 0/1 or -1/0/1 events."""
    kind = rng.integers(0, 3, size=(T, B))  # 0 real, 1 binary, 2 ternary
    kind[:3, 0] = (0, 1, 2)
    ev = (rng.random((T, B, *shape)) < 0.3).astype(np.float32)
    tern = ev * np.where(rng.random(ev.shape) < 0.5, -1, 1).astype(np.float32)
    vals = (rng.integers(0, 5, size=(T, B, *shape)) / 4.0).astype(np.float32)
    k = kind.reshape(T, B, *[1] * len(shape))
    return np.where(k == 0, vals, np.where(k == 1, ev, tern)).astype(np.float32)


def test_counts_decided_per_step_and_sample():
    """A real-valued input whose (step, sample)s carry real values, 0/1 or -1/0/1 events: a
    projection's pairs of a step are ``macs`` where that sample's values of that step leave
    {-1, 0, 1}, else ``syn_ops`` (NeuroBench's per-call rule with batch size 1), for dense, sparse,
    grouped conv and scaled identity, with delays; numba equals the reference and torch."""
    rng = np.random.default_rng(7)
    shape = (2, 4, 4)
    n = 32
    w = dyadic(rng, (6, n)) * (rng.random((6, n)) < 0.4)
    indptr = np.concatenate([[0], np.cumsum((w != 0).sum(0))])
    indices = np.concatenate([np.nonzero(w[:, i])[0] for i in range(n)])
    data = np.concatenate([w[w[:, i] != 0, i] for i in range(n)]).astype(np.float32)
    b = ProgramBuilder()
    b.add("in", Input(shape=shape, signal="real"))
    b.add("fc", Dense(shape=(6,), in_shape=(n,), weight=dyadic(rng, (6, n)), bias=dyadic(rng, 6, 4)), "in")
    b.add("sp", Sparse(shape=(6,), in_shape=(n,), indptr=indptr, indices=indices, data=data, delay=1), "in")
    b.add("conv", Conv2d(shape=(4, 4, 4), in_shape=shape, weight=dyadic(rng, (4, 1, 3, 3)), padding=(1, 1),
                         groups=2, delay=2), "in")
    b.add("id", Identity(shape=shape, in_shape=shape, scale=0.5), "in")
    for name, size in (("fc", (6,)), ("sp", (6,)), ("conv", (4, 4, 4)), ("id", shape)):
        b.add(f"p_{name}", pop(rng, size), name)
        b.add(f"o_{name}", Output(shape=size), f"p_{name}")
    program = b.build()
    x = mixed_values(rng, 10, 4, shape)
    res, _ = check(program, x)
    other = run(program, x, backend="torch")
    for name in ("fc", "sp", "conv", "id"):
        got = res.ops.per_node[name]
        assert got["syn_ops"].min() > 0 and got["macs"].min() > 0, name
        for k in KEYS:
            np.testing.assert_array_equal(other.ops.per_node[name][k], got[k], err_msg=f"torch {name}: {k}")


@pytest.mark.parametrize("seed", [0, 1])
def test_sparse(seed):
    rng = np.random.default_rng(seed)
    n_in, n_out = 16, 12
    dense = dyadic(rng, (n_out, n_in)) * (rng.random((n_out, n_in)) < 0.3)
    indptr, indices, data = [0], [], []
    for i in range(n_in):
        rows = np.nonzero(dense[:, i])[0]
        indices += rows.tolist()
        data += dense[rows, i].tolist()
        if i == 3:  # an explicitly stored zero weight: not a synaptic op
            indices.append(0)
            data.append(0.0)
        indptr.append(len(indices))
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    b.add("sp", Sparse(shape=(n_out,), in_shape=(n_in,), indptr=np.array(indptr), indices=np.array(indices),
                       data=np.array(data, np.float32), bias=dyadic(rng, n_out, 4), delay=1), "in")
    b.add("p", pop(rng, (n_out,)), "sp")
    b.add("out", Output(shape=(n_out,)), "p")
    check(b.build(), spikes(rng, 12, 3, (n_in,), 0.4), mem_of=("p",))


def test_recurrent_population():
    """A population driving itself through a delay-1 dense projection (stepped one step at a time)."""
    rng = np.random.default_rng(11)
    b = ProgramBuilder()
    b.add("in", Input(shape=(8,)))
    b.add("fc", Dense(shape=(12,), in_shape=(8,), weight=dyadic(rng, (12, 8), 96)), "in")
    b.add("p", pop(rng, (12,)), "fc")
    b.add("rec", Dense(shape=(12,), in_shape=(12,), weight=dyadic(rng, (12, 12), 64), delay=1), "p")
    b.connect("rec", "p")
    b.add("ro", Dense(shape=(3,), in_shape=(12,), weight=dyadic(rng, (3, 12))), "p")
    b.add("li", pop(rng, (3,), model="li"), "ro")
    b.add("out", Output(shape=(3,)), "li")
    prog = b.build()
    assert any(stage.cyclic for stage in prog.schedule())
    res, _ = check(prog, spikes(rng, 25, 2, (8,), 0.3), mem_of=("p",))
    assert res.ops.per_node["rec"]["syn_ops"].sum() > 0


def test_residual_identity_and_hostop():
    rng = np.random.default_rng(5)
    b = ProgramBuilder()
    b.add("in", Input(shape=(10,)))
    b.add("fc1", Dense(shape=(10,), in_shape=(10,), weight=dyadic(rng, (10, 10), 96)), "in")
    b.add("a", pop(rng, (10,)), "fc1")
    b.add("fc2", Dense(shape=(10,), in_shape=(10,), weight=dyadic(rng, (10, 10), 96)), "a")
    b.add("res", Identity(shape=(10,), in_shape=(10,)), "a")
    b.add("c", pop(rng, (10,), reset="zero"), ["fc2", "res"])
    b.add("sum", HostOp(shape=(10,), op="add"), ["a", "c", "in"])
    b.add("out", Output(shape=(10,)), "sum")
    x = spikes(rng, 16, 3, (10,), 0.4)
    res, _ = check(b.build(), x)
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
    b.add("fc", Dense(shape=(4,), in_shape=(4,), weight=dyadic(rng, (4, 4))), "in")
    b.add("bn", BatchNorm(shape=(4,), weight=np.ones(4), bias=np.zeros(4), running_mean=np.zeros(4),
                          running_var=np.ones(4)), "fc")
    b.add("out", Output(shape=(4,)), "bn")
    with pytest.raises(BackendError, match="bn"):
        run(b.build(), spikes(rng, 3, 1, (4,)), backend="numba")
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("fc", Dense(shape=(4,), in_shape=(4,), weight=dyadic(rng, (4, 4))), "in")
    b.add("sig", HostOp(shape=(4,), op="sigmoid"), "fc")
    b.add("out", Output(shape=(4,)), "sig")
    monkeypatch.setattr(numba_backend.BACKEND, "host_ops", frozenset({"add"}))  # a backend without it
    with pytest.raises(BackendError, match="sigmoid"):
        run(b.build(), spikes(rng, 3, 1, (4,)), backend="numba")
    assert called == []
