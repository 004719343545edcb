"""A recurrently connected LIF layer: ``I_t = x_t + V s_{t-1} (+ b)``, multi-step ``[T, B, n]``.

The recurrence makes each step depend on the previous step's spikes through a matrix, so the
time loop runs step by step (the neuron update itself is the single-step LIF). The compiler
lowers it to a population plus a dense projection of delay 1 onto itself.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spike.neurons import LIF


class RecurrentLIF(nn.Module):
    model = "lif"
    step_mode = "multi"

    def __init__(self, size: int, bias: bool = False, **lif_kwargs: Any) -> None:
        super().__init__()
        if lif_kwargs.get("step_mode", "single") != "single":
            raise ValueError("RecurrentLIF: the inner neuron is stepped one step at a time; do not pass step_mode")
        lif_kwargs["step_mode"] = "single"
        self.size = int(size)
        self.neuron = LIF(**lif_kwargs)
        self.recurrent = nn.Linear(self.size, self.size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or x.shape[-1] != self.size:
            raise ValueError(f"RecurrentLIF expects [T, B, {self.size}], got {list(x.shape)}")
        self.neuron.reset_state()
        s = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            s = self.neuron(x[t] + self.recurrent(s))
            out.append(s)
        return torch.stack(out)
