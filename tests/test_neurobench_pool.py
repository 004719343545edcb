"""NeuroBench conformance with pooling (issue 14, design §7): on an snnTorch conv net with
nn.AvgPool2d between layers, ``syn_ops`` / ``macs`` / ``dense_ops`` equal NeuroBench 2.3's
Effective_ACs / Effective_MACs / Dense (computed by NeuroBench itself: ``SynapticOperations`` in a
``Benchmark`` over ``SNNTorchModel``), which counts only Linear/Conv inputs, never pooling; the
pooling accumulates are ``pool_ops``, equal to a count from the recorded spikes of the population
before each pool (non-zero inputs x the window positions that reach them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.ir import Pool2d

snn = pytest.importorskip("snntorch")
pytest.importorskip("neurobench")

from test_compile_agreement import dyadic_, run_snntorch, spikes_in  # noqa: E402

BACKENDS = ("numba", "torch")


def pool_net(pool: nn.Module) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), snn.Leaky(beta=0.875, init_hidden=True),
        pool,
        nn.Conv2d(4, 6, 3), snn.Leaky(beta=0.75, init_hidden=True),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 5), snn.Leaky(beta=0.875, init_hidden=True, output=True),
    )


def neurobench_counts(net: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """NeuroBench's SynapticOperations of ``net`` on ``x`` ``[T, B, ...]`` (one batch of B samples)."""
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import SynapticOperations
    from neurobench.models import SNNTorchModel
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(x.transpose(0, 1).contiguous(), torch.zeros(x.shape[1], dtype=torch.long))
    loader = DataLoader(data, batch_size=x.shape[1], shuffle=False)
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
