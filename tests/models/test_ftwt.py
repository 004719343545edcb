"""FTWT masks: target rule, loss, compiled execution (exact on both backends) and op counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spike.backends import run
from spike.backends.registry import BackendError
from spike.compiler import compile as compile_model
from spike.compiler.ir.nodes import Conv2d, Gate, Population
from spike.compiler.ir.program import ProgramError
from spike.compiler.io.hdf5 import load_program, save_program
from spike.compiler.ir.validate import validate_program
from spike.ftwt import (
    GatedConv, ftwt_loss, ftwt_targets, gate_logits, gated_layers, mask_loss_weight, oracle_masks,
)
from spike.models.cnn.model import SpikingCNN, count_syn_ops

from helpers.models import digits_like, dyadic_cnn, ftwt_models

BACKENDS = ("torch", "numba")


# ---------------------------------------------------------------------------- target rule, loss


def test_targets_follow_the_cumulative_mass_rule() -> None:
    mass = torch.tensor([[4.0, 3.0, 2.0, 1.0], [1.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    # p = .4 .3 .2 .1 -> cumsum .4 .7 .9 1: r=0.7 keeps the first two (<= r within 1e-5)
    assert ftwt_targets(mass[:1], 0.7).tolist() == [[1, 1, 0, 0]]
    assert ftwt_targets(mass[:1], 0.69).tolist() == [[1, 0, 0, 0]]
    assert ftwt_targets(mass[:1], 0.9).tolist() == [[1, 1, 1, 0]]
    # r = 1 drops exactly the silent channels; an all-silent sample keeps nothing
    assert ftwt_targets(mass, 1.0).tolist() == [[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
    # ties keep the lower channel index first (stable sort); the largest channel alone over r drops all
    assert ftwt_targets(mass[3:], 0.5).tolist() == [[1, 1, 0, 0]]
    assert ftwt_targets(torch.tensor([[9.0, 1.0]]), 0.85).tolist() == [[0, 0]]
    assert ftwt_targets(mass[2:3], 0.9).tolist() == [[0, 0, 0, 0]]


def test_mask_loss_and_schedule() -> None:
    torch.manual_seed(0)
    layer = GatedConv(2, 4, gate=dict(ratio=0.9))
    with torch.no_grad():
        layer.gate.weight.normal_()
    x = (torch.rand(5, 3, 2, 6, 6) < 0.4).float()
    layer(x)
    st = layer.stats
    model = torch.nn.Sequential(layer)
    ce = torch.tensor(1.5)
    total, mask_loss = ftwt_loss(model, ce, 1.0)
    manual = F.binary_cross_entropy_with_logits(st.logits, st.targets, reduction="none").mean(0).sum()
    assert torch.allclose(mask_loss, manual) and torch.allclose(total, ce + manual)
    assert ftwt_loss(model, ce, 0.0)[0] is ce
    assert [mask_loss_weight(e, 10) for e in range(10)] == [1.0] * 5 + [0.0] * 5
    assert mask_loss_weight(0, 1) == 1.0
    # the mask is sigmoid(P) > 0.5, applied to the spikes of every step
    assert torch.equal(st.mask, (torch.sigmoid(st.logits.detach().double()) > 0.5).float())


@pytest.mark.parametrize("mode", ["decoupled", "joint"])
def test_no_task_gradient_through_the_mask(mode: str) -> None:
    torch.manual_seed(1)
    first = GatedConv(1, 3)
    layer = GatedConv(3, 4, gate=dict(ratio=1.0, mode=mode))
    with torch.no_grad():
        layer.gate.weight.normal_()
        first.bn.module.bias.fill_(0.5)
    x = torch.rand(4, 2, 1, 5, 5)
    out = layer(first(x))
    out.sum().backward()  # a task loss
    assert layer.gate.weight.grad is None or not layer.gate.weight.grad.any()
    for p in first.parameters():
        p.grad = None
    model = torch.nn.Sequential(first, layer)
    out = model(x)
    _, mask_loss = ftwt_loss(model, out.sum() * 0, 1.0)
    mask_loss.backward()
    assert layer.gate.weight.grad.abs().sum() > 0
    reached = first.conv.module.weight.grad
    if mode == "decoupled":
        assert reached is None or not reached.any()
    else:
        assert reached is not None and reached.abs().sum() > 0


def test_gate_logits_do_not_depend_on_the_batch() -> None:
    g = torch.Generator().manual_seed(0)
    sums = torch.randint(0, 50, (7, 12), generator=g).float()
    w, b = torch.randn(9, 12, generator=g), torch.randn(9, generator=g)
    full = gate_logits(sums, 16.0, w, b)
    for i in range(7):
        assert torch.equal(gate_logits(sums[i : i + 1], 16.0, w, b)[0], full[i])


# ---------------------------------------------------------------------------- compiled execution


def _gate_names(program) -> list[str]:
    return [n for n, node in program.nodes() if isinstance(node, Gate)]


@pytest.mark.parametrize("kind", ["vgg", "vgg_window", "resnet", "vgg_delay", "resnet_delay"])
@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_program_equals_the_model(kind: str, seed: int) -> None:
    model = dyadic_cnn(ftwt_models()[kind], seed)
    x = digits_like(12 if "delay" in kind else 6, 5, seed + 10)
    with torch.no_grad():
        expected = model(x)
    layers = [m for m in model.modules() if isinstance(m, GatedConv)]
    masks = torch.stack([m.stats.mask.mean() for m in layers])
    assert expected.sum() > 0 and bool((masks > 0).all()) and bool((masks < 1).any())
    # a model with Loihi's synaptic delay equals its program for a Loihi target
    program = compile_model(model, x, target="loihi1" if "delay" in kind else "generic")
    delays = {node.delay for _, node in program.nodes() if hasattr(node, "delay")}
    assert delays == ({1} if "delay" in kind else {0})
    gates = _gate_names(program)
    assert len(gates) == len(layers)
    pops = [program.consumers(g)[0] for g in gates]
    counts = {}
    for backend in BACKENDS:
        res = run(program, x, backend=backend, probes=gates + pops)
        np.testing.assert_array_equal(res.output, expected.numpy(), err_msg=backend)
        for g, m in zip(gates, layers):  # the same masks as the model's, at every step
            assert (res.probes[g] == m.stats.mask.numpy()[None]).all(), (backend, g)
        counts[backend] = res.ops.per_sample_total()
    for key in ("syn_ops", "macs", "dense_ops", "neuron_updates", "spikes", "host_flops"):
        np.testing.assert_array_equal(counts["numba"][key], counts["torch"][key], err_msg=key)


def _oracle_pairs(x: np.ndarray, w: np.ndarray, keep: np.ndarray, stride: int, pad: int, delay: int) -> np.ndarray:
    """Per sample: sum over input events (t, c, y, x) of the non-zero weights they reach inside the
    output in kept channels (explicit loops)."""
    T, B, C, H, W = x.shape
    C_out, _, kh, kw = w.shape
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    nz = w != 0
    out = np.zeros(B, np.int64)
    for b in range(B):
        for t in range(T - delay):
            for c, yy, xx in zip(*np.nonzero(x[t, b])):
                for ky in range(kh):
                    for kx in range(kw):
                        ny, nx = yy + pad - ky, xx + pad - kx
                        if ny % stride or nx % stride:
                            continue
                        oy, ox = ny // stride, nx // stride
                        if 0 <= oy < Ho and 0 <= ox < Wo:
                            out[b] += int((nz[:, c, ky, kx] & keep[b]).sum())
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_op_counts_match_an_oracle_from_masks_and_spikes(backend: str) -> None:
    model = dyadic_cnn(SpikingCNN("digits", layers=[6, "M", 8, "M"], ftwt=dict(ratio=0.9)), 3)
    x = digits_like(5, 4, 7)
    program = compile_model(model, x)
    names = [n for n, _ in program.nodes()]
    res = run(program, x, backend=backend, probes=names)
    pr, ops = res.probes, res.ops.per_node
    T, B = x.shape[:2]
    for g in _gate_names(program):
        gnode = program.node(g)
        (src,) = program.sources(g)
        (pop,) = program.consumers(g)
        conv = next(s for s in program.sources(pop) if isinstance(program.node(s), Conv2d))
        cnode, pnode = program.node(conv), program.node(pop)
        keep = pr[g][0].astype(bool)  # [B, C_out]
        assert keep.any() and not keep.all()
        spikes_in = pr[src].reshape(T, B, *cnode.in_shape)
        key = "syn_ops" if np.isin(spikes_in, (0, 1)).all() else "macs"
        want = _oracle_pairs(spikes_in, cnode.weight, keep, cnode.stride[0], cnode.padding[0], cnode.delay)
        np.testing.assert_array_equal(ops[conv][key], want, err_msg=f"{conv} {key}")
        per_channel = pnode.size // pnode.shape[0]
        np.testing.assert_array_equal(ops[pop]["neuron_updates"], T * per_channel * keep.sum(axis=1))
        out_spikes = pr[pop].reshape(T, B, pnode.shape[0], -1)
        assert not out_spikes[:, ~keep].any()  # masked channels never spike
        np.testing.assert_array_equal(ops[pop]["spikes"], out_spikes.sum(axis=(0, 2, 3)))
        c_in, c_out = gnode.in_shape[0], gnode.shape[0]
        events = np.count_nonzero(spikes_in.reshape(T, B, -1), axis=(0, 2))
        np.testing.assert_array_equal(ops[g]["host_flops"], events + 4 * c_in + 2 * c_in * c_out + 2 * c_out)
    # the same network without gates does more work
    plain = SpikingCNN("digits", layers=[6, "M", 8, "M"])
    plain.load_state_dict(model.state_dict(), strict=False)
    full = run(compile_model(plain.eval(), x), x, backend=backend).ops.total()
    gated = res.ops.total()
    assert gated["syn_ops"] < full["syn_ops"] and gated["neuron_updates"] < full["neuron_updates"]
    assert gated["dense_ops"] == full["dense_ops"]


@pytest.mark.parametrize("kind", ["vgg", "resnet_delay"])
def test_pytorch_count_matches_the_compiled_count(kind: str) -> None:
    model = dyadic_cnn(ftwt_models()[kind], 4)
    x = digits_like(9, 6, 2)
    counted = count_syn_ops(model, x)
    res = run(compile_model(model, x), x, backend="numba").ops.per_sample_total()
    assert res["syn_ops"].sum() > 0
    np.testing.assert_array_equal(counted["syn_ops"].numpy(), res["syn_ops"])
    np.testing.assert_array_equal(counted["macs"].numpy(), res["macs"])
    np.testing.assert_array_equal(counted["pool_ops"].numpy(), res["pool_ops"])  # avg pooling: pool_ops only


def test_oracle_masks_are_the_targets() -> None:
    model = dyadic_cnn(SpikingCNN("digits", layers=[6, "M", 8, "M"]), 5)
    x = digits_like(5, 4, 3)
    with torch.no_grad(), oracle_masks(model, 0.8):
        model(x)
        for m in model.modules():
            if isinstance(m, GatedConv):
                assert torch.equal(m.stats.mask, m.stats.targets)
    assert all(m.oracle_ratio is None for m in model.modules() if isinstance(m, GatedConv))


# ---------------------------------------------------------------------------- IR rules, files


def _program():
    model = dyadic_cnn(SpikingCNN("digits", layers=[4, "M", 6, "M"], ftwt=dict(ratio=0.9, window=2)), 0)
    x = digits_like(4, 2, 0)
    return model, x, compile_model(model, x)


def test_gate_programs_round_trip_through_files(tmp_path) -> None:
    _, x, program = _program()
    save_program(program, tmp_path / "p.h5")
    loaded = load_program(tmp_path / "p.h5")
    g = _gate_names(loaded)[0]
    assert loaded.node(g).window == 2 and loaded.node(g).weight.shape == (4, 1)
    a, b = run(program, x, backend="numba"), run(loaded, x, backend="numba")
    np.testing.assert_array_equal(a.output, b.output)


def _swap(program, name, node):
    from spike.compiler.ir.program import rebuild_graph

    return program.with_graph(rebuild_graph(program, nodes={name: node}))


def test_gate_rules_are_validated() -> None:
    _, x, program = _program()
    validate_program(program)
    g = _gate_names(program)[0]
    node = program.node(g)
    with pytest.raises(ProgramError, match=r"field weight"):
        validate_program(_swap(program, g, node.replace(weight=np.zeros((3, 1), np.float32))))
    with pytest.raises(ProgramError, match=r"field window"):
        validate_program(_swap(program, g, node.replace(window=-1)))
    (pop,) = program.consumers(g)
    wrong = _swap(program, pop, program.node(pop).replace(shape=(2, 16, 4)))
    with pytest.raises(ProgramError, match="channels of gate"):
        from spike.compiler.ir.validate import check_gates

        check_gates(wrong)
    # a gated population fed by something other than a conv2d of the gate's source
    from spike.compiler.ir.program import rebuild_graph

    g2 = _gate_names(program)[1]
    (pop,) = program.consumers(g2)
    graph = rebuild_graph(program)
    bad = Conv2d(shape=program.node(pop).shape, in_shape=(1, 8, 8), weight=np.zeros((6, 1, 3, 3), np.float32),
                 stride=(2, 2), padding=(1, 1))
    graph.add_node("extra", node=bad)
    graph.add_edge(program.inputs[0], "extra")
    graph.add_edge("extra", pop)
    with pytest.raises(ProgramError, match="reading the gate's source"):
        validate_program(program.with_graph(graph))
    with pytest.raises(BackendError, match="reading the gate's source"):
        run(program.with_graph(graph), x, backend="numba")


def test_gates_refuse_fixed_point_and_unknown_backends() -> None:
    _, x, program = _program()
    from spike.compiler.pipeline import FIXED_PIPELINE, run_passes

    with pytest.raises(ProgramError, match="FTWT gates run in float32"):
        run_passes(program, FIXED_PIPELINE)
    from spike.backends.registry import Backend

    bare = Backend(name="bare", precisions=frozenset({"float32"}))
    with pytest.raises(BackendError, match="gate"):
        bare.check(program)


def test_plain_layers_compile_without_gates() -> None:
    model = dyadic_cnn(SpikingCNN("digits", layers=[4, "M", 6, "M"]), 2)
    x = digits_like(4, 3, 1)
    program = compile_model(model, x)
    assert not _gate_names(program)
    with torch.no_grad():
        expected = model(x)
    np.testing.assert_array_equal(run(program, x, backend="numba").output, expected.numpy())
    pops = [n for n, node in program.nodes() if isinstance(node, Population)]
    assert len(pops) == 3


def test_presets_build_and_run() -> None:
    for preset, shape in (("vgg16", (1, 1, 3, 32, 32)), ("resnet20", (1, 1, 3, 32, 32))):
        model = SpikingCNN(preset, ftwt=dict(ratio=0.9))
        assert model(torch.zeros(shape)).shape == (1, 1, 10)
        assert len(list(gated_layers(model))) == (13 if preset == "vgg16" else 10)
    assert len([m for m in SpikingCNN("resnet56").modules() if isinstance(m, GatedConv)]) == 28
    with pytest.raises(ValueError, match="depth"):
        SpikingCNN("resnet20", depth=21)
