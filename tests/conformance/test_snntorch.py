"""snnTorch conformance (design §3, §5): randomised small models built from every snnTorch neuron the
frontend lowers (Leaky, Synaptic, Lapicque, Alpha, RLeaky, RSynaptic; every reset mechanism, with
and without reset delay where snnTorch has it; learnable beta/threshold; recurrent all-to-all,
convolutional and one-to-one), in both styles (``init_hidden=True`` stepped by hand, and the
tutorials' time loop with the state passed by hand), with dyadic weights and several seeds. The
compiled program's spikes and every population's membrane equal snnTorch's own forward exactly on
the numba and torch backends, and on a Loihi 2 target (one-step synapses, compensated). Options the
IR cannot express exactly are refused with an error naming the module."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")
import snntorch.utils  # noqa: E402

from spike.backends import run  # noqa: E402
from spike.compiler import compile as compile_model  # noqa: E402
from spike.compiler.frontends.torch_fx import LoweringError  # noqa: E402

BACKENDS = ("numba", "torch")
T, B = 14, 3


def _dyadic(shape: tuple[int, ...], g: torch.Generator, spread: float, q: float = 2.0 ** -6) -> torch.Tensor:
    return torch.round(torch.randn(shape, generator=g) * spread / q) * q


def dyadic_(model: nn.Module, seed: int) -> nn.Module:
    """Every weight and bias a random multiple of 2^-6 (float sums stay exact)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.copy_(_dyadic(p.shape, g, 1.6 / max(1.0, p[0].numel()) ** 0.5))
            elif name.endswith("bias"):
                p.copy_(_dyadic(p.shape, g, 0.2))
    return model


def neuron(kind: str, reset: str, delay: bool, n: int | None = None, conv: int | None = None, **kw) -> nn.Module:
    """One snnTorch neuron of ``kind`` (dyadic decays, so membranes stay comparable bit for bit)."""
    kw = dict(reset_mechanism=reset, **kw)
    if kind in ("Leaky", "Synaptic", "RLeaky", "RSynaptic"):
        kw["reset_delay"] = delay
    if kind == "Leaky":
        return snn.Leaky(beta=0.875, **kw)
    if kind == "Synaptic":
        return snn.Synaptic(alpha=0.75, beta=0.875, **kw)
    if kind == "Lapicque":  # input gain ln(1/beta), decay 1 - ln(1/beta)
        return snn.Lapicque(beta=0.5, threshold=0.5, **kw)
    if kind == "LapicqueRC":  # R, C given: decay 1 - dt/(R*C), input gain R*dt/(R*C)
        return snn.Lapicque(R=2.0, C=4.0, time_step=0.5, threshold=0.25, **kw)
    if kind == "Alpha":
        return snn.Alpha(alpha=0.875, beta=0.75, threshold=0.5, **kw)
    rec = dict(linear_features=n) if conv is None else dict(conv2d_channels=conv, kernel_size=3)
    if kind == "RLeaky":
        return snn.RLeaky(beta=0.875, **rec, **kw)
    if kind == "RLeaky1":  # one-to-one recurrence, one V per neuron
        kw.pop("reset_delay", None)
        return snn.RLeaky(beta=0.875, all_to_all=False, V=torch.linspace(-0.5, 0.5, n), reset_delay=delay, **kw)
    if kind == "RSynaptic":
        return snn.RSynaptic(alpha=0.75, beta=0.875, **rec, **kw)
    raise ValueError(kind)


CASES = [(k, r, d) for k in ("Leaky", "Synaptic", "RLeaky", "RLeaky1") for r in ("subtract", "zero", "none")
         for d in (True, False)]
CASES += [(k, r, True) for k in ("Lapicque", "LapicqueRC", "Alpha", "RSynaptic") for r in ("subtract", "zero", "none")]


def mlp(kind: str, reset: str, delay: bool) -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, 20), neuron(kind, reset, delay, 20, init_hidden=True),
        nn.Linear(20, 6), neuron(kind, reset, delay, 6, init_hidden=True),
    )


def reference(net: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
    """snnTorch's spikes of the last layer and every neuron's membrane after each step."""
    neurons = [m for m in net.modules() if isinstance(m, snn.SpikingNeuron)]
    snntorch.utils.reset(net)
    out, mems = [], [[] for _ in neurons]
    with torch.no_grad():
        for t in range(x.shape[0]):
            o = net(x[t])
            out.append(o[0] if isinstance(o, tuple) else o)
            for i, m in enumerate(neurons):
                mems[i].append(m.mem.clone())
    return torch.stack(out).numpy(), [torch.stack(m).numpy() for m in mems]


def check(net: nn.Module, x: torch.Tensor, example: torch.Tensor, expected: np.ndarray, mems: list[np.ndarray],
          targets: tuple[str, ...] = ("generic",)) -> None:
    assert expected.sum() > 0, "the test needs output spikes"
    for target in targets:
        program = compile_model(net, example, target=target)
        pops = program.populations()
        assert len(pops) == len(mems)
        for backend in BACKENDS:
            res = run(program, x.numpy(), backend=backend, probes=[f"{p}.v" for p in pops])
            np.testing.assert_array_equal(res.output, expected, err_msg=f"{target} {backend} spikes")
            for p, mem in zip(pops, mems):
                np.testing.assert_array_equal(res.probes[f"{p}.v"].reshape(mem.shape), mem,
                                              err_msg=f"{target} {backend} membrane of {p}")


def inputs(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.round(torch.rand(shape, generator=g) * 2 * 16) / 16  # real-valued, dyadic


@pytest.mark.parametrize("kind,reset,delay", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_init_hidden_mlp_equals_snntorch(kind: str, reset: str, delay: bool, seed: int) -> None:
    net = dyadic_(mlp(kind, reset, delay), seed)
    x = inputs(seed, (T, B, 12))
    expected, mems = reference(net, x)
    check(net, x, x[0], expected, mems)


@pytest.mark.parametrize("kind", ["Leaky", "Synaptic", "RLeaky", "RSynaptic"])
def test_conv_maxpool_of_currents_and_recurrent_conv(kind: str) -> None:
    """Conv -> MaxPool (of currents, a host op) -> neuron, and RLeaky/RSynaptic with Conv2d recurrence."""
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(2), neuron(kind, "subtract", True, conv=4, init_hidden=True),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 5), neuron("Leaky", "zero", True, init_hidden=True),
    )
    net = dyadic_(net, 3)
    x = inputs(3, (T, B, 2, 6, 6))
    expected, mems = reference(net, x)
    check(net, x, x[0], expected, mems)


def test_learnable_beta_and_threshold_per_neuron() -> None:
    net = nn.Sequential(
        nn.Linear(12, 16),
        snn.Leaky(beta=torch.linspace(0.5, 0.9375, 16), threshold=torch.linspace(0.5, 1.25, 16), learn_beta=True,
                  learn_threshold=True, init_hidden=True),
        nn.Linear(16, 6),
        snn.Synaptic(alpha=torch.full((6,), 0.75), beta=0.5, learn_alpha=True, learn_beta=True, init_hidden=True),
    )
    net = dyadic_(net, 4)
    x = inputs(4, (T, B, 12))
    expected, mems = reference(net, x)
    check(net, x, x[0], expected, mems)


@pytest.mark.parametrize("kind,reset,delay", [("Leaky", "subtract", True), ("Synaptic", "zero", True),
                                              ("RLeaky", "subtract", False), ("Alpha", "zero", True),
                                              ("Lapicque", "subtract", True), ("RSynaptic", "zero", True)])
def test_loihi2_target_equals_snntorch(kind: str, reset: str, delay: bool) -> None:
    """On Loihi 2 (one-step synapses) the delay pass compensates: the same spikes and membranes."""
    net = dyadic_(mlp(kind, reset, delay), 0)
    x = inputs(0, (T, B, 12))
    expected, mems = reference(net, x)
    check(net, x, x[0], expected, mems, targets=("loihi2",))


class Tutorial(nn.Module):
    """The tutorials' style: a time loop in forward, the state passed by hand, recordings stacked."""

    def __init__(self, kind: str, reset: str, delay: bool) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 20), nn.Linear(20, 6)
        self.lif1 = neuron(kind, reset, delay, 20)
        self.lif2 = neuron(kind, reset, delay, 6)
        self.carries_spikes = kind in ("RLeaky", "RLeaky1", "RSynaptic")  # their state starts with spk

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s1, s2 = self.lif1.reset_mem(), self.lif2.reset_mem()
        s1 = s1 if isinstance(s1, tuple) else (s1,)
        s2 = s2 if isinstance(s2, tuple) else (s2,)
        spk_rec, mem1_rec, mem2_rec = [], [], []
        for step in range(x.shape[0]):
            o1 = self.lif1(self.fc1(x[step]), *s1)
            o2 = self.lif2(self.fc2(o1[0]), *s2)
            s1 = o1 if self.carries_spikes else o1[1:]
            s2 = o2 if self.carries_spikes else o2[1:]
            spk_rec.append(o2[0])
            mem1_rec.append(o1[-1])
            mem2_rec.append(o2[-1])
        return torch.stack(spk_rec), torch.stack(mem1_rec), torch.stack(mem2_rec)


@pytest.mark.parametrize("kind,reset,delay", CASES)
def test_tutorial_style_equals_snntorch(kind: str, reset: str, delay: bool) -> None:
    net = dyadic_(Tutorial(kind, reset, delay), 6)
    x = inputs(6, (T, B, 12))
    with torch.no_grad():
        spk, mem1, mem2 = (r.numpy() for r in net(x))
    check(net, x, x, spk, [mem1, mem2])
    returns = compile_model(net, x).metadata["snntorch_returns"]
    assert [r["kind"] for r in returns] == ["spikes", "membrane", "membrane"]


@pytest.mark.parametrize("make,what", [
    (lambda: snn.Leaky(beta=0.5, inhibition=True, init_hidden=True), "inhibition"),
    (lambda: snn.Leaky(beta=0.5, graded_spikes_factor=0.5, init_hidden=True), "graded_spikes_factor"),
    (lambda: snn.RSynaptic(alpha=0.5, beta=0.5, linear_features=8, reset_delay=False, init_hidden=True),
     "reset_delay=False"),
    (lambda: snn.Lapicque(beta=0.5, R=3.0, init_hidden=True), "R=3.0"),
    (lambda: snn.SLSTM(8, 8, init_hidden=True), "not supported"),
])
def test_unsupported_options_are_named(make, what: str) -> None:
    net = nn.Sequential(nn.Linear(4, 8), make())
    with pytest.raises(LoweringError, match="module '1'") as err:
        compile_model(net, torch.zeros(2, 4))
    assert what in str(err.value)
