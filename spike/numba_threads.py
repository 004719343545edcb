"""Run numba's parallel kernels on no more threads than they have work items."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_outer = threading.local()  # .counts: the thread counts in force when each open threads_at_most began


@contextlib.contextmanager
def threads_at_most(items: int) -> Iterator[None]:
    """Cap numba's thread count at ``items`` (at least 1) inside the block, for kernels that are
    parallel over ``items`` (samples, channel blocks): one item then runs on the calling thread,
    without waking worker threads, which costs milliseconds per call when the cores are busy."""
    import numba

    before = numba.get_num_threads()
    counts = _outer.__dict__.setdefault("counts", [])
    counts.append(before)
    numba.set_num_threads(max(1, min(before, int(items))))
    try:
        yield
    finally:
        counts.pop()
        numba.set_num_threads(before)


def threads_allowed() -> int:
    """numba's thread count before the outermost open :func:`threads_at_most` capped it (the
    caller's choice), or the current count outside any."""
    import numba

    counts = getattr(_outer, "counts", None)
    return counts[0] if counts else numba.get_num_threads()


@contextlib.contextmanager
def threads_up_to(items: int) -> Iterator[None]:
    """numba's thread count set to ``items`` capped by :func:`threads_allowed` (at least 1) inside
    the block: for a kernel with more work items than an enclosing :func:`threads_at_most` allowed
    for (e.g. target blocks of a batch of one)."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(threads_allowed(), int(items))))
    try:
        yield
    finally:
        numba.set_num_threads(before)
