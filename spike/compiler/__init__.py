"""Graph compiler: PyTorch/snnTorch/SpikingJelly models and NIR graphs -> passes -> event-driven IR
``Program`` (``compile`` and the pipelines: :mod:`spike.compiler.pipeline`)."""
from __future__ import annotations

from spike.compiler.ir.nodes import NODE_TYPES
from spike.compiler.ir.program import Program, ProgramBuilder, ProgramError
from spike.compiler.pipeline import compile

__all__ = ["compile", "Program", "ProgramBuilder", "ProgramError", "NODE_TYPES"]
