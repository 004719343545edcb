"""``stream_row``: a row copied with non-temporal stores holds the values copied, whatever its alignment."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from spike.kernels.nontemporal import LINE_BYTES, store_fence, stream_row


@njit(cache=True)
def _copy(src, dst, n):
    stream_row(src, dst, n)
    store_fence()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_offset_and_length(dtype) -> None:
    rng = np.random.default_rng(0)
    lanes = LINE_BYTES // np.dtype(dtype).itemsize
    for offset in range(lanes + 3):  # every head length, on a 64-byte aligned base
        for n in (0, 1, lanes - 1, lanes, lanes + 1, 3 * lanes + 5, 257):
            src = rng.standard_normal(n + 7).astype(dtype)
            base = np.zeros(n + 2 * lanes + 8, dtype)
            start = (-base.ctypes.data % LINE_BYTES) // base.itemsize + offset
            dst = base[start:start + n]
            want = base.copy()
            want[start:start + n] = src[5:5 + n]
            _copy(src[5:5 + n], dst, n)  # an unaligned source
            assert np.array_equal(base, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_row_not_aligned_to_its_element_size_is_copied_plainly(dtype) -> None:
    size = np.dtype(dtype).itemsize
    raw = np.zeros(size * 70 + 3, np.uint8)
    dst = raw[1:1 + size * 60].view(dtype)  # address 1 mod 4 (or 8): no aligned line exists
    src = np.arange(60, dtype=dtype) - 7.5
    _copy(src, dst, 60)
    assert np.array_equal(dst, src) and not raw[:1].any() and not raw[1 + size * 60:].any()
