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
from spike.neurons import LIF, CubaLIF, IF, LI
from spike.layers import TimeDistributed as TD
from spike.recurrent import RecurrentLIF

BACKENDS = ("torch", "numba")


def dyadic_(model: nn.Module, seed: int, scale: int = 256, spread: int = 96) -> nn.Module:
    """Replace every weight/bias by random multiples of 1/scale (exact float sums)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("weight", "bias")) and "bn" not in name:
                p.copy_(torch.randint(-spread, spread + 8, p.shape, generator=g).float() / scale)
    return model


def spikes_in(shape: tuple[int, ...], seed: int, p: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


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


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(2), nn.Linear(36, 48), LIF(beta=0.875, threshold=1.0), nn.Dropout(0.2),
            nn.Linear(48, 32), LIF(beta=0.5, threshold=0.75, reset="zero", reset_delay=False),
            nn.Linear(32, 10), CubaLIF(alpha=0.5, beta=0.75),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


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


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = TD(nn.Conv2d(2, 4, 3, padding=1))
        self.lif1 = LIF(beta=0.75)
        self.pool1 = TD(nn.MaxPool2d(2))
        self.conv2 = TD(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2))
        self.lif2 = IF(threshold=1.5)
        self.pool2 = TD(nn.AvgPool2d(2))
        self.fc = nn.Linear(6, 5)
        self.out = LIF(beta=0.5, fire_ge=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pool1(self.lif1(self.conv1(x)))
        s = self.pool2(self.lif2(self.conv2(s)))
        return self.out(self.fc(torch.flatten(s, 2)))


@pytest.mark.parametrize("seed,batch", [(0, 2), (1, 5)])
def test_cnn_agrees(seed: int, batch: int) -> None:
    model = dyadic_(CNN(), seed, spread=128).eval()
    x = spikes_in((10, batch, 2, 8, 8), seed)
    with torch.no_grad():
        expected = model(x)
    assert expected.sum() > 0
    check_all_backends(model, x, expected)


class ResidualBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = TD(nn.Conv2d(3, 4, 3, padding=1))
        self.lif0 = LIF(beta=0.75)
        self.conv1 = TD(nn.Conv2d(4, 4, 3, padding=1, bias=False))
        self.bn1 = TD(nn.BatchNorm2d(4))
        self.lif1 = LIF(beta=0.75)
        self.conv2 = TD(nn.Conv2d(4, 4, 3, padding=1, bias=False))
        self.bn2 = TD(nn.BatchNorm2d(4))
        self.lif2 = LIF(beta=0.75, reset="zero")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.lif0(self.conv0(x))
        s1 = self.lif1(self.bn1(self.conv1(s0)))
        return self.lif2(self.bn2(self.conv2(s1)) + s0)


def _dyadic_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    """BatchNorm whose fold stays dyadic: var + eps = 1, dyadic gamma, beta, mean."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_var.fill_(1 - bn.eps)
        bn.running_mean.copy_(torch.randint(-4, 5, bn.running_mean.shape, generator=g).float() / 16)
        bn.weight.copy_(torch.randint(1, 9, bn.weight.shape, generator=g).float() / 4)
        bn.bias.copy_(torch.randint(-4, 5, bn.bias.shape, generator=g).float() / 16)


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_block_agrees(seed: int) -> None:
    model = dyadic_(ResidualBlock(), seed).eval()
    _dyadic_bn(model.bn1.module, seed)
    _dyadic_bn(model.bn2.module, seed + 7)
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


def snntorch_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(24, 32), snn.Leaky(beta=0.875, init_hidden=True),
        nn.Linear(32, 16), snn.Synaptic(alpha=0.75, beta=0.5, init_hidden=True),
        nn.Linear(16, 6), snn.Leaky(beta=0.75, init_hidden=True, reset_mechanism="zero", output=True),
    )


def run_snntorch(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    import snntorch.utils

    snntorch.utils.reset(net)
    with torch.no_grad():
        outs = [net(x[t]) for t in range(x.shape[0])]
        return torch.stack([o[0] if isinstance(o, tuple) else o for o in outs])


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
    for fx_name, node_name in (("0", "0"), ("3", "3"), ("5", "5")):
        got = {k: int(res.ops.per_node[node_name][k].sum()) for k in ("syn_ops", "macs", "dense_ops")}
        assert got == seen[fx_name], (node_name, got, seen[fx_name])


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
    assert program.node("1").KIND == "hostop" and program.node("1").op == "maxpool2d"
    check_all_backends(model, x, expected)


def test_maxpool_on_currents_in_ceil_mode_is_refused() -> None:
    model = nn.Sequential(TD(nn.Conv2d(1, 2, 3)), TD(nn.MaxPool2d(2, ceil_mode=True)), LIF(beta=0.9))
    with pytest.raises(LoweringError, match="'1'.*floor mode"):
        compile_model(model, torch.zeros(3, 1, 1, 7, 7))
