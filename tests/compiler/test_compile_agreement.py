"""Compiled programs reproduce the PyTorch model exactly on both backends (dyadic weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import snntorch as snn
from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.frontends.torch_fx import LoweringError
from spike.neurons import LI, LIF
from spike.layers import ConvLIFMaxPool2d, LIFMaxPool2d, TimeDistributed as TD
from spike.recurrent import RecurrentLIF

from helpers.models import CNN, MLP, ResidualBlock, dyadic_, dyadic_bn, run_snntorch, snntorch_net, spikes_in

BACKENDS = ("torch", "numba")


def check_all_backends(model: nn.Module, x: torch.Tensor, expected: torch.Tensor, **kw) -> dict:
    program = compile_model(model, x, **kw)
    results = {}
    for backend in BACKENDS:
        res = run(program, x, backend=backend)
        np.testing.assert_array_equal(res.output, expected.numpy(), err_msg=f"backend {backend}")
        results[backend] = res
    for key in ("syn_ops", "macs", "dense_ops", "neuron_updates", "spikes"):
        np.testing.assert_array_equal(
            results["numba"].ops.per_sample_total()[key], results["torch"].ops.per_sample_total()[key], err_msg=key
        )
    return results


@pytest.mark.parametrize("seed,batch", [(0, 1), (1, 3), (2, 8)])
def test_mlp_agrees(seed: int, batch: int) -> None:
    model = dyadic_(MLP(), seed).eval()
    x = spikes_in((12, batch, 1, 6, 6), seed + 100)
    with torch.no_grad():
        expected = model(x)
    assert expected.sum() > 0
    check_all_backends(model, x, expected)


def test_mlp_real_input_counts_macs() -> None:
    model = dyadic_(MLP(), 5).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 17, (8, 4, 1, 6, 6), generator=g).float() / 16  # like the digits pixels
    with torch.no_grad():
        expected = model(x)
    results = check_all_backends(model, x, expected)
    per_node = results["numba"].ops.per_node
    first = next(n for n, k in results["numba"].ops.kinds.items() if k == "dense")
    assert per_node[first]["macs"].sum() > 0 and per_node[first]["syn_ops"].sum() == 0


@pytest.mark.parametrize("seed,batch", [(0, 2), (1, 5)])
def test_cnn_agrees(seed: int, batch: int) -> None:
    model = dyadic_(CNN(), seed, spread=128).eval()
    x = spikes_in((10, batch, 2, 8, 8), seed)
    with torch.no_grad():
        expected = model(x)
    assert expected.sum() > 0
    check_all_backends(model, x, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_block_agrees(seed: int) -> None:
    model = dyadic_(ResidualBlock(), seed).eval()
    dyadic_bn(model.bn1.module, seed)
    dyadic_bn(model.bn2.module, seed + 7)
    x = spikes_in((8, 3, 3, 6, 6), seed)
    with torch.no_grad():
        expected = model(x)
    assert expected.sum() > 0
    results = check_all_backends(model, x, expected)
    assert "batchnorm" not in results["numba"].ops.kinds.values()


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(20, 16)
        self.rec = RecurrentLIF(16, beta=0.75)
        self.fc2 = nn.Linear(16, 4)
        self.out = LI(beta=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.fc2(self.rec(self.fc(x))))


@pytest.mark.parametrize("seed,batch", [(0, 1), (3, 4)])
def test_recurrent_layer_agrees(seed: int, batch: int) -> None:
    model = dyadic_(Recurrent(), seed).eval()
    x = spikes_in((15, batch, 20), seed)
    with torch.no_grad():
        expected = model(x)
    program = compile_model(model, x)
    rec = [n for n, node in program.nodes() if node.KIND == "dense" and node.delay == 1]
    assert len(rec) == 1
    check_all_backends(model, x, expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_snntorch_model_agrees(seed: int) -> None:
    net = dyadic_(snntorch_net(), seed)
    x = spikes_in((20, 3, 24), seed)
    expected = run_snntorch(net, x)
    assert expected.sum() > 0
    program = compile_model(net, x[0])
    for backend in BACKENDS:
        np.testing.assert_array_equal(run(program, x, backend=backend).output, expected.numpy())


def test_counts_equal_neurobench() -> None:
    """syn_ops / macs / dense_ops of every Linear/Conv equal NeuroBench's single_layer_MACs."""
    from neurobench.metrics.utils.layers import single_layer_MACs

    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), snn.Leaky(beta=0.875, init_hidden=True),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 12), snn.Leaky(beta=0.875, init_hidden=True),
        nn.Linear(12, 3), snn.Leaky(beta=0.75, init_hidden=True),
    )
    dyadic_(net, 4, spread=128)
    with torch.no_grad():  # some zero weights, so non-zero-weight pairs differ from all pairs
        net[3].weight[:, ::7] = 0
    T, B = 12, 4
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 17, (T, B, 1, 5, 5), generator=g).float() / 16  # real-valued first layer
    recorded: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = [
        m.register_forward_hook(lambda layer, inputs, out, name=name: recorded.append((name, layer, inputs[0].clone())))
        for name, m in net.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    expected = run_snntorch(net, x)
    for h in handles:  # NeuroBench calls copies of the layer: no hooks may be left on it
        h.remove()
    seen: dict[str, dict[str, int]] = {}
    for name, layer, inputs in recorded:
        ops, spiking = single_layer_MACs(inputs, layer)
        total, _ = single_layer_MACs(inputs, layer, total=True)
        d = seen.setdefault(name, {"syn_ops": 0, "macs": 0, "dense_ops": 0})
        d["syn_ops" if spiking else "macs"] += ops
        d["dense_ops"] += total
    program = compile_model(net, x[0], input_signal="real")
    res = run(program, x, backend="numba")
    np.testing.assert_array_equal(res.output, expected.numpy())
    for fx_name, node_name in (("0", "conv2d_0"), ("3", "linear_3"), ("5", "linear_5")):
        got = {k: int(res.ops.per_node[node_name][k].sum()) for k in ("syn_ops", "macs", "dense_ops")}
        assert got == seen[fx_name], (node_name, got, seen[fx_name])


def test_fused_lif_pool_lowers_as_the_neuron_and_the_pooling() -> None:
    """``LIFMaxPool2d`` (one fused kernel in the model) compiles to the program of its two modules:
    the same node kinds as the model written with them apart, and every backend equals the model."""
    model = dyadic_(nn.Sequential(TD(nn.Conv2d(2, 4, 3, padding=1)), LIFMaxPool2d(LIF(beta=0.75), 2),
                                  nn.Flatten(2), nn.Linear(64, 5), LIF(beta=0.5)), 4, spread=128).eval()
    apart = nn.Sequential(model[0], model[1].neuron, model[1].pool, model[2], model[3], model[4])
    _check_lowers_as_apart(model, apart, spikes_in((10, 3, 2, 8, 8), 5))


def test_fused_conv_lif_pool_lowers_as_its_modules() -> None:
    """``ConvLIFMaxPool2d`` (one fused kernel in the model) compiles to the program of its modules
    (a convolution, a neuron, a pooling), and every backend equals the model (dyadic weights: the
    fused currents are exact)."""
    model = dyadic_(nn.Sequential(ConvLIFMaxPool2d(nn.Conv2d(2, 4, 3, padding=1), LIF(beta=0.75), 2),
                                  nn.Flatten(2), nn.Linear(64, 5), LIF(beta=0.5)), 6, spread=128).eval()
    block = model[0]
    apart = nn.Sequential(block.conv, block.neuron, block.lif_pool.pool, model[1], model[2], model[3])
    _check_lowers_as_apart(model, apart, spikes_in((10, 3, 2, 8, 8), 9))


def _check_lowers_as_apart(model: nn.Module, apart: nn.Module, x: torch.Tensor) -> None:
    """``model`` (with a fused block) equals ``apart`` (its modules) and compiles to the same node
    kinds, and every backend equals the model."""
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(expected, apart(x)) and expected.sum() > 0
    check_all_backends(model, x, expected)
    kinds = [n.KIND for _, n in compile_model(model, x).nodes()]
    assert kinds == [n.KIND for _, n in compile_model(apart, x).nodes()] and "population" in kinds, kinds


def test_unknown_module_is_named() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(), LIF(beta=0.9))
    with pytest.raises(LoweringError, match=r"'1'.*GELU"):
        compile_model(model, torch.zeros(3, 1, 4))


def test_maxpool_on_currents_runs_on_the_host() -> None:
    """Conv -> MaxPool -> LIF (snnTorch tutorials' order): a ``maxpool2d`` host op, exact."""
    model = dyadic_(nn.Sequential(TD(nn.Conv2d(1, 2, 3)), TD(nn.MaxPool2d(2)), LIF(beta=0.75)), 3, spread=128).eval()
    x = spikes_in((8, 2, 1, 6, 6), 7, p=0.5)
    with torch.no_grad():
        expected = model(x)
    assert expected.sum() > 0
    program = compile_model(model, x)
    assert program.node("maxpool2d_1").KIND == "hostop" and program.node("maxpool2d_1").op == "maxpool2d"
    check_all_backends(model, x, expected)


def test_maxpool_on_currents_in_ceil_mode_is_refused() -> None:
    model = nn.Sequential(TD(nn.Conv2d(1, 2, 3)), TD(nn.MaxPool2d(2, ceil_mode=True)), LIF(beta=0.9))
    with pytest.raises(LoweringError, match="'1'.*floor mode"):
        compile_model(model, torch.zeros(3, 1, 1, 7, 7))
