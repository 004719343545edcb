"""Max pooling on the Numba kernels (``spike.kernels.max_pool``, ``spike.layers.MaxPool2d``) against
torch's ``F.max_pool2d`` and its autograd (the oracle): values, the window position chosen (ties,
NaN, -inf, -0.0) and gradients equal bit for bit (compared as int32 bits, so NaN and the sign of
zero count)."""
from __future__ import annotations

import numba
import pytest
import snntorch as snn
import torch
import torch.nn.functional as F
from torch import nn

from spike.compiler import compile as compile_model
from spike.compiler.io.hdf5 import assert_programs_equal
from spike.kernels import max_pool as MP
from spike.layers import MaxPool2d
from spike.layers import TimeDistributed as TD
from spike.neurons import LIF

NAN, INF = float("nan"), float("inf")
SPECIAL = [NAN, -INF, INF, -0.0, 0.0, 1.0, -1.0, 0.5]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.equal(_bits(a), _bits(b))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _input(kind: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = _gen(seed)
    if kind == "spike":  # 0/1 at ~15%: ties in most windows
        return (torch.rand(shape, generator=g) < 0.15).float()
    if kind == "special":  # NaN, +-inf, +-0 and ties everywhere
        return torch.tensor(SPECIAL)[torch.randint(len(SPECIAL), shape, generator=g)]
    return torch.randn(shape, generator=g)


def _flat_index(q: torch.Tensor, w: int, kh: int, kw: int) -> torch.Tensor:
    """torch's index (``h*W + w`` inside the plane) of our window position ``r*kw + c``."""
    i = torch.arange(q.shape[-2]).view(-1, 1)
    j = torch.arange(q.shape[-1]).view(1, -1)
    q = q.long()
    return (kh * i + q // kw) * w + kw * j + q % kw


def _check_against_torch(x: torch.Tensor, k: tuple[int, int], seed: int) -> None:
    kh, kw = k
    ref, ref_idx = F.max_pool2d(x, k, return_indices=True)
    y, q = MP.max_pool2d_forward(x, k)
    assert_same(y, ref)
    assert torch.equal(_flat_index(q, x.shape[-1], kh, kw), ref_idx)
    go = _input("float", tuple(ref.shape), seed + 1)
    go.view(-1)[::7] = -0.0  # arrives as +0.0 in torch's grad_in (0 + g)
    xr = x.clone().requires_grad_(True)
    F.max_pool2d(xr, k).backward(go)
    xo = x.clone().requires_grad_(True)
    yo = MP.max_pool2d(xo, k)
    assert type(yo.grad_fn).__name__ == "MaxPool2dFunctionBackward"  # the kernel path ran
    yo.backward(go)
    assert_same(yo, ref)
    assert_same(xo.grad, xr.grad)


@pytest.mark.parametrize("kind", ["float", "spike", "special"])
@pytest.mark.parametrize("k", [(2, 2), (3, 3), (2, 3), (1, 1)])
def test_forward_argmax_and_gradient_equal_torch(kind: str, k: tuple[int, int]) -> None:
    # widths: one window, part of a block (7, 14), a whole block (16 windows), more; odd sizes
    for n, (h, w) in enumerate([(4, 4), (5, 7), (14, 14), (28, 28), (9, 33), (6, 40), (3, 65)]):
        if h >= k[0] and w >= k[1]:
            _check_against_torch(_input(kind, (2, 3, h, w), 10 * n), k, 10 * n)


def test_crafted_windows_equal_torch() -> None:
    """Each 2x2 window (one plane each), scanned as torch does: ties keep the first, a NaN wins
    and the last NaN wins, all -inf keeps position 0, -0.0 before 0.0 stays -0.0."""
    windows = [
        [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [-INF] * 4, [-INF, -INF, -INF, 1],
        [NAN, 1, 2, 3], [1, NAN, 2, 3], [1, 2, 3, NAN], [NAN, 5, NAN, 1], [NAN, INF, 1, 2],
        [-INF, -INF, NAN, -INF], [-0.0, 0.0, 0, 0], [0.0, -0.0, 0, 0], [-0.0, -0.0, -1, -INF],
        [-1, -0.0, 0.0, -0.0], [INF, INF, NAN, INF], [-2, -1, -1, -3],
    ]
    x = torch.tensor(windows, dtype=torch.float32).view(1, len(windows), 2, 2)
    _check_against_torch(x, (2, 2), 0)
    x3 = torch.tensor(windows[:9], dtype=torch.float32).view(1, 1, 6, 6)  # 3x3 windows of mixed entries
    _check_against_torch(x3, (3, 3), 1)


def test_special_gradients_nan_and_negative_zero() -> None:
    x = _input("spike", (1, 2, 4, 6), 3)
    go = torch.tensor([NAN, -0.0, 0.0, -INF, INF, -1.0]).repeat(2, 1).view(1, 2, 2, 3)
    xr, xo = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    F.max_pool2d(xr, 2).backward(go)
    MP.max_pool2d(xo, 2).backward(go)
    assert_same(xo.grad, xr.grad)


@pytest.mark.parametrize("view", ["transposed", "sliced", "expanded"])
def test_non_contiguous_input(view: str) -> None:
    base = _input("spike", (2, 3, 12, 14), 4)
    x = {"transposed": base.transpose(2, 3), "sliced": base[:, ::2, 1:, ::2],
         "expanded": base[:, :1].expand(2, 3, 12, 14)}[view]
    assert not x.is_contiguous()
    _check_against_torch(x, (2, 2), 4)


def test_batch_shapes() -> None:
    x3 = _input("float", (4, 9, 10), 5)  # [C, H, W]
    _check_against_torch(x3, (2, 2), 5)
    x5 = _input("spike", (2, 3, 4, 8, 6), 6)  # the kernels take any leading dims
    y, q = MP.max_pool2d_forward(x5, 2)
    ref = F.max_pool2d(x5.view(-1, 4, 8, 6), 2).view(2, 3, 4, 4, 3)
    assert_same(y, ref)
    empty = torch.zeros(0, 3, 4, 4)
    assert MP.max_pool2d(empty, 2).shape == F.max_pool2d(empty, 2).shape


def test_more_threads_same_result() -> None:
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        x = _input("special", (4, 8, 64, 67), 7)  # > 2 * PLANE_ELEMENTS_PER_THREAD: two threads
        assert x.numel() >= 2 * MP.PLANE_ELEMENTS_PER_THREAD
        _check_against_torch(x, (2, 2), 7)
    finally:
        numba.set_num_threads(before)


def test_double_backward_and_forward_mode_equal_torch() -> None:
    x = _input("float", (2, 3, 9, 10), 8)
    go = _input("float", (2, 3, 4, 5), 9)
    ggi = _input("float", (2, 3, 9, 10), 10)
    grads = []
    for pool in (lambda t: F.max_pool2d(t, 2), lambda t: MP.max_pool2d(t, 2)):
        xx, gg = x.clone().requires_grad_(True), go.clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(pool(xx), xx, gg, create_graph=True)
        (d_go,) = torch.autograd.grad(gi, gg, ggi)
        with torch.autograd.forward_ad.dual_level():
            tangent = torch.autograd.forward_ad.unpack_dual(pool(torch.autograd.forward_ad.make_dual(x, ggi))).tangent
        grads.append((gi, d_go, tangent))
    for a, b in zip(*grads):
        assert_same(a, b)


def test_low_level_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="float32 CPU"):
        MP.max_pool2d_forward(torch.zeros(1, 1, 4, 4, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="1..8"):
        MP.kernels(9, 9)
    assert MP.input_supported(torch.zeros(1, 1, 4, 4), 2) and not MP.input_supported(torch.zeros(1, 1, 4, 4), 9)


# ---- the module ------------------------------------------------------------------------------


def _module_pair(*args, **kwargs) -> tuple[nn.Module, nn.Module]:
    return nn.MaxPool2d(*args, **kwargs), MaxPool2d(*args, **kwargs)


def _run(m: nn.Module, x: torch.Tensor, go_seed: int = 0):
    xx = x.clone().requires_grad_(True)
    out = m(xx)
    y = out[0] if isinstance(out, tuple) else out
    y.backward(_input("float", tuple(y.shape), go_seed))
    return out, xx.grad, type(y.grad_fn).__name__


@pytest.mark.parametrize("args, kwargs", [((2,), {}), ((2,), {"stride": 2}), ((3,), {"stride": None}),
                                          (((2, 3),), {})])
def test_module_supported_configs_run_the_kernels(args, kwargs) -> None:
    ref_m, m = _module_pair(*args, **kwargs)
    assert repr(m) == repr(ref_m) and m.state_dict() == ref_m.state_dict() == {}
    for x in (_input("spike", (4, 3, 14, 15), 11), _input("special", (3, 9, 11), 12)):
        (y0, g0, _), (y1, g1, fn) = _run(ref_m, x), _run(m, x)
        assert fn == "MaxPool2dFunctionBackward"
        assert_same(y1, y0)
        assert_same(g1, g0)


@pytest.mark.parametrize("args, kwargs, dtype", [
    ((2,), {"padding": 1}, torch.float32), ((2,), {"ceil_mode": True}, torch.float32),
    ((3,), {"stride": 2}, torch.float32), ((2,), {"dilation": 2}, torch.float32),
    ((9,), {}, torch.float32), ((2,), {}, torch.float64),
])
def test_module_other_configs_run_torch(args, kwargs, dtype) -> None:
    ref_m, m = _module_pair(*args, **kwargs)
    x = _input("float", (2, 3, 19, 21), 13).to(dtype)
    (y0, g0, fn0), (y1, g1, fn1) = _run(ref_m, x), _run(m, x)
    assert fn1 == fn0 != "MaxPool2dFunctionBackward"
    assert torch.equal(y1, y0) and torch.equal(g1, g0)


def test_module_return_indices_channels_last_and_autocast_run_torch() -> None:
    x = _input("spike", (2, 3, 8, 10), 14)
    ref_m, m = _module_pair(2, return_indices=True)
    (y0, i0), (y1, i1) = ref_m(x), m(x)
    assert torch.equal(y0, y1) and torch.equal(i0, i1)
    cl = x.to(memory_format=torch.channels_last)
    y = MaxPool2d(2)(cl)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(y, F.max_pool2d(cl, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, fn = _run(MaxPool2d(2), x)
    assert fn != "MaxPool2dFunctionBackward"


def test_module_under_fx_tracing() -> None:
    model = nn.Sequential(MaxPool2d(2), nn.Flatten())
    traced = torch.fx.symbolic_trace(model)
    x = _input("spike", (2, 3, 8, 8), 15)
    assert torch.equal(traced(x), model(x))


# ---- compiling ---------------------------------------------------------------------------------


def _td_model(pool: type) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(TD(nn.Conv2d(1, 2, 3)), LIF(beta=0.75), TD(pool(2)), nn.Flatten(2),
                         nn.Linear(2 * 3 * 3, 4), LIF(beta=0.5)).eval()


def _snntorch_model(pool: type) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), pool(2), snn.Leaky(beta=0.875, init_hidden=True),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 5),
                         snn.Leaky(beta=0.75, init_hidden=True, output=True)).eval()


@pytest.mark.parametrize("build, shape", [(_td_model, (3, 2, 1, 8, 8)), (_snntorch_model, (2, 2, 8, 8))])
def test_compiles_to_the_program_of_nn_maxpool2d(build, shape) -> None:
    x = _input("spike", shape, 16)
    expected = compile_model(build(nn.MaxPool2d), x)
    got = compile_model(build(MaxPool2d), x)
    assert any(name.startswith("maxpool2d") for name, _ in got.nodes())  # the module, not F.max_pool2d traced
    assert_programs_equal(got, expected)

