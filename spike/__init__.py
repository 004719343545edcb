"""spike: train spiking networks, compile them to an event-driven IR, run and count them.

The names below load on first use (PEP 562), so ``import spike`` and ``spike --help`` do not
import torch: ``spike.LIF``, ``spike.lif_step``, ``spike.lif_multistep``, ``spike.surrogate``, ...
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version as _version
from typing import Any

try:
    __version__ = _version("spike-sim")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0"

#: public name -> the module that defines it (spiking neurons and surrogate gradients)
_EXPORTS = {
    "IF": "spike.neurons",
    "LI": "spike.neurons",
    "LIF": "spike.neurons",
    "CubaLIF": "spike.neurons",
    "lif_step": "spike.neurons",
    "lif_multistep": "spike.kernels.lif",
}

__all__ = ["__version__", "surrogate", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "surrogate":
        return importlib.import_module("spike.surrogate")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spike' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
