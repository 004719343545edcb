"""The Numba CUDA LIF kernels agree with the CPU kernels: in Numba's CUDA simulator (any machine,
in a subprocess with NUMBA_ENABLE_CUDASIM=1) and on a real GPU when there is one."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import ROOT

SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM
    from spike.kernels import lif_cpu as K
    from spike.kernels import lif_cuda as KC

    assert KC.available() and KC.simulator_enabled()
    rng = np.random.default_rng(0)
    T, M = 19, 9  # T > K: the CPU backward crosses a checkpoint boundary
    checked = 0
    for dt in (np.float64, np.float32):
        x = (rng.integers(-4, 13, (T, M)) / 8 + rng.random((T, M)) * 1e-3).astype(dt)
        beta = rng.choice([0.5, 0.75, 0.9], M).astype(dt)
        thr = rng.choice([1.0, 1.25, 0.75], M).astype(dt)
        alpha = rng.choice([0.5, 0.25], M).astype(dt)
        gs = rng.standard_normal((T, M)).astype(dt)
        gv = rng.standard_normal((T, M)).astype(dt)
        cases = [
            dict(reset="subtract", reset_delay=True, fire_ge=False, alpha=None, surrogate="atan",
                 detach_reset=True),
            dict(reset="zero", reset_delay=False, fire_ge=True, alpha=None, surrogate="sigmoid",
                 detach_reset=False),
            dict(reset="zero", reset_delay=True, fire_ge=False, alpha=alpha,
                 surrogate="fast_sigmoid", detach_reset=False),
            dict(reset="subtract", reset_delay=False, fire_ge=True, alpha=alpha,
                 surrogate="triangle", detach_reset=False),
            dict(reset="none", reset_delay=True, fire_ge=False, alpha=None,
                 surrogate="straight_through", detach_reset=True),
        ]
        if dt == np.float32:
            cases = cases[:1] + cases[2:3]  # exp (sigmoid) is not checked bit for bit in float32
        for c in cases:
            al = c.pop("alpha")
            fkw = dict(reset=c["reset"], reset_delay=c["reset_delay"], fire_ge=c["fire_ge"])
            s_cpu, m_cpu, _, _ = K.forward(x, beta, thr, al, **fkw)
            s_gpu, m_gpu = KC.forward_numpy(x, beta, thr, al, **fkw)
            assert s_gpu.dtype == dt and np.array_equal(s_cpu, s_gpu), c
            assert np.array_equal(m_cpu, m_gpu), c
            assert 0 < s_cpu.sum() < s_cpu.size
            b_cpu = K.backward(x, beta, thr, al, gs, gv, **c)
            b_gpu = KC.backward_numpy(x, beta, thr, al, gs, gv, **c)
            for a, b in zip(b_cpu, b_gpu):
                if a is None:
                    assert b is None
                    continue
                assert a.dtype == b.dtype == dt
                if dt == np.float64:
                    assert np.allclose(a, b, rtol=1e-12, atol=1e-12), c
                else:
                    assert np.array_equal(a, b), c
            checked += 1
    print("OK", checked)
    """
)


def test_cuda_kernels_in_simulator_match_cpu():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK 7" in r.stdout


def _has_gpu():
    if not torch.cuda.is_available():
        return False
    try:
        from spike.kernels import lif_cuda as KC

        return KC.available()
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs an NVIDIA GPU with Numba CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "kw",
    [
        dict(reset="subtract", reset_delay=True, surrogate="atan"),
        dict(reset="zero", reset_delay=False, fire_ge=True, detach_reset=False, surrogate="atan"),
        dict(reset="subtract", reset_delay=True, surrogate="sigmoid", detach_reset=False),
    ],
)
@pytest.mark.parametrize("cuba", [False, True])
def test_cuda_tensors_match_cpu(dtype, kw, cuba):
    from spike.kernels.lif import lif_multistep

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(53, 4, 300, generator=g) * 1.6 - 0.4).to(dtype)
    beta = (torch.rand(300, generator=g) * 0.5 + 0.5).to(dtype)
    thr = (torch.rand(300, generator=g) * 0.5 + 0.75).to(dtype)
    alpha = (torch.rand(300, generator=g) * 0.5).to(dtype) if cuba else None
    w = torch.randn(x.shape, generator=g).to(dtype)
    res = []
    for dev, dt in (("cpu", dtype), ("cuda", dtype), ("cpu", torch.float64)):
        xs = x.to(dev, dt).requires_grad_(True)
        ps = [p.to(dev, dt).requires_grad_(True) for p in (beta, thr) + ((alpha,) if cuba else ())]
        s, m = lif_multistep(xs, ps[0], ps[1], alpha=ps[2] if cuba else None, return_mem=True,
                             backend="fused", **kw)
        grads = torch.autograd.grad((s * w.to(dev, dt)).sum() + m.sum(), [xs] + ps)
        res.append([t.detach().cpu() for t in (s, m) + grads])
    (sc, mc, *gc), (sg_, mg, *gg), (s64, _, *g64) = res
    assert torch.equal(sc, sg_) and torch.equal(mc, mg)
    assert torch.equal(sc.double(), s64.double())  # the same spikes in double: a reference for the gradients
    exact = kw["surrogate"] != "sigmoid"  # GPU exp may differ from libm in the last ulp
    for a, b, ref in zip(gc, gg, g64):
        if exact and a.dim() == 2 + 1:  # dx is computed element-wise in the same order
            assert torch.equal(a, b)
        elif dtype == torch.float32 and not exact:
            # the sigmoid's exp: CUDA's expf (2 ulp) is not libm's (1 ulp), and the backward recursion
            # carries the difference on; the GPU's float32 result must lie as near the float64 one as
            # the CPU's float32 result does, within that factor (and twice again for the recursion)
            ref = ref.to(dtype)
            err_cpu, err_gpu = (a - ref).abs().max(), (b - ref).abs().max()
            assert err_gpu <= 4 * err_cpu + 1e-7 * ref.abs().max(), (float(err_gpu), float(err_cpu))
        else:
            # per-neuron parameter sums are reduced in a different order (batch sum in torch)
            torch.testing.assert_close(b, a, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                                       atol=1e-5 if dtype == torch.float32 else 1e-12)
