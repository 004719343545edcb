"""The ways into the IR: every frontend says which models it lowers, and ``compile()`` asks them in turn.

A frontend registers where it lives: the torch.fx, snnTorch (time-loop style), SpikingJelly and NIR
frontends in ``spike.compiler.frontends``; a model family's own lowering with the family
(``spike.models.spikegpt.lowering`` registers SpikeGPT's when ``spike.models.spikegpt`` is
imported, as it is wherever a SpikeGPT exists), so the compiler knows no model. The torch.fx
frontend is the fallback, asked last.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from spike.compiler.ir.program import Program


@dataclass(frozen=True)
class Frontend:
    """One frontend. ``lower(model, example_input, input_signal=, metadata=, nir_options=)`` returns
    the un-optimised Program; ``check(target, precision)`` refuses, with a ``ValueError``, a target
    or precision the frontend cannot serve; ``passes`` replaces the float passes of the pipeline
    (a lowering that emits canonical nodes itself)."""

    name: str
    accepts: Callable[[Any], bool]
    lower: Callable[..., Program]
    needs_example: bool = True
    check: Callable[[Any, str], None] | None = None
    passes: tuple[Callable[[Program], Program], ...] | None = None


_FRONTENDS: list[Frontend] = []
_FALLBACK: list[Frontend] = []


def register(frontend: Frontend, fallback: bool = False) -> Frontend:
    """Add ``frontend`` (a later registration of the same name replaces the earlier one);
    ``fallback`` frontends are asked after every other."""
    for table in (_FRONTENDS, _FALLBACK):
        table[:] = [f for f in table if f.name != frontend.name]
    (_FALLBACK if fallback else _FRONTENDS).append(frontend)
    return frontend


def frontend_for(model: Any) -> Frontend:
    """The first registered frontend that accepts ``model``."""
    for frontend in (*_FRONTENDS, *_FALLBACK):
        if frontend.accepts(model):
            return frontend
    names = ", ".join(f.name for f in (*_FRONTENDS, *_FALLBACK))
    raise ValueError(f"no frontend lowers a {type(model).__module__}.{type(model).__name__} (frontends: {names}); "
                     "compile takes a torch.nn.Module, a nir.NIRGraph, or a path to a .nir or saved program file")
