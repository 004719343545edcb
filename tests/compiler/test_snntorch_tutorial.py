"""snnTorch models in the tutorials' style (time loop, state passed by hand) compile exactly.

snnTorch itself is the oracle: with dyadic weights the compiled program's output equals the
model's returned spike recording, and the probed membranes equal its membrane recording, on the
numba and torch backends, for the generic target and for loihi2 (the delay pass compensates).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import snntorch as snn
from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.frontends.torch_fx import LoweringError

from helpers.models import dyadic_, spikes_in

BACKENDS = ("numba", "torch")
num_steps = 10  # the tutorials' global


class MLP(nn.Module):
    """Tutorial 5's network, small: num_steps from the input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.lif1 = snn.Leaky(beta=0.875)
        self.fc2 = nn.Linear(32, 6)
        self.lif2 = snn.Leaky(beta=0.75, reset_mechanism="zero")

    def forward(self, x: torch.Tensor):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for step in range(x.shape[0]):
            cur1 = self.fc1(x[step])
            spk1, mem1 = self.lif1(cur1, mem1)
            cur2 = self.fc2(spk1)
            spk2, mem2 = self.lif2(cur2, mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)


class GlobalStepsMLP(MLP):
    """The same with ``num_steps`` a module global and the hidden layer's recordings returned too."""

    def forward(self, x: torch.Tensor):
        mem1 = self.lif1.reset_mem()
        mem2 = self.lif2.reset_mem()
        spk2_rec, spk1_rec, mem1_rec = [], [], []
        for step in range(num_steps):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
            spk1_rec.append(spk1)
            mem1_rec.append(mem1)
        return torch.stack(spk2_rec), torch.stack(spk1_rec), torch.stack(mem1_rec)


class ConvNet(nn.Module):
    """Conv -> Leaky -> pool of spikes -> Linear -> Leaky; ``self.num_steps`` loop."""

    def __init__(self, pool: str) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.75)
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.fc1 = nn.Linear(4 * 4 * 4, 5)
        self.lif2 = snn.Leaky(beta=0.875)

    def forward(self, x: torch.Tensor):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk_rec, mem_rec = [], []
        for step in range(self.num_steps):
            spk1, mem1 = self.lif1(self.conv1(x[step]), mem1)
            cur2 = self.fc1(self.pool(spk1).view(x.shape[1], -1))
            spk2, mem2 = self.lif2(cur2, mem2)
            spk_rec.append(spk2)
            mem_rec.append(mem2)
        return torch.stack(spk_rec, dim=0), torch.stack(mem_rec, dim=0)


class SynapticNet(nn.Module):
    """A Synaptic layer between Leaky ones; torch.flatten of an image input; state by keyword."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(16, 24), snn.Leaky(beta=0.875)
        self.fc2, self.syn2 = nn.Linear(24, 12), snn.Synaptic(alpha=0.75, beta=0.5)
        self.fc3, self.lif3 = nn.Linear(12, 4), snn.Leaky(beta=0.75)

    def forward(self, x: torch.Tensor):
        mem1 = self.lif1.init_leaky()
        syn2, mem2 = self.syn2.init_synaptic()
        mem3 = self.lif3.init_leaky()
        spk_rec, mem2_rec, mem3_rec = [], [], []
        for step in range(x.size(0)):
            spk1, mem1 = self.lif1(self.fc1(torch.flatten(x[step], 1)), mem1)
            spk2, syn2, mem2 = self.syn2(self.fc2(spk1), syn2, mem=mem2)
            spk3, mem3 = self.lif3(self.fc3(spk2), mem3)
            spk_rec.append(spk3)
            mem2_rec.append(mem2)
            mem3_rec.append(mem3)
        return torch.stack(spk_rec), torch.stack(mem2_rec), torch.stack(mem3_rec)


def check(net: nn.Module, x: torch.Tensor, target: str = "generic") -> None:
    with torch.no_grad():
        returned = net(x)
    returned = returned if isinstance(returned, tuple) else (returned,)
    assert returned[0].sum() > 0
    program = compile_model(net, x, target=target)
    returns = program.metadata["snntorch_returns"]
    assert len(returns) == len(returned) and returns[0]["probe"] == "output"
    probes = [r["probe"] for r in returns[1:]]
    for backend in BACKENDS:
        res = run(program, x.numpy(), backend=backend, probes=probes)
        np.testing.assert_array_equal(res.output, returned[0].numpy(), err_msg=f"{backend} output")
        for r, expected in zip(returns[1:], returned[1:]):
            got = res.probes[r["probe"]].reshape(expected.shape)
            np.testing.assert_array_equal(got, expected.numpy(), err_msg=f"{backend} {r['probe']}")


@pytest.mark.parametrize("target", ["generic", "loihi2"])
@pytest.mark.parametrize("seed", [0, 1])
def test_mlp(seed: int, target: str) -> None:
    net = dyadic_(MLP(), seed)
    check(net, spikes_in((12, 3, 20), seed + 10), target)


def test_mlp_returns_map_to_probes() -> None:
    net = dyadic_(GlobalStepsMLP(), 2)
    x = spikes_in((num_steps, 2, 20), 3)
    program = compile_model(net, x)
    assert [(r["kind"], r["probe"]) for r in program.metadata["snntorch_returns"]] == [
        ("spikes", "output"), ("spikes", "lif1"), ("membrane", "lif1.v")]
    check(net, x)
    check(net, x, "loihi2")


@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("target", ["generic", "loihi2"])
def test_conv(pool: str, target: str) -> None:
    net = dyadic_(ConvNet(pool), 4, spread=128)
    check(net, spikes_in((num_steps, 2, 2, 8, 8), 5, p=0.4), target)


@pytest.mark.parametrize("target", ["generic", "loihi2"])
def test_synaptic(target: str) -> None:
    net = dyadic_(SynapticNet(), 6, scale=64, spread=40)
    check(net, spikes_in((14, 3, 1, 4, 4), 7, p=0.4), target)


def test_real_valued_input() -> None:
    net = dyadic_(MLP(), 8)
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, 17, (8, 3, 20), generator=g).float() / 16
    check(net, x)


# ---- refusals ----------------------------------------------------------------------------
class Looped(MLP):
    """MLP's two layers in the tutorials' loop, written once: ``hidden`` (the first layer's step) and
    ``steps`` are what the variants below change."""

    def steps(self, x: torch.Tensor) -> int:
        return x.shape[0]

    def hidden(self, x: torch.Tensor, step: int, mem1: torch.Tensor):
        return self.lif1(self.fc1(x[step]), mem1)

    def forward(self, x: torch.Tensor):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        rec = []
        for step in range(self.steps(x)):
            spk1, mem1 = self.hidden(x, step, mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            rec.append(spk2)
        return torch.stack(rec)


class CalledTwice(MLP):
    def forward(self, x: torch.Tensor):
        mem1 = self.lif1.init_leaky()
        rec = []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk1, mem1 = self.lif1(spk1 @ torch.eye(32), mem1)
            rec.append(spk1)
        return torch.stack(rec)


class Branch(Looped):
    def hidden(self, x: torch.Tensor, step: int, mem1: torch.Tensor):
        spk1, mem1 = super().hidden(x, step, mem1)
        if step % 2:
            spk1 = spk1.view(spk1.shape[0], -1)
        return spk1, mem1


class DataBranch(Looped):
    def hidden(self, x: torch.Tensor, step: int, mem1: torch.Tensor):
        spk1, mem1 = super().hidden(x, step, mem1)
        if spk1.sum() > 0:
            spk1 = spk1 * 1
        return spk1, mem1


class SumOutput(MLP):
    def forward(self, x: torch.Tensor):
        spk, mem = MLP.forward(self, x)
        return spk.sum(0)


class MembraneFirst(MLP):
    def forward(self, x: torch.Tensor):
        spk, mem = MLP.forward(self, x)
        return mem, spk


class CarriedSpikes(MLP):
    def forward(self, x: torch.Tensor):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spk2 = torch.zeros(x.shape[1], 6)
        rec = []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]) + spk2.sum(1, keepdim=True), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            rec.append(spk2)
        return torch.stack(rec)


class MembraneFeeds(Looped):
    def hidden(self, x: torch.Tensor, step: int, mem1: torch.Tensor):
        spk1, mem1 = super().hidden(x, step, mem1)
        return mem1, mem1  # the next layer reads the membrane


class StateNotPassed(MLP):
    def forward(self, x: torch.Tensor):
        rec = []
        for step in range(x.shape[0]):
            spk1, _ = self.lif1(self.fc1(x[step]))
            spk2, _ = self.lif2(self.fc2(spk1))
            rec.append(spk2)
        return torch.stack(rec)


class FewerSteps(Looped):
    def steps(self, x: torch.Tensor) -> int:
        return x.shape[0] - 2


@pytest.mark.parametrize("model, message", [
    (CalledTwice, "module 'lif1' is called 2 times per step"),
    (Branch, "the loop body differs between steps 0 and 1"),
    (DataBranch, "data-dependent Python control flow"),
    (SumOutput, "an output that is not a stacked spike or membrane recording"),
    (MembraneFirst, "membrane recording of 'lif2' first"),
    (CarriedSpikes, "reads a value of the previous step"),
    (MembraneFeeds, "reads the state (output 1) of module 'lif1'"),
    (StateNotPassed, "module 'lif1' is called without its state 'mem'"),
    (FewerSteps, "loop over every step"),
])
def test_refusals(model: type, message: str) -> None:
    net = dyadic_(model(), 0)
    x = spikes_in((6, 2, 20), 1)
    with pytest.raises(LoweringError, match=re.escape(message)):
        compile_model(net, x)


class Iterated(MLP):
    """``for x_t in x`` (iterating the steps) and state by keyword."""

    def forward(self, x: torch.Tensor):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        rec = []
        for x_t in x:
            spk1, mem1 = self.lif1(self.fc1(x_t), mem=mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem=mem2)
            rec.append(spk2)
        return torch.stack(rec)


def test_iterating_the_steps() -> None:
    net = dyadic_(Iterated(), 3)
    check(net, spikes_in((9, 2, 20), 4))


class LateBranch(Looped):
    def hidden(self, x: torch.Tensor, step: int, mem1: torch.Tensor):
        spk1, mem1 = super().hidden(x, step, mem1)
        if step == 3:  # e.g. a debugging print's tensor op, or a skipped layer
            mem1 = mem1 * 0.5
        return spk1, mem1


class WholeInput(MLP):
    def forward(self, x: torch.Tensor):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        cur1 = self.fc1(x)
        rec = []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(cur1[step], mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            rec.append(spk2)
        return torch.stack(rec)


class NeedsState(MLP):
    def forward(self, x: torch.Tensor, mem1: torch.Tensor):
        return self.lif1(self.fc1(x), mem1)


@pytest.mark.parametrize("model, message", [
    (LateBranch, "the loop body differs between steps 1 and 3"),
    (WholeInput, "module 'fc1' (Linear) is applied to the whole input"),
    (NeedsState, "running NeedsState.forward on the example input of shape [6, 2, 20]"),
])
def test_more_refusals(model: type, message: str) -> None:
    test_refusals(model, message)


class Nested(nn.Module):
    """Containers (Sequential, ModuleList) around the layers; states kept in a Python list."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1))
        self.lifs = nn.ModuleList([snn.Leaky(beta=0.75), snn.Leaky(beta=0.875)])
        self.head = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 5))

    def forward(self, x: torch.Tensor):
        mems = [lif.init_leaky() for lif in self.lifs]
        spk_rec, mem_rec = [], []
        for step in range(x.shape[0]):
            spk1, mems[0] = self.lifs[0](self.features(x[step]), mems[0])
            spk2, mems[1] = self.lifs[1](self.head(spk1), mems[1])
            spk_rec.append(spk2)
            mem_rec.append(mems[0])
        return torch.stack(spk_rec), torch.stack(mem_rec)


def test_containers() -> None:
    net = dyadic_(Nested(), 11, spread=128)
    x = spikes_in((8, 2, 2, 8, 8), 12, p=0.4)
    program = compile_model(net, x)
    assert program.metadata["snntorch_returns"][1]["probe"] == "lifs_leaky_0.v"
    check(net, x)


class UnusedValues(Looped):
    """Values computed in the loop and never used (a firing rate for logging) are left out."""

    def hidden(self, x: torch.Tensor, step: int, mem1: torch.Tensor):
        spk1, mem1 = super().hidden(x, step, mem1)
        self.rates.append(spk1.mean())
        return spk1, mem1

    def forward(self, x: torch.Tensor):
        self.rates = []
        return super().forward(x)


def test_unused_values_are_left_out() -> None:
    check(dyadic_(UnusedValues(), 5), spikes_in((7, 2, 20), 6))


class InPlace(Looped):
    def hidden(self, x: torch.Tensor, step: int, mem1: torch.Tensor):
        cur1 = self.fc1(x[step])
        cur1 += 0.25
        return self.lif1(cur1, mem1)


def test_in_place_refused() -> None:
    test_refusals(InPlace, "changes a tensor computed from the input in place")


class Preallocated(MLP):
    def forward(self, x: torch.Tensor):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        rec = torch.zeros(x.shape[0], x.shape[1], 6)
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            rec[step] = spk2
        return rec


def test_preallocated_recording_refused() -> None:
    test_refusals(Preallocated, "record each step's value in a list and return torch.stack(rec, dim=0)")


def test_sequential_without_init_hidden_refused() -> None:
    net = nn.Sequential(nn.Linear(20, 6), snn.Leaky(beta=0.5))
    with pytest.raises(LoweringError, match=re.escape("neuron '1' has init_hidden=False, but an nn.Sequential")):
        compile_model(net, spikes_in((6, 2, 20), 1))
