"""Model families; ``build_model(kind, **kwargs)`` rebuilds one from a checkpoint's config."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn


def _mlp(**kwargs: Any) -> nn.Module:
    from spike.models.mlp import SpikingMLP

    return SpikingMLP(**kwargs)


def _cnn(**kwargs: Any) -> nn.Module:
    from spike.models.cnn.model import SpikingCNN

    return SpikingCNN(**kwargs)


def _spikegpt(**kwargs: Any) -> nn.Module:
    from spike.models.spikegpt.model import SpikeGPT

    return SpikeGPT(**kwargs)


MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {"mlp": _mlp, "cnn": _cnn, "spikegpt": _spikegpt}


def build_model(kind: str, **kwargs: Any) -> nn.Module:
    if kind not in MODEL_BUILDERS:
        raise ValueError(f"unknown model kind {kind!r}; known: {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[kind](**kwargs)
