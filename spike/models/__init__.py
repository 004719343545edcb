"""Model families; ``build_model(kind, **kwargs)`` rebuilds one from a checkpoint's config."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from spike.models.cnn.model import SpikingCNN
from spike.models.mlp import SpikingMLP
from spike.models.spikegpt.model import SpikeGPT

MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {"mlp": SpikingMLP, "cnn": SpikingCNN, "spikegpt": SpikeGPT}


def build_model(kind: str, **kwargs: Any) -> nn.Module:
    if kind not in MODEL_BUILDERS:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[kind](**kwargs)
