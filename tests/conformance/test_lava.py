"""Lava conformance (design §3, §6): lava-nc's bit-accurate Loihi processes are the oracle of our
fixed point. Randomised programs (layer forms, neuron models, delays, skip and recurrent
projections drawn from a seed), quantised and compiled for Loihi's one-step synapses, give the same
spikes, ``v``, ``u``, outputs and operation counts on Lava and on numba; an snnTorch model written
for Loihi (reset to zero in the step that fires) compiled for loihi2 runs on Lava with snnTorch's
own spikes in float and numba's in fixed point."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.ir.nodes import Conv2d, Dense, Identity, Input, Output, Pool2d, Population, Sparse
from spike.compiler.pipeline import FLOAT_PIPELINE, run_passes
from spike.compiler.ir.program import ProgramBuilder

from helpers.lava import assert_same, loihi, needs_lava
from helpers.models import dyadic_, run_snntorch, spikes_in
from helpers.programs import loihi_pop, normal

snn = pytest.importorskip("snntorch")

pytestmark = [pytest.mark.lava, needs_lava]


def _sparse(rng: np.random.Generator, n_in: int, n_out: int, p: float) -> dict:
    mask = rng.random((n_in, n_out)) < p
    rows, cols = np.nonzero(mask)
    return dict(indptr=np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int64),
                indices=cols.astype(np.int64), data=normal(rng, len(cols), 0.7))


def random_program(seed: int):
    """A chain of 3-4 layers, each a dense, sparse or conv projection (conv: then an avg or max pool
    feeding neurons) into lif / cuba_lif / if neurons, with an identity skip over one layer, a
    recurrent projection on one layer, and a leaky readout."""
    rng = np.random.default_rng(seed)
    b = ProgramBuilder()
    conv = bool(rng.integers(2))
    shape: tuple[int, ...] = (2, 8, 8) if conv else (int(rng.integers(16, 40)),)
    b.add("in", Input(shape=shape))
    prev, pops = "in", []
    if conv:
        c_out = int(rng.integers(3, 6))
        b.add("c0", Conv2d(shape=(c_out, 8, 8), in_shape=shape, weight=normal(rng, (c_out, 2, 3, 3)), padding=(1, 1),
                           bias=normal(rng, c_out, 0.1)), "in")
        b.add("p0", loihi_pop(rng, (c_out, 8, 8)), "c0")
        mode = str(rng.choice(["avg", "max"]))
        b.add("pool", Pool2d(shape=(c_out, 4, 4), in_shape=(c_out, 8, 8), mode=mode, kernel=(2, 2), stride=(2, 2)),
              "p0")
        if mode == "avg":  # Loihi's synapses deliver only into neurons
            b.add("pp", loihi_pop(rng, (c_out, 4, 4)), "pool")
            prev, pops = "pp", ["p0", "pp"]
        else:
            prev, pops = "pool", ["p0"]
        shape = (c_out * 16,)
    n_prev = int(np.prod(shape))
    depth = int(rng.integers(2, 4))
    skip_from = None
    for i in range(1, depth + 1):
        n = int(rng.integers(12, 30))
        form = str(rng.choice(["dense", "sparse"]))
        if form == "dense":
            b.add(f"fc{i}", Dense(shape=(n,), in_shape=(n_prev,), weight=normal(rng, (n, n_prev), 0.6),
                                  bias=normal(rng, n, 0.1)), prev)
        else:
            b.add(f"fc{i}", Sparse(shape=(n,), in_shape=(n_prev,), **_sparse(rng, n_prev, n, 0.4)), prev)
        srcs = [f"fc{i}"]
        if skip_from is not None and b.graph.nodes[skip_from]["node"].size == n:
            b.add(f"skip{i}", Identity(shape=(n,), in_shape=(n,), scale=float(rng.choice([0.5, -0.25, 1.0]))),
                  skip_from)
            srcs.append(f"skip{i}")
        model = str(rng.choice(["lif", "cuba_lif", "if"]))
        pop = loihi_pop(rng, (n,), model=model)
        b.add(f"p{i}", pop.replace(beta=np.ones(n, np.float32)) if model == "if" else pop, srcs)
        if i == 1:
            b.add("rec", Dense(shape=(n,), in_shape=(n,), weight=normal(rng, (n, n), 0.3), delay=1), "p1")
            b.connect("rec", "p1")
            skip_from = "p1"
        pops.append(f"p{i}")
        prev, n_prev = f"p{i}", n
    b.add("ro_fc", Dense(shape=(5,), in_shape=(n_prev,), weight=normal(rng, (5, n_prev))), prev)
    b.add("ro", Population(shape=(5,), model="li", beta=np.float32(0.75)), "ro_fc")
    b.add("out", Output(shape=(5,)), "ro")
    in_shape = (2, 8, 8) if conv else (b.graph.nodes["in"]["node"].size,)
    return run_passes(b.build({"precision": "float32"}), FLOAT_PIPELINE), in_shape, pops + ["ro"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_fixed_point_programs_equal_lava_bit_for_bit(seed: int) -> None:
    program, in_shape, pops = random_program(seed)
    fixed = loihi(program)
    x = (np.random.default_rng(seed + 20).random((10, 2, *in_shape)) < 0.35).astype(np.float32)
    neurons = [p for p in pops if isinstance(fixed.node(p), Population)]
    res = assert_same(fixed, x, pops + [f"{p}.v" for p in neurons] + [f"{p}.u" for p in neurons])
    assert any(res["numba"].probes[p].any() for p in neurons if fixed.node(p).model != "li")


class LoihiSnn(nn.Module):
    """snnTorch as Loihi computes it: Leaky/Synaptic resetting to zero in the step that fires (no bias
    into the Synaptic layer: Lava adds a bias to v, snnTorch to the synaptic current)."""

    def __init__(self) -> None:
        super().__init__()
        kw = dict(reset_mechanism="zero", reset_delay=False, init_hidden=True)
        self.net = nn.Sequential(nn.Linear(16, 24), snn.Leaky(beta=0.5, **kw), nn.Linear(24, 12, bias=False),
                                 snn.Synaptic(alpha=0.5, beta=0.5, **kw), nn.Linear(12, 5), snn.Leaky(beta=0.5, **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.mark.parametrize("seed", [0, 1])
def test_snntorch_model_for_loihi2_on_lava(seed: int) -> None:
    net = dyadic_(LoihiSnn(), seed, scale=64, spread=40).eval()
    x = spikes_in((12, 2, 16), seed + 5, p=0.4)
    expected = run_snntorch(net, x).numpy()
    assert expected.sum() > 0
    program = compile_model(net, x[0], target="loihi2")
    for backend in ("lava", "numba"):
        np.testing.assert_array_equal(run(program, x.numpy(), backend=backend).output, expected, err_msg=backend)
    fixed = compile_model(net, x[0], target="loihi2", precision="fixed")
    assert_same(fixed, x.numpy(), [p for p in fixed.populations()])
