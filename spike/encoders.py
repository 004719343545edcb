"""Input encoders: static or time-series data -> time-first float32 tensors ``[T, B, ...]``.

``latency`` and ``delta`` follow ``snntorch.spikegen.latency`` / ``spikegen.delta`` (same
formulas, same float operations, so equal outputs for the same arguments). :class:`Encoder`
records an encoding as plain data so checkpoints and compiled programs can store it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import torch

__all__ = ["rate", "latency", "delta", "direct", "Encoder", "ENCODER_PARAMS"]


def _check_steps(num_steps: int) -> int:
    if not isinstance(num_steps, numbers.Integral) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    return int(num_steps)


def rate(
    x: torch.Tensor, num_steps: int, gain: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Bernoulli rate code: ``s[t] = 1`` with probability ``clamp(gain * x, 0, 1)``, independently per step.

    Draws ``torch.rand([T, *x.shape], generator=generator) < p``: a seeded generator gives a
    reproducible spike train (None uses torch's global RNG).
    """
    num_steps = _check_steps(num_steps)
    p = torch.clamp(gain * x.float(), 0.0, 1.0)
    u = torch.rand((num_steps, *x.shape), generator=generator, device=x.device, dtype=torch.float32)
    return (u < p).to(torch.float32)


def latency(
    x: torch.Tensor,
    num_steps: int,
    tau: float = 5.0,
    threshold: float = 0.01,
    linear: bool = False,
    normalize: bool = False,
    clip: bool = False,
) -> torch.Tensor:
    """Time-to-first-spike code, one spike per input, earlier for brighter inputs (x in [0, 1]).

    As ``snntorch.spikegen.latency`` (first_spike_time=0, epsilon=1e-7):
    log code ``t = tau * ln(x' / (x' - threshold))`` with ``x' = max(x, threshold + 1e-7)``;
    linear code ``t = min(tau * (1 - x), tau * (1 - threshold))``. ``normalize`` stretches the
    times to fill ``num_steps`` (log: ``t * (T-1) / max(t)``; linear: ``tau = T - 1``). The spike
    lands at step ``round(t)``. Inputs below ``threshold`` fire at the latest time, or never with
    ``clip``. A spike time beyond ``T - 1`` is an error, as in snnTorch (except for clipped inputs,
    which do not fire anyway).
    """
    num_steps = _check_steps(num_steps)
    x = x.float()
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"latency: inputs must lie in [0, 1], got [{x.min().item()}, {x.max().item()}]")
    if not 0 < threshold < 1:
        raise ValueError(f"latency: threshold must be in (0, 1), got {threshold}")
    if tau <= 0 and not (linear and normalize):
        raise ValueError(f"latency: tau must be positive, got {tau}")

    below = x < threshold
    if linear:
        if normalize:
            tau = num_steps - 1
        spike_time = torch.clamp_max(-tau * (x - 1), -tau * (threshold - 1))
    else:
        xc = torch.clamp(x, threshold + 1e-7)
        spike_time = tau * torch.log(xc / (xc - threshold))
        if normalize:
            spike_time = spike_time * (num_steps - 1) / torch.max(spike_time)

    steps = torch.round(spike_time).long()
    late = steps[~below] if clip else steps
    if late.numel() and int(late.max()) > num_steps - 1:
        raise ValueError(
            f"latency: spike time {int(late.max())} is out of bounds for num_steps={num_steps}; "
            "use normalize=True, a smaller tau or more steps"
        )
    out = torch.zeros((num_steps, *x.shape), dtype=torch.float32, device=x.device)
    out.scatter_(0, steps.clamp(0, num_steps - 1).unsqueeze(0), 1.0)
    if clip:
        out = out * ~below
    return out


def delta(
    x: torch.Tensor, threshold: float = 0.1, off_spike: bool = False, padding: bool = False
) -> torch.Tensor:
    """Change detector for time-series input ``[T, B, ...]`` (as ``snntorch.spikegen.delta``).

    ``d[t] = x[t] - x[t-1]``, with ``x[-1] = 0`` (or ``x[0]`` when ``padding``, so step 0 is
    silent). On spike ``+1`` where ``d >= threshold``; with ``off_spike`` also ``-1`` where
    ``d <= -threshold``.
    """
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError("delta: expects a time-first tensor [T, ...] with T >= 1")
    first = x[:1] if padding else torch.zeros_like(x[:1])
    d = x - torch.cat((first, x[:-1]))
    out = (d >= threshold).to(torch.float32)
    if off_spike:
        out = out - (d <= -threshold).to(torch.float32)
    return out


def direct(x: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Direct (analog) input: the same float32 ``x`` at every step, ``[T, *x.shape]``, contiguous."""
    num_steps = _check_steps(num_steps)
    return x.to(torch.float32).unsqueeze(0).expand(num_steps, *x.shape).contiguous()


# Parameters each kind accepts, with defaults (all JSON-serialisable scalars).
ENCODER_PARAMS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "rate": MappingProxyType({"gain": 1.0}),
        "latency": MappingProxyType(
            {"tau": 5.0, "threshold": 0.01, "linear": False, "normalize": False, "clip": False}
        ),
        "delta": MappingProxyType({"threshold": 0.1, "off_spike": False, "padding": False}),
        "direct": MappingProxyType({}),
    }
)


@dataclass(frozen=True)
class Encoder:
    """A saved encoding: ``kind`` in ``ENCODER_PARAMS``, ``num_steps`` and keyword ``params``.

    ``Encoder("rate", 25, {"gain": 0.5})(x, generator=g)`` -> ``[25, *x.shape]``. Missing params take
    their defaults (filled in at construction, so ``to_dict`` is complete). For ``delta`` the input
    already carries its time axis: ``num_steps`` may be None, else it must equal ``x.shape[0]``.
    """

    kind: str
    num_steps: int | None
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_PARAMS:
            raise ValueError(f"unknown encoder kind {self.kind!r}: choose one of {', '.join(ENCODER_PARAMS)}")
        if self.num_steps is not None or self.kind != "delta":
            object.__setattr__(self, "num_steps", _check_steps(self.num_steps))
        allowed = ENCODER_PARAMS[self.kind]
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(
                f"encoder {self.kind!r}: unknown params {unknown}; accepted: {sorted(allowed) or 'none'}"
            )
        params = dict(allowed)
        for k, v in self.params.items():
            default = allowed[k]
            if isinstance(default, bool):
                if not isinstance(v, bool):
                    raise ValueError(f"encoder {self.kind!r}: param {k!r} must be a bool, got {v!r}")
            else:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"encoder {self.kind!r}: param {k!r} must be a finite number, got {v!r}")
                v = float(v)
            params[k] = v
        object.__setattr__(self, "params", params)  # a fresh dict: picklable, owned by this Encoder

    def __hash__(self) -> int:
        return hash((self.kind, self.num_steps, tuple(sorted(self.params.items()))))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = dict(self.params)
        if self.kind == "rate":
            return rate(x, self.num_steps, generator=generator, **p)
        if self.kind == "latency":
            return latency(x, self.num_steps, **p)
        if self.kind == "direct":
            return direct(x, self.num_steps)
        if self.num_steps is not None and x.shape[0] != self.num_steps:
            raise ValueError(f"delta encoder: expected {self.num_steps} steps on dim 0, got {x.shape[0]}")
        return delta(x, **p)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict: ``{"kind", "num_steps", "params"}``."""
        return {"kind": self.kind, "num_steps": self.num_steps, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Encoder":
        """Inverse of :meth:`to_dict`; unknown keys, kinds or params raise ValueError."""
        extra = sorted(set(d) - {"kind", "num_steps", "params"})
        if extra or "kind" not in d:
            raise ValueError(f"encoder dict needs keys kind, num_steps, params; got {sorted(d)}")
        return cls(str(d["kind"]), d.get("num_steps"), dict(d.get("params") or {}))
