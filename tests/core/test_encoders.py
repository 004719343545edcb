import json
import pickle

import pytest
import torch
from snntorch import spikegen

from spike.encoders import ENCODER_PARAMS, Encoder, delta, direct, latency, rate


def _x(seed=0, shape=(4, 1, 6, 6)):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.005])  # extremes and a sub-threshold value
    return x


# ----------------------------------------------------------------------------- rate


def test_rate_mean_matches_probability():
    p = torch.tensor([[0.0, 0.1, 0.5, 0.9, 1.0, 0.3]])
    spikes = rate(p, 4000, generator=torch.Generator().manual_seed(0))
    assert spikes.shape == (4000, 1, 6) and spikes.dtype == torch.float32
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    mean = spikes.mean(0)
    sd = (p * (1 - p) / 4000).sqrt()
    assert torch.all((mean - p).abs() <= 5 * sd + 1e-9)
    assert mean[0, 0] == 0 and mean[0, 4] == 1


def test_rate_gain_clamps_and_is_reproducible():
    x = _x()
    a = rate(x, 10, gain=2.0, generator=torch.Generator().manual_seed(3))
    b = rate(x, 10, gain=2.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (10, *x.shape)
    assert torch.all(a[:, x >= 0.5] == 1)
    c = rate(x, 10, gain=2.0, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(a, c)
    with pytest.raises(ValueError):
        rate(x, 0)


# ----------------------------------------------------------------------------- latency


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_steps=100, tau=5.0),
        dict(num_steps=100, tau=5.0, clip=True),
        dict(num_steps=25, tau=5.0, normalize=True),
        dict(num_steps=25, tau=5.0, normalize=True, clip=True),
        dict(num_steps=25, tau=5.0, linear=True, normalize=True),
        dict(num_steps=25, tau=5.0, linear=True, normalize=True, clip=True),
        dict(num_steps=10, tau=5.0, linear=True),
        dict(num_steps=10, tau=3.0, threshold=0.2, linear=True, clip=True),
        dict(num_steps=30, tau=2.0, threshold=0.05, normalize=True),
    ],
)
def test_latency_equals_snntorch(kw):
    for seed in range(3):
        x = _x(seed)
        ours = latency(x, **kw)
        theirs = spikegen.latency(x, **kw)
        assert ours.dtype == torch.float32 and ours.shape == (kw["num_steps"], *x.shape)
        assert torch.equal(ours, theirs)


def test_latency_one_spike_earlier_for_brighter():
    x = torch.tensor([[0.2, 0.5, 1.0]])
    s = latency(x, 20, normalize=True, linear=True)
    assert torch.equal(s.sum(0), torch.ones_like(x))
    t = s.argmax(0)[0]
    assert t[2] < t[1] < t[0]


def test_latency_errors():
    x = torch.tensor([[0.0, 0.5]])
    with pytest.raises(ValueError, match="out of bounds"):
        latency(x, 25, tau=5.0)  # sub-threshold input fires at t ~ 58
    assert latency(x, 25, tau=5.0, clip=True)[:, 0, 0].sum() == 0  # ... unless clipped
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        latency(torch.tensor([1.5]), 10)
    with pytest.raises(ValueError, match="threshold"):
        latency(x, 10, threshold=0.0)


# ----------------------------------------------------------------------------- delta, direct


@pytest.mark.parametrize("off_spike", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_delta_equals_snntorch(off_spike, padding):
    x = torch.randn(12, 3, 5, generator=torch.Generator().manual_seed(0)).cumsum(0) * 0.2
    ours = delta(x, threshold=0.1, off_spike=off_spike, padding=padding)
    theirs = spikegen.delta(x, threshold=0.1, off_spike=off_spike, padding=padding)
    assert ours.dtype == torch.float32 and torch.equal(ours, theirs)
    assert (ours < 0).any() == off_spike


def test_delta_docstring_example():
    b = torch.tensor([1, 2, 0, 2, 2.9])
    assert delta(b, threshold=1, off_spike=True).tolist() == [1, 1, -1, 1, 0]
    assert delta(b, threshold=1, off_spike=True, padding=True).tolist() == [0, 1, -1, 1, 0]


def test_direct_repeats():
    x = _x()
    d = direct(x, 7)
    assert d.shape == (7, *x.shape) and d.is_contiguous() and d.dtype == torch.float32
    assert torch.equal(d, torch.stack([x] * 7))
    assert torch.equal(direct(x.double(), 2)[1], x)


# ----------------------------------------------------------------------------- Encoder


@pytest.mark.parametrize(
    "enc",
    [
        Encoder("rate", 8, {"gain": 0.5}),
        Encoder("latency", 16, {"linear": True, "normalize": True}),
        Encoder("delta", None, {"threshold": 0.05, "off_spike": True}),
        Encoder("direct", 4),
    ],
)
def test_encoder_round_trip(enc):
    d = enc.to_dict()
    assert set(d["params"]) == set(ENCODER_PARAMS[enc.kind])  # defaults filled in
    back = Encoder.from_dict(json.loads(json.dumps(d)))
    assert back == enc and hash(back) == hash(enc)
    assert pickle.loads(pickle.dumps(enc)) == enc
    x = _x() if enc.kind != "delta" else torch.rand(6, 2, 3)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(enc(x, generator=g()), back(x, generator=g()))


def test_encoder_calls_functions():
    x = _x()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(Encoder("rate", 9, {"gain": 0.7})(x, g()), rate(x, 9, gain=0.7, generator=g()))
    assert torch.equal(Encoder("latency", 25, {"normalize": True})(x), latency(x, 25, normalize=True))
    assert torch.equal(Encoder("direct", 3)(x), direct(x, 3))
    ts = torch.rand(5, 2, 3)
    assert torch.equal(Encoder("delta", 5)(ts), delta(ts))
    with pytest.raises(ValueError, match="steps"):
        Encoder("delta", 4)(ts)


def test_encoder_validation():
    with pytest.raises(ValueError, match="rate, latency, delta, direct"):
        Encoder("poisson", 5)
    with pytest.raises(ValueError, match="unknown params"):
        Encoder("rate", 5, {"tau": 1.0})
    with pytest.raises(ValueError, match="bool"):
        Encoder("latency", 5, {"clip": 1})
    with pytest.raises(ValueError, match="num_steps"):
        Encoder("rate", 0)
    with pytest.raises(ValueError, match="num_steps"):
        Encoder("rate", None)
    with pytest.raises(ValueError):
        Encoder.from_dict({"kind": "rate", "num_steps": 3, "extra": 1})
    assert Encoder("rate", 5, {"gain": 2}).params["gain"] == 2.0
