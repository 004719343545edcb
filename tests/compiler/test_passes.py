"""Compiler passes: canonicalize_neurons, fold_batchnorm, infer_shapes, check_cycles."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from spike.compiler.ir.nodes import (
    BatchNorm, Conv2d, Dense, HostOp, Identity, Input, Output, Pool2d, Population, Sparse,
)
from spike.compiler.passes import canonicalize_neurons, check_cycles, fold_batchnorm, infer_shapes
from spike.compiler.pipeline import FLOAT_PIPELINE, run_passes
from spike.compiler.ir.program import ProgramBuilder, ProgramError
from spike.compiler.io.hdf5 import assert_programs_equal, load_program, save_program
from spike.compiler.ir.validate import validate_program


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def pop(shape, model="lif", **kw):
    kw.setdefault("beta", None if model == "if" else np.array(0.9, np.float32))
    return Population(shape, model=model, **kw)


def conv_bn_program(conv_bias=True, with_fc=True):
    rng = np.random.default_rng(3)
    b = ProgramBuilder()
    b.add("in", Input((2, 5, 5)))
    b.add("conv", Conv2d((3, 3, 3), in_shape=(2, 5, 5), weight=rand(rng, 3, 2, 3, 3),
                         bias=rand(rng, 3) if conv_bias else None, stride=(2, 2), padding=(1, 1)), "in")
    b.add("bn", BatchNorm((3, 3, 3), weight=rand(rng, 3), bias=rand(rng, 3), running_mean=rand(rng, 3),
                          running_var=rng.uniform(0.2, 3, 3).astype(np.float32), eps=1e-5), "conv")
    b.add("lif", pop((3, 3, 3)), "bn")
    if with_fc:
        b.add("fc", Dense((4,), in_shape=(27,), weight=rand(rng, 4, 27)), "lif")
        b.add("bn1", BatchNorm((4,), weight=rand(rng, 4), bias=None, running_mean=rand(rng, 4),
                               running_var=rng.uniform(0.2, 3, 4).astype(np.float32)), "fc")
        b.add("li", pop((4,), "li"), "bn1")
        b.add("out", Output(()), "li")
    else:
        b.add("out", Output(()), "lif")
    return b.build()


def recurrent_program(delay=1):
    rng = np.random.default_rng(1)
    b = ProgramBuilder()
    b.add("in", Input((3,), signal="real"))
    b.add("fc_in", Dense((4,), in_shape=(3,), weight=rand(rng, 4, 3)), "in")
    b.add("p", pop((4,)), "fc_in")
    b.add("rec", Dense((4,), in_shape=(4,), weight=rand(rng, 4, 4), delay=delay), "p")
    b.connect("rec", "p")
    b.add("out", Output((4,)), "p")
    return b.build()


def one_population(**kw):
    b = ProgramBuilder()
    b.add("in", Input((3,)))
    b.add("n", pop((3,), **kw), "in")
    return b.build()


# ---- purity -----------------------------------------------------------------------------
def _fields(node):
    """A node's value: its dataclass fields (not the sizes it caches when they are first read)."""
    return {f.name: getattr(node, f.name) for f in dataclasses.fields(node)}


def _snapshot(program):
    return (
        [(name, id(node), copy.deepcopy(_fields(node))) for name, node in program.nodes()],
        list(program.graph.edges),
        {n: list(program.graph.predecessors(n)) for n in program.graph.nodes},
        tuple(program.inputs), tuple(program.outputs), copy.deepcopy(dict(program.metadata)),
    )


def _same(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("make", [conv_bn_program, recurrent_program])
@pytest.mark.parametrize("the_pass", FLOAT_PIPELINE, ids=lambda p: p.__name__)
def test_pass_does_not_mutate_input(make, the_pass):
    program = make()
    before = _snapshot(program)
    graph_before = program.graph
    result = the_pass(program)
    assert program.graph is graph_before
    assert _same(_snapshot(program), before)
    if result is not program:
        assert result.graph is not program.graph


def test_pipeline_result_is_valid_and_serialisable(tmp_path):
    program = run_passes(conv_bn_program(), FLOAT_PIPELINE)
    validate_program(program)
    assert not any(isinstance(n, BatchNorm) for _, n in program.nodes())
    assert program.node("out").shape == (4,)
    path = tmp_path / "p.h5"
    save_program(program, path)
    assert_programs_equal(program, load_program(path))


def test_run_passes_applies_in_order():
    calls = []

    def mark(tag):
        def p(prog):
            calls.append(tag)
            return prog
        return p

    prog = recurrent_program()
    assert run_passes(prog, [mark(1), mark(2)]) is prog and calls == [1, 2]


# ---- canonicalize_neurons ---------------------------------------------------------------
def test_canonicalize_broadcasts_to_float32_per_neuron():
    b = ProgramBuilder()
    b.add("in", Input((2, 3)))
    b.add("lif", pop((2, 3), beta=np.array([0.5]), threshold=np.arange(6, dtype=np.float64) / 6), "in")
    b.add("if", pop((6,), "if"), "lif")
    b.add("cuba", pop((6,), "cuba_lif", alpha=np.array(0.25), beta=np.full(6, 0.5)), "if")
    b.add("li", pop((6,), "li"), "cuba")
    b.add("fc", Dense((6,), in_shape=(6,), weight=np.eye(6, dtype=np.float32)), "li")
    prog = b.build()
    out = canonicalize_neurons(prog)
    for name in ("lif", "if", "cuba", "li"):
        n = out.node(name)
        for f in ("beta", "threshold"):
            arr = getattr(n, f)
            assert arr.dtype == np.float32 and arr.shape == (6,), (name, f)
        assert (n.alpha is not None) == (name == "cuba")
    assert np.all(out.node("lif").beta == 0.5)
    np.testing.assert_array_equal(out.node("lif").threshold, (np.arange(6) / 6).astype(np.float32))
    assert out.node("if").model == "if" and np.all(out.node("if").beta == 1)
    assert np.all(out.node("if").threshold == 1.0)
    assert np.all(out.node("cuba").alpha == 0.25) and out.node("cuba").alpha.dtype == np.float32
    assert np.all(out.node("li").threshold == 0.0)
    assert out.node("fc") is prog.node("fc")  # untouched nodes are shared
    validate_program(out)


@pytest.mark.parametrize("kw, field", [
    (dict(beta=np.array(1.5)), "beta"),
    (dict(beta=np.array([0.5, -0.1, 0.5])), "beta"),
    (dict(beta=None), "beta"),
    (dict(beta=np.array([0.5, 0.5])), "beta"),
    (dict(model="if", beta=np.array(0.9)), "beta"),
    (dict(model="cuba_lif"), "alpha"),
    (dict(model="cuba_lif", alpha=np.array(2.0)), "alpha"),
    (dict(alpha=np.array(0.5)), "alpha"),
    (dict(gain=float("inf")), "gain"),
    (dict(model="izhikevich"), "model"),
    (dict(reset="bounce"), "reset"),
    (dict(precision="int4"), "precision"),
    (dict(threshold=np.array([1.0, np.nan, 1.0])), "threshold"),
])
def test_canonicalize_errors(kw, field):
    with pytest.raises(ProgramError, match=f"'n'.*{field}"):
        canonicalize_neurons(one_population(**kw))


# ---- fold_batchnorm ---------------------------------------------------------------------
def _torch_bn(torch, bn_node, dims):
    c = bn_node.running_mean.shape[0]
    bn = (torch.nn.BatchNorm2d if dims == 2 else torch.nn.BatchNorm1d)(c, eps=bn_node.eps).double()
    with torch.no_grad():
        if bn_node.weight is not None:
            bn.weight.copy_(torch.from_numpy(bn_node.weight.astype(np.float64)))
        if bn_node.bias is not None:
            bn.bias.copy_(torch.from_numpy(bn_node.bias.astype(np.float64)))
        bn.running_mean.copy_(torch.from_numpy(bn_node.running_mean.astype(np.float64)))
        bn.running_var.copy_(torch.from_numpy(bn_node.running_var.astype(np.float64)))
    return bn.eval()


@pytest.mark.parametrize("conv_bias", [True, False])
def test_fold_conv_batchnorm_matches_torch(conv_bias):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    prog = conv_bn_program(conv_bias=conv_bias, with_fc=False)
    conv, bn = prog.node("conv"), prog.node("bn")
    folded = fold_batchnorm(prog)
    assert "bn" not in folded.graph and folded.sources("lif") == ["conv"]
    fc = folded.node("conv")
    assert fc.weight.dtype == np.float32 and fc.bias.dtype == np.float32
    assert fc.stride == conv.stride and fc.padding == conv.padding and fc.delay == conv.delay

    x = torch.from_numpy(np.random.default_rng(5).standard_normal((4, 2, 5, 5)))
    with torch.no_grad():
        b = None if conv.bias is None else torch.from_numpy(conv.bias.astype(np.float64))
        ref = _torch_bn(torch, bn, 2)(F.conv2d(x, torch.from_numpy(conv.weight.astype(np.float64)), b,
                                              stride=conv.stride, padding=conv.padding))
        got = F.conv2d(x, torch.from_numpy(fc.weight.astype(np.float64)), torch.from_numpy(fc.bias.astype(np.float64)),
                       stride=fc.stride, padding=fc.padding)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5, rtol=1e-5)


def test_fold_dense_batchnorm_matches_torch():
    torch = pytest.importorskip("torch")
    prog = conv_bn_program()
    dense, bn = prog.node("fc"), prog.node("bn1")
    folded = fold_batchnorm(prog)
    assert "bn1" not in folded.graph and "bn" not in folded.graph
    assert folded.sources("li") == ["fc"]
    fd = folded.node("fc")
    x = torch.from_numpy(np.random.default_rng(6).standard_normal((8, 27)))
    with torch.no_grad():
        ref = _torch_bn(torch, bn, 1)(x @ torch.from_numpy(dense.weight.astype(np.float64)).T)
        got = x @ torch.from_numpy(fd.weight.astype(np.float64)).T + torch.from_numpy(fd.bias.astype(np.float64))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5, rtol=1e-5)


def test_fold_keeps_consumer_source_order_and_outputs():
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input((4,)))
    b.add("other", Identity((4,), in_shape=(4,)), "in")
    b.add("fc", Dense((4,), in_shape=(4,), weight=rand(rng, 4, 4)), "in")
    b.add("bn", BatchNorm((4,), running_mean=rand(rng, 4), running_var=np.ones(4, np.float32)), "fc")
    b.add("add", HostOp((4,), op="add"), ["bn", "other"])
    b.add("out", Output((4,)), "add")
    prog = b.build()
    folded = fold_batchnorm(prog)
    assert folded.sources("add") == ["fc", "other"]
    assert list(folded.graph.nodes) == ["in", "other", "fc", "add", "out"]
    # no affine parameters: gamma = 1, beta = 0
    expect_b = (-prog.node("bn").running_mean.astype(np.float64)) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(folded.node("fc").bias, expect_b, rtol=1e-6)


def test_fold_rejects_non_projection_source():
    b = ProgramBuilder()
    b.add("in", Input((3,)))
    b.add("p", pop((3,)), "in")
    b.add("bn", BatchNorm((3,), running_mean=np.zeros(3, np.float32), running_var=np.ones(3, np.float32)), "p")
    with pytest.raises(ProgramError, match="'bn'.*population"):
        fold_batchnorm(b.build())


def test_fold_rejects_shared_projection():
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input((3,)))
    b.add("fc", Dense((3,), in_shape=(3,), weight=rand(rng, 3, 3)), "in")
    b.add("bn", BatchNorm((3,), running_mean=np.zeros(3, np.float32), running_var=np.ones(3, np.float32)), "fc")
    b.add("p", pop((3,)), "fc")
    with pytest.raises(ProgramError, match="'bn'.*'fc'.*also feeds.*'p'"):
        fold_batchnorm(b.build())


def test_fold_without_batchnorm_is_identity():
    prog = recurrent_program()
    assert_programs_equal(fold_batchnorm(prog), prog)


# ---- infer_shapes -----------------------------------------------------------------------
def test_infer_fills_unset_shapes():
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input((2, 6, 6)))
    b.add("conv", Conv2d((), weight=rand(rng, 4, 2, 3, 3), stride=(1, 1), padding=(0, 0)), "in")
    b.add("lif", pop((4, 4, 4)), "conv")
    b.add("pool", Pool2d((), mode="sum"), "lif")
    b.add("p2", pop((16,)), "pool")
    b.add("fc", Dense((3,), weight=rand(rng, 3, 16)), "p2")
    b.add("p3", pop((3,)), "fc")
    b.add("sp", Sparse((3,), indptr=np.array([0, 1, 2, 3]), indices=np.array([2, 1, 0]),
                       data=np.ones(3, np.float32)), "p3")
    b.add("res", Identity(()), "p3")
    b.add("add", HostOp((), op="add"), ["sp", "res"])
    b.add("out", Output(()), "add")
    prog = b.build()
    out = infer_shapes(prog)
    assert out.node("conv").in_shape == (2, 6, 6) and out.node("conv").shape == (4, 4, 4)
    assert out.node("pool").in_shape == (4, 4, 4) and out.node("pool").shape == (4, 2, 2)
    assert out.node("fc").in_shape == (16,) and out.node("sp").in_shape == (3,)
    assert out.node("res").shape == (3,) and out.node("add").shape == (3,)
    assert out.node("out").shape == (3,)
    assert out.node("lif") is prog.node("lif")
    validate_program(out)


def test_infer_accepts_flat_source_for_conv():
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input((18,)))
    b.add("conv", Conv2d((1, 1, 1), in_shape=(2, 3, 3), weight=rand(rng, 1, 2, 3, 3)), "in")
    b.add("out", Output(()), "conv")
    assert infer_shapes(b.build()).node("out").shape == (1, 1, 1)


def _mismatch(kind):
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input((2, 4, 4)))
    if kind == "dense":
        b.add("bad", Dense((3,), in_shape=(30,), weight=rand(rng, 3, 30)), "in")
        return b.build(), ("'bad'", "in_shape", "30", "32")
    if kind == "conv_in":
        b.add("bad", Conv2d((2, 2, 2), in_shape=(2, 3, 3), weight=rand(rng, 2, 2, 2, 2)), "in")
        return b.build(), ("'bad'", "in_shape", "18", "32")
    if kind == "conv_out":
        b.add("bad", Conv2d((2, 2, 2), in_shape=(2, 4, 4), weight=rand(rng, 2, 2, 3, 3), padding=(1, 1)), "in")
        return b.build(), ("'bad'", "shape", "(2, 2)", "(4, 4)")
    if kind == "pool":
        b.add("bad", Pool2d((2, 3, 3), in_shape=(2, 4, 4)), "in")
        return b.build(), ("'bad'", "shape", "(3, 3)", "(2, 2)")
    if kind == "population":
        b.add("bad", pop((31,)), "in")
        return b.build(), ("'bad'", "shape", "31", "32")
    if kind == "identity":
        b.add("bad", Identity((8,)), "in")
        return b.build(), ("'bad'", "shape", "8", "32")
    if kind == "hostop":
        b.add("p", pop((32,)), "in")
        b.add("q", pop((16,)))
        b.add("bad", HostOp((32,), op="add"), ["p", "q"])
        return b.build(), ("'bad'", "shape", "32", "16")
    if kind == "output":
        b.add("bad", Output((5,)), "in")
        return b.build(), ("'bad'", "shape", "5", "32")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["dense", "conv_in", "conv_out", "pool", "population", "identity", "hostop", "output"])
def test_infer_shape_mismatch(kind):
    prog, words = _mismatch(kind)
    with pytest.raises(ProgramError) as exc:
        infer_shapes(prog)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))


# ---- check_cycles -----------------------------------------------------------------------
def test_check_cycles_accepts_delayed_recurrence():
    prog = recurrent_program(delay=1)
    assert check_cycles(prog) is prog


def test_check_cycles_rejects_undelayed_recurrence():
    with pytest.raises(ProgramError, match="cycle without delay.*(rec.*p|p.*rec)"):
        check_cycles(recurrent_program(delay=0))


def test_check_cycles_rejects_self_loop():
    b = ProgramBuilder()
    b.add("in", Input((2,)))
    b.add("p", pop((2,)), "in")
    b.connect("p", "p")
    with pytest.raises(ProgramError, match="'?p'?"):
        check_cycles(b.build())
