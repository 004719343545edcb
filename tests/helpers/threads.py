"""A computation run on one Numba thread and on all of them, for the tests that a kernel's results
do not depend on the thread count."""
from __future__ import annotations

from typing import Callable, TypeVar

import numba

R = TypeVar("R")


def on_one_and_all_threads(fn: Callable[[], R]) -> list[R]:
    """``[fn() on 1 thread, fn() on NUMBA_NUM_THREADS]``; the thread count is restored after."""
    before = numba.get_num_threads()
    try:
        out = []
        for n in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(n)
            out.append(fn())
        return out
    finally:
        numba.set_num_threads(before)
