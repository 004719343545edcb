"""Spiking multi-layer perceptron: Flatten -> (Linear -> LIF) per layer, time-first input."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from spike.neurons import LIF


class SpikingMLP(nn.Module):
    """``[T, B, *input_shape] -> spikes [T, B, num_classes]``; classify by spike count."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (128,),
        beta: float = 0.9,
        threshold: float = 1.0,
        reset: str = "subtract",
        surrogate: str = "atan",
        reset_delay: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(start_dim=2)]
        sizes = [in_features, *hidden, num_classes]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            layers.append(LIF(beta=beta, threshold=threshold, reset=reset, surrogate=surrogate, reset_delay=reset_delay))
            if dropout > 0 and i < len(sizes) - 2:
                layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
