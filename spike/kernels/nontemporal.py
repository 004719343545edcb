"""Non-temporal stores of a row, for kernel outputs that nothing reads while they would be cached.

A store to a line that is not in the cache first reads that line (read for ownership) and later
writes it back; a non-temporal store writes whole 64-byte lines to memory without the read and
without evicting the cache's working set. :func:`stream_row` copies a row so: plain stores up to
the first 64-byte boundary of ``dst``, one non-temporal vector store per 64 bytes, plain stores for
the rest (all of it plainly when ``dst`` is not aligned to its element size). Non-temporal stores
are weakly ordered: a work item that made them ends with :func:`store_fence` before another thread
may read what it wrote. The values stored are the values copied, bit for bit.
"""
from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from spike.kernels.max_pool import _I32, _I64, _vec_at

__all__ = ["LINE_BYTES", "stream_row", "store_fence"]

LINE_BYTES = 64  # one cache line: one vector store of 16 float32 or 8 float64


@intrinsic
def _address(typingctx, a):
    """The address of ``a[0]`` as an int64."""

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, _I64)

    return types.int64(a), codegen


@intrinsic
def _stream_lines(typingctx, src, dst, n):
    """``dst[:n] = src[:n]`` by non-temporal stores of one line each (``n`` a multiple of the
    elements per line, ``dst`` aligned to a line; ``src`` may be unaligned)."""

    def codegen(context, builder, sig, args):
        elem = context.get_value_type(sig.args[0].dtype)
        lanes = LINE_BYTES // context.get_abi_sizeof(elem)
        vty = ir.VectorType(elem, lanes)
        nontemporal = builder.module.add_metadata([ir.Constant(_I32, 1)])
        with cgutils.for_range(builder, builder.udiv(args[2], ir.Constant(_I64, lanes))) as loop:
            off = builder.mul(loop.index, ir.Constant(_I64, lanes))
            value = builder.load(_vec_at(builder, context, sig.args[0], args[0], off, vty), align=1)
            store = builder.store(value, _vec_at(builder, context, sig.args[1], args[1], off, vty), align=LINE_BYTES)
            store.set_metadata("nontemporal", nontemporal)
        return context.get_dummy_value()

    return types.void(src, dst, types.int64), codegen


@intrinsic
def store_fence(typingctx):
    """A sequentially consistent fence (``mfence`` on x86): orders the non-temporal stores before
    it with every later memory access."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@njit(cache=True, inline="always")
def stream_row(src, dst, n):
    """``dst[:n] = src[:n]`` (1-D arrays of one dtype), the aligned lines by non-temporal stores."""
    size = dst.itemsize
    lanes = LINE_BYTES // size
    at = _address(dst)
    head = n
    if at % size == 0:
        head = min(n, (LINE_BYTES - at % LINE_BYTES) % LINE_BYTES // size)
    body = (n - head) // lanes * lanes
    for k in range(head):
        dst[k] = src[k]
    if body > 0:
        _stream_lines(src[head:head + body], dst[head:head + body], body)
    for k in range(head + body, n):
        dst[k] = src[k]
