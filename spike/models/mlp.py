"""Spiking multi-layer perceptron: Flatten -> (Linear -> LIF) per layer, time-first input."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from spike.layers import Delayed
from spike.neurons import LIF


class SpikingMLP(nn.Module):
    """``[T, B, *input_shape] -> spikes [T, B, num_classes]``; classify by spike count.

    ``synaptic_delay`` (steps, default 0) wraps every ``nn.Linear`` in
    :class:`~spike.layers.Delayed`, as Loihi's synapses deliver one step late: such a model equals
    its program compiled for a Loihi target. Its output trails its input by
    ``synaptic_delay * synaptic_depth`` steps (:attr:`latency`); give it that many more steps.
    With 0 the layers are plain (the state-dict keys of older checkpoints).
    """

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
        synaptic_delay: int = 0,
    ) -> None:
        super().__init__()
        d = int(synaptic_delay)
        if d < 0:
            raise ValueError(f"SpikingMLP: synaptic_delay must be >= 0, got {synaptic_delay!r}")
        self.synaptic_delay = d
        layers: list[nn.Module] = [nn.Flatten(start_dim=2)]
        sizes = [in_features, *hidden, num_classes]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            linear = nn.Linear(n_in, n_out)
            layers.append(Delayed(linear, d) if d else linear)
            layers.append(LIF(beta=beta, threshold=threshold, reset=reset, surrogate=surrogate, reset_delay=reset_delay))
            if dropout > 0 and i < len(sizes) - 2:
                layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        #: synaptic layers on the longest path from the input to the output
        self.synaptic_depth = len(sizes) - 1

    @property
    def latency(self) -> int:
        """Steps by which the output trails the input: ``synaptic_delay * synaptic_depth``."""
        return self.synaptic_delay * self.synaptic_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
