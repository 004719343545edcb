"""Run numba's parallel kernels on no more threads than they have work items."""
from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def threads_at_most(items: int) -> Iterator[None]:
    """Cap numba's thread count at ``items`` (at least 1) inside the block, for kernels that are
    parallel over ``items`` (samples, channel blocks): one item then runs on the calling thread,
    without waking worker threads, which costs milliseconds per call when the cores are busy."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(before, int(items))))
    try:
        yield
    finally:
        numba.set_num_threads(before)
