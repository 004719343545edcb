"""The numba Sparse kernel's small fan-out path against the plain CSR loop, bit for bit: the masked
event gather (inputs not a multiple of 64, more than four events in one 64-input word, every input
active, -0.0 and NaN inputs), many events per step (several groups, so the prefetch pipeline crosses
groups and block passes), rows of 0..3 synapses, the compact row pointers of the layout."""
from __future__ import annotations

import numpy as np
import pytest

from spike.backends.layout import csr_row_nnz, sparse_blocks
from spike.backends.numba import events as E

from .test_sparse_blocks import assert_blocked_equals_csr, random_csr


@pytest.mark.parametrize("n_in", [63, 64, 130, 1000])
def test_gather_matches_nonzero(n_in):
    rng = np.random.default_rng(n_in)
    gather = E.njit(lambda x, idx: E.gather(x, idx))
    for density in (0.0, 0.04, 0.3, 1.0):
        for dtype in (np.float32, np.int32):
            x = np.where(rng.random(n_in) < density, rng.integers(1, 5, n_in), 0).astype(dtype)
            if dtype == np.float32:
                x[rng.random(n_in) < 0.05] = -0.0  # no event
                x[rng.random(n_in) < 0.02] = np.nan  # an event
            idx = np.empty(n_in + E.CHUNK, np.int64)
            m = gather(x, idx)
            np.testing.assert_array_equal(idx[:m], np.nonzero(x)[0])
            xs = np.repeat(x, 2)[::2]  # a strided row: the element-wise mask
            m = gather(xs, idx)
            np.testing.assert_array_equal(idx[:m], np.nonzero(x)[0])


def test_compact_row_pointers():
    rng = np.random.default_rng(1)
    indptr, indices, data = random_csr(rng, 50, 300, 6, "few")
    L = sparse_blocks(indptr, indices, data, 300, block=64)
    assert L.ptr.dtype == np.int32 and L.ptr.shape == (50, L.nblk + 1) and not L.ptr.flags.writeable
    np.testing.assert_array_equal(L.ptr[:, 0], indptr[:-1])
    np.testing.assert_array_equal(L.ptr[:, -1], indptr[1:])
    np.testing.assert_array_equal(L.ptr[1:, 0], L.ptr[:-1, -1])
    assert L.nbytes == (50 * L.nblk + 1) * 4 + L.off.nbytes + L.w.nbytes + L.table.nbytes


@pytest.mark.parametrize("fan_out,block,lanes", [(1, None, 1), (3, None, 1), (3, 40, 1), (3, 40, 2), (20, 70, 3)])
@pytest.mark.parametrize("values", ["any", "few"])
def test_many_events_small_rows(fan_out, block, lanes, values):
    rng = np.random.default_rng(fan_out * 10 + lanes)
    T, B, n_in, n_out = 5, 2, 333, 200  # up to ~300 events a step: ten groups
    indptr, indices, data = random_csr(rng, n_in, n_out, fan_out, values)
    L = sparse_blocks(indptr, indices, data, n_out, block=block)
    bias = rng.standard_normal(n_out).astype(np.float32)
    src = rng.standard_normal((T, B, n_in)).astype(np.float32)
    src[rng.random(src.shape) < 0.3] = 0
    src[rng.random(src.shape) < 0.3] = 1
    src[:, 1] = (src[:, 1] != 0).astype(np.float32)
    row_nnz = csr_row_nnz(indptr, data)
    assert_blocked_equals_csr(src, L, (indptr, indices, data), row_nnz, bias, T, 1, 1, True, lanes)


@pytest.mark.parametrize("block,lanes", [(None, 1), (50, 2)])
def test_fixed_point_many_events(block, lanes):
    rng = np.random.default_rng(5)
    T, B, n_in, n_out = 4, 2, 300, 180
    indptr, indices, _ = random_csr(rng, n_in, n_out, 4, "few")
    data = rng.integers(-128, 128, indices.shape[0]).astype(np.int16)
    L = sparse_blocks(indptr, indices, data, n_out, block=block)
    src = (rng.random((T, B, n_in)) < 0.7).astype(np.int32)
    row_nnz = csr_row_nnz(indptr, data)
    bias = np.zeros(n_out, np.int32)
    assert_blocked_equals_csr(src, L, (indptr, indices, data), row_nnz, bias, T, 1, 1, False, lanes, fixed=True,
                              weight_exp=-1)


@pytest.mark.parametrize("n", [1, 63, 64, 130, 1000])
def test_list_nonzero_matches_nonzero_and_writes_no_further(n):
    """A population's spike list (``events.list_nonzero``): the non-zeros in order, nothing written
    past their count, so a list as long as the row suffices."""
    rng = np.random.default_rng(n)
    listed = E.njit(lambda x, index: E.list_nonzero(x, index))
    for density in (0.0, 0.04, 0.5, 1.0):
        for dtype in (np.float32, np.int32):
            x = (rng.random(n) < density).astype(dtype)
            if dtype == np.float32:
                x[rng.random(n) < 0.05] = -0.0  # no spike
                x[rng.random(n) < 0.02] = np.nan  # listed, as x != 0 says
            index = np.full(n + 8, -7, np.int32)
            m = listed(x, index[:n])
            want = np.nonzero(x)[0]
            assert m == len(want)
            np.testing.assert_array_equal(index[:m], want)
            assert (index[m:] == -7).all()


def test_the_python_mask_is_the_compiled_one():
    x = np.zeros(130, np.float32)
    x[[3, 64, 70, 127]] = [1.0, np.nan, 2.0, -1.0]
    x[5] = -0.0
    mask = E.njit(lambda x, j: E.mask64(x, j))
    for j in (0, 64, 66):
        assert E.mask64(x, j) == mask(x, j) == sum(1 << (k - j) for k in (3, 64, 70, 127) if j <= k < j + 64)
