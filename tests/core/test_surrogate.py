"""Surrogate gradients: formulas equal snnTorch's, the spike forward, names and ids."""

import math

import pytest
import torch
from snntorch import surrogate as snn_sg

from spike import surrogate as sg
from spike.kernels.lif_cpu import SURROGATE_IDS

U = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64)


def _snn_grad(fn, u):
    u = u.clone().requires_grad_(True)
    fn(u).backward(torch.ones_like(u))
    return u.grad


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (sg.atan(2.0), snn_sg.atan(alpha=2.0)),
        (sg.atan(3.5), snn_sg.atan(alpha=3.5)),
        (sg.fast_sigmoid(25.0), snn_sg.fast_sigmoid(slope=25)),
        (sg.fast_sigmoid(5.0), snn_sg.fast_sigmoid(slope=5)),
        (sg.triangle(1.0), snn_sg.triangular(threshold=1)),
        (sg.triangle(0.5), snn_sg.triangular(threshold=0.5)),
        (sg.straight_through(), snn_sg.straight_through_estimator()),
    ],
)
def test_grad_equals_snntorch(ours, theirs):
    assert torch.equal(ours.grad(U), _snn_grad(theirs, U))


@pytest.mark.parametrize("slope", [25.0, 4.0])
def test_sigmoid_stable_form_equals_snntorch(slope):
    ours = sg.sigmoid(slope).grad(U)
    theirs = _snn_grad(snn_sg.sigmoid(slope=slope), U)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)
    # snnTorch's exp form overflows to NaN far below threshold; ours stays finite (-> 0)
    far = torch.tensor([-1000.0], dtype=torch.float64)
    assert torch.isnan(_snn_grad(snn_sg.sigmoid(slope=slope), far)).all()
    assert sg.sigmoid(slope).grad(far).item() == 0.0


def test_triangle_is_snntorch_literal_definition():
    # snnTorch's "triangular": +threshold below 0, -threshold at/above 0 (not a triangle)
    g = sg.triangle(0.75).grad(torch.tensor([-1.0, -1e-9, 0.0, 1e-9, 3.0]))
    assert g.tolist() == [0.75, 0.75, -0.75, -0.75, -0.75]


def test_atan_formula():
    a = 2.0
    u = torch.tensor([0.0, 0.3, -1.2], dtype=torch.float64)
    ref = [a / 2 / (1 + (math.pi / 2 * a * x) ** 2) for x in u.tolist()]
    assert sg.atan(a).grad(u).tolist() == pytest.approx(ref, rel=1e-15)


@pytest.mark.parametrize("fire_ge", [False, True])
def test_spike_forward_and_backward(fire_ge):
    u = torch.tensor([-1.0, -0.0, 0.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    s = sg.spike(u, "fast_sigmoid", fire_ge=fire_ge)
    expect = [0.0, 1.0, 1.0, 1.0, 1.0] if fire_ge else [0.0, 0.0, 0.0, 1.0, 1.0]
    assert s.tolist() == expect
    w = torch.arange(1.0, 6.0, dtype=torch.float64)
    (s * w).sum().backward()
    assert torch.equal(u.grad, sg.fast_sigmoid().grad(u.detach()) * w)


def test_surrogate_call_and_method_agree():
    u = torch.randn(10, dtype=torch.float64)
    s = sg.atan()
    assert torch.equal(s(u), s.spike(u)) and torch.equal(s(u), sg.spike(u, s))


def test_names_defaults_and_ids():
    for name, (sid, default) in {
        "atan": (0, 2.0), "fast_sigmoid": (1, 25.0), "sigmoid": (2, 25.0), "triangle": (3, 1.0),
        "straight_through": (4, 1.0),
    }.items():
        s = sg.get(name)
        assert (s.name, s.param, s.id) == (name, default, sid)
        assert SURROGATE_IDS[name] == sid
    assert sg.get("ATan").name == "atan"
    assert sg.get("triangular").name == "triangle"
    assert sg.get("ste").name == "straight_through"
    s = sg.atan(3.0)
    assert sg.get(s) is s
    assert s == sg.Surrogate("atan", 3)  # frozen value object
    with pytest.raises(Exception):
        s.param = 1.0  # type: ignore[misc]


def test_errors():
    with pytest.raises(ValueError, match="surrogate.*unknown.*'tanh'"):
        sg.get("tanh")
    with pytest.raises(ValueError, match="unknown"):
        sg.Surrogate("nope", 1.0)
    with pytest.raises(ValueError, match="param"):
        sg.atan(0.0)
    with pytest.raises(ValueError, match="param"):
        sg.sigmoid(float("nan"))
    with pytest.raises(ValueError, match="surrogate"):
        sg.get(3)  # type: ignore[arg-type]
