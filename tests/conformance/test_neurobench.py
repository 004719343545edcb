"""NeuroBench 2.3 conformance (design §7): on small randomised snnTorch models (dyadic weights,
several seeds), ``syn_ops`` / ``macs`` / ``dense_ops`` from ``spike.backends.run`` on numba and
torch equal NeuroBench's own Effective_ACs / Effective_MACs / Dense (``SynapticOperations`` in a
``Benchmark`` over ``SNNTorchModel``), which counts only Linear/Conv inputs, never pooling.

NeuroBench decides AC or MAC per layer call, for the whole batch of that call: the pairs are ACs
when every input value of the call is in {-1, 0, 1}. Our counts are per sample, so the decision is
made per (sample, step); the two agree exactly when NeuroBench runs each sample as its own batch
(batch size 1), which is how the models here with inputs that are real-valued on some steps and
binary or ternary on others are compared (per sample and on average). With spike inputs the batch
size does not matter (every call is binary).

The avg/sum pooling accumulates are ``pool_ops``, equal to a count from the recorded spikes of the
population before each pool (non-zero inputs x the window positions that reach them).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.ir.nodes import Pool2d

snn = pytest.importorskip("snntorch")
pytest.importorskip("neurobench")

from helpers.models import dyadic_, run_snntorch, spikes_in  # noqa: E402  (tests/conftest.py)

BACKENDS = ("numba", "torch")
KEYS = {"Effective_ACs": "syn_ops", "Effective_MACs": "macs", "Dense": "dense_ops"}


def pool_net(pool: nn.Module) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), snn.Leaky(beta=0.875, init_hidden=True),
        pool,
        nn.Conv2d(4, 6, 3), snn.Leaky(beta=0.75, init_hidden=True),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 5), snn.Leaky(beta=0.875, init_hidden=True, output=True),
    )


def mlp_net() -> nn.Module:
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(2 * 8 * 8, 20), snn.Leaky(beta=0.875, init_hidden=True),
        nn.Linear(20, 12), snn.Leaky(beta=0.75, init_hidden=True),
        nn.Linear(12, 5), snn.Leaky(beta=0.875, init_hidden=True, output=True),
    )
    return net


def neurobench_counts(net: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> dict[str, float]:
    """NeuroBench's SynapticOperations of ``net`` on ``x`` ``[T, B, ...]``, per sample (NeuroBench's
    average), with the B samples in batches of ``batch_size`` (default: one batch of B)."""
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import SNNTorchModel
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(x.transpose(0, 1).contiguous(), torch.zeros(x.shape[1], dtype=torch.long))
    loader = DataLoader(data, batch_size=batch_size or x.shape[1], shuffle=False)
    bench = Benchmark(SNNTorchModel(net), loader, [], [], [[], [SynapticOperations]])
    return bench.run(quiet=True)["SynapticOperations"]


def windows_reached(n: int, n_out: int, k: int, stride: int, pad: int) -> np.ndarray:
    """For each input coordinate along one axis, how many pooling windows contain it (by loops)."""
    reached = np.zeros(n, np.int64)
    for o in range(n_out):
        for j in range(k):
            i = o * stride - pad + j
            if 0 <= i < n:
                reached[i] += 1
    return reached


def pool_ops_from_spikes(node: Pool2d, spikes: np.ndarray) -> np.ndarray:
    """Per sample: non-zero inputs of the steps the pool delivers x the windows reaching them."""
    C, H, W = node.in_shape
    _, Ho, Wo = node.shape
    wy = windows_reached(H, Ho, node.kernel[0], node.stride[0], node.padding[0])
    wx = windows_reached(W, Wo, node.kernel[1], node.stride[1], node.padding[1])
    T, B = spikes.shape[:2]
    x = spikes.reshape(T, B, C, H, W)[: max(T - node.delay, 0)]
    return np.einsum("tbchw,h,w->b", (x != 0).astype(np.int64), wy, wx)


def mixed_in(shape: tuple[int, ...], seed: int, events: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[T, B, ...]`` input that is, per (step, sample), either real-valued (multiples of 1/16 in
    [0, 1], a few zeros) or events (``events``: "binary" 0/1 or "ternary" -1/0/1); and the
    ``[T, B]`` bool of the real-valued (step, sample) pairs. Step 0 of sample 0 is real (so the
    compiler sees a real-valued input), step 1 of sample 0 is events."""
    g = torch.Generator().manual_seed(seed)
    T, B = shape[:2]
    real = torch.rand((T, B), generator=g) < 0.5
    real[0, 0], real[1, 0] = True, False
    ev = (torch.rand(shape, generator=g) < 0.3).float()
    if events == "ternary":
        ev = ev * torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    vals = torch.randint(0, 17, shape, generator=g).float() / 16
    vals[torch.rand(shape, generator=g) < 0.2] = 0
    x = torch.where(real.reshape(T, B, *[1] * (len(shape) - 2)), vals, ev)
    return x, real


def check_counts(net: nn.Module, x: torch.Tensor, per_sample: bool = True, **compile_kw) -> dict[str, np.ndarray]:
    """Runs ``net`` compiled on numba and torch: same outputs as snnTorch, and counts equal to
    NeuroBench's with batch size 1, on average and (``per_sample``) for every sample alone.
    Returns the per-sample totals (numba)."""
    expected = run_snntorch(net, x)
    nb = neurobench_counts(net, x, batch_size=1)
    alone = [neurobench_counts(net, x[:, b : b + 1]) for b in range(x.shape[1])] if per_sample else []
    program = compile_model(net, x[0], **compile_kw)
    totals = {}
    for backend in BACKENDS:
        res = run(program, x.numpy(), backend=backend)
        np.testing.assert_array_equal(res.output, expected.numpy(), err_msg=backend)
        t = res.ops.total()
        got = {k: t[ours] for k, ours in KEYS.items()}
        assert got == pytest.approx({k: float(nb[k]) for k in got}, rel=1e-12, abs=0), backend
        totals[backend] = res.ops.per_sample_total()
        for b, one in enumerate(alone):
            got_b = {k: float(totals[backend][ours][b]) for k, ours in KEYS.items()}
            assert got_b == {k: float(one[k]) for k in got_b}, (backend, b)
    for k in KEYS.values():
        np.testing.assert_array_equal(totals["numba"][k], totals["torch"][k], err_msg=k)
    return totals["numba"]


@pytest.mark.parametrize(
    "pool", [
        lambda: nn.AvgPool2d(2),
        lambda: nn.AvgPool2d(3, stride=2, padding=1),
    ], ids=["avg2", "avg3s2p1"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_counts_equal_neurobench_with_avgpool(pool, seed: int) -> None:
    net = dyadic_(pool_net(pool()), seed, spread=128)
    T, B = 10, 3
    x = spikes_in((T, B, 2, 8, 8), seed, p=0.4)
    expected = run_snntorch(net, x)
    nb = neurobench_counts(net, x)
    assert nb["Effective_ACs"] > 0
    program = compile_model(net, x[0])
    pools = [(n, node) for n, node in program.nodes() if isinstance(node, Pool2d)]
    assert len(pools) == 1 and pools[0][1].mode == "avg"
    pool_name, pool_node = pools[0]
    (before,) = program.sources(pool_name)
    for backend in BACKENDS:
        res = run(program, x.numpy(), backend=backend, probes=[before])
        np.testing.assert_array_equal(res.output, expected.numpy(), err_msg=backend)
        t = res.ops.total()
        got = {"Effective_ACs": t["syn_ops"], "Effective_MACs": t["macs"], "Dense": t["dense_ops"]}
        assert got == pytest.approx({k: float(nb[k]) for k in got}, rel=1e-12, abs=0), backend
        per_sample = res.ops.per_sample_total()
        np.testing.assert_array_equal(
            per_sample["pool_ops"], pool_ops_from_spikes(pool_node, res.probes[before]), err_msg=backend
        )
        pc = res.ops.per_node[pool_name]
        assert pc["pool_ops"].sum() > 0
        assert pc["syn_ops"].sum() == pc["macs"].sum() == pc["dense_ops"].sum() == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_first_layer_then_spiking_layers(seed: int) -> None:
    """Real-valued input (pixels in 1/16 steps): the first Linear's pairs are MACs, the later
    layers' (fed by spikes) ACs, as NeuroBench counts them."""
    net = dyadic_(mlp_net(), seed, spread=128)
    g = torch.Generator().manual_seed(seed + 10)
    x = torch.randint(0, 17, (8, 3, 2, 8, 8), generator=g).float() / 16
    got = check_counts(net, x)
    assert got["macs"].min() > 0 and got["syn_ops"].min() > 0


MODELS = {
    "mlp": mlp_net,
    "avgpool": lambda: pool_net(nn.AvgPool2d(2)),
    "maxpool": lambda: pool_net(nn.MaxPool2d(2)),
}


@pytest.mark.parametrize("events", ["binary", "ternary"])
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("seed", [0, 1])
def test_input_real_on_some_steps_events_on_others(model: str, events: str, seed: int) -> None:
    """An input real-valued on some (step, sample) pairs and binary/ternary on the others: the
    first layer's pairs of each step are ACs or MACs as that sample's values of that step are (as
    NeuroBench with batch size 1); with pooling, what the pool passes on decides the same way."""
    net = dyadic_(MODELS[model](), seed, spread=128)
    x, real = mixed_in((10, 3, 2, 8, 8), seed, events)
    assert real.any() and (~real).any()
    got = check_counts(net, x)
    assert got["macs"].min() > 0 and got["syn_ops"].min() > 0


def test_events_on_a_real_input_are_accumulates() -> None:
    """A program compiled for a real-valued input (``input_signal="real"``) fed only 0/1 events:
    every pair is an AC, as NeuroBench counts binary calls."""
    net = dyadic_(mlp_net(), 3, spread=128)
    x = spikes_in((8, 2, 2, 8, 8), 3, p=0.3)
    got = check_counts(net, x, per_sample=False, input_signal="real")
    assert got["macs"].sum() == 0 and got["syn_ops"].min() > 0
