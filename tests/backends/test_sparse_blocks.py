"""The numba backend's Sparse kernel on its blocked layout (``layout.SparseBlocks``) against the plain
CSR loop, term by term: arbitrary float32 weights (sums that depend on their order), rows naming a
target twice, stored zeros, real inputs (-0.0, +-1, others), several blocks and thread lanes, coded
(few distinct weights) and plain weights; fixed point. Equal bit for bit, counts included."""
from __future__ import annotations

import numpy as np
import pytest

from spike.backends.layout import BLOCK_MAX, block_size, csr_row_nnz, sparse_blocks
from spike.backends.numba import projections as P


def random_csr(rng, n_in, n_out, fan_out, values):
    """A random CSR; ``values``: "one" (every weight 0.3: the uniform kernel), "few" (41 distinct
    weights), "some" (hundreds) or "any" (float32)."""
    counts = rng.integers(0, 2 * fan_out + 1, n_in)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = rng.integers(0, n_out, int(indptr[-1])).astype(np.int64)
    for i in range(0, n_in, 7):  # a target named twice in a row
        if counts[i] >= 2:
            indices[indptr[i] + 1] = indices[indptr[i]]
    if values == "one":
        return indptr, indices, np.full(indices.shape[0], 0.3, np.float32)
    if values == "few":
        data = (rng.integers(-20, 21, indices.shape[0]) * 0.1).astype(np.float32)
    elif values == "some":
        data = (rng.integers(-1000, 1001, indices.shape[0]) * 0.001).astype(np.float32)
    else:
        data = rng.standard_normal(indices.shape[0]).astype(np.float32)
    data[rng.random(data.shape[0]) < 0.05] = 0
    return indptr, indices, data


def reference(src, indptr, indices, data, bias, T, delay, start, check, fixed=False, weight_exp=0):
    """The CSR loop: per step, per event in source order, its row in CSR order (float32 adds; fixed
    point: int64 sums shifted and wrapped); counts per (step, sample)."""
    _, B, n_in = src.shape
    n_out = bias.shape[0] if bias.shape[0] else int(indices.max(initial=0)) + 1
    out = np.zeros((T, B, n_out), src.dtype)
    nnz = csr_row_nnz(indptr, data)
    acs = np.zeros(B, np.int64)
    macs = np.zeros(B, np.int64)
    for b in range(B):
        for t in range(start, T):
            x = src[t - delay, b]
            acc = np.zeros(n_out, np.int64) if fixed else bias.copy()
            nops, real = 0, False
            for i in np.nonzero(x)[0]:
                v = x[i]
                nops += nnz[i]
                real |= v != 1 and v != -1
                for k in range(indptr[i], indptr[i + 1]):
                    if fixed:
                        acc[indices[k]] += int(data[k])
                    elif v == 1:
                        acc[indices[k]] = np.float32(acc[indices[k]] + data[k])
                    else:
                        acc[indices[k]] = np.float32(acc[indices[k]] + np.float32(data[k] * v))
            if fixed:
                s = acc * (1 << weight_exp) if weight_exp >= 0 else acc >> -weight_exp
                out[t, b] = ((s + 2**31) & (2**32 - 1)) - 2**31
            else:
                out[t, b] = acc
            if check and real:
                macs[b] += nops
            else:
                acs[b] += nops
    return out, acs, macs


def run_blocked(src, L, row_nnz, bias, T, delay, start, check, lanes, fixed=False, weight_exp=0):
    _, B, _ = src.shape
    n_out = bias.shape[0]
    out = np.full((T, B, n_out), 7, src.dtype)  # every element is written
    acs = np.zeros(B, np.int64)
    macs = np.zeros(B, np.int64)
    dense = np.zeros(B, np.int64)
    P.sparse_kernel(fixed, L.coded, L.table.shape[0] == 1)(src, L.ptr, L.off, L.w, L.table, row_nnz,
                                                           np.zeros(0, np.float32) if fixed else bias, weight_exp,
                                                           out, 0, T, delay, start, acs, macs, check, L.block, lanes,
                                                           dense, 5)
    assert (dense == 5 * T).all()  # the dense-equivalent pairs, per step
    return out, acs, macs


def assert_blocked_equals_csr(src, L, csr, row_nnz, bias, T, delay, start, check, lanes, **fixed):
    """The blocked kernel's output and counters equal :func:`reference`'s over ``csr`` = (indptr,
    indices, data), float outputs bit for bit."""
    got = run_blocked(src, L, row_nnz, bias, T, delay, start, check, lanes, **fixed)
    want = reference(src, *csr, bias, T, delay, start, check, **fixed)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.view(np.uint32) if g.dtype == np.float32 else g,
                                      w.view(np.uint32) if w.dtype == np.float32 else w)


@pytest.mark.parametrize("values,codes", [("any", np.float32), ("few", np.uint8), ("some", np.uint16),
                                          ("one", np.uint8)])
@pytest.mark.parametrize("block,lanes", [(None, 1), (37, 1), (37, 3), (64, 2)])
@pytest.mark.parametrize("n_in", [47, 48])  # odd and even, both short of one 64-input mask
def test_float_equals_csr_loop(values, codes, block, lanes, n_in):
    rng = np.random.default_rng(n_in + 7 * lanes)
    T, B, n_out = 7, 3, 150
    indptr, indices, data = random_csr(rng, n_in, n_out, 120 if values == "any" else 10, values)  # any: > CODE_MAX
    L = sparse_blocks(indptr, indices, data, n_out, block=block)
    assert L.w.dtype == codes and L.coded == (codes != np.float32) and (L.table.shape[0] == 1) == (values == "one")
    bias = rng.standard_normal(n_out).astype(np.float32)
    src = rng.standard_normal((T, B, n_in)).astype(np.float32)
    src[rng.random(src.shape) < 0.5] = 0
    src[rng.random(src.shape) < 0.1] = 1
    src[rng.random(src.shape) < 0.05] = -1
    src[rng.random(src.shape) < 0.05] = -0.0
    src[:, 1] = (src[:, 1] != 0).astype(np.float32)  # a sample of spikes only: its pairs are syn_ops
    row_nnz = csr_row_nnz(indptr, data)
    for delay, start, check in ((1, 2, True), (0, 0, False)):
        assert_blocked_equals_csr(src, L, (indptr, indices, data), row_nnz, bias, T, delay, start, check, lanes)


@pytest.mark.parametrize("block,lanes", [(None, 1), (29, 2)])
@pytest.mark.parametrize("uniform", [False, True])
def test_fixed_point_equals_csr_loop(block, lanes, uniform):
    rng = np.random.default_rng(3)
    T, B, n_in, n_out = 6, 2, 40, 90
    indptr, indices, _ = random_csr(rng, n_in, n_out, 8, "few")
    data = rng.integers(-128, 128, indices.shape[0]).astype(np.int16)
    if uniform:
        data[:] = -37
    L = sparse_blocks(indptr, indices, data, n_out, block=block)
    assert (L.table.shape[0] == 1) == uniform
    src = (rng.random((T, B, n_in)) < 0.4).astype(np.int32)
    row_nnz = csr_row_nnz(indptr, data)
    bias = np.zeros(n_out, np.int32)
    for weight_exp in (-3, 2):
        assert_blocked_equals_csr(src, L, (indptr, indices, data), row_nnz, bias, T, 1, 1, False, lanes, fixed=True,
                                  weight_exp=weight_exp)


def test_layout_keeps_each_row_in_csr_order():
    rng = np.random.default_rng(0)
    indptr, indices, data = random_csr(rng, 30, 200, 10, "any")
    L = sparse_blocks(indptr, indices, data, 200, block=16)
    assert L.nblk == 13 and L.off.dtype == np.uint16 and L.w.dtype == np.uint16  # < 4096 distinct: coded
    weights = L.table[L.w]
    for i in range(30):
        row = list(zip(indices[indptr[i]:indptr[i + 1]], data[indptr[i]:indptr[i + 1]].view(np.uint32)))
        for k in range(L.nblk):
            seg = slice(L.ptr[i, k], L.ptr[i, k + 1])
            got = list(zip(k * 16 + L.off[seg].astype(np.int64), weights[seg].view(np.uint32)))
            assert got == [(j, w) for j, w in row if j // 16 == k]


def test_block_sizes():
    assert block_size(10, 12, 40) == (12, 1)
    block, nblk = block_size(100_000, 100_000, 10_000_000)  # fan-out 100: offsets fit uint16, no more
    assert nblk == 2 and block * nblk >= 100_000
    block, nblk = block_size(100_000, 100_000, 100_000_000)  # fan-out 1000: blocks near the L1 size
    assert nblk > 2 and block <= BLOCK_MAX
