"""Execution backends for compiled programs: ``run(program, inputs, backend=...)``."""
from spike.backends.engine import NodeContext, run
from spike.backends.registry import OP_KEYS, Backend, BackendError, backend_names, get_backend
from spike.backends.result import OpCounts, RunResult

__all__ = [
    "run", "NodeContext", "Backend", "BackendError", "OP_KEYS", "OpCounts", "RunResult",
    "backend_names", "get_backend",
]
