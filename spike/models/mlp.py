"""Spiking multi-layer perceptron: Flatten -> (Linear -> LIF) per layer, time-first input."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from spike.layers import Delayed, SpikeLinear
from spike.neurons import LIF


class SpikingMLP(nn.Module):
    """``[T, B, *input_shape] -> spikes [T, B, num_classes]``; classify by spike count.

    Layers, in order: ``flatten``, then per layer ``k = 1, 2, ...`` ``fc{k}``
    (:class:`~spike.layers.SpikeLinear`: an ``nn.Linear`` that adds weight rows per input spike
    when its input is binary, ``F.linear`` otherwise; ``event="off"`` makes every layer dense),
    ``lif{k}`` (:class:`~spike.neurons.LIF`) and, with ``dropout``, ``dropout{k}`` between hidden
    layers; compiled programs name their nodes after them (``fc1``, ``lif1``, ...). Checkpoints
    written when the layers were ``net.0``, ``net.1``, ... still load (their keys are renamed).

    ``synaptic_delay`` (steps, default 0) wraps every ``nn.Linear`` in
    :class:`~spike.layers.Delayed`, as Loihi's synapses deliver one step late: such a model equals
    its program compiled for a Loihi target. Its output trails its input by
    ``synaptic_delay * synaptic_depth`` steps (:attr:`latency`); give it that many more steps.
    With 0 the layers are plain (no ``.module`` in their state-dict keys).
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
        event: str = "auto",
    ) -> None:
        d = int(synaptic_delay)
        if d < 0:
            raise ValueError(f"SpikingMLP: synaptic_delay must be >= 0, got {synaptic_delay!r}")
        super().__init__()
        self.flatten = nn.Flatten(start_dim=2)
        sizes = [in_features, *hidden, num_classes]
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            linear = SpikeLinear(n_in, n_out, event=event)
            self.add_module(f"fc{k}", Delayed(linear, d) if d else linear)
            self.add_module(f"lif{k}", LIF(beta=beta, threshold=threshold, reset=reset, surrogate=surrogate,
                                           reset_delay=reset_delay))
            if dropout > 0 and k < len(sizes) - 1:
                self.add_module(f"dropout{k}", nn.Dropout(dropout))
        self.synaptic_delay = d
        #: synaptic layers on the longest path from the input to the output
        self.synaptic_depth = len(sizes) - 1

    @property
    def latency(self) -> int:
        """Steps by which the output trails the input: ``synaptic_delay * synaptic_depth``."""
        return self.synaptic_delay * self.synaptic_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():  # in the order added
            x = layer(x)
        return x

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Keys of the old layout, ``net.{i}.rest`` (layer ``i`` of an inner ``nn.Sequential``), are
        renamed ``{name of layer i}.rest`` before loading; the layers are the same, in the same order."""
        old, names = prefix + "net.", list(self._modules)
        for key in [k for k in state_dict if k.startswith(old)]:
            index, _, rest = key[len(old):].partition(".")
            if index.isdigit() and int(index) < len(names):
                state_dict[f"{prefix}{names[int(index)]}.{rest}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
