"""Helpers that let per-sample layers run on time-first ``[T, B, ...]`` tensors."""
from __future__ import annotations

import torch
from torch import nn


class TimeDistributed(nn.Module):
    """Apply ``module`` to every step: ``[T, B, ...] -> [T*B, ...] -> module -> [T, B, ...]``.

    Conv2d, BatchNorm and pooling expect ``[N, C, H, W]``; wrap them so multi-step networks can
    use them. The compiler sees through the wrapper and lowers the inner module.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"TimeDistributed expects [T, B, ...], got {list(x.shape)}")
        T, B = x.shape[:2]
        y = self.module(x.reshape(T * B, *x.shape[2:]))
        return y.reshape(T, B, *y.shape[1:])


def shift_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x[t - steps]`` at step ``t`` (zeros for ``t < steps``), on a time-first ``[T, ...]`` tensor."""
    if steps <= 0:
        return x
    if steps >= x.shape[0]:
        return torch.zeros_like(x)
    return torch.cat((torch.zeros_like(x[:steps]), x[:-steps]), dim=0)


def silent_before(y: torch.Tensor, steps: int) -> torch.Tensor:
    """``y`` with its first ``steps`` steps set to 0: what a synaptic path with a delay of ``steps``
    delivers before its first event arrives (its bias, e.g. a folded BatchNorm's, travels with the
    events, as a compiled projection's does: ``Program.onset``)."""
    if steps <= 0:
        return y
    return torch.cat((torch.zeros_like(y[:steps]), y[steps:]), dim=0)


class Delayed(nn.Module):
    """``module`` applied to its input ``steps`` steps late: ``y[t] = module(x[t - steps])`` for
    ``t >= steps`` and ``y[t] = 0`` before (a bias travels with the events, as a compiled
    projection's does: ``Program.onset``).

    Wrap a synaptic layer (Linear, Conv2d, pooling, or ``nn.Identity`` for a residual path; inside
    ``TimeDistributed`` where needed) to model a synaptic delay, e.g. Loihi's one step: the compiler
    lowers it to the same projection with ``delay`` increased by ``steps``, so the model equals the
    program compiled for a Loihi target.
    """

    def __init__(self, module: nn.Module, steps: int = 1) -> None:
        super().__init__()
        if int(steps) < 0:
            raise ValueError(f"Delayed: steps must be >= 0, got {steps!r}")
        self.module = module
        self.steps = int(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return silent_before(self.module(shift_steps(x, self.steps)), self.steps)

    def extra_repr(self) -> str:
        return f"steps={self.steps}"
