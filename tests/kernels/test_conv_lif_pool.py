"""The fused convolution -> LIF -> max pooling (``spike.layers.ConvLIFMaxPool2d``,
``spike.kernels.conv_lif_pool_cpu``): equal to its modules (``TimeDistributed(Conv2d)`` and
``LIFMaxPool2d``) bit for bit with dyadic weights, to a naive float32 loop of the documented
summation order with any weights, and its weight and bias gradients to a float64 sum over the
gradient of the currents that the modules give."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spike.kernels import conv_lif_pool_cpu as CLP
from spike.kernels.lif import conv_lif_max_pool2d
from spike.layers import ConvLIFMaxPool2d
from spike.neurons import CubaLIF, LIF

from helpers.models import dyadic_, spikes_in
from helpers.threads import on_one_and_all_threads

pytestmark = pytest.mark.usefixtures("short_segments")  # several checkpoint segments (conftest)

# (neuron factory, conv factory, input shape [T, B, Cin, H, W], pooling window): the snnTorch
# neuron over two checkpoint segments; SpikingJelly-like settings with no conv bias, two input channels and rows and columns
# that belong to no window; a synaptic current with learnable per-neuron parameters and a
# non-square kernel and padding. (Each kernel size and parameter layout is a compilation of its
# own: the cases share what they can.)
CASES = [
    (lambda: LIF(0.75), lambda: nn.Conv2d(1, 4, 3, padding=1), (20, 3, 1, 10, 10), 2),
    (lambda: LIF(0.5, reset="zero", reset_delay=False, fire_ge=True, detach_reset=False, surrogate="fast_sigmoid"),
     lambda: nn.Conv2d(2, 3, 3, padding=1, bias=False), (5, 2, 2, 9, 11), 2),
    (lambda: CubaLIF(0.5, 0.75, 1.0, reset="none", learn_beta=True, learn_threshold=True, shape=(3, 6, 8)),
     lambda: nn.Conv2d(3, 3, (5, 3), padding=(1, 2)), (7, 2, 3, 8, 6), 2),
]


def _block(case: int, seed: int = 0, dyadic: bool = True) -> ConvLIFMaxPool2d:
    neuron, conv, _, k = CASES[case]
    torch.manual_seed(seed)
    block = ConvLIFMaxPool2d(conv(), neuron(), k)
    if dyadic:
        dyadic_(block.conv, seed, spread=160)
    else:
        with torch.no_grad():
            block.conv.module.weight.mul_(3.0)
    return block


def _params(block: ConvLIFMaxPool2d) -> list[torch.Tensor]:
    return [p for p in block.parameters() if p.requires_grad]


def _grads(y: torch.Tensor, inputs: list[torch.Tensor], seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(y, inputs, g)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_equals_the_modules_with_dyadic_weights(case: int) -> None:
    """Dyadic weights: every current is exact in any order, so the fused spikes equal the modules'
    bit for bit; the gradients agree within float32 rounding (the weight gradient sums differ in order)."""
    block = _block(case)
    x = spikes_in(CASES[case][2], case + 7)
    y = block(x)
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "ConvLIFMaxPoolFunctionBackward"
    y2 = block.lif_pool(block.conv(x))
    assert 0 < float(y.detach().mean()) < 1 and torch.equal(y, y2)
    for a, b in zip(_grads(y, _params(block)), _grads(y2, _params(block)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def _naive_currents(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The module docstring's order in float32 numpy: the bias, then each tap's product added, taps in
    (ci, ky, kx) order. On 0/1 inputs each product is exact, so adding the rounded product is the
    kernels' fused multiply-add."""
    w = conv.weight.detach().numpy()
    ph, pw = conv.padding
    xp = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 0), (ph, ph), (pw, pw)))
    T, B, cin, hp, wp = xp.shape
    cout, _, kh, kw = w.shape
    ho, wo = hp - kh + 1, wp - kw + 1
    bias = conv.bias.detach().numpy() if conv.bias is not None else np.zeros(cout, np.float32)
    out = np.broadcast_to(bias[None, None, :, None, None], (T, B, cout, ho, wo)).astype(np.float32)
    for ci in range(cin):
        for ky in range(kh):
            for kx in range(kw):
                tap = xp[:, :, None, ci, ky:ky + ho, kx:kx + wo]
                out = out + w[None, None, :, ci, ky, kx, None, None] * tap
    return torch.from_numpy(out)


@pytest.mark.parametrize("case", [0, 2])
def test_fused_equals_a_naive_loop_of_its_order(case: int) -> None:
    """Any weights: the currents of a float32 loop in the documented order, fed to the neuron and the
    pooling, give the fused spikes exactly; the weight and bias gradients equal a float64 sum over the
    currents' gradient (from autograd through the modules) within float32 rounding."""
    block = _block(case, seed=3, dyadic=False)
    x = spikes_in(CASES[case][2], case + 11)
    y = block(x)
    cur = _naive_currents(x, block.conv.module).requires_grad_()
    y_ref = block.lif_pool(cur)
    assert 0 < float(y.detach().mean()) < 1 and torch.equal(y, y_ref)

    conv = block.conv.module
    gw, gb = _grads(y, [conv.weight, conv.bias])
    (gc,) = _grads(y_ref, [cur])
    xp = nn.functional.pad(x, (conv.padding[1],) * 2 + (conv.padding[0],) * 2).double()
    kh, kw = conv.kernel_size
    ho, wo = gc.shape[-2:]
    want = torch.stack([torch.stack([torch.einsum("tboyx,tbiyx->oi", gc.double(), xp[..., ky:ky + ho, kx:kx + wo])
                                     for kx in range(kw)], -1) for ky in range(kh)], -2)
    torch.testing.assert_close(gw.double(), want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    torch.testing.assert_close(gb.double(), gc.double().sum((0, 1, 3, 4)), rtol=1e-5, atol=1e-5)


def test_threads_give_the_same_bits() -> None:
    """The gradient sums are grouped by a split of the planes that does not depend on the threads
    (several work items here, so that both threads take some)."""
    block = _block(0, dyadic=False)
    x = spikes_in((6, 120, 1, 10, 10), 3)
    planes = 120 * block.conv.module.out_channels
    assert planes // CLP.planes_per_item(planes, 10 * 10) >= 2

    def run():
        y = block(x)
        return (y, *_grads(y, _params(block)))

    assert all(torch.equal(a, b) for a, b in zip(*on_one_and_all_threads(run)))


def test_calls_the_kernel_does_not_take_run_the_modules() -> None:
    """An input that needs a gradient, a strided convolution, a hook on the convolution, float64:
    the modules, with their results."""
    block = _block(0)
    x = spikes_in(CASES[0][2], 5)
    xg = x.clone().requires_grad_()
    y = block(xg)
    assert torch.equal(y, block.lif_pool(block.conv(x)))
    assert torch.autograd.grad(y.sum(), xg)[0].abs().sum() > 0

    seen = []
    h = block.conv.module.register_forward_hook(lambda _m, _i, o: seen.append(o.shape))
    try:
        assert torch.equal(block(x), block.lif_pool(block.conv(x)))
    finally:
        h.remove()
    assert seen and seen[0] == (20 * 3, 4, 10, 10)

    strided = ConvLIFMaxPool2d(nn.Conv2d(1, 4, 3, stride=2, padding=1), LIF(0.75), 2)
    assert strided.conv_padding() is None
    assert torch.equal(strided(x), strided.lif_pool(strided.conv(x)))
    y64 = block.double()(x.double())
    assert y64.dtype == torch.float64 and torch.equal(y64, block.lif_pool(block.conv(x.double())))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's, on the even case
def test_string_paddings() -> None:
    """``"same"`` (odd kernel sides) and ``"valid"`` run fused, as their symmetric paddings; ``"same"``
    with an even side pads unevenly and runs the modules."""
    x = spikes_in(CASES[0][2], 2)
    for padding, fused in (("same", (1, 1)), ("valid", (0, 0))):
        block = ConvLIFMaxPool2d(nn.Conv2d(1, 4, 3, padding=padding), LIF(0.75), 2)
        dyadic_(block.conv, 1, spread=160)
        assert block.conv_padding() == fused
        y = block(x)
        assert type(y.grad_fn.next_functions[0][0]).__name__ == "ConvLIFMaxPoolFunctionBackward"
        assert torch.equal(y, block.lif_pool(block.conv(x)))
    even = ConvLIFMaxPool2d(nn.Conv2d(1, 4, (3, 2), padding="same"), LIF(0.75), 2)
    assert even.conv_padding() is None and torch.equal(even(x), even.lif_pool(even.conv(x)))


def test_bad_input_is_refused_with_its_shape() -> None:
    with pytest.raises(ValueError, match=r"conv_lif_max_pool2d: .*x \[T, B, Cin, H, W\].*\[4, 3, 8, 8\]"):
        conv_lif_max_pool2d(torch.zeros(4, 3, 8, 8), torch.zeros(2, 3, 3, 3), None, 1, 0.9, 1.0, 2)
