"""The convolution of spikes by table lookups (``spike.kernels.event_conv``, ``spike.layers.SpikeConv2d``)
against ``F.conv2d`` and torch autograd through it (the oracle), and against a naive float32 loop
of the kernels' documented summation order.

Dyadic weights and gradients (multiples of 2^-8, small sums) make every sum exact: then every path
is equal bit for bit whatever its order.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spike.compiler import compile as compile_model
from spike.kernels import event_conv as E
from spike.layers import ConvLIFMaxPool2d, SpikeConv2d, TimeDistributed
from spike.neurons import LIF
from helpers.threads import on_one_and_all_threads

# (N, Cin, Cout, H, W, (KH, KW), (PH, PW)): one input group and a partial one (Cin 1, 5, 18), fewer
# outputs than a vector and a partial second vector (Cout 7, 20, 40), rows of two tiles (W > 16),
# no padding and padding up to KH - 1, a kernel whose sums of two output vectors do not fit the
# registers (5x3: one vector per pass)
SHAPES = [
    (3, 1, 7, 6, 5, (1, 1), (0, 0)),
    (4, 5, 20, 9, 21, (3, 3), (1, 1)),
    (2, 18, 40, 8, 17, (3, 3), (2, 0)),
    (3, 16, 32, 7, 7, (5, 3), (4, 2)),
]


def _spikes(shape, p=0.22, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


def _dyadic(shape, seed=0, scale=16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-scale, scale + 1, shape, generator=g).float() / 256


def _grads(fn, x, w, b, g):
    """(y, dx, dw, db) of ``fn(x, w, b)`` with the output gradient ``g``."""
    xx, ww, bb = (t.clone().requires_grad_(True) for t in (x, w, b))
    y = fn(xx, ww, bb)
    assert y is not None
    y.backward(g)
    return y.detach(), xx.grad, ww.grad, bb.grad


def _event(pad):
    return lambda x, w, b: E.event_conv2d(x, w, b, pad)


@pytest.mark.parametrize("N,cin,cout,H,W,k,pad", SHAPES)
def test_dyadic_weights_are_exact(N, cin, cout, H, W, k, pad) -> None:
    x = _spikes((N, cin, H, W), seed=N + cin)
    w, b = _dyadic((cout, cin, *k), 1), _dyadic((cout,), 2)
    g = _dyadic((N, cout, H + 2 * pad[0] - k[0] + 1, W + 2 * pad[1] - k[1] + 1), 3)
    ours = _grads(_event(pad), x, w, b, g)
    ref = _grads(lambda a, c, d: F.conv2d(a, c, d, padding=pad), x, w, b, g)
    for a, r in zip(ours, ref, strict=True):
        assert torch.equal(a, r)


def _naive_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad) -> np.ndarray:
    """The documented order in float32: per output, the bias, then per tap (ky, kx) and group of four
    input channels the table entry ``((0 + w_a) + w_b) + ...`` of the group's spikes, added in order."""
    n, cin, h, wd = x.shape
    cout, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    ho, wo = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
    out = np.broadcast_to(b[None, :, None, None], (n, cout, ho, wo)).astype(np.float32)
    for ky in range(kh):
        for kx in range(kw):
            for g in range(-(-cin // 4)):
                entry = np.zeros((n, cout, ho, wo), np.float32)
                for ci in range(4 * g, min(cin, 4 * g + 4)):
                    on = xp[:, ci, ky:ky + ho, kx:kx + wo][:, None] != 0
                    entry = np.where(on, entry + w[None, :, ci, ky, kx, None, None], entry).astype(np.float32)
                out = (out + entry).astype(np.float32)
    return out


@pytest.mark.parametrize("N,cin,cout,H,W,k,pad", SHAPES[1:3])
def test_random_weights_follow_the_documented_order(N, cin, cout, H, W, k, pad) -> None:
    torch.manual_seed(N)
    x = _spikes((N, cin, H, W), seed=7)
    w, b = torch.randn(cout, cin, *k), torch.randn(cout)
    g = torch.randn(N, cout, H + 2 * pad[0] - k[0] + 1, W + 2 * pad[1] - k[1] + 1)
    y, dx, dw, db = _grads(_event(pad), x, w, b, g)
    assert np.array_equal(y.numpy(), _naive_forward(x.numpy(), w.numpy(), b.numpy(), pad))
    y64, dx64, dw64, db64 = _grads(lambda a, c, d: F.conv2d(a, c, d, padding=pad), x.double(), w.double(),
                                   b.double(), g.double())
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw.double(), dw64, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(db.double(), db64, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(dx.double(), dx64, rtol=1e-5, atol=1e-5)


def test_one_and_all_threads_agree_bit_for_bit() -> None:
    torch.manual_seed(5)
    x = _spikes((13, 16, 10, 10), seed=8)
    w, b, g = torch.randn(24, 16, 3, 3), torch.randn(24), torch.randn(13, 24, 10, 10)
    one, every = on_one_and_all_threads(lambda: _grads(_event((1, 1)), x, w, b, g))
    for a, r in zip(one, every, strict=True):
        assert torch.equal(a, r)


@pytest.mark.parametrize("value", [0.5, 2.0, -1.0, float("nan")])
def test_non_binary_input_is_declined(value) -> None:
    x = _spikes((2, 3, 5, 6), seed=9)
    x[1, 2, 4, 5] = value
    assert E.event_conv2d(x, torch.randn(8, 3, 3, 3), None, (1, 1)) is None


def test_unsupported_calls_are_declined() -> None:
    x, w = _spikes((2, 4, 6, 6), seed=10), torch.randn(8, 4, 3, 3)
    assert E.event_conv2d(x.double(), w.double(), None, (1, 1)) is None  # float32 only
    assert E.event_conv2d(x[0], w, None, (1, 1)) is None  # [N, C, H, W] only
    assert E.event_conv2d(x, w, None, (3, 1)) is None  # padding below the kernel size
    assert E.event_conv2d(_spikes((1, E.MAX_IN_CHANNELS + 1, 6, 6)), torch.randn(4, E.MAX_IN_CHANNELS + 1, 3, 3),
                          None, (1, 1)) is None
    assert E.event_conv2d(_spikes((1, 2, 9, 9)), torch.randn(4, 2, 6, 6), None, (0, 0)) is None  # kernel > 5
    assert E.event_conv2d(_spikes((1, 2, 2, 9)), torch.randn(4, 2, 3, 3), None, (0, 0)) is None  # no output row


def test_no_bias() -> None:
    x, w = _spikes((2, 6, 7, 9), seed=11), _dyadic((18, 6, 3, 3), 12)
    xx, ww = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = E.event_conv2d(xx, ww, None, (1, 1))
    assert torch.equal(y, F.conv2d(x, w, padding=1))
    y.sum().backward()
    ref = w.clone().requires_grad_(True)
    F.conv2d(x, ref, padding=1).sum().backward()
    assert torch.equal(ww.grad, ref.grad) and torch.equal(xx.grad, F.grad.conv2d_input(x.shape, w, torch.ones_like(y),
                                                                                       padding=1))


def _lookup_path(y: torch.Tensor) -> bool:
    return type(y.grad_fn).__name__ == "EventConv2dFunctionBackward"


def test_spike_conv2d_paths() -> None:
    torch.manual_seed(6)
    x = _spikes((4, 8, 10, 10), seed=13)
    on = SpikeConv2d(8, 16, 3, padding=1, event="on")
    y = on(x)
    assert _lookup_path(y)
    torch.testing.assert_close(y, F.conv2d(x, on.weight, on.bias, padding=1))
    analog = torch.rand(4, 8, 10, 10)
    with pytest.raises(ValueError, match="0s and 1s"):
        on(analog)
    auto = SpikeConv2d(8, 16, 3, padding="same")
    auto.load_state_dict(on.state_dict())
    assert _lookup_path(auto(x))
    assert torch.equal(auto(analog), F.conv2d(analog, auto.weight, auto.bias, padding=1))  # dense
    off = SpikeConv2d(8, 16, 3, padding=1, event="off")
    assert not _lookup_path(off(x))
    few = SpikeConv2d(2, 16, 3, padding=1)  # auto: fewer input channels than min_in (8) -> dense
    assert not _lookup_path(few(x[:, :2])) and _lookup_path(SpikeConv2d(2, 16, 3, padding=1, event="on")(x[:, :2]))
    strided = SpikeConv2d(8, 16, 3, stride=2, padding=1)
    assert not _lookup_path(strided(x)) and strided.lookup_padding() is None
    with pytest.raises(ValueError, match="stride 1"):
        SpikeConv2d(8, 16, 3, stride=2, event="on")(x)
    with pytest.raises(ValueError, match="event"):
        SpikeConv2d(4, 4, 3, event="yes")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's own dense op
        y = on(x)
    assert y.dtype == torch.bfloat16 and not _lookup_path(y)


def test_spike_conv2d_is_a_conv2d() -> None:
    torch.manual_seed(7)
    m = SpikeConv2d(6, 12, 3, padding=1)
    conv = nn.Conv2d(6, 12, 3, padding=1)
    conv.load_state_dict(m.state_dict())
    assert isinstance(m, nn.Conv2d) and list(conv.state_dict()) == list(m.state_dict())
    shared = SpikeConv2d.from_conv(conv, event="on")
    assert shared.weight is conv.weight and shared.bias is conv.bias and "event='on'" in repr(shared)
    # a SpikeConv2d in a fused first block runs fused, as an nn.Conv2d does
    block = ConvLIFMaxPool2d(SpikeConv2d(1, 4, 3, padding=1), LIF(0.9), 2)
    assert block.conv_padding() == (1, 1)


def test_training_step_matches_dense() -> None:
    """TD(SpikeConv2d) -> LIF -> TD(SpikeConv2d) -> LIF against the same net with nn.Conv2d: with
    dyadic weights the spikes are equal; the gradients (LIF surrogates are not dyadic) agree within
    rounding."""
    torch.manual_seed(8)
    ev = nn.Sequential(TimeDistributed(SpikeConv2d(3, 16, 3, padding=1, event="on")), LIF(0.9),
                       TimeDistributed(SpikeConv2d(16, 8, 3, event="on")), LIF(0.9))
    dense = nn.Sequential(TimeDistributed(nn.Conv2d(3, 16, 3, padding=1)), LIF(0.9),
                          TimeDistributed(nn.Conv2d(16, 8, 3)), LIF(0.9))
    with torch.no_grad():
        for p in ev.parameters():
            p.copy_(torch.round(p * 256) / 32)
    dense.load_state_dict(ev.state_dict())
    x = _spikes((5, 2, 3, 9, 9), p=0.4, seed=14)
    outs = []
    for m in (ev, dense):
        out = m(x)
        (out * torch.linspace(-1, 1, 7)).sum().backward()
        outs.append(out)
    assert torch.equal(outs[0], outs[1]) and 0 < float(outs[0].detach().mean()) < 1
    for a, b in zip(ev.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_compiles_as_a_conv2d() -> None:
    torch.manual_seed(9)
    net = nn.Sequential(TimeDistributed(SpikeConv2d(2, 4, 3, padding=1)), LIF(0.9))
    program = compile_model(net, _spikes((3, 1, 2, 6, 6), seed=15))
    convs = [program.node(n) for n, node in program.nodes() if type(node).__name__ == "Conv2d"]
    assert len(convs) == 1 and torch.equal(torch.from_numpy(convs[0].weight), net[0].module.weight.detach())


def test_second_derivative_is_an_error() -> None:
    x = _spikes((2, 4, 5, 5), seed=16)
    w = torch.randn(16, 4, 3, 3, requires_grad=True)
    y = E.event_conv2d(x, w, None, (1, 1))
    (gw,) = torch.autograd.grad(y.square().sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gw.sum().backward()
