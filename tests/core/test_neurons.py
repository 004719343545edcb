"""Neuron modules: snnTorch / SpikingJelly equivalence, single vs multi step, validation."""

import pytest
import snntorch as snn
import torch

from spike import surrogate as sg
from spike.neurons import IF, LI, LIF, CubaLIF, lif_step


def _x(T=100, B=4, N=32, lo=-0.5, hi=1.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, N, generator=g, dtype=dtype) * (hi - lo) + lo


def _run_snn(layer, x):
    mem = layer.init_leaky() if hasattr(layer, "init_leaky") else None
    spk_rec, mem_rec = [], []
    for xt in x.unbind(0):
        spk, mem = layer(xt, mem)
        spk_rec.append(spk)
        mem_rec.append(mem)
    return torch.stack(spk_rec), torch.stack(mem_rec)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("delay", [True, False])
def test_leaky_matches_snntorch_exactly(reset, delay):
    x = _x()
    ref_s, ref_m = _run_snn(snn.Leaky(beta=0.9, threshold=1.0, reset_mechanism=reset,
                                      reset_delay=delay), x)
    s, m = LIF(0.9, 1.0, reset=reset, reset_delay=delay)(x, return_mem=True)
    assert 0.02 < s.mean() < 0.9
    assert torch.equal(s, ref_s)
    assert torch.equal(m, ref_m)


def test_leaky_gradients_match_snntorch():
    x = _x(T=50)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref_s, ref_m = _run_snn(snn.Leaky(beta=0.9), xa)
    s, m = LIF(0.9)(xb, return_mem=True)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    ga, = torch.autograd.grad((ref_s * w).sum() + ref_m.sum(), xa)
    gb, = torch.autograd.grad((s * w).sum() + m.sum(), xb)
    torch.testing.assert_close(gb, ga, rtol=1e-5, atol=1e-6)


def test_snntorch_reset_delay_false_subtract_divergence():
    """snnTorch's reset_delay=False subtract mode computes its (delayed) reset term on the already
    reset membrane: when the membrane stays above threshold after a reset it subtracts the
    threshold once more before firing, so its spikes differ. Ours follows
    h = beta*v + x; s = H(h - thr); v = h - thr*s."""
    x = _x(T=60, lo=0.5, hi=3.0, seed=3)
    ref_s, _ = _run_snn(snn.Leaky(beta=0.9, reset_mechanism="subtract", reset_delay=False), x)
    s, m = LIF(0.9, reset="subtract", reset_delay=False)(x, return_mem=True)
    assert not torch.equal(s, ref_s)
    v = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        h = 0.9 * v + x[t]
        st = (h > 1.0).float()
        v = h - 1.0 * st
        assert torch.equal(s[t], st) and torch.equal(m[t], v)


@pytest.mark.parametrize("reset", ["subtract", "none"])
def test_cubalif_matches_snntorch_synaptic(reset):
    x = _x(seed=4, lo=-0.3, hi=0.6)
    layer = snn.Synaptic(alpha=0.8, beta=0.9, reset_mechanism=reset)
    syn, mem = layer.init_synaptic()
    S, V = [], []
    for xt in x.unbind(0):
        spk, syn, mem = layer(xt, syn, mem)
        S.append(spk)
        V.append(mem)
    s, m = CubaLIF(0.8, 0.9, reset=reset)(x, return_mem=True)
    assert s.sum() > 0
    assert torch.equal(s, torch.stack(S)) and torch.equal(m, torch.stack(V))


def test_spikingjelly_decay_input_lif():
    x = _x(T=80, lo=-1.0, hi=3.0, seed=5)
    lif = LIF.spikingjelly(tau=2.0)
    assert (lif.beta.item(), lif.gain, lif.fire_ge, lif.reset, lif.reset_delay, lif.detach_reset) == (
        0.5, 0.5, True, "zero", False, False)
    s, m = lif(x, return_mem=True)
    # SpikeGPT's reference: H = 0.5*V + 0.5*X, spike if H >= 1, hard reset to 0 (exact)
    V = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        H = 0.5 * V + 0.5 * x[t]
        st = (H >= 1.0).float()
        V = H * (1 - st)
        assert torch.equal(s[t], st) and torch.equal(m[t], V)
    # SpikingJelly's own update form v + (x - v)/tau, naively: agrees to rounding
    v = torch.zeros_like(x[0], dtype=torch.float64)
    xd = x.double()
    for t in range(x.shape[0]):
        h = v + (xd[t] - v) / 2.0
        st = (h >= 1.0).double()
        v = h * (1 - st)
        torch.testing.assert_close(m[t].double(), v, rtol=0, atol=1e-6)


def test_if_is_lif_with_beta_one():
    x = _x(seed=6, lo=-0.2, hi=0.5)
    a = IF(threshold=1.0)(x, return_mem=True)
    b = LIF(1.0, 1.0)(x, return_mem=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert IF.model == "if" and IF().beta.item() == 1.0


def test_li_readout():
    x = _x(T=30, seed=7)
    li = LI(0.8, gain=0.5)
    m = li(x)
    v = torch.zeros_like(x[0])
    for t in range(x.shape[0]):
        v = 0.8 * v + 0.5 * x[t]
        assert torch.equal(m[t], v)
    assert li.model == "li" and li.reset == "none" and li.threshold.item() == float("inf")


@pytest.mark.parametrize(
    "make",
    [
        lambda mode: LIF(0.9, 1.0, step_mode=mode, return_mem=True),
        lambda mode: LIF(0.8, 0.75, reset="zero", reset_delay=False, fire_ge=True,
                         detach_reset=False, surrogate="sigmoid", step_mode=mode, return_mem=True),
        lambda mode: LIF.spikingjelly(tau=2.0, step_mode=mode, return_mem=True),
        lambda mode: IF(threshold=1.5, reset="none", step_mode=mode, return_mem=True),
        lambda mode: CubaLIF(0.5, 0.9, step_mode=mode, return_mem=True),
        lambda mode: LIF(torch.linspace(0.1, 0.9, 32), torch.linspace(0.5, 1.5, 32),
                         learn_beta=True, learn_threshold=True, shape=(32,), step_mode=mode,
                         return_mem=True),
    ],
)
def test_single_step_equals_multi_step(make):
    x = _x(T=40, seed=8, lo=-0.5, hi=1.5, dtype=torch.float64)
    multi, single = make("multi").double(), make("single").double()
    single.load_state_dict(multi.state_dict())
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    s1, m1 = multi(xa)
    outs = [single(xt) for xt in xb.unbind(0)]
    s2 = torch.stack([o[0] for o in outs])
    m2 = torch.stack([o[1] for o in outs])
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    w = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ps1 = [xa] + [p for p in multi.parameters()]
    ps2 = [xb] + [p for p in single.parameters()]
    g1 = torch.autograd.grad((s1 * w).sum() + m1.sum(), ps1)
    g2 = torch.autograd.grad((s2 * w).sum() + m2.sum(), ps2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # state persists until reset_state()
    single.reset_state()
    assert single.v is None
    torch.testing.assert_close(single(xb[0])[0], s1[0])


def test_learnable_per_neuron_params_and_clamp():
    lif = LIF(0.9, 1.0, learn_beta=True, learn_threshold=True, shape=(8,))
    assert isinstance(lif.beta, torch.nn.Parameter) and lif.beta.shape == (8,)
    assert isinstance(lif.threshold, torch.nn.Parameter) and lif.threshold.shape == (8,)
    x = _x(T=20, N=8, seed=9).requires_grad_(True)
    lif(x).sum().backward()
    assert lif.beta.grad.shape == (8,) and lif.threshold.grad.abs().sum() > 0
    with torch.no_grad():
        lif.beta[0] = 1.7  # an optimiser step out of range: used clamped, like snnTorch
    a = lif(x.detach())
    with torch.no_grad():
        lif.beta[0] = 1.0
    assert torch.equal(a, lif(x.detach()))


def test_cuba_learnable_alpha_grad():
    c = CubaLIF(torch.full((8,), 0.5), 0.9, learn_alpha=True, shape=(8,))
    x = _x(T=20, N=8, seed=10).requires_grad_(True)
    c(x).sum().backward()
    assert c.alpha.grad.shape == (8,) and torch.isfinite(c.alpha.grad).all()


def test_attributes_for_the_compiler():
    lif = LIF(tau=4.0, decay_input=True, threshold=0.5, surrogate=sg.fast_sigmoid(10.0))
    assert lif.model == "lif"
    assert lif.beta.item() == 0.75 and lif.gain == 0.25 and isinstance(lif.gain, float)
    assert lif.threshold.item() == 0.5 and lif.reset == "subtract" and lif.reset_delay is True
    assert lif.fire_ge is False and lif.detach_reset is True and lif.alpha is None
    assert lif.surrogate == sg.Surrogate("fast_sigmoid", 10.0)
    c = CubaLIF(0.6, 0.9)
    assert c.model == "cuba_lif" and abs(c.alpha.item() - 0.6) < 1e-7
    assert "beta=0.75" in repr(lif)
    assert LIF(0.5, decay_input=True).gain == 0.5


def test_multi_and_loop_backends_agree():
    x = _x(T=30, seed=11)
    lif = LIF(0.9)
    a = lif(x)
    lif.backend = "loop"
    assert torch.equal(a, lif(x))


def test_lif_step_function():
    x = torch.tensor([0.6, 1.2], dtype=torch.float64)
    s, v, i = lif_step(x, None, None, 0.5, 1.0)
    assert s.tolist() == [0.0, 1.0] and v.tolist() == [0.6, 1.2] and i is None
    s, v, i = lif_step(x, v, s, 0.5, 1.0)  # delayed subtract: 0.5*1.2 + 1.2 - 1
    assert torch.allclose(v, torch.tensor([0.9, 0.8], dtype=torch.float64))
    s, v, i = lif_step(x, None, None, 0.5, 1.0, alpha=0.5)
    assert torch.equal(i, x)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(beta=0.9, reset="soft"), "reset"),
        (dict(beta=1.5), "beta"),
        (dict(beta=-0.1), "beta"),
        (dict(beta=torch.tensor([0.5, 1.2])), "beta"),
        (dict(beta=float("nan")), "beta"),
        (dict(tau=-2.0), "tau"),
        (dict(tau=0.5), "tau"),
        (dict(beta=0.9, tau=2.0), "beta, tau"),
        (dict(), "beta"),
        (dict(beta=0.9, surrogate="tanh"), "surrogate"),
        (dict(beta=0.9, step_mode="both"), "step_mode"),
        (dict(beta=0.9, threshold=float("inf")), "threshold"),
        (dict(beta=0.9, gain=float("nan")), "gain"),
        (dict(tau=2.0, decay_input=True, gain=2.0), "gain"),
        (dict(beta=0.9, shape=(0, 3), learn_beta=True), "shape"),
        (dict(beta=0.9, reset_delay="yes"), "reset_delay"),
        (dict(beta=0.9, alpha=0.5), "alpha"),
    ],
)
def test_validation_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LIF(**kwargs)


def test_validation_errors_other_models():
    with pytest.raises(ValueError, match="alpha"):
        CubaLIF(alpha=None, beta=0.9)
    with pytest.raises(ValueError, match="alpha"):
        CubaLIF(alpha=1.5, beta=0.9)
    with pytest.raises(ValueError, match="beta"):
        IF(beta=0.5)
    with pytest.raises(ValueError, match="threshold"):
        LI(0.9, threshold=1.0)
    with pytest.raises(ValueError, match="multi-step"):
        LIF(0.9)(torch.rand(5))
