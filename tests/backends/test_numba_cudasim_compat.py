"""The compatibility fix for numba's CUDA simulator: all threads of a block get one shared array
per call site, even when they ask at the same moment."""
from __future__ import annotations

import sys
import threading

import numpy as np

from spike.compat.numba_cudasim import lock_shared_arrays


def _race(shared, n_threads: int = 16) -> set[int]:
    got: list[int] = []
    gate = threading.Barrier(n_threads)

    def thread() -> None:
        gate.wait()
        got.append(id(shared.array(8, np.int32)))  # one call site for every thread

    threads = [threading.Thread(target=thread) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return set(got)


def test_threads_of_a_block_share_one_array_per_call_site():
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    assert lock_shared_arrays() and lock_shared_arrays()  # idempotent
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over often, as the simulator's barriers do
    try:
        for _ in range(20):
            assert len(_race(FakeCUDAShared(0))) == 1
    finally:
        sys.setswitchinterval(interval)
    shared = FakeCUDAShared(0)
    a = shared.array(4, np.float32)
    b = shared.array(4, np.float32)  # another line: another array
    assert a is not b and a.dtype == np.float32 and a.shape == (4,)
