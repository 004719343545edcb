"""Conformance with SpikingJelly 2.0: compiled programs give SpikingJelly's own CPU forward bit for bit.

Randomised small MLP and conv nets (single-step ``step_mode="s"`` and multi-step ``"m"``), every
neuron option the frontend lowers, spiking and real-valued inputs, run on the numba and torch
backends and compared with ``np.array_equal``: the output spikes, every neuron layer's spikes and
its membrane after the step's reset (``v`` per single step, ``v_seq`` with ``store_v_seq=True``).

Weights are dyadic (multiples of 2^-6) so sums are exact in any order (design §3). BatchNorm
is folded into the projection before it (``W * gamma/sqrt(var + eps)``); that equals torch's
``x * alpha + beta`` exactly when ``sqrt(var + eps)`` is exact in float32 and float64 alike,
hence ``eps = 2^-8`` and running variances ``4^k - eps`` here (with the default ``eps`` no
variance gives an exact scale in both).
"""
from __future__ import annotations

import pytest

pytest.importorskip("spikingjelly")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402
from torch import nn  # noqa: E402

from spike.backends import run  # noqa: E402
from spike.compiler import compile as compile_model  # noqa: E402
from spike.compiler.frontends.torch_fx import LoweringError, node_name  # noqa: E402

BACKENDS = ("numba", "torch")
BN_EPS = 2.0**-8
T, B = 10, 3

# every neuron option: (id, constructor taking the step mode)
NEURONS = [
    ("if_hard", lambda mode: neuron.IFNode(step_mode=mode)),
    ("if_soft_thr0.5", lambda mode: neuron.IFNode(v_threshold=0.5, v_reset=None, step_mode=mode)),
    ("if_vreset-0.25", lambda mode: neuron.IFNode(v_reset=-0.25, step_mode=mode)),
    ("lif_tau2", lambda mode: neuron.LIFNode(tau=2.0, step_mode=mode)),
    ("lif_tau3_soft", lambda mode: neuron.LIFNode(tau=3.0, v_reset=None, step_mode=mode)),
    ("lif_tau1.5_vreset-0.25_thr0.5", lambda mode: neuron.LIFNode(tau=1.5, v_reset=-0.25, v_threshold=0.5,
                                                                  step_mode=mode)),
    ("lif_tau3_nodecay", lambda mode: neuron.LIFNode(tau=3.0, decay_input=False, step_mode=mode)),
    ("lif_tau1.5_nodecay_soft_thr0.5", lambda mode: neuron.LIFNode(tau=1.5, decay_input=False, v_reset=None,
                                                                   v_threshold=0.5, step_mode=mode)),
    ("lif_tau2_nodecay_vreset-0.25", lambda mode: neuron.LIFNode(tau=2.0, decay_input=False, v_reset=-0.25,
                                                                 step_mode=mode, surrogate_function=surrogate.ATan(),
                                                                 detach_reset=True)),
    ("plif", lambda mode: neuron.ParametricLIFNode(init_tau=2.0, step_mode=mode)),
    ("plif_nodecay_soft_thr0.5", lambda mode: neuron.ParametricLIFNode(init_tau=2.0, decay_input=False, v_reset=None,
                                                                       v_threshold=0.5, step_mode=mode)),
    ("plif_vreset-0.25", lambda mode: neuron.ParametricLIFNode(init_tau=2.0, v_reset=-0.25, step_mode=mode)),
]
_MAKE = dict(NEURONS)


def _dyadic(g: torch.Generator, shape: tuple[int, ...], scale: float, bits: int = 6) -> torch.Tensor:
    return torch.round(torch.randn(shape, generator=g) * scale * 2**bits) / 2**bits


def _init(net: nn.Module, g: torch.Generator, scale: float) -> nn.Module:
    """Dyadic weights; BatchNorm with power-of-two scales; a random PLIF ``w``; eval mode."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(_dyadic(g, m.weight.shape, scale / fan_in**0.5))
                m.bias.copy_(_dyadic(g, m.bias.shape, 0.1))
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.eps = BN_EPS
                m.running_var.copy_(4.0 ** torch.randint(0, 3, (c,), generator=g).float() - BN_EPS)  # 1, 4, 16 - eps
                m.weight.copy_(torch.sqrt(m.running_var + BN_EPS) * torch.randint(4, 13, (c,), generator=g) / 8)
                m.bias.copy_(_dyadic(g, (c,), 0.25, 4))
                m.running_mean.copy_(_dyadic(g, (c,), 0.25, 4))
            elif isinstance(m, neuron.ParametricLIFNode):
                m.w.add_(_dyadic(g, (), 0.5, 8))
    return net.eval()


def _input(g: torch.Generator, shape: tuple[int, ...], real: bool) -> torch.Tensor:
    if real:
        return _dyadic(g, (T, B, *shape), 1.0, 4)
    return (torch.rand((T, B, *shape), generator=g) < 0.3).float()


def _reference(net: nn.Module, x: torch.Tensor, mode: str, pops: list[str]) -> dict[str, np.ndarray]:
    """SpikingJelly's own forward on CPU: the output, and each neuron layer's spikes and membrane."""
    spikes: dict[str, list[torch.Tensor]] = {p: [] for p in pops}
    hooks = [net.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: spikes[p].append(o.clone()))
             for p in pops]
    functional.reset_net(net)
    try:
        with torch.no_grad():
            if mode == "m":
                out = net(x)
                v = {p: net.get_submodule(p).v_seq for p in pops}
                got = {p: s[0] for p, s in spikes.items()}
            else:
                outs, vs = [], {p: [] for p in pops}
                for t in range(x.shape[0]):
                    outs.append(net(x[t]))
                    for p in pops:
                        vs[p].append(net.get_submodule(p).v.clone())
                out = torch.stack(outs)
                v = {p: torch.stack(vs[p]) for p in pops}
                got = {p: torch.stack(s) for p, s in spikes.items()}
    finally:
        for h in hooks:
            h.remove()
    ref = {"output": out.numpy()}
    for p in pops:
        name = node_name(net, p)  # e.g. "2" -> "lifnode_2"
        ref[name] = got[p].numpy()
        ref[f"{name}.v"] = v[p].numpy()
    return ref


def _check(net: nn.Module, x: torch.Tensor, mode: str, pops: list[str], target: str = "generic") -> None:
    """Compile ``net`` for ``target`` (before running it, so compiling must leave it as it was), then
    compare every backend's output, spikes and membranes with SpikingJelly's, and that the net is
    active."""
    for p in pops:
        net.get_submodule(p).store_v_seq = True
    program = compile_model(net, x if mode == "m" else x[0], target=target)
    assert program.metadata["step_mode"] == ("multi" if mode == "m" else "single")
    ref = _reference(net, x, mode, pops)
    hidden = ref[node_name(net, pops[0])]
    assert 0 < hidden.mean() < 1 and ref["output"].any(), "a silent or saturated net tests nothing"
    probes = [k for k in ref if k != "output"]
    for backend in BACKENDS:
        result = run(program, x.numpy(), backend=backend, probes=probes)
        assert np.array_equal(result.output, ref["output"]), f"{backend}: output spikes differ"
        for k in probes:
            assert np.array_equal(result.probes[k], ref[k]), f"{backend}: probe {k!r} differs"


# ---- MLPs: every neuron option ------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["s", "m"])
@pytest.mark.parametrize("kind", [k for k, _ in NEURONS])
def test_mlp_neuron_options(kind: str, mode: str) -> None:
    """Linear -> BatchNorm1d -> neuron -> Dropout -> Linear -> LIF, both input kinds, two seeds."""
    for seed in range(2):
        for real in (False, True):
            g = torch.Generator().manual_seed(1000 * seed + 7 * real + 1)
            out = _MAKE[NEURONS[(seed + 5) % len(NEURONS)][0]](mode)
            net = nn.Sequential(
                layer.Linear(12, 24, step_mode=mode), layer.BatchNorm1d(24, step_mode=mode), _MAKE[kind](mode),
                layer.Dropout(0.25, step_mode=mode), layer.Linear(24, 6, step_mode=mode), out,
            )
            _check(_init(net, g, 3.0), _input(g, (12,), real), mode, ["2", "5"])


def test_mlp_plain_torch_layers() -> None:
    """Plain nn.Linear / nn.Dropout between SpikingJelly neurons (multi-step)."""
    g = torch.Generator().manual_seed(5)
    net = nn.Sequential(nn.Linear(10, 16), neuron.LIFNode(tau=3.0, step_mode="m"), nn.Dropout(0.5),
                        nn.Sequential(nn.Linear(16, 4), neuron.ParametricLIFNode(step_mode="m")))
    _check(_init(net, g, 6.0), _input(g, (10,), False), "m", ["1", "3.1"])


# ---- conv nets --------------------------------------------------------------------------------
def _conv_net(mode: str, style: str, pool: str, g: torch.Generator) -> tuple[nn.Module, list[str]]:
    """Conv2d -> BatchNorm2d -> neuron -> pool -> Flatten -> Linear -> neuron (``pool`` "max"/"avg"
    after the neuron; "max_current" pools the currents before it). ``style``: SpikingJelly layers
    ("sj"), a SeqToANNContainer of torch.nn layers ("seq", multi-step) or plain torch.nn layers
    ("plain", single-step)."""
    kinds = [k for k, _ in NEURONS]
    first = _MAKE[kinds[int(torch.randint(len(kinds), (), generator=g))]](mode)
    last = _MAKE[kinds[int(torch.randint(len(kinds), (), generator=g))]](mode)
    if style == "sj":
        conv_bn = [layer.Conv2d(2, 4, 3, padding=1, step_mode=mode), layer.BatchNorm2d(4, step_mode=mode)]
        pooling = (layer.AvgPool2d if pool == "avg" else layer.MaxPool2d)(2, step_mode=mode)
        flatten, linear = layer.Flatten(step_mode=mode), layer.Linear(64, 5, step_mode=mode)
    elif style == "seq":
        conv_bn = [layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4))]
        pooling = layer.SeqToANNContainer((nn.AvgPool2d if pool == "avg" else nn.MaxPool2d)(2))
        flatten, linear = nn.Flatten(2), nn.Linear(64, 5)
    else:
        conv_bn = [nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)]
        pooling = (nn.AvgPool2d if pool == "avg" else nn.MaxPool2d)(2)
        flatten, linear = nn.Flatten(), nn.Linear(64, 5)
    body = [*conv_bn, pooling, first] if pool == "max_current" else [*conv_bn, first, pooling]
    net = nn.Sequential(*body, flatten, linear, last)
    return net, [str(body.index(first)), str(len(net) - 1)]


CONV_CASES = [(m, s) for m, s in (("m", "sj"), ("m", "seq"), ("s", "sj"), ("s", "plain"))]


@pytest.mark.parametrize("pool", ["max", "avg", "max_current"])
@pytest.mark.parametrize(("mode", "style"), CONV_CASES)
def test_conv_nets(mode: str, style: str, pool: str) -> None:
    for seed in range(2):
        for real in (False, True):
            g = torch.Generator().manual_seed(100 * seed + 11 * real + 3)
            net, pops = _conv_net(mode, style, pool, g)
            _check(_init(net, g, 4.0), _input(g, (2, 8, 8), real), mode, pops)


@pytest.mark.parametrize("pool", ["max", "avg", "max_current"])
def test_multistep_conv_net_on_loihi2(pool: str) -> None:
    """Compiled for Loihi 2 (one-step synapses on every projection, the latency compensated), a
    multi-step SpikingJelly conv net still gives SpikingJelly's spikes and membranes."""
    g = torch.Generator().manual_seed(17)
    net, pops = _conv_net("m", "sj", pool, g)
    _check(_init(net, g, 4.0), _input(g, (2, 8, 8), False), "m", pops, target="loihi2")


# ---- refusals ---------------------------------------------------------------------------------
class _MyLIF(neuron.LIFNode):
    pass


class _MyConv(layer.Conv2d):
    pass


def _mlp_with(node: nn.Module, mode: str = "m") -> nn.Sequential:
    return nn.Sequential(layer.Linear(8, 4, step_mode=mode), node)


REFUSED = {
    "other_neuron": (lambda: _mlp_with(neuron.QIFNode(step_mode="m")), "'1'", "QIFNode", "IFNode, LIFNode"),
    "neuron_subclass": (lambda: _mlp_with(_MyLIF(step_mode="m")), "'1'", "_MyLIF", "not their subclasses"),
    "simple_neuron": (lambda: _mlp_with(neuron.SimpleLIFNode(2.0, True, step_mode="m")), "'1'", "SimpleLIFNode",
                      "IFNode, LIFNode"),
    "non_spiking_neuron": (lambda: _mlp_with(neuron.NonSpikingLIFNode()), "'1'", "NonSpikingLIFNode", "supported:"),
    "surrogate_not_spiking": (
        lambda: _mlp_with(neuron.LIFNode(surrogate_function=surrogate.Sigmoid(spiking=False), step_mode="m")),
        "'1'", "LIFNode", "spiking=True"),
    "custom_surrogate": (lambda: _mlp_with(neuron.LIFNode(surrogate_function=lambda v: (v > 0).float(),
                                                          step_mode="m")), "'1'", "LIFNode", "Heaviside"),
    "other_layer": (lambda: nn.Sequential(layer.Conv2d(2, 4, 3, step_mode="m"), neuron.LIFNode(step_mode="m"),
                                          layer.AdaptiveAvgPool2d(1, step_mode="m")),
                    "'2'", "AdaptiveAvgPool2d", "supported:"),
    "layer_subclass": (lambda: nn.Sequential(_MyConv(2, 4, 3, step_mode="m"), neuron.LIFNode(step_mode="m")),
                       "'0'", "_MyConv", "subclass"),
    "multi_step_container": (lambda: nn.Sequential(layer.MultiStepContainer(nn.Linear(8, 4)),
                                                   neuron.LIFNode(step_mode="m")),
                             "'0'", "MultiStepContainer", "supported:"),
    "container_in_single_step": (lambda: nn.Sequential(layer.SeqToANNContainer(nn.Linear(8, 4)),
                                                       neuron.LIFNode(step_mode="s")),
                                 "'0'", "SeqToANNContainer", "multi-step"),
    "neuron_in_container": (lambda: nn.Sequential(layer.SeqToANNContainer(nn.Linear(8, 4), neuron.LIFNode()),
                                                  neuron.LIFNode(step_mode="m")), "'0.1'", "LIFNode", "outside"),
    "step_mode_mismatch": (lambda: nn.Sequential(layer.Conv2d(2, 4, 3, step_mode="s"), neuron.LIFNode(step_mode="m")),
                           "'0'", "Conv2d", "step_mode 's'"),
    "float64": (lambda: _mlp_with(neuron.LIFNode(step_mode="m")).double(), "'0'", "Linear", "float32"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unsupported_raises_lowering_error(case: str) -> None:
    build, *expected = REFUSED[case]
    net = build()
    first = next(m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    x = torch.zeros(4, 2, *((2, 8, 8) if isinstance(first, nn.Conv2d) else (first.in_features,)))
    x = x.to(first.weight.dtype)
    single = any(getattr(m, "step_mode", "m") == "s" for m in net.modules() if isinstance(m, neuron.BaseNode))
    with pytest.raises(LoweringError) as err:
        compile_model(net, x[0] if single else x)
    for text in expected:
        assert text in str(err.value), f"{text!r} not in: {err.value}"
