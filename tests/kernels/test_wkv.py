"""The fused WKV kernels (spike.kernels.wkv, spike.kernels.wkv_cuda) against the O(T^2) definition."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from spike.kernels.wkv import empty_state, wkv, wkv_with_state

from helpers import ROOT


def _inputs(T=13, B=2, C=5, dtype=torch.float64, k_shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    td = torch.randn(C, generator=g, dtype=dtype).requires_grad_()
    tf = torch.randn(C, generator=g, dtype=dtype).requires_grad_()
    k = (torch.randn(T, B, C, generator=g, dtype=dtype) * 2 + k_shift).requires_grad_()
    v = torch.randn(T, B, C, generator=g, dtype=dtype).requires_grad_()
    gy = torch.randn(T, B, C, generator=g, dtype=dtype)
    return td, tf, k, v, gy


def _run(impl, td, tf, k, v, gy):
    y = wkv(td, tf, k, v, impl=impl)
    grads = torch.autograd.grad((y * gy).sum(), (td, tf, k, v))
    return (y.detach(),) + grads


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_equals_naive_float64(impl):
    args = _inputs()
    ref = _run("naive", *args)
    got = _run(impl, *args)
    for name, a, b in zip(("y", "d time_decay", "d time_first", "dk", "dv"), got, ref):
        assert torch.allclose(a, b, rtol=0, atol=1e-9), (name, (a - b).abs().max())


def test_stable_for_large_k():
    # k around 60: e^k overflows float32; the running max keeps everything finite and exact
    args = _inputs(T=21, B=2, C=4, k_shift=60.0, seed=3)
    ref = _run("naive", *args)
    got = _run("fused", *args)
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    args32 = [a.detach().float().requires_grad_() for a in args[:4]] + [args[4].float()]
    got32 = _run("fused", *args32)
    for a, b in zip(got32, ref):
        assert torch.isfinite(a).all()
        assert torch.allclose(a.double(), b, rtol=1e-3, atol=1e-3)


def test_state_continuation_and_bitwise_zero_state():
    td, tf, k, v, _ = _inputs(T=16, B=3, C=7)
    whole, st = wkv_with_state(td, tf, k, v)
    y1, s1 = wkv_with_state(td, tf, k[:9], v[:9])
    y2, s2 = wkv_with_state(td, tf, k[9:], v[9:], s1)
    assert torch.allclose(torch.cat([y1, y2]), whole, rtol=0, atol=1e-12)
    for a, b in zip(s2, st):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    # token by token in float32 equals the training forward bit for bit
    k32, v32 = k.detach().float(), v.detach().float()
    y_train = wkv(td.float(), tf.float(), k32, v32)
    state = empty_state(3, 7)
    steps = []
    for t in range(16):
        y, state = wkv_with_state(td.float(), tf.float(), k32[t:t + 1], v32[t:t + 1], state)
        steps.append(y)
    assert torch.equal(torch.cat(steps), y_train.detach())


def test_bad_shapes():
    td, tf, k, v, _ = _inputs()
    with pytest.raises(ValueError, match="time_first"):
        wkv(td, tf[:3], k, v)
    with pytest.raises(ValueError, match=r"\[T, B, C\]"):
        wkv(td, tf, k[0], v[0])


CUDA_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM
    from spike.kernels import wkv as W
    from spike.kernels import wkv_cuda as WC
    assert WC.available() and WC.simulator_enabled()
    rng = np.random.default_rng(0)
    T, B, C = 9, 2, 3
    k = rng.standard_normal((T, B, C)) * 2
    k[4, 1, 2] = 60.0
    v = rng.standard_normal((T, B, C))
    gy = rng.standard_normal((T, B, C))
    w = -np.exp(rng.standard_normal(C))
    u = rng.standard_normal(C)
    y1, s1 = W.forward_numpy(w, u, k, v)
    y2, s2 = WC.forward_numpy(w, u, k, v)
    assert np.allclose(y1, y2, rtol=1e-12, atol=1e-12)
    for a, b in zip(s1, s2):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-12)
    y1b, _ = W.forward_numpy(w, u, k, v, s1)
    y2b, _ = WC.forward_numpy(w, u, k, v, s2)
    assert np.allclose(y1b, y2b, rtol=1e-12, atol=1e-12)
    g1 = W.backward_numpy(w, u, k, v, gy)
    g2 = WC.backward_numpy(w, u, k, v, gy)
    for a, b in zip(g1, g2):
        assert np.all(np.isfinite(b)) and np.allclose(a, b, rtol=1e-12, atol=1e-12)
    print("OK")
    """
)


def test_cuda_kernels_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", CUDA_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu_on_gpu():
    args = _inputs(T=40, B=3, C=33, dtype=torch.float64)
    ref = _run("fused", *args)
    dev = [a.detach().cuda().requires_grad_() for a in args[:4]] + [args[4].cuda()]
    got = _run("fused", *dev)
    for a, b in zip(got, ref):
        assert torch.allclose(a.cpu(), b, rtol=1e-9, atol=1e-9)
