"""Finding the events of a step in the numba kernels: the non-zero entries of a row, 64 at a time.

A row's entries are compared with zero 64 at once into a bit mask (:func:`mask64`: one vector
compare on a contiguous row; a NaN is an event, -0.0 is none), whose set bits become indices
(``trailing_zeros``, then clear the lowest bit). :func:`gather` lists a projection's input events
(it writes a few indices ahead without a branch, so its list needs :data:`CHUNK` entries of room);
:func:`list_nonzero` lists a population's spikes into a list exactly as long as the row.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic, overload

MASK = 64  # inputs tested at once for events (one vector compare into a 64-bit mask)
CHUNK = 16  # room past the inputs that an index list needs (:func:`gather` writes a few indices ahead)


@intrinsic
def popcount(typingctx, x):
    """``popcount(x)``: the set bits of the unsigned integer ``x`` (LLVM's ``ctpop``), as int64."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        (v,) = args
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v.type, [v.type]),
                                            f"llvm.ctpop.i{v.type.width}")
        r = builder.call(fn, [v])
        return builder.zext(r, ir.IntType(64)) if v.type.width < 64 else r

    return types.int64(x), codegen


@intrinsic
def _mask64_vector(typingctx, x, j):
    """:func:`mask64` of a C-contiguous ``x``: one load of 64 elements, one vector compare."""
    if not isinstance(x, types.Array) or x.ndim != 1 or x.layout != "C":
        return None

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        index = context.cast(builder, args[1], idxty, types.intp)
        vec = ir.VectorType(context.get_data_type(aryty.dtype), MASK)
        v = builder.load(builder.bitcast(builder.gep(ary.data, [index]), vec.as_pointer()),
                         align=aryty.dtype.bitwidth // 8)
        if isinstance(aryty.dtype, types.Float):  # unordered or not equal: NaN is an event, -0.0 is none
            c = builder.fcmp_unordered("!=", v, ir.Constant(vec, None))
        else:
            c = builder.icmp_unsigned("!=", v, ir.Constant(vec, None))
        return builder.bitcast(c, ir.IntType(MASK))

    return types.uint64(x, j), codegen


def mask64(x, j):
    """Bit ``k`` (k < 64) set where ``x[j + k] != 0`` (a NaN is set, -0.0 is not); compiled: one
    vector compare (:func:`_mask64_vector`), or a loop over a strided ``x``."""
    return np.packbits(np.asarray(x[j:j + MASK]) != 0, bitorder="little").view("<u8")[0]


@overload(mask64, inline="always")
def _mask64_compiled(x, j):
    if x.layout == "C":
        return lambda x, j: _mask64_vector(x, j)

    def strided(x, j):
        mask = np.uint64(0)
        for k in range(MASK):
            if x[j + k] != 0:
                mask |= np.uint64(1) << np.uint64(k)
        return mask

    return strided


@njit(cache=True, inline="always")
def _set_bits(mask, c, out, m):
    """``c + k`` for every set bit ``k`` of ``mask`` (ascending) into ``out[m:]``; returns the next
    free position."""
    one = np.uint64(1)
    while mask != 0:
        out[m] = c + np.int64(trailing_zeros(mask))
        m += 1
        mask &= mask - one
    return m


@njit(cache=True, inline="always")
def gather(x, idx):
    """Indices of the non-zero entries of ``x`` into ``idx`` (room for ``x.shape[0] + CHUNK``);
    returns their number. ``MASK`` inputs at a time are compared with zero at once into a bit mask
    (:func:`mask64`: -0.0 is no event); its set bits become indices, the first four without a
    branch (each written whether set or not; the count advances by the mask's population, so a
    write past it is written over later), any more in a loop."""
    n = x.shape[0]
    one = np.uint64(1)
    m = 0
    full = n - n % MASK
    for c in range(0, full, MASK):
        mask = mask64(x, c)
        cnt = popcount(mask)
        idx[m] = c + np.int64(trailing_zeros(mask))  # 64 for an empty mask: an index written over
        mask &= mask - one
        idx[m + 1] = c + np.int64(trailing_zeros(mask))
        mask &= mask - one
        idx[m + 2] = c + np.int64(trailing_zeros(mask))
        mask &= mask - one
        idx[m + 3] = c + np.int64(trailing_zeros(mask))
        mask &= mask - one
        _set_bits(mask, c, idx, m + 4)
        m += cnt
    for j in range(full, n):
        idx[m] = j
        m += x[j] != 0
    return m


@njit(cache=True, inline="always")
def list_nonzero(x, index):
    """The positions of the non-zeros of ``x`` into ``index`` (ascending, only the first count of
    them written: ``index`` needs no room past ``x``); returns their number. :func:`mask64` finds
    them 64 at a time, so a sparse row costs little more than reading it."""
    n = x.shape[0]
    m = 0
    full = n - n % MASK
    for c in range(0, full, MASK):
        m = _set_bits(mask64(x, c), c, index, m)
    for j in range(full, n):
        if x[j] != 0:
            index[m] = j
            m += 1
    return m
