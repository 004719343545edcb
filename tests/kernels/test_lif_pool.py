"""The fused LIF -> max pooling (``spike.layers.LIFMaxPool2d``, ``spike.kernels.lif_pool_cpu``) against
the same neuron and pooling run as two modules (bit for bit: the same operations in the same order),
and against a naive per-step loop of torch ops followed by torch's ``nn.MaxPool2d``."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from spike.kernels.lif import lif_max_pool2d
from spike.layers import LIFMaxPool2d, TimeDistributed as TD
from spike.neurons import IF, LI, CubaLIF, LIF

from helpers.threads import on_one_and_all_threads

pytestmark = pytest.mark.usefixtures("short_segments")  # several checkpoint segments (conftest)

# (neuron factory, input shape [T, B, C, H, W], window): every reset, delay, firing, detach and
# surrogate setting of the kernels, a synaptic current, learnable per-neuron parameters, odd sizes
# (rows and columns that belong to no window), a non-square window, one window per plane, and rows
# of more than 16 windows (two blocks of columns) with and without rows left over.
CASES = [
    (lambda: LIF(0.9), (10, 3, 4, 28, 36), 2),
    (lambda: LIF(0.8, reset="zero", reset_delay=False, fire_ge=True, detach_reset=False,
                 surrogate="fast_sigmoid", learn_beta=True, learn_threshold=True, shape=(4, 7, 9)), (6, 2, 4, 7, 9), 2),
    (lambda: CubaLIF(0.6, 0.85, 0.7, reset="none", surrogate="sigmoid", learn_alpha=True, shape=(3, 12, 12)),
     (20, 2, 3, 12, 12), (3, 2)),
    (lambda: IF(1.2, reset_delay=False, detach_reset=False, surrogate="triangle"), (17, 2, 2, 10, 53), 3),
    (lambda: LIF.spikingjelly(tau=2.0), (3, 1, 1, 5, 5), 5),
]


def _block(neuron: nn.Module, k) -> LIFMaxPool2d:
    return LIFMaxPool2d(neuron, k)


def _grads(y: torch.Tensor, inputs: list[torch.Tensor], seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(y, inputs, g)


def _inputs(block: LIFMaxPool2d, x: torch.Tensor) -> list[torch.Tensor]:
    return [x] + [p for p in block.parameters()]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_fused_equals_the_two_modules_bit_for_bit(case: int) -> None:
    factory, shape, k = CASES[case]
    torch.manual_seed(case)
    block = _block(factory(), k)
    x = (torch.randn(*shape) * 1.3).requires_grad_()
    y = block(x)
    assert type(y.grad_fn).__name__ == "ViewBackward0"  # the fused function's [T, M'] output, reshaped
    assert type(y.grad_fn.next_functions[0][0]).__name__ == "LIFMaxPoolFunctionBackward"
    y2 = block.pool(block.neuron(x))
    assert 0 < float(y.detach().mean()) < 1 and torch.equal(y, y2)
    ins = _inputs(block, x)
    for a, b in zip(_grads(y, ins), _grads(y2, ins), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", [0, 2, 3])
def test_fused_equals_a_torch_loop_and_torch_pooling(case: int) -> None:
    """The oracle: the neuron's per-step loop of torch ops (``backend="loop"``) and ``nn.MaxPool2d``:
    spikes equal, gradients within float32 rounding (autograd through the loop sums in its own order)."""
    factory, shape, k = CASES[case]
    torch.manual_seed(case)
    block = _block(factory(), k)
    ref = factory()
    ref.load_state_dict(block.neuron.state_dict())
    ref.backend = "loop"
    x = (torch.randn(*shape) * 1.3).requires_grad_()
    y = block(x)
    y_ref = TD(nn.MaxPool2d(k))(ref(x))
    assert torch.equal(y, y_ref)
    for a, b in zip(_grads(y, _inputs(block, x)), _grads(y_ref, [x] + list(ref.parameters())), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_threads_split_planes_alike() -> None:
    factory, shape, k = CASES[0]
    block = _block(factory(), k)
    x = (torch.randn(*shape) * 1.3).requires_grad_()

    def run():
        y = block(x)
        return (y, *_grads(y, [x]))

    assert all(torch.equal(a, b) for a, b in zip(*on_one_and_all_threads(run)))


def test_constant_pooled_gradient_is_not_materialised() -> None:
    """``y.sum()`` hands a gradient broadcast over time: one row, the same result as a dense one."""
    block = _block(LIF(0.9), 2)
    x = (torch.randn(8, 2, 3, 6, 6) * 1.3).requires_grad_()
    (g1,) = torch.autograd.grad(block(x).sum(), x)
    (g2,) = torch.autograd.grad(block(x), x, torch.ones(8, 2, 3, 3, 3))
    assert torch.equal(g1, g2) and g1.abs().sum() > 0


def test_calls_the_kernels_do_not_take_run_as_two_modules() -> None:
    """float64, a forward hook (which then sees the full-size spikes), single-step, a membrane output
    and a non-spiking neuron: the two modules, with their results."""
    x = torch.randn(5, 2, 3, 8, 8) * 1.3
    block = _block(LIF(0.9), 2)
    y64 = block(x.double())
    assert y64.dtype == torch.float64 and torch.equal(y64, block.pool(block.neuron(x.double())))

    seen = []
    h = block.neuron.register_forward_hook(lambda _m, _i, o: seen.append(o.shape))
    try:
        assert torch.equal(block(x), block.pool(block.neuron(x)))
    finally:
        h.remove()
    assert seen and seen[0] == x.shape

    single = _block(LIF(0.9, step_mode="single"), 2)
    y0 = single(x[0])
    single.neuron.reset_state()
    assert torch.equal(y0, single.pool(single.neuron(x[0])))
    li = _block(LI(0.9), 2)
    assert torch.equal(li(x), li.pool(li.neuron(x)))
    assert li.neuron.max_pool2d(x, (2, 2)) is None and LIF(0.9, return_mem=True).max_pool2d(x, (2, 2)) is None


def test_bad_input_is_refused_with_its_shape() -> None:
    with pytest.raises(ValueError, match=r"lif_max_pool2d: .*float32 CPU tensor \[T, B, \.\.\., H, W\].*\[4, 3, 1\]"):
        lif_max_pool2d(torch.zeros(4, 3, 1), 0.9, 1.0, 2)
