"""The event-driven linear layer (``spike.kernels.event_linear``, ``spike.layers.SpikeLinear``)
against the dense ``nn.Linear`` and torch autograd through it (the oracle).

Sums run in another order than the GEMM's, so random weights agree within float32 rounding;
dyadic weights and gradients (multiples of 2^-8, small sums) make every sum exact: then the
results are equal bit for bit.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spike.compiler import compile as compile_model
from spike.kernels import event_linear as E
from spike.layers import SpikeLinear
from spike.neurons import LIF

# (rows N, in, out): odd widths, out below and above one vector (16) and one block (64), several
# input chunks (in > 208), several row chunks in the weight gradient (N > 208), a single row
SHAPES = [(1, 5, 3), (37, 33, 10), (64, 16, 16), (50, 100, 130), (230, 500, 70)]


def _spikes(shape, p=0.2, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


def _dyadic(shape, seed=0, scale=8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-4 * scale, 4 * scale + 1, shape, generator=g).float() / 256


def _both(x, weight, bias, g):
    """(y, dW, db, dx) of the event path and of F.linear for the same tensors and output gradient."""
    res = []
    for fn in (lambda a, w, b: E.event_linear(a, w, b), F.linear):
        xx = x.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        b = None if bias is None else bias.clone().requires_grad_(True)
        y = fn(xx, w, b)
        assert y is not None
        y.backward(g)
        res.append((y.detach(), w.grad, None if b is None else b.grad, xx.grad))
    return res


@pytest.mark.parametrize("N,n_in,n_out", SHAPES)
def test_random_weights_match_nn_linear_within_rounding(N, n_in, n_out) -> None:
    torch.manual_seed(N)
    x = _spikes((N, n_in), seed=N)
    w, b, g = torch.randn(n_out, n_in) * 0.1, torch.randn(n_out), torch.randn(N, n_out)
    (y, dw, db, dx), (y0, dw0, db0, dx0) = _both(x, w, b, g)
    torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw, dw0, rtol=1e-5, atol=1e-4)
    assert torch.equal(db, db0)  # the same g.sum(0)
    assert torch.equal(dx, dx0)  # the same dense g @ W


@pytest.mark.parametrize("N,n_in,n_out", SHAPES)
def test_dyadic_weights_are_exact(N, n_in, n_out) -> None:
    x = _spikes((N, n_in), p=0.3, seed=N + 1)
    w, b, g = _dyadic((n_out, n_in), 1), _dyadic((n_out,), 2), _dyadic((N, n_out), 3)
    (y, dw, db, dx), (y0, dw0, db0, dx0) = _both(x, w, b, g)
    assert torch.equal(y, y0)
    assert torch.equal(dw, dw0)
    assert torch.equal(db, db0) and torch.equal(dx, dx0)


def test_time_first_batches_and_flat_rows_agree() -> None:
    x = _spikes((6, 4, 40), seed=5)
    w, b = _dyadic((20, 40), 6), _dyadic((20,), 7)
    y3 = E.event_linear(x, w, b)
    y2 = E.event_linear(x.reshape(24, 40), w, b)
    assert y3.shape == (6, 4, 20) and torch.equal(y3.reshape(24, 20), y2)
    assert torch.equal(y3, F.linear(x, w, b))
    xt = x.transpose(0, 1)  # not contiguous
    assert torch.equal(E.event_linear(xt, w, b), F.linear(xt, w, b))


def test_empty_rows_all_zero_input_and_no_rows() -> None:
    w, b = torch.randn(30, 25), torch.randn(30)
    x = _spikes((9, 25), seed=8)
    x[[0, 4, 8]] = 0  # rows without a spike: their output is the bias
    y = E.event_linear(x, w, b)
    assert torch.equal(y[[0, 4, 8]], b.expand(3, 30))
    torch.testing.assert_close(y, F.linear(x, w, b))
    zeros = torch.zeros(5, 3, 25)
    wg = w.clone().requires_grad_(True)
    y = E.event_linear(zeros, wg, b)
    assert torch.equal(y, b.expand(5, 3, 30))
    y.sum().backward()
    assert torch.equal(wg.grad, torch.zeros_like(w))
    assert E.event_linear(torch.zeros(0, 25), w, b).shape == (0, 30)
    assert torch.equal(E.event_linear(torch.zeros(4, 0), torch.zeros(30, 0), b), b.expand(4, 30))


def test_no_bias() -> None:
    x, w = _spikes((12, 40), seed=9), _dyadic((18, 40), 10)
    assert torch.equal(E.event_linear(x, w, None), F.linear(x, w))


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, float("nan")])
def test_non_binary_input_is_declined(value) -> None:
    x = _spikes((7, 20), seed=11)
    x[3, 17] = value  # in the scalar tail (columns 16..19) ...
    assert E.event_linear(x, torch.randn(5, 20)) is None
    x = _spikes((7, 40), seed=12)
    x[5, 3] = value  # ... and in a vector of 16
    assert E.event_linear(x, torch.randn(5, 40)) is None
    assert E.event_linear(x.double(), torch.randn(5, 40).double()) is None  # float32 only


def test_density_limit() -> None:
    x = _spikes((10, 32), p=0.6, seed=13)
    assert E.event_linear(x, torch.randn(4, 32), max_density=0.5) is None
    assert E.event_linear(x, torch.randn(4, 32), max_density=1.0) is not None


def _event_path(y: torch.Tensor) -> bool:
    fn = y.grad_fn
    while fn is not None and type(fn).__name__ == "ViewBackward0":
        fn = fn.next_functions[0][0]
    return type(fn).__name__ == "EventLinearFunctionBackward"


def test_spike_linear_paths() -> None:
    torch.manual_seed(0)
    x = _spikes((5, 3, 64), seed=14)
    on = SpikeLinear(64, 40, event="on")
    y = on(x)
    assert _event_path(y)
    torch.testing.assert_close(y, F.linear(x, on.weight, on.bias))
    analog = torch.rand(5, 3, 64)
    with pytest.raises(ValueError, match="0s and 1s"):
        on(analog)
    auto = SpikeLinear(64, 40, event="auto", min_out=16)
    auto.load_state_dict(on.state_dict())
    assert _event_path(auto(x))
    assert torch.equal(auto(analog), F.linear(analog, auto.weight, auto.bias))  # falls back, dense
    small = SpikeLinear(64, 40)  # auto: fewer outputs than min_out (128) -> dense
    assert not _event_path(small(x))
    off = SpikeLinear(64, 400, event="off")
    assert not _event_path(off(x))
    with pytest.raises(ValueError, match="event"):
        SpikeLinear(4, 4, event="yes")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's own dense op
        y = on(x)
    assert y.dtype == torch.bfloat16 and not _event_path(y)


def test_spike_linear_is_a_linear_state_dict_and_layout() -> None:
    torch.manual_seed(1)
    m = SpikeLinear(40, 24, event="on")
    assert isinstance(m, nn.Linear) and m.weight.shape == (24, 40) and m.weight.t().is_contiguous()
    lin = nn.Linear(40, 24)
    lin.load_state_dict(m.state_dict())
    assert list(lin.state_dict()) == list(m.state_dict())
    assert torch.equal(lin.weight, m.weight) and torch.equal(lin.bias, m.bias)
    m2 = SpikeLinear(40, 24, event="on")
    m2.load_state_dict(nn.Linear(40, 24).state_dict())  # contiguous source: the layout is kept
    assert m2.weight.t().is_contiguous()
    x = _spikes((8, 40), seed=15)
    m(x).sum().backward()
    assert m.weight.grad.stride() == m.weight.stride()  # dW in the parameter's layout, no copy
    shared = SpikeLinear.from_linear(lin, event="on")  # a contiguous weight works too
    assert shared.weight is lin.weight
    y = shared(x)
    y.sum().backward()
    torch.testing.assert_close(lin.weight.grad, m.weight.grad)
    # a layer that always runs F.linear keeps nn.Linear's layout (MKL's backward is faster on it)
    for dense in (SpikeLinear(40, 24, event="off"), SpikeLinear(40, 24)):  # auto: 24 < min_out
        assert not dense.may_take_events() and dense.weight.is_contiguous()
    assert SpikeLinear(40, 24, min_out=16).weight.t().is_contiguous()


def test_weight_cache_follows_optimizer_steps() -> None:
    torch.manual_seed(2)
    m = SpikeLinear(48, 32, event="on")
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    x = _spikes((10, 48), seed=16)
    for _ in range(3):
        opt.zero_grad()
        y = m(x)
        torch.testing.assert_close(y, F.linear(x, m.weight, m.bias))
        y.square().sum().backward()
        opt.step()
    with torch.no_grad():
        m.weight.mul_(2)  # in place: a new version
    torch.testing.assert_close(m(x), F.linear(x, m.weight, m.bias))
    m.weight = nn.Parameter(torch.randn(32, 48))  # replaced
    torch.testing.assert_close(m(x), F.linear(x, m.weight, m.bias))


def test_training_step_matches_dense() -> None:
    """SpikeLinear -> LIF -> SpikeLinear -> LIF against the same net with nn.Linear: with dyadic
    weights the forward spikes are equal; the gradients (LIF surrogates are not dyadic) agree
    within rounding."""
    torch.manual_seed(3)
    ev = nn.Sequential(SpikeLinear(60, 40, event="on"), LIF(0.9), SpikeLinear(40, 20, event="on"), LIF(0.9))
    dense = nn.Sequential(nn.Linear(60, 40), LIF(0.9), nn.Linear(40, 20), LIF(0.9))
    with torch.no_grad():
        for p in ev.parameters():
            p.copy_(torch.round(p * 256) / 64)
    dense.load_state_dict(ev.state_dict())
    x = _spikes((8, 4, 60), seed=17)
    outs = []
    for m in (ev, dense):
        out = m(x)
        (out * torch.linspace(-1, 1, 20)).sum().backward()
        outs.append(out)
    assert torch.equal(outs[0], outs[1]) and 0 < float(outs[0].detach().mean()) < 1
    for a, b in zip(ev.parameters(), dense.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_compiles_as_a_linear() -> None:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(2), SpikeLinear(12, 6), LIF(0.9), SpikeLinear(6, 3), LIF(0.9))
    program = compile_model(net, _spikes((4, 2, 12), seed=18))
    dense = [program.node(n) for n, node in program.nodes() if type(node).__name__ == "Dense"]
    assert len(dense) == 2
    assert torch.equal(torch.from_numpy(dense[0].weight), net[1].weight.detach())
    assert dense[0].weight.flags["C_CONTIGUOUS"]


def test_second_derivative_is_an_error() -> None:
    x = _spikes((6, 20), seed=19)
    w = torch.randn(8, 20, requires_grad=True)
    (gw,) = torch.autograd.grad(E.event_linear(x, w).square().sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gw.sum().backward()
