"""Frontends: models and graphs in, un-optimised Programs out (``registry`` says which lowers what).

Registered here: the torch.fx tracer (any ``torch.nn.Module``, asked last), snnTorch models in the
tutorials' style (a time loop with the state passed by hand), models holding SpikingJelly modules
(an optional dependency, imported when such a model arrives), and NIR graphs or ``.nir`` files.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from spike.compiler.frontends import nir_import, snntorch, torch_fx
from spike.compiler.frontends.registry import Frontend, frontend_for, register
from spike.compiler.ir.program import Program

__all__ = ["Frontend", "frontend_for", "register"]


def _lower_torch(model: Any, example_input: Any, *, input_signal: str | None = None,
                 metadata: dict[str, Any] | None = None, **_: Any) -> Program:
    return torch_fx.trace(model, example_input, input_signal=input_signal, metadata=metadata)


def _lower_tutorial(model: Any, example_input: Any, *, input_signal: str | None = None,
                    metadata: dict[str, Any] | None = None, **_: Any) -> Program:
    return snntorch.trace_tutorial(model, example_input, input_signal=input_signal, metadata=metadata)


def _holds_spikingjelly(model: Any) -> bool:
    modules = getattr(model, "modules", None)
    return callable(modules) and any(type(m).__module__.startswith("spikingjelly") for m in modules())


def _lower_spikingjelly(model: Any, example_input: Any, *, input_signal: str | None = None,
                        metadata: dict[str, Any] | None = None, **_: Any) -> Program:
    try:  # spikingjelly is optional: its frontend module is imported when such a model arrives
        from spike.compiler.frontends import spikingjelly
    except ModuleNotFoundError as exc:
        raise ImportError(f"compiling a SpikingJelly model needs spikingjelly 2.0 ({exc}); install it with "
                          "`pip install --no-deps spikingjelly==2.0.0 'loguru>=0.7,<1'`") from exc
    return spikingjelly.trace(model, example_input, input_signal=input_signal, metadata=metadata)


def _is_nir(model: Any) -> bool:
    if isinstance(model, (str, Path)):
        return Path(model).suffix == ".nir"
    nir = sys.modules.get("nir")  # a NIRGraph exists only where nir has been imported
    return nir is not None and isinstance(model, nir.NIRGraph)


def _lower_nir(model: Any, example_input: Any = None, *, metadata: dict[str, Any] | None = None,
               nir_options: dict[str, Any] | None = None, **_: Any) -> Program:
    program = nir_import.from_nir(model, **(nir_options or {}))
    return program.with_graph(program.graph, metadata={**program.metadata, **(metadata or {})})


register(Frontend("nir", _is_nir, _lower_nir, needs_example=False))
register(Frontend("spikingjelly", _holds_spikingjelly, _lower_spikingjelly))
register(Frontend("snntorch_loop", snntorch.is_tutorial_style, _lower_tutorial))
register(Frontend("torch_fx", lambda model: hasattr(model, "named_modules"), _lower_torch), fallback=True)
