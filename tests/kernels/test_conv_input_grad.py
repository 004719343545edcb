"""The input gradient of a stride-1 conv2d from a sparse output gradient
(``spike.kernels.conv_input_grad``) against torch's own (``F.grad.conv2d_input``, the oracle): bit
for bit where every sum is exact (dyadic weights and gradients), within float32 rounding of a
float64 reference otherwise.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spike.kernels import conv_input_grad as C
from spike.kernels import event_conv as E
from helpers.threads import on_one_and_all_threads

# (N, Cin, Cout, H, W, (KH, KW), (PH, PW)): one vector of input channels and a partial second
# (Cin 1, 5, 16, 17, 31), a second chunk of 64 output channels (Cout 70), rows of two tiles
# (W 20), no padding, padding up to KH - 1 and different on the two sides, a 1x1, a 2x4 and a
# 5x5 kernel (25 sums in registers)
SHAPES = [
    (3, 1, 7, 6, 5, (1, 1), (0, 0)),
    (4, 5, 20, 9, 20, (3, 3), (1, 1)),
    (2, 17, 70, 8, 17, (3, 3), (2, 0)),
    (3, 16, 32, 7, 9, (5, 5), (4, 2)),
    (2, 31, 12, 5, 6, (2, 4), (1, 3)),
]


def _sparse(shape, zeros=0.6, seed=0, dyadic=True) -> torch.Tensor:
    """A gradient with about ``zeros`` of its elements zero: multiples of 2^-8 or normal floats."""
    g = torch.Generator().manual_seed(seed)
    v = (torch.randint(-16, 17, shape, generator=g).float() / 256 if dyadic
         else torch.randn(shape, generator=g))
    return torch.where(torch.rand(shape, generator=g) < zeros, torch.zeros(()), v)


def _out_shape(N, cout, H, W, k, pad):
    return N, cout, H + 2 * pad[0] - k[0] + 1, W + 2 * pad[1] - k[1] + 1


@pytest.mark.parametrize("N,cin,cout,H,W,k,pad", SHAPES)
def test_dyadic_gradients_equal_torch_bit_for_bit(N, cin, cout, H, W, k, pad) -> None:
    w = _sparse((cout, cin, *k), zeros=0.0, seed=1)
    g = _sparse(_out_shape(N, cout, H, W, k, pad), seed=2)
    assert C.supported(g, w)
    dx = C.input_grad(g, w, pad, (H, W))
    assert torch.equal(dx, F.grad.conv2d_input((N, cin, H, W), w, g, padding=pad))


@pytest.mark.parametrize("zeros", [0.0, 0.6, 1.0])
def test_float_gradients_within_rounding(zeros) -> None:
    N, cin, cout, H, W, k, pad = SHAPES[2]
    w = torch.randn(cout, cin, *k, generator=torch.Generator().manual_seed(3))
    g = _sparse(_out_shape(N, cout, H, W, k, pad), zeros=zeros, seed=4, dyadic=False)
    dx = C.input_grad(g, w, pad, (H, W))
    ref = F.grad.conv2d_input((N, cin, H, W), w.double(), g.double(), padding=pad)
    torch.testing.assert_close(dx.double(), ref, rtol=1e-5, atol=1e-5)


def test_one_and_all_threads_agree_bit_for_bit() -> None:
    w = torch.randn(24, 16, 3, 3, generator=torch.Generator().manual_seed(5))
    g = _sparse((13, 24, 10, 10), seed=6, dyadic=False)
    one, every = on_one_and_all_threads(lambda: C.input_grad(g, w, (1, 1), (10, 10)))
    assert torch.equal(one, every)


def test_nan_weight_reaches_only_positions_with_a_gradient() -> None:
    """Zero gradients contribute nothing (documented): a NaN weight of an output channel whose
    gradient is zero everywhere leaves the input gradient finite; one with a gradient at one
    position reaches exactly the inputs that position's taps cover."""
    w = torch.ones(4, 2, 3, 3)
    w[1, 0, 1, 1] = float("nan")
    g = torch.zeros(1, 4, 6, 6)
    g[0, 0] = 1.0
    assert torch.isfinite(C.input_grad(g, w, (1, 1), (6, 6))).all()
    g[0, 1, 2, 3] = 0.5
    nan = torch.isnan(C.input_grad(g, w, (1, 1), (6, 6)))
    expect = torch.zeros_like(nan)
    expect[0, 0, 2, 3] = True  # tap (1, 1) of output (2, 3) with padding 1: input (2, 3)
    assert torch.equal(nan, expect)


def test_unsupported_shapes_and_errors() -> None:
    g, w = torch.zeros(2, 8, 6, 6), torch.zeros(8, 4, 3, 3)
    assert C.supported(g, w)
    assert not C.supported(g.double(), w.double())  # float32 only
    assert not C.supported(g[0], w)  # [N, Cout, Ho, Wo] only
    assert not C.supported(torch.zeros(2, 8, 6, 6), torch.zeros(8, 31, 5, 5))  # 50 sums > 27 registers
    with pytest.raises(ValueError, match="50 sums"):
        C.kernel(5, 5, 2)
    with pytest.raises(ValueError, match="does not fit an input of 7x6"):
        C.input_grad(g, w, (1, 1), (7, 6))


def test_event_conv_falls_back_to_torch_where_the_sums_do_not_fit() -> None:
    """31 input channels and a 5x5 kernel: the lookups run, the input gradient is torch's (equal)."""
    g = torch.Generator().manual_seed(7)
    x = (torch.rand(2, 31, 7, 7, generator=g) < 0.2).float().requires_grad_(True)
    w = _sparse((6, 31, 5, 5), zeros=0.0, seed=8)
    gy = _sparse((2, 6, 7, 7), seed=9)
    E.event_conv2d(x, w, None, (2, 2)).backward(gy)
    assert torch.equal(x.grad, F.grad.conv2d_input(x.shape, w, gy, padding=2))


def test_a_dense_gradient_is_left_to_torch() -> None:
    """``max_density``: a gradient with more nonzeros is only counted (None); SpikeConv2d's lookup
    path then takes torch's input gradient, bit for bit."""
    w = torch.randn(24, 16, 3, 3, generator=torch.Generator().manual_seed(10))
    sparse, dense = _sparse((3, 24, 8, 8), zeros=0.6, seed=11), _sparse((3, 24, 8, 8), zeros=0.0, seed=12)
    assert C.input_grad(dense, w, (1, 1), (8, 8), max_density=E.SPARSE_GRAD_MAX_DENSITY) is None
    assert C.input_grad(sparse, w, (1, 1), (8, 8), max_density=E.SPARSE_GRAD_MAX_DENSITY) is not None
    x = (torch.rand(3, 16, 8, 8, generator=torch.Generator().manual_seed(13)) < 0.2).float().requires_grad_(True)
    gy = torch.randn(3, 24, 8, 8, generator=torch.Generator().manual_seed(14))
    E.event_conv2d(x, w, None, (1, 1)).backward(gy)
    assert torch.equal(x.grad, F.grad.conv2d_input(x.shape, w, gy, padding=1))
