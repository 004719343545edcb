"""The fused LIF Function (Numba forward + backward) against a naive per-step loop of torch ops.

The reference below is written independently of ``spike`` (its own Heaviside/surrogate autograd
Function and its own loop); gradients come from torch autograd through that loop.
"""

import math

import numpy as np
import pytest
import torch

from spike.kernels import lif as F
from spike.kernels import lif_cpu as K
from spike.kernels import lif_kept_cpu as KK
from spike.kernels.lif import LIFFunction, lif_multistep, make_config

from helpers.threads import on_one_and_all_threads

pytestmark = pytest.mark.usefixtures("short_segments")  # several checkpoint segments (conftest)

SURR = {
    "atan": lambda u, p: p / 2 / (1 + (math.pi / 2 * p * u) ** 2),
    "fast_sigmoid": lambda u, p: 1 / (p * u.abs() + 1) ** 2,
    "sigmoid": lambda u, p: p * torch.sigmoid(p * u) * (1 - torch.sigmoid(p * u)),
    "triangle": lambda u, p: torch.where(u < 0, torch.full_like(u, p), torch.full_like(u, -p)),
    "straight_through": lambda u, p: torch.ones_like(u),
}
PARAM = {"atan": 2.0, "fast_sigmoid": 25.0, "sigmoid": 25.0, "triangle": 1.0, "straight_through": 1.0}


class _Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, name, ge):
        ctx.save_for_backward(u)
        ctx.name = name
        return (u >= 0).to(u.dtype) if ge else (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, g):
        (u,) = ctx.saved_tensors
        return g * SURR[ctx.name](u, PARAM[ctx.name]), None, None


def naive(x, beta, thr, alpha=None, *, gain=1.0, reset="subtract", delay=True, ge=False,
          detach=True, surr="atan"):
    """x [T, B, N]; beta/thr/alpha [N] or floats. Returns (spikes, mem) stacked over time."""
    T = x.shape[0]
    v = torch.zeros_like(x[0])
    s = torch.zeros_like(x[0])
    i = torch.zeros_like(x[0])
    S, V = [], []
    for t in range(T):
        c = x[t]
        if alpha is not None:
            i = alpha * i + c
            c = i
        if delay:
            r = s.detach() if detach else s
            if reset == "subtract":
                v = beta * v + gain * c - thr * r
            elif reset == "zero":
                v = beta * ((1 - r) * v) + gain * c
            else:
                v = beta * v + gain * c
            s = _Heaviside.apply(v - thr, surr, ge)
        else:
            h = beta * v + gain * c
            s = _Heaviside.apply(h - thr, surr, ge)
            r = s.detach() if detach else s
            if reset == "subtract":
                v = h - thr * r
            elif reset == "zero":
                v = h * (1 - r)
            else:
                v = h
        S.append(s)
        V.append(v)
    return torch.stack(S), torch.stack(V)


T, B, N = 37, 2, 6  # T > CKPT_EVERY and not a multiple: several checkpoint segments


def _inputs(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    # dyadic values: exact arithmetic, so membranes hit the threshold exactly (tests fire_ge)
    x = torch.randint(-4, 13, (T, B, N), generator=g).to(dtype) / 8
    beta = torch.tensor([0.5, 0.75, 0.875, 0.5, 0.75, 0.625], dtype=dtype)
    thr = torch.tensor([1.0, 1.25, 1.0, 0.75, 1.0, 0.5], dtype=dtype)
    alpha = torch.tensor([0.5, 0.25, 0.75, 0.5, 0.125, 0.0], dtype=dtype)
    ws = torch.randn(T, B, N, generator=g, dtype=dtype)
    wm = torch.randn(T, B, N, generator=g, dtype=dtype)
    return x, beta, thr, alpha, ws, wm


def _compare(seed, *, cuba=False, learn=True, use_mem=True, surr="atan", **kw):
    x, beta, thr, alpha, ws, wm = _inputs(seed)
    outs = []
    for impl in ("fused", "naive"):
        xs = x.clone().requires_grad_(True)
        bs = beta.clone().requires_grad_(learn)
        ts = thr.clone().requires_grad_(learn)
        al = alpha.clone().requires_grad_(learn) if cuba else None
        if impl == "fused":
            s, m = lif_multistep(xs, bs, ts, alpha=al, surrogate=surr, return_mem=True,
                                 backend="fused", reset=kw["reset"], reset_delay=kw["delay"],
                                 fire_ge=kw["ge"], detach_reset=kw["detach"],
                                 gain=kw.get("gain", 1.0))
        else:
            s, m = naive(xs, bs, ts, al, surr=surr, **kw)
        loss = (s * ws).sum() + ((m * wm).sum() if use_mem else 0)
        leaves = [xs] + ([bs, ts] if learn else []) + ([al] if (cuba and learn) else [])
        outs.append((s.detach(), m.detach()) + torch.autograd.grad(loss, leaves))
    (fs, fm, *fg), (ns, nm, *ng) = outs
    assert torch.equal(fs, ns), "spikes differ"
    assert torch.equal(fm, nm), "membranes differ"
    assert fs.sum() > 0
    for a, b, name in zip(fg, ng, ["x", "beta", "thr", "alpha"]):
        scale = max(1.0, b.abs().max().item())
        assert (a - b).abs().max().item() <= 1e-10 * scale, f"grad {name} differs"


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
@pytest.mark.parametrize("detach", [True, False])
@pytest.mark.parametrize("ge", [False, True])
def test_matrix_learnable_params(reset, delay, detach, ge):
    _compare(1, reset=reset, delay=delay, detach=detach, ge=ge)


@pytest.mark.parametrize("surr", ["atan", "fast_sigmoid", "sigmoid", "triangle", "straight_through"])
@pytest.mark.parametrize("delay", [True, False])
def test_every_surrogate(surr, delay):
    _compare(2, reset="zero" if delay else "subtract", delay=delay, detach=False, ge=False,
             surr=surr)


@pytest.mark.parametrize("reset", ["subtract", "zero", "none"])
@pytest.mark.parametrize("delay", [True, False])
def test_cuba(reset, delay):
    _compare(3, cuba=True, reset=reset, delay=delay, detach=False, ge=True)


@pytest.mark.parametrize("delay", [True, False])
@pytest.mark.parametrize("cuba", [False, True])
def test_lean_path_x_grad_only(delay, cuba):
    # no parameter gradient and no membrane gradient: the kernel's lean adjoint
    _compare(4, cuba=cuba, learn=False, use_mem=False, reset="subtract", delay=delay,
             detach=False, ge=False)


def test_gain_scaling():
    _compare(5, reset="zero", delay=False, detach=False, ge=True, gain=0.5)


def test_float32_forward_exact_and_grads_close():
    x, beta, thr, alpha, ws, _ = _inputs(6, torch.float32)
    x = x + torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 0.01
    xs, xn = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    s, m = lif_multistep(xs, beta, thr, return_mem=True)
    sn, mn = naive(xn, beta, thr)
    assert s.dtype == torch.float32 and torch.equal(s, sn) and torch.equal(m, mn)
    g1, = torch.autograd.grad((s * ws).sum(), xs)
    g2, = torch.autograd.grad((sn * ws).sum(), xn)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)


def test_broadcast_grad_and_scalar_params():
    # loss = spikes.sum(): the incoming gradient is an expanded (stride-0) tensor
    x, *_ = _inputs(7)
    xs, xn = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    g1, = torch.autograd.grad(lif_multistep(xs, 0.75, 1.0).sum(), xs)
    g2, = torch.autograd.grad(naive(xn, 0.75, 1.0)[0].sum(), xn)
    assert (g1 - g2).abs().max() < 1e-12


@pytest.mark.parametrize("reset, delay", [("subtract", True), ("zero", False), ("none", True)])
@pytest.mark.parametrize("mixed", [False, True])
def test_uniform_learnable_scalar_params(reset, delay, mixed):
    # one-element beta/threshold take the kernels' scalar path (mixed: per-neuron threshold)
    x, _, thr_n, _, ws, wm = _inputs(12)
    res = []
    for impl in ("fused", "naive"):
        xs = x.clone().requires_grad_(True)
        b = torch.tensor(0.75, dtype=torch.float64, requires_grad=True)
        t = (thr_n.clone() if mixed else torch.tensor(1.0, dtype=torch.float64)).requires_grad_(True)
        if impl == "fused":
            s, m = lif_multistep(xs, b, t, reset=reset, reset_delay=delay, detach_reset=False,
                                 return_mem=True)
        else:
            s, m = naive(xs, b, t, reset=reset, delay=delay, detach=False)
        loss = (s * ws).sum() + (m * wm).sum()
        res.append((s, m) + torch.autograd.grad(loss, (xs, b, t)))
    for a, c in zip(*res):
        assert a.shape == c.shape
        assert (a - c).abs().max() <= 1e-10 * max(1.0, c.abs().max().item())


def test_mem_only_gradient():
    x, beta, thr, *_ = _inputs(8)
    xs, xn = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    _, m = lif_multistep(xs, beta, thr, return_mem=True, detach_reset=False)
    g1, = torch.autograd.grad(m.sum(), xs)
    g2, = torch.autograd.grad(naive(xn, beta, thr, detach=False)[1].sum(), xn)
    assert (g1 - g2).abs().max() < 1e-12


@pytest.mark.parametrize("steps", [0, 1, 16, 17])
def test_short_and_boundary_lengths(steps):
    x = torch.rand(steps, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 2
    xs, xn = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    s, m = lif_multistep(xs, 0.9, 1.0, return_mem=True, detach_reset=False)
    assert s.shape == x.shape
    if steps == 0:
        return
    sn, mn = naive(xn, 0.9, 1.0, detach=False)
    assert torch.equal(s, sn) and torch.equal(m, mn)
    g1, = torch.autograd.grad((s + m).sum(), xs)
    g2, = torch.autograd.grad((sn + mn).sum(), xn)
    assert (g1 - g2).abs().max() < 1e-12


def test_nonpositive_threshold_initial_state():
    # s_{-1} = 0 even though H(0 - thr) = 1 for thr <= 0
    x = torch.full((5, 1, 1), -0.25, dtype=torch.float64)
    s, m = lif_multistep(x, 0.5, 0.0, return_mem=True, fire_ge=True)
    sn, mn = naive(x, 0.5, 0.0, ge=True)
    assert torch.equal(s, sn) and torch.equal(m, mn)


def test_numpy_wrappers_match_function():
    x, beta, thr, alpha, ws, wm = _inputs(10)
    x2 = x.reshape(T, -1).numpy()
    b2 = beta.repeat(B).numpy()
    t2 = thr.repeat(B).numpy()
    spk, mem, ckv, _ = K.forward(x2, b2, t2, reset="zero", reset_delay=False)
    s, m = lif_multistep(x, beta, thr, return_mem=True, reset="zero", reset_delay=False)
    assert np.array_equal(spk, s.reshape(T, -1).numpy()) and np.array_equal(mem, m.reshape(T, -1).numpy())
    assert ckv.shape == (K.n_ckpt(T), x2.shape[1])
    assert np.array_equal(ckv[1], mem[K.CKPT_EVERY - 1]) and not ckv[0].any()


def test_function_direct_call_and_dtype_conversion():
    x = torch.rand(9, 5, dtype=torch.float64)
    cfg = make_config(reset="subtract", need_mem=False)
    b = torch.full((5,), 0.9, dtype=torch.float64)
    t = torch.ones(5, dtype=torch.float64)
    spk, mem = LIFFunction.apply(x, b, t, None, cfg)
    assert spk.shape == (9, 5) and mem.numel() == 0
    # integer and half inputs are computed in float and returned in the input's float type
    xi = torch.randint(0, 3, (4, 2, 3))
    assert lif_multistep(xi, 0.5, 1.0).dtype == torch.get_default_dtype()
    xh = torch.rand(4, 2, 3).half()
    assert lif_multistep(xh, 0.5, 1.0).dtype == torch.float16


def test_parameter_shape_errors():
    x = torch.rand(4, 2, 3)
    with pytest.raises(ValueError, match="beta"):
        lif_multistep(x, torch.ones(5) * 0.5, 1.0)
    with pytest.raises(ValueError, match="reset"):
        lif_multistep(x, 0.5, 1.0, reset="soft")
    with pytest.raises(ValueError, match="backend"):
        lif_multistep(x, 0.5, 1.0, backend="gpu")


def test_parallel_blocks_equal_serial():
    x = torch.rand(40, 3, 700, dtype=torch.float64, generator=torch.Generator().manual_seed(11)) * 1.5
    xs = x.clone().requires_grad_(True)

    def run():
        s, m = lif_multistep(xs, 0.9, 1.0, return_mem=True)
        return (s, m) + torch.autograd.grad((s * 2 + m).sum(), xs)

    assert all(torch.equal(a, b) for a, b in zip(*on_one_and_all_threads(run)))


def test_output_buffers_reused_only_when_free():
    from spike.kernels import lif as F

    if F._CACHE.max_bytes <= 0:
        pytest.skip("buffer cache disabled (SPIKE_LIF_BUFFER_CACHE_MB=0)")
    F.clear_buffer_cache()
    x = torch.rand(100, 3, 8192, generator=torch.Generator().manual_seed(13)) * 1.5  # 9.8 MB
    s1 = lif_multistep(x, 0.9, 1.0)
    p1 = s1.data_ptr()
    s2 = lif_multistep(x, 0.9, 1.0)
    assert s2.data_ptr() != p1 and torch.equal(s1, s2)  # s1 alive: not reused
    del s1
    s3 = lif_multistep(x, 0.9, 1.0)
    assert s3.data_ptr() == p1 and torch.equal(s3, s2)  # freed: reused
    keep = s3[7]  # a view keeps the storage (and the buffer) alive
    del s3
    s4 = lif_multistep(x, 0.9, 1.0)
    assert s4.data_ptr() != p1 and keep.data_ptr() == p1 + 7 * 3 * 8192 * 4
    assert torch.equal(keep, s4[7])
    F.clear_buffer_cache()
    assert torch.equal(keep, s4[7])  # clearing never invalidates live tensors


def test_buffer_cache_eviction_and_cap():
    from spike.kernels.lif import _BufferCache

    c = _BufferCache(3 << 20)
    a = c.get((1 << 18,), torch.float32)  # 1 MiB
    b = c.get((1 << 18,), torch.float32)
    assert a.data_ptr() != b.data_ptr()
    del a
    big = c.get((1 << 19,), torch.float32)  # 2 MiB: evicts the free 1 MiB buffer
    assert big is not None and len(c.entries) == 2
    assert c.get((1 << 19,), torch.float32) is None  # over the cap while all are in use
    assert c.get((1 << 21,), torch.float32) is None  # larger than the cap
    del b, big
    assert c.get((1 << 18,), torch.float32) is not None


def test_checkpoint_interval_leaves_results_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A narrow layer recomputes in longer segments (``ckpt_every``) than ``CKPT_EVERY``: the same
    spikes, membranes and gradients bit for bit (the recomputation repeats the forward)."""
    x, beta, thr, alpha, ws, wm = _inputs(4)  # float64: the kernels the other tests compile
    runs = []
    for segment_bytes in (0, 4 << 20):
        monkeypatch.setattr(K, "SEGMENT_BYTES", segment_bytes)
        xs, bs, ts = (t.clone().requires_grad_() for t in (x, beta, thr))
        s, m = lif_multistep(xs, bs, ts, alpha=alpha, return_mem=True, reset="zero")
        runs.append((s, m, *torch.autograd.grad((s * ws + m * wm).sum(), (xs, bs, ts))))
    assert K.ckpt_every(B * N, x.element_size()) > T > K.CKPT_EVERY  # one segment against three
    assert all(torch.equal(a, b) for a, b in zip(*runs)) and runs[0][2].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("delay, cuba, learn", [(True, False, False), (False, False, False), (True, True, True),
                                                (False, True, False), (True, False, True)])
def test_streamed_dx_equals_plain_stores(monkeypatch: pytest.MonkeyPatch, dtype, delay, cuba, learn) -> None:
    """dL/dx written by non-temporal stores (``streams_dx``; rows of 150 neurons: an unaligned head, whole
    lines and a tail) is the plainly stored dL/dx bit for bit, lean and full adjoint, on one thread and
    on all."""
    g = torch.Generator().manual_seed(17)
    x = (torch.rand(T, 3, 50, generator=g, dtype=dtype) * 1.5 - 0.25)
    beta = torch.rand(50, generator=g, dtype=dtype) * 0.5 + 0.4
    alpha = torch.full((50,), 0.5, dtype=dtype) if cuba else None
    ws = torch.randn(T, 3, 50, generator=g, dtype=dtype)

    def run():
        xs, bs = x.clone().requires_grad_(True), beta.clone().requires_grad_(learn)
        s = lif_multistep(xs, bs, 1.0, alpha=alpha, reset_delay=delay, detach_reset=False)
        return (s,) + torch.autograd.grad((s * ws).sum(), [xs] + ([bs] if learn else []))

    runs = []
    monkeypatch.setattr(F, "RECOMPUTE", True)  # lif_cpu's backward, for the lean cases too
    for stream in (False, True):
        monkeypatch.setattr(K, "streams_dx", lambda *_a, _s=stream: _s)
        runs.append(on_one_and_all_threads(run))
    (plain1, plain_all), (stream1, stream_all) = runs
    assert plain1[0].sum() > 0 and plain1[1].abs().sum() > 0
    for a, b in zip(plain1 + plain_all, stream1 + stream_all):
        assert torch.equal(a, b)


def test_streams_dx_only_narrow_rows_of_a_large_dx() -> None:
    assert K.streams_dx(1000, 8192, 4)  # 256 x 32 at T=1000: 32 MB, rows of 8192 or fewer neurons
    assert not K.streams_dx(100, 131072, 4)  # rows of 65536 neurons stream well with plain stores
    assert not K.streams_dx(1000, 2048, 4)  # 8 MB: likely still cached when it is read
    assert K.streams_dx(1000, 2048, 8) == (2 * 1000 * 2048 * 4 >= K.STREAM_MIN_BYTES)


def _lif_node(out: torch.Tensor):
    """The LIFFunction node of autograd's graph behind ``out`` (a reshape of its spikes)."""
    node = out.grad_fn
    while type(node).__name__ != "LIFFunctionBackward":
        node = node.next_functions[0][0]
    return node


@pytest.mark.parametrize("reset, delay, ge, detach, surr, cuba, dtype", [
    ("subtract", True, False, True, "atan", False, torch.float64),  # snnTorch's Leaky
    ("zero", False, True, True, "atan", False, torch.float32),  # SpikingJelly's LIFNode
    ("zero", True, False, False, "sigmoid", True, torch.float64),
    ("subtract", False, True, False, "fast_sigmoid", True, torch.float64),
    ("none", True, True, False, "triangle", False, torch.float64),
    ("subtract", True, False, False, "straight_through", False, torch.float32),
])
def test_kept_membrane_path_equals_recompute_and_naive(monkeypatch: pytest.MonkeyPatch, reset, delay, ge, detach,
                                                       surr, cuba, dtype) -> None:
    """The usual training step (no parameter or membrane gradient) keeps the membrane for backward
    (lif_kept_cpu, kernels specialised per flag set): spikes and dL/dx equal those of the
    checkpointed recomputation (``RECOMPUTE``) bit for bit, and the naive autograd loop's (spikes
    exactly, gradients to float64 rounding); the node saves the kept row instead of x, and no
    checkpoints."""
    x, beta, thr, alpha, ws, _ = _inputs(13, dtype)
    beta, thr, alpha, ws = beta.to(dtype), thr.to(dtype), alpha.to(dtype), ws.to(dtype)
    kw = dict(reset=reset, reset_delay=delay, fire_ge=ge, detach_reset=detach, surrogate=surr)
    runs = []
    for recompute in (False, True):
        monkeypatch.setattr(F, "RECOMPUTE", recompute)
        xs = x.clone().requires_grad_(True)
        s = lif_multistep(xs, beta, thr, alpha=alpha if cuba else None, **kw)
        node = _lif_node(s)
        kept_row, *_, ckv, _ = node.saved_tensors
        assert node.kept != recompute and (ckv is None) != recompute
        assert (kept_row.data_ptr() == xs.data_ptr()) == recompute  # the recomputation saves x itself
        runs.append((s,) + torch.autograd.grad((s * ws).sum(), xs))
    (s, g), (s_rec, g_rec) = runs
    assert torch.equal(s, s_rec) and torch.equal(g, g_rec) and s.sum() > 0 and g.abs().sum() > 0
    xn = x.clone().requires_grad_(True)
    sn, _ = naive(xn, beta, thr, alpha if cuba else None, reset=reset, delay=delay, ge=ge, detach=detach, surr=surr)
    (gn,) = torch.autograd.grad((sn * ws).sum(), xn)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.equal(s, sn)
    torch.testing.assert_close(g, gn, rtol=tol, atol=tol)


def test_kept_membrane_path_threads_and_broadcast_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    """snnTorch's default neuron, float32, per-neuron parameters, work items split over threads: the
    same spikes and dL/dx (a full and a broadcast spike gradient) on one thread and on all, and as
    the recomputation gives them. A call that autograd does not record keeps nothing (lif_cpu's
    forward, as before): the same spikes."""
    g = torch.Generator().manual_seed(19)
    x = torch.rand(23, 3, 700, generator=g) * 1.5 - 0.25
    beta = torch.rand(700, generator=g) * 0.5 + 0.4
    ws = torch.randn(23, 3, 700, generator=g)

    def run():
        xs = x.clone().requires_grad_(True)
        s = lif_multistep(xs, beta, 1.0)
        assert _lif_node(s).kept != F.RECOMPUTE
        return (s,) + torch.autograd.grad((s * ws).sum(), xs, retain_graph=True) + torch.autograd.grad(s.sum(), xs)

    one, every = on_one_and_all_threads(run)
    assert all(torch.equal(a, b) for a, b in zip(one, every)) and one[1].abs().sum() > 0
    monkeypatch.setattr(F, "RECOMPUTE", True)
    assert all(torch.equal(a, b) for a, b in zip(one, run()))
    monkeypatch.setattr(F, "RECOMPUTE", False)
    monkeypatch.setattr(KK, "forward_kernel", None)  # not called
    with torch.no_grad():
        assert torch.equal(lif_multistep(x.clone().requires_grad_(True), beta, 1.0), one[0])


def test_recompute_switch_reads_0_or_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, on in (("", False), ("0", False), (" 1 ", True)):
        monkeypatch.setenv("SPIKE_LIF_RECOMPUTE", value)
        assert F._env_switch("SPIKE_LIF_RECOMPUTE") is on
    monkeypatch.setenv("SPIKE_LIF_RECOMPUTE", "yes")
    with pytest.raises(ValueError, match="SPIKE_LIF_RECOMPUTE: expected 0 or 1, got 'yes'"):
        F._env_switch("SPIKE_LIF_RECOMPUTE")


def test_kept_kernels_close_over_plain_values_only() -> None:
    """Numba's on-disk cache keys a closure by its cells' pickled contents: plain values pickle alike
    in every process, a compiled function does not (its kernels were compiled again in every
    process)."""
    for kernel in (KK.forward_kernel(0, True, False, False), KK.backward_kernel(1, False, True, True, True, 2)):
        cells = [c.cell_contents for c in kernel.py_func.__closure__]
        assert cells and all(type(c) in (bool, int) for c in cells), cells
