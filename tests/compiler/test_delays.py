"""Target delays (compiler/delays.py): a program compiled for a Loihi target computes the trained
network. Its outputs equal the generic (zero-delay) program's exactly, on numba and torch, in
float (dyadic weights) and fixed point; merging paths are balanced; loops that cannot keep their
timing are refused by name; raw delays are what the user asked for."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.passes.delays import node_latencies, target_delays
from spike.compiler.ir.nodes import Dense, HostOp, Identity, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder, ProgramError
from spike.compiler.io.hdf5 import load_program, save_program
from spike.models import build_model
from spike.models.cnn.model import SpikingCNN
from spike.neurons import LIF
from spike.recurrent import RecurrentLIF

from helpers.models import (
    CNN, MLP, ConvResidual, ResidualBlock, digits_like, dyadic_, dyadic_bn, dyadic_cnn, ftwt_models, run_snntorch,
    snntorch_net, spikes_in,
)

BACKENDS = ("numba", "torch")


def _populations_equal(generic, loihi, x, backend):
    pops = generic.populations()
    a = run(generic, x, backend=backend, probes=pops + [f"{p}.v" for p in pops])
    b = run(loihi, x, backend=backend, probes=pops + [f"{p}.v" for p in pops])
    assert b.output.shape == a.output.shape
    np.testing.assert_array_equal(b.output, a.output, err_msg=f"{backend}: output")
    for k in a.probes:
        np.testing.assert_array_equal(b.probes[k], a.probes[k], err_msg=f"{backend}: {k}")
    return a, b


def _check_targets(model, x, *, precision="float32", single_step=False, min_latency=2):
    example = x[0] if single_step else x
    generic = compile_model(model, example, precision=precision)
    loihi = compile_model(model, example, target="loihi2", precision=precision)
    rec = loihi.metadata["target_delays"]
    assert rec["mode"] == "compensated" and rec["latency"] == loihi.total_latency >= min_latency
    assert all(node.delay >= 1 for _, node in loihi.nodes() if hasattr(node, "delay"))
    assert loihi.metadata.get("mapping"), "compile() maps a program for a target with cores"
    for backend in BACKENDS:
        a, b = _populations_equal(generic, loihi, x.numpy(), backend)
        assert a.output.sum() > 0
        # the extra steps run on chip: at least the zero-delay run's updates, counted
        assert b.ops.total()["neuron_updates"] > a.ops.total()["neuron_updates"]
    return generic, loihi


@pytest.mark.parametrize("seed", [0, 1])
def test_mlp_with_biases_equals_generic(seed):
    model = dyadic_(MLP(), seed).eval()
    generic, loihi = _check_targets(model, spikes_in((12, 3, 1, 6, 6), seed + 100), min_latency=3)
    assert any(getattr(node, "bias", None) is not None for _, node in loihi.nodes())


@pytest.mark.parametrize("seed", [0, 1])
def test_cnn_with_avgpool_and_biases_equals_generic(seed):
    model = dyadic_(CNN(), seed, spread=128).eval()
    _check_targets(model, spikes_in((10, 2, 2, 8, 8), seed))


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_shortcut_is_balanced(seed):
    model = dyadic_(ResidualBlock(), seed).eval()
    dyadic_bn(model.bn1.module, seed)
    dyadic_bn(model.bn2.module, seed + 7)
    generic, loihi = _check_targets(model, spikes_in((8, 3, 3, 6, 6), seed))
    shortcut = [n for n, node in loihi.nodes() if isinstance(node, Identity)]
    assert shortcut and all(loihi.node(n).delay == 2 for n in shortcut)  # the two-conv path's two steps


def test_project_resnet_preset_equals_generic():
    model = SpikingCNN("digits_resnet", widths=[4, 6, 8], reset="zero")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bn" not in name:
                p.copy_(torch.randint(-40, 48, p.shape, generator=g).float() / 64)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                dyadic_bn(m, 5)
    model.eval()
    x = torch.randint(0, 17, (8, 3, 1, 8, 8), generator=g).float() / 16
    with torch.no_grad():
        expected = model(x)
    generic, loihi = _check_targets(model, (x > 0.5).float())
    out = run(loihi, x.numpy()).output  # real-valued input, compensated: the trained network
    np.testing.assert_array_equal(out, expected.numpy())


class RecurrentWithBias(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(20, 16)
        self.rec = RecurrentLIF(16, bias=True, beta=0.75)
        self.fc2 = nn.Linear(16, 4)
        self.out = LIF(beta=0.5)

    def forward(self, x):
        return self.out(self.fc2(self.rec(self.fc(x))))


@pytest.mark.parametrize("seed", [0, 1])
def test_recurrent_layer_keeps_its_delay(seed):
    model = dyadic_(RecurrentWithBias(), seed).eval()
    x = spikes_in((15, 3, 20), seed)
    with torch.no_grad():
        expected = model(x)
    generic, loihi = _check_targets(model, x)
    np.testing.assert_array_equal(run(loihi, x.numpy()).output, expected.numpy())  # bias of V s + b from step 0
    rec = [n for n in loihi.graph if n.endswith("recurrent")]
    assert rec and loihi.node(rec[0]).delay == 1 and loihi.node(rec[0]).bias is None


@pytest.mark.parametrize("seed", [0, 1])
def test_snntorch_model_equals_generic(seed):
    net = dyadic_(snntorch_net(), seed)
    x = spikes_in((20, 3, 24), seed)
    expected = run_snntorch(net, x)
    generic, loihi = _check_targets(net, x, single_step=True)
    np.testing.assert_array_equal(run(loihi, x.numpy()).output, expected.numpy())


@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_point_mlp_and_residual_cnn_equal_generic(seed):
    mlp = build_model("mlp", in_features=36, num_classes=5, hidden=[24, 16], beta=0.875, threshold=1.0,
                      reset="zero", reset_delay=False)
    dyadic_(mlp, seed, spread=160)
    _check_targets(mlp.eval(), spikes_in((12, 4, 1, 6, 6), seed + 7), precision="fixed", min_latency=3)
    cnn = dyadic_(ConvResidual(), seed, scale=64, spread=40).eval()
    generic, loihi = _check_targets(cnn, spikes_in((10, 3, 1, 8, 8), seed + 9, p=0.5), precision="fixed")
    assert sorted({node.delay for _, node in loihi.nodes() if hasattr(node, "delay")}) == [1, 2]


def test_ftwt_gates_read_their_window_from_the_source_latency():
    for kind in ("vgg", "vgg_window"):
        model = dyadic_cnn(ftwt_models()[kind], 0)
        x = digits_like(8, 4, 3)
        with torch.no_grad():
            expected = model(x)
        loihi = compile_model(model, x, target="loihi1")
        assert loihi.total_latency > 0
        for backend in BACKENDS:
            np.testing.assert_array_equal(run(loihi, x.numpy(), backend=backend).output, expected.numpy(), err_msg=kind)


def test_model_trained_with_the_delays_needs_no_compensation():
    model = SpikingCNN("digits", layers=[6, "M", 8, "M"], synaptic_delay=1)
    program = compile_model(model, torch.zeros(6, 1, 1, 8, 8), target="loihi1")
    assert program.metadata["target_delays"]["mode"] == "as trained"
    assert program.total_latency == 0 and not program.latency


# ---- the pass itself -------------------------------------------------------------------------
def _chain_with_skip():
    """in -> a(dense) -> p1 -> b(dense) -> p2 ; in -> skip(dense) -> p2 (two paths merge)."""
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("a", Dense(shape=(4,), in_shape=(4,), weight=rng.random((4, 4)).astype(np.float32)), "in")
    b.add("p1", Population(shape=(4,), beta=np.full(4, 0.5, np.float32), threshold=np.ones(4, np.float32)), "a")
    b.add("b", Dense(shape=(4,), in_shape=(4,), weight=rng.random((4, 4)).astype(np.float32)), "p1")
    b.add("skip", Dense(shape=(4,), in_shape=(4,), weight=rng.random((4, 4)).astype(np.float32)), "in")
    b.add("p2", Population(shape=(4,), beta=np.full(4, 0.5, np.float32), threshold=np.ones(4, np.float32)),
          ["b", "skip"])
    b.add("out", Output(shape=(4,)), "p2")
    return b


def test_latencies_balance_merging_paths_and_compose(tmp_path):
    program = _chain_with_skip().build()
    assert node_latencies(program, 1) == {"in": 0, "a": 1, "p1": 1, "b": 2, "skip": 2, "p2": 2, "out": 2}
    out = target_delays(program, 1)
    assert [out.node(n).delay for n in ("a", "b", "skip")] == [1, 1, 2]
    assert out.total_latency == 2 and target_delays(program, 0) is program
    assert target_delays(out, 1).latency == out.latency  # already balanced for this delay: nothing added
    again = target_delays(out, 2)  # latencies add up over applications
    assert again.latency_of("p2") == 2 + 2 and again.node("skip").delay == 4
    save_program(out, tmp_path / "p.h5")
    assert dict(load_program(tmp_path / "p.h5").latency) == dict(out.latency)
    raw = target_delays(program, 1, mode="raw")
    assert [raw.node(n).delay for n in ("a", "b", "skip")] == [1, 1, 1] and not raw.latency
    assert raw.metadata["target_delays"]["mode"] == "raw"
    with pytest.raises(ProgramError, match="'skip'.*at most 1"):
        target_delays(program, 1, max_delay=1)


def test_a_loop_faster_than_the_target_is_refused_by_name():
    b = ProgramBuilder()
    b.add("in", Input(shape=(3,)))
    b.add("ff", Dense(shape=(3,), in_shape=(3,), weight=np.eye(3, dtype=np.float32)), "in")
    b.add("p", Population(shape=(3,), beta=np.full(3, 0.5, np.float32), threshold=np.ones(3, np.float32)), "ff")
    b.add("fwd", Dense(shape=(3,), in_shape=(3,), weight=np.eye(3, dtype=np.float32)), "p")
    b.add("q", Population(shape=(3,), beta=np.full(3, 0.5, np.float32), threshold=np.ones(3, np.float32)), "fwd")
    b.add("back", Dense(shape=(3,), in_shape=(3,), weight=np.eye(3, dtype=np.float32), delay=1), "q")
    b.connect("back", "p")
    b.add("out", Output(shape=(3,)), "q")
    program = b.build()  # the loop p -> fwd -> q -> back -> p takes 1 step; on Loihi it would take 2
    with pytest.raises(ProgramError, match="'(fwd|back)'.*loop.*--target-delays raw"):
        target_delays(program, 1)
    assert target_delays(program, 1, mode="raw").node("fwd").delay == 1


def test_a_host_op_that_would_run_early_is_refused():
    b = _chain_with_skip()
    b.add("h", HostOp(shape=(4,), op="sigmoid"), ["p2"])  # sigmoid(0) = 1/2: not silent at rest
    program = b.build()
    with pytest.raises(ProgramError, match="'h'.*host op 'sigmoid'"):
        target_delays(program, 1)


def test_a_zero_preserving_host_op_may_run_late():
    """An add (zeros in, zeros out, no bias or state) is silent before its inputs arrive."""
    b = _chain_with_skip()
    b.add("h", HostOp(shape=(4,), op="add"), ["p2", "p2"])
    program = target_delays(b.build(), 1)
    assert program.latency_of("h") == program.latency_of("p2") > 0
    b = _chain_with_skip()
    b.add("h", HostOp(shape=(4,), op="matmul", weight=np.eye(4, dtype=np.float32),
                      bias=np.ones(4, np.float32)), ["p2"])  # its bias is there from step 0
    with pytest.raises(ProgramError, match="'h'.*host op 'matmul'"):
        target_delays(b.build(), 1)


def test_bias_waits_for_the_delay_on_every_backend():
    """Affine -> Delay -> LIF: nothing arrives, bias included, before the delay has passed."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(2,)))
    b.add("fc", Dense(shape=(2,), in_shape=(2,), weight=np.zeros((2, 2), np.float32),
                      bias=np.full(2, 2.0, np.float32), delay=3), "in")
    b.add("p", Population(shape=(2,), beta=np.zeros(2, np.float32), threshold=np.ones(2, np.float32), reset="zero",
                          reset_delay=False), "fc")
    b.add("out", Output(shape=(2,)), "p")
    program = b.build()
    for backend in BACKENDS:
        out = run(program, np.zeros((6, 1, 2), np.float32), backend=backend).output[:, 0, 0]
        np.testing.assert_array_equal(out, [0, 0, 0, 1, 1, 1], err_msg=backend)


def test_static_energy_covers_the_extra_steps_on_chip():
    from spike.energy import energy_report
    from spike.hardware import load_target

    program = target_delays(_chain_with_skip().build(), 1)
    res = run(program, np.ones((5, 1, 4), np.float32))
    report = energy_report(res.ops, program, "loihi1", steps=5)
    assert report.run_time_s == pytest.approx((5 + 2) * load_target("loihi1").timing.time_per_step.si)


def test_trained_checkpoints_give_one_accuracy_on_every_target(tmp_path):
    """A default-trained CNN, a ResNet preset and an FTWT CNN (no --target): the accuracy training
    printed = the generic program's = the loihi program's (delays compensated), sample for sample."""
    from spike.models.cnn.train import train_cnn
    from spike.train.datasets import load_digits
    from spike.workflows import compile_checkpoint, evaluate_program

    digits = load_digits()
    x, y = digits.x_test[:120], digits.y_test[:120]
    base = train_cnn(out=tmp_path / "cnn.pt", model_kwargs={"layers": [8, "M", 8, "M"]}, epochs=2, data=digits,
                     progress=False)
    res = train_cnn(out=tmp_path / "res.pt", preset="digits_resnet", model_kwargs={"widths": [4, 6, 8]}, epochs=1,
                    data=digits, progress=False)
    ftwt = train_cnn(out=tmp_path / "ftwt.pt", init=tmp_path / "cnn.pt", ftwt={"ratio": 0.9}, epochs=1, lr=1e-3,
                     data=digits, progress=False)
    for trained, target in ((base, "loihi1"), (res, "loihi2"), (ftwt, "loihi1")):
        path = str(trained["checkpoint"])
        generic = evaluate_program(compile_checkpoint(path), digits.x_test, digits.y_test, progress=False)
        assert generic.accuracy == trained["accuracy"], path
        program = compile_checkpoint(path, target=target)
        assert program.metadata["target_delays"]["mode"] == "compensated" and program.metadata.get("mapping")
        a = run(compile_checkpoint(path), _encode(program, x))
        b = run(program, _encode(program, x))
        np.testing.assert_array_equal(b.output, a.output, err_msg=path)
        assert b.ops.per_node and any("spikes_routed_local" in c for c in b.ops.per_node.values())


def _encode(program, x):
    from spike.train.evaluation import encode_samples
    from spike.workflows import encoder_of

    return encode_samples(encoder_of(program), x).numpy()
