"""``numba.cuda`` as the GPU machines have it (numba-cuda 0.30, numpy 2.5): two fixes.

numba-cuda (0.30.4 seen) registers its numpy overloads when it compiles its first kernel
(``numba.cuda.np.arrayobj``), among them ``overload(np.row_stack)``. numpy 2.0 deprecated
``row_stack`` for ``vstack`` and numpy 2.5 removed it, so on numpy >= 2.5 every first CUDA compile
fails with ``AttributeError: module 'numpy' has no attribute 'row_stack'`` (seen on the GPU
machine's image: numpy 2.5.2, numba 0.68.0, numba-cuda 0.30.4). :func:`numba_cuda` gives numpy back
the old name, ``row_stack(tup) = vstack(tup)`` as in numpy < 2.5, before it hands out
``numba.cuda``; every module of ours that uses ``numba.cuda`` gets it from here. Nothing is done
where numpy still has ``row_stack``; no installed file is edited. And the helpers that CUDA kernels
inline are registered with numba-cuda's own ``register_jitable`` (:func:`cuda_register_jitable`).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import numpy as np

__all__ = ["numba_cuda", "restore_row_stack", "cuda_register_jitable"]


def _row_stack(tup: Any, *, dtype: Any = None, casting: str = "same_kind") -> np.ndarray:
    """``np.vstack(tup)``: numpy's ``row_stack`` before 2.5."""
    return np.vstack(tup, dtype=dtype, casting=casting)


def restore_row_stack() -> bool:
    """Give numpy a ``row_stack`` (= ``vstack``) if it has none; True when it was missing."""
    if hasattr(np, "row_stack"):
        return False
    np.row_stack = _row_stack
    return True


def numba_cuda() -> ModuleType:
    """``numba.cuda`` (the GPU target, or the simulator under ``NUMBA_ENABLE_CUDASIM=1``), imported
    after :func:`restore_row_stack`."""
    restore_row_stack()
    from numba import cuda  # the CUDA target loads on demand: importing it needs no GPU

    return cuda


def cuda_register_jitable(**options: Any) -> Callable[[Callable], Callable]:
    """``register_jitable(**options)`` for helpers of CUDA kernels: numba-cuda's own
    (``numba.cuda.extending``, target "cuda"), which keeps its typing registries apart from Numba's
    CPU ones (Numba's ``numba.extending.register_jitable(inline="always")`` helpers fail to type in
    numba-cuda 0.30 kernels: ``mod(omitted, omitted)``); Numba's where numba-cuda is not installed
    (its built-in CUDA target types them). The function itself stays callable from Python (the
    simulator calls it)."""
    try:
        from numba.cuda.extending import register_jitable
    except ImportError:  # Numba's built-in CUDA target
        from numba.extending import register_jitable
    return register_jitable(**options)
