"""Surrogate gradients for the Heaviside spike function.

The forward pass is always the Heaviside step ``H(u)`` of ``u = v - threshold``, firing on
``u > 0`` (snnTorch) or ``u >= 0`` (SpikingJelly, ``fire_ge=True``). The backward pass replaces
``dH/du`` by a smooth function. The formulas are those of snnTorch 1.0 (``snntorch/surrogate.py``):

========================  ===================================================================
``atan(alpha=2)``         ``alpha/2 / (1 + (pi/2*alpha*u)^2)``
``fast_sigmoid(slope=25)`` ``1 / (slope*|u| + 1)^2``
``sigmoid(slope=25)``     ``slope*sig(slope*u)*(1 - sig(slope*u))``, evaluated in the stable form
                          ``slope*e/(1+e)^2`` with ``e = exp(-slope*|u|)`` (equal to snnTorch's
                          ``slope*exp(-slope*u)/(exp(-slope*u)+1)^2``, which overflows to NaN for
                          very negative ``u``)
``triangle(threshold=1)`` snnTorch's literal ``Triangular``: ``+threshold`` for ``u < 0`` and
                          ``-threshold`` for ``u >= 0`` (not a triangle; this is snnTorch's
                          definition and is kept for compatibility)
``straight_through()``    ``1``
========================  ===================================================================

A :class:`Surrogate` is a small frozen value (name, parameter) with an integer :attr:`Surrogate.id`
that the compiled kernels (``spike.kernels.lif_cpu``) switch on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "Surrogate",
    "SpikeFunction",
    "atan",
    "fast_sigmoid",
    "sigmoid",
    "triangle",
    "straight_through",
    "get",
    "spike",
    "NAMES",
]

# name -> (kernel id, default parameter). The ids are part of the kernel ABI: never renumber.
_TABLE: dict[str, tuple[int, float]] = {
    "atan": (0, 2.0),
    "fast_sigmoid": (1, 25.0),
    "sigmoid": (2, 25.0),
    "triangle": (3, 1.0),
    "straight_through": (4, 1.0),
}
_ALIASES = {
    "arctan": "atan",
    "fastsigmoid": "fast_sigmoid",
    "triangular": "triangle",
    "ste": "straight_through",
    "straight_through_estimator": "straight_through",
}
NAMES: tuple[str, ...] = tuple(_TABLE)


@dataclass(frozen=True)
class Surrogate:
    """A surrogate gradient: ``name`` (one of :data:`NAMES`) and its parameter.

    ``param`` is alpha for atan, the slope for (fast_)sigmoid, the threshold for triangle and
    unused (1.0) for straight_through.
    """

    name: str
    param: float

    def __post_init__(self) -> None:
        if self.name not in _TABLE:
            raise ValueError(
                f"surrogate: unknown name {self.name!r}; expected one of {', '.join(NAMES)}"
            )
        p = float(self.param)
        if not math.isfinite(p):
            raise ValueError(f"surrogate {self.name}: param must be finite, got {self.param!r}")
        if self.name in ("atan", "fast_sigmoid", "sigmoid") and p <= 0:
            raise ValueError(f"surrogate {self.name}: param must be > 0, got {self.param!r}")
        object.__setattr__(self, "param", p)

    @property
    def id(self) -> int:
        """Integer id used by the compiled kernels."""
        return _TABLE[self.name][0]

    def grad(self, u: torch.Tensor) -> torch.Tensor:
        """The surrogate derivative ``dS/du`` evaluated at ``u = v - threshold``."""
        return _grad(self.name, self.param, u)

    def spike(self, u: torch.Tensor, fire_ge: bool = False) -> torch.Tensor:
        """``H(u)`` forward, this surrogate backward (single-step use)."""
        return SpikeFunction.apply(u, self, bool(fire_ge))

    def fire(self, v: torch.Tensor, threshold, fire_ge: bool = False) -> torch.Tensor:
        """The spike of membrane ``v``: :meth:`spike` of ``u = v - threshold``."""
        return self.spike(v - threshold, fire_ge)

    def __call__(self, u: torch.Tensor, fire_ge: bool = False) -> torch.Tensor:
        return self.spike(u, fire_ge)


def _grad(name: str, p: float, u: torch.Tensor) -> torch.Tensor:
    if name == "atan":
        return p / 2 / (1 + (math.pi / 2 * p * u).pow(2))
    if name == "fast_sigmoid":
        return 1.0 / (p * u.abs() + 1.0) ** 2
    if name == "sigmoid":
        e = torch.exp(-p * u.abs())
        return p * e / ((1 + e) * (1 + e))
    if name == "triangle":
        return torch.where(u < 0, torch.full_like(u, p), torch.full_like(u, -p))
    if name == "straight_through":
        return torch.ones_like(u)
    raise ValueError(f"surrogate: unknown name {name!r}")  # unreachable: checked in __post_init__


def atan(alpha: float = 2.0) -> Surrogate:
    """Arc-tangent surrogate (snnTorch ``surrogate.atan``; SpikingJelly ``ATan``)."""
    return Surrogate("atan", alpha)


def fast_sigmoid(slope: float = 25.0) -> Surrogate:
    """Fast-sigmoid (SuperSpike) surrogate (snnTorch ``surrogate.fast_sigmoid``)."""
    return Surrogate("fast_sigmoid", slope)


def sigmoid(slope: float = 25.0) -> Surrogate:
    """Sigmoid-derivative surrogate (snnTorch ``surrogate.sigmoid``), numerically stable form."""
    return Surrogate("sigmoid", slope)


def triangle(threshold: float = 1.0) -> Surrogate:
    """snnTorch's ``surrogate.triangular``: ``+threshold`` for ``u<0``, ``-threshold`` for ``u>=0``."""
    return Surrogate("triangle", threshold)


def straight_through() -> Surrogate:
    """Straight-through estimator: gradient 1."""
    return Surrogate("straight_through", 1.0)


def get(surrogate: "str | Surrogate") -> Surrogate:
    """Normalise a name (``"atan"``, ``"fast_sigmoid"``, ...) or a :class:`Surrogate`."""
    if isinstance(surrogate, Surrogate):
        return surrogate
    if isinstance(surrogate, str):
        key = surrogate.strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in _TABLE:
            raise ValueError(
                f"surrogate: unknown name {surrogate!r}; expected one of {', '.join(NAMES)}"
            )
        return Surrogate(key, _TABLE[key][1])
    raise ValueError(
        f"surrogate: expected a name ({', '.join(NAMES)}) or a spike.surrogate.Surrogate, "
        f"got {type(surrogate).__name__}"
    )


class SpikeFunction(torch.autograd.Function):
    """``S = H(u)`` (``u > 0``, or ``u >= 0`` with ``fire_ge``); ``dS/du = surrogate.grad(u)``."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, surrogate: Surrogate, fire_ge: bool):  # type: ignore[override]
        ctx.save_for_backward(u)
        ctx.surrogate = surrogate
        return (u >= 0).to(u.dtype) if fire_ge else (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return ctx.surrogate.grad(u) * grad_output, None, None


def spike(u: torch.Tensor, surrogate: "str | Surrogate" = "atan", fire_ge: bool = False) -> torch.Tensor:
    """Single-step spike ``H(u)`` with a surrogate gradient."""
    return SpikeFunction.apply(u, get(surrogate), bool(fire_ge))
