"""Numba's CUDA simulator hands a block's threads one shared array per ``cuda.shared.array``
call site, created by the first thread that asks: ``FakeCUDAShared.array`` checks and then sets
its dict without a lock, so two simulated threads can each create their own "shared" array and
read garbage from the other's writes (seen as stray indices in our delivery kernels). We replace
it by the same lookup under a lock; the real GPU target is untouched."""
from __future__ import annotations

import sys
import threading
from typing import Any

__all__ = ["lock_shared_arrays"]

_LOCK = threading.Lock()


def _locked_array(self: Any, shape: Any, dtype: Any) -> Any:
    import numpy as np
    from numba.core import types
    from numba.np import numpy_support

    if shape == 0:  # dynamic shared memory: one preallocated buffer, no race
        return _ORIGINAL(self, shape, dtype)
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    caller = sys._getframe(1)
    key = (caller.f_code.co_filename, caller.f_lineno)  # the simulator's key: file and line
    with _LOCK:
        res = self._allocations.get(key)
        if res is None:
            res = self._allocations[key] = np.empty(shape, dtype)
    return res


_ORIGINAL: Any = None


def lock_shared_arrays() -> bool:
    """Patch the simulator's shared-array allocation (idempotent); False if it has none."""
    global _ORIGINAL
    try:
        from numba.cuda.simulator import kernelapi
    except ImportError:
        return False
    shared = getattr(kernelapi, "FakeCUDAShared", None)
    if shared is None or not hasattr(shared, "array"):
        return False
    if shared.array is not _locked_array:
        _ORIGINAL = shared.array
        shared.array = _locked_array
    return True
