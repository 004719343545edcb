"""Event-driven linear layer for binary inputs (spikes): ``y = x W^T + b`` without multiplies.

For ``x[N, in]`` with every element 0 or 1 (a spike train flattened to ``N = T*B`` rows)::

    y[n, :]    = b + sum_{i : x[n, i] = 1} W^T[i, :]       (gather-add of weight rows)
    dW^T[i, :] = sum_{n : x[n, i] = 1} g[n, :]             (gather-add of gradient rows)
    dx = g W   (dense, only when x needs a gradient)        db = sum_n g[n, :]

At spike density ``p`` that is ``p * N*in*out`` additions in place of ``N*in*out`` multiply-adds.

Kernels (Numba, float32, CPU; ``SpikeLinear`` in :mod:`spike.layers` is the module):

* :func:`binary_csr`: one pass over ``x`` checks that it is binary and lists its events,
  16 elements at a time (a vector compare and a compress-store of the active indices): ``idx``
  holds the ascending inputs that fired, row after row, split by ``seg[n, c]`` into chunks of
  inputs; ``counts[i]`` counts each input's events. Only the events are kept for backward, not
  ``x``; the backward transposes them (:func:`csr_to_csc`: per input the ascending rows in which
  it fired, split into chunks of rows).
* both sums are one primitive, :func:`_rowsum`: ``out[r, c0:c0+16V] = base + sum_k src[idx[k],
  c0:c0+16V]`` over one segment ``k in [k0, k1)`` (``base`` = ``init`` or ``out[r]`` itself), with
  the ``16V`` columns in ``V`` 16-wide vector registers and the events dealt round-robin to ``L``
  partial sums (independent add chains). It is emitted as LLVM IR (an ``@intrinsic``), so the
  accumulators stay in registers whatever the optimiser does with the loops around it.
  :func:`_gather_sum` runs it chunk by chunk, and in a chunk over column blocks of 64 (``prange``)
  and all rows: the chunk x block slice of ``src`` (about 48 KiB) stays in L1 while every row
  reads it.
* ``src`` is padded (:func:`padded_rows`): its row stride is whole blocks plus 16 floats, so that a
  block's rows do not all fall into the same cache sets (with ``out = 512`` the 2 KiB stride maps
  every row of a block to 2 of the 64 L1 sets), and vector loads past the last column stay inside
  the row. ``W^T`` is padded once per weight version (:class:`PaddedWeight`; a plain row copy
  when the weight is stored transposed, as ``SpikeLinear`` stores it), ``g`` once per backward.

Summation order: per segment, the events in ascending order dealt to ``L`` partial sums, then
``base + ((a_0 + a_1) + ...)``, segment after segment. That is not the GEMM's order, so results
equal ``nn.Linear`` within float32 rounding, and exactly whenever every partial sum is exact (e.g.
dyadic weights, design §3). ``db`` is ``g.sum(0)`` and ``dx`` is ``g @ W``, as in torch's own
backward of ``F.linear``, so those two are equal to the dense path's bit for bit.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from torch.autograd.function import once_differentiable

from spike.kernels.max_pool import _splat

__all__ = ["VEC", "SLAB_BYTES", "binary_csr", "csr_to_csc", "block_vectors", "chunk_rows", "n_chunks",
           "padded_width", "padded_rows", "Events", "events_of", "PaddedWeight", "EventLinearFunction",
           "event_linear"]

VEC = 16  # float32 lanes of one vector (512 bits; LLVM splits it where the CPU has narrower ones)
SLAB_BYTES = 48 << 10  # the slice of src one chunk x one column block reads (~ a 48 KiB L1)

# ---------------------------------------------------------------------------------------------
# LLVM primitives
# ---------------------------------------------------------------------------------------------


def _vec_types():
    f32 = ir.FloatType()
    return ir.IntType(64), ir.IntType(32), ir.VectorType(f32, VEC), ir.IntType(8).as_pointer()


def _row_ptr(builder, arr, row, col_bytes):
    """``i8*`` to ``arr[row, 0] + col_bytes`` of a 2-D array struct (``row`` i64)."""
    i8p = ir.IntType(8).as_pointer()
    off = builder.mul(row, builder.extract_value(arr.strides, 0))
    return builder.gep(builder.bitcast(arr.data, i8p), [builder.add(off, col_bytes)])


def _vptr(builder, base, v: int):
    i64, _, vty, _ = _vec_types()
    return builder.bitcast(builder.gep(base, [ir.Constant(i64, 4 * VEC * v)]), vty.as_pointer())


def _i64(builder, v):
    return builder.sext(v, ir.IntType(64)) if v.type.width < 64 else v


@intrinsic
def _rowsum(typingctx, out, orow, src, idx, k0, k1, col0, init, nvec, lanes, accumulate):
    """``out[orow, c] = base[c] + sum_{k0<=k<k1} src[idx[k], c]`` for the ``VEC*nvec`` columns
    ``c`` from ``col0`` that exist in ``out`` (masked), where ``base`` is ``out[orow]`` itself with
    ``accumulate`` and ``init`` otherwise. ``src``/``init`` must hold ``col0 + VEC*nvec`` columns.
    ``nvec`` (vectors), ``lanes`` (partial sums) and ``accumulate`` are compile-time constants;
    float32 C-contiguous arrays, int32 ``idx``."""
    if not (isinstance(nvec, types.IntegerLiteral) and isinstance(lanes, types.IntegerLiteral)
            and isinstance(accumulate, types.BooleanLiteral)):
        return None
    NV, L, ACC = nvec.literal_value, lanes.literal_value, accumulate.literal_value
    sig = types.void(out, orow, src, idx, k0, k1, col0, init, nvec, lanes, accumulate)

    def codegen(context, builder, signature, args):
        a_out, a_orow, a_src, a_idx, a_k0, a_k1, a_col0, a_init = args[:8]
        i64, i32, vty, i8p = _vec_types()
        outa = context.make_array(signature.args[0])(context, builder, a_out)
        srca = context.make_array(signature.args[2])(context, builder, a_src)
        idxa = context.make_array(signature.args[3])(context, builder, a_idx)
        inita = context.make_array(signature.args[7])(context, builder, a_init)
        k0v, k1v, col0 = _i64(builder, a_k0), _i64(builder, a_k1), _i64(builder, a_col0)
        col_bytes = builder.mul(col0, ir.Constant(i64, 4))
        src0 = _row_ptr(builder, srca, ir.Constant(i64, 0), col_bytes)
        src_stride = builder.extract_value(srca.strides, 0)
        acc = [[cgutils.alloca_once_value(builder, ir.Constant(vty, None)) for _ in range(NV)]
               for _ in range(L)]

        def add_event(k, lane):
            i = _i64(builder, builder.load(builder.gep(idxa.data, [k])))
            row = builder.gep(src0, [builder.mul(i, src_stride)])
            for v in range(NV):
                w = builder.load(_vptr(builder, row, v), align=4)
                builder.store(builder.fadd(builder.load(acc[lane][v]), w), acc[lane][v])

        groups = builder.sdiv(builder.sub(k1v, k0v), ir.Constant(i64, L))
        with cgutils.for_range(builder, groups) as loop:
            kb = builder.add(k0v, builder.mul(loop.index, ir.Constant(i64, L)))
            for r in range(L):
                add_event(builder.add(kb, ir.Constant(i64, r)), r)
        done = builder.add(k0v, builder.mul(groups, ir.Constant(i64, L)))
        with cgutils.for_range(builder, builder.sub(k1v, done)) as loop:
            add_event(builder.add(done, loop.index), 0)

        out_row = _row_ptr(builder, outa, _i64(builder, a_orow), col_bytes)
        init_row = builder.gep(builder.bitcast(inita.data, i8p), [col_bytes])
        n_cols = builder.extract_value(outa.shape, 1)
        vmask = ir.VectorType(ir.IntType(1), VEC)
        store = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, vmask]),
            "llvm.masked.store.v16f32.p0")
        load = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty.as_pointer(), i32, vmask, vty]),
            "llvm.masked.load.v16f32.p0")
        vi64 = ir.VectorType(i64, VEC)
        lane_ids = ir.Constant(vi64, list(range(VEC)))
        sums = []
        for v in range(NV):
            s = builder.load(acc[0][v])
            for r in range(1, L):
                s = builder.fadd(s, builder.load(acc[r][v]))
            sums.append(s)
        full = builder.icmp_signed("<=", builder.add(col0, ir.Constant(i64, VEC * NV)), n_cols)
        with builder.if_else(full, likely=True) as (whole, partial):
            with whole:  # every column of the block exists: plain loads and stores
                for v in range(NV):
                    p = _vptr(builder, out_row, v)
                    base = builder.load(p if ACC else _vptr(builder, init_row, v), align=4)
                    builder.store(builder.fadd(base, sums[v]), p, align=4)
            with partial:  # the last block: only the columns < n_cols
                for v in range(NV):
                    cv = builder.add(_splat(builder, builder.add(col0, ir.Constant(i64, VEC * v)), vi64), lane_ids)
                    mask = builder.icmp_signed("<", cv, _splat(builder, n_cols, vi64))
                    p = _vptr(builder, out_row, v)
                    if ACC:
                        base = builder.call(load, [p, ir.Constant(i32, 4), mask, ir.Constant(vty, None)])
                    else:
                        base = builder.load(_vptr(builder, init_row, v), align=4)
                    builder.call(store, [builder.fadd(base, sums[v]), p, ir.Constant(i32, 4), mask])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _compress_row(typingctx, x, n, v0, v1, idx, k, counts):
    """Events of row ``n`` of float32 ``x[N, in]`` in the columns ``VEC*v0 .. VEC*v1 - 1``,
    appended at ``idx[k:]`` (int32, ascending; a vector compare and a compress-store per ``VEC``
    columns), each also counted in ``counts[i]`` (int32): returns ``(k + count, bad)``, ``bad``
    nonzero if some element there is neither 0 nor 1 (NaN included: unordered compares)."""
    sig = types.UniTuple(types.int64, 2)(x, n, v0, v1, idx, k, counts)

    def codegen(context, builder, signature, args):
        a_x, a_n, a_v0, a_v1, a_idx, a_k, a_counts = args
        i64, i32, vf, _ = _vec_types()
        i16 = ir.IntType(16)
        vi = ir.VectorType(i32, VEC)
        vb = ir.VectorType(ir.IntType(1), VEC)
        xa = context.make_array(signature.args[0])(context, builder, a_x)
        ia = context.make_array(signature.args[4])(context, builder, a_idx)
        ca = context.make_array(signature.args[6])(context, builder, a_counts)
        row = _row_ptr(builder, xa, _i64(builder, a_n), ir.Constant(i64, 0))
        compress = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vi, i32.as_pointer(), vb]),
            "llvm.masked.compressstore.v16i32")
        popcount = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i16, [i16]), "llvm.ctpop.i16")
        kk = cgutils.alloca_once_value(builder, _i64(builder, a_k))
        bad = cgutils.alloca_once_value(builder, ir.Constant(i16, 0))
        zero = ir.Constant(vf, [0.0] * VEC)
        one = ir.Constant(vf, [1.0] * VEC)
        lane_ids = ir.Constant(vi, list(range(VEC)))
        v0 = _i64(builder, a_v0)
        with cgutils.for_range(builder, builder.sub(_i64(builder, a_v1), v0)) as loop:
            c = builder.add(v0, loop.index)
            v = builder.load(_vptr(builder, builder.gep(row, [builder.mul(c, ir.Constant(i64, 4 * VEC))]), 0), align=4)
            nz = builder.fcmp_unordered("!=", v, zero)
            not01 = builder.and_(nz, builder.fcmp_unordered("!=", v, one))
            builder.store(builder.or_(builder.load(bad), builder.bitcast(not01, i16)), bad)
            ids = builder.add(_splat(builder, builder.trunc(builder.mul(c, ir.Constant(i64, VEC)), i32), vi), lane_ids)
            k = builder.load(kk)
            builder.call(compress, [ids, builder.gep(ia.data, [k]), nz])
            cp = builder.bitcast(builder.gep(ca.data, [builder.mul(c, ir.Constant(i64, VEC))]), vi.as_pointer())
            builder.store(builder.sub(builder.load(cp, align=4), builder.sext(nz, vi)), cp, align=4)
            count = builder.zext(builder.call(popcount, [builder.bitcast(nz, i16)]), i64)
            builder.store(builder.add(k, count), kk)
        return context.make_tuple(builder, signature.return_type,
                                  [builder.load(kk), builder.zext(builder.load(bad), i64)])

    return sig, codegen


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy", boundscheck=False)
def binary_csr(x, chunk, seg, idx, counts):
    """Check that float32 ``x[N, in]`` is binary and list its events by row and by chunk of
    ``chunk`` inputs (a multiple of ``VEC``): ``idx`` (int32, capacity ``N*in``) holds the
    ascending ``i`` with ``x[n, i] == 1`` row after row, and ``idx[seg[n, c]:seg[n, c+1]]`` are
    those in ``[c*chunk, (c+1)*chunk)`` (``seg[N, n_chunks(in, chunk) + 1]``, int32); ``counts[i]``
    (int32, zeros on entry) counts input ``i``'s events. Returns the number of events, or -1 if
    some element is neither 0 nor 1."""
    N, n_in = x.shape
    nch = seg.shape[1] - 1
    vec_end = n_in // VEC
    cv = chunk // VEC
    k = 0
    bad = 0
    for n in range(N):
        for c in range(nch):
            seg[n, c] = k
            k, b = _compress_row(x, n, min(c * cv, vec_end), min((c + 1) * cv, vec_end), idx, k, counts)
            bad |= b
        for i in range(vec_end * VEC, n_in):  # the last chunk's scalar tail
            v = x[n, i]
            nz = v != 0
            bad |= nz & (v != 1)
            idx[k] = i
            k += nz
            counts[i] += nz
        seg[n, nch] = k
    return -1 if bad else k


@njit(cache=True, error_model="numpy", boundscheck=False)
def csr_to_csc(seg, idx, counts, chunk, segt, rows):
    """Transpose the events of :func:`binary_csr` (``seg[N, .]``, ``idx``, ``counts[n_in]``):
    ``rows`` (int32, ``[nnz]``) holds, input after input, the ascending rows ``n`` in which input
    ``i`` fired, and ``rows[segt[i, c]:segt[i, c+1]]`` are those in ``[c*chunk, (c+1)*chunk)``
    (``segt[n_in, n_chunks(N, chunk) + 1]``, int32)."""
    N = seg.shape[0]
    n_in = counts.shape[0]
    nch = segt.shape[1] - 1
    last = seg.shape[1] - 1
    fill = np.zeros(n_in, np.int64)
    for i in range(1, n_in):
        fill[i] = fill[i - 1] + counts[i - 1]
    for n in range(N):
        if n % chunk == 0:
            c = n // chunk
            for i in range(n_in):
                segt[i, c] = fill[i]
        for k in range(seg[n, 0], seg[n, last]):
            i = idx[k]
            rows[fill[i]] = n
            fill[i] += 1
    for c in range((N + chunk - 1) // chunk, nch + 1):
        for i in range(n_in):
            segt[i, c] = fill[i]


@njit(cache=True, error_model="numpy", boundscheck=False)
def _block_rows(seg, idx, src, init, out, c, j0, nv):
    """Chunk ``c`` of every row into the column block at ``j0`` (see :func:`_gather_sum`)."""
    R = seg.shape[0]
    if nv == 4:
        if c == 0:
            for r in range(R):
                _rowsum(out, r, src, idx, seg[r, 0], seg[r, 1], j0, init, 4, 2, False)
        else:
            for r in range(R):
                _rowsum(out, r, src, idx, seg[r, c], seg[r, c + 1], j0, init, 4, 2, True)
    else:
        if c == 0:
            for r in range(R):
                _rowsum(out, r, src, idx, seg[r, 0], seg[r, 1], j0, init, 1, 4, False)
        else:
            for r in range(R):
                _rowsum(out, r, src, idx, seg[r, c], seg[r, c + 1], j0, init, 1, 4, True)


@njit(cache=True, parallel=True, error_model="numpy", boundscheck=False)
def _gather_sum(seg, idx, src, init, out, nv):
    """``out[r, :] = init + sum_c sum_{k in [seg[r, c], seg[r, c+1])} src[idx[k], :]`` for every
    row ``r``: chunk after chunk (the first writes ``init +``, the others add), and within a chunk
    column blocks of ``VEC*nv`` (``nv`` 1 or 4; in parallel) over all rows, so that a chunk x
    block slice of ``src`` stays in L1 while every row reads it, and a chunk's events stay in L2
    while every block reads them. ``src``/``init`` padded to whole blocks (:func:`padded_rows`)."""
    nch = seg.shape[1] - 1
    cb = VEC * nv
    nb = (out.shape[1] + cb - 1) // cb
    for c in range(nch):
        for b in prange(nb):
            _block_rows(seg, idx, src, init, out, c, b * cb, nv)


def block_vectors(n_cols: int) -> int:
    """Vectors per column block: 4 (64 columns), or 1 for outputs of at most ``VEC`` columns."""
    return 1 if n_cols <= VEC else 4


def chunk_rows(n_rows: int, nv: int) -> int:
    """Rows of ``src`` per chunk (a multiple of ``VEC``): ``n_rows`` split into the number of
    chunks whose ``chunk x VEC*nv`` slices are nearest :data:`SLAB_BYTES`, evenly."""
    nch = max(1, round(n_rows / (SLAB_BYTES / (4 * VEC * nv))))
    per_chunk = -(-n_rows // nch)
    return max(VEC, -(-per_chunk // VEC) * VEC)


def n_chunks(n: int, chunk: int) -> int:
    """Chunks of ``chunk`` rows that cover ``n`` rows (at least one)."""
    return max(1, -(-n // chunk))


def padded_width(n_cols: int, nv: int) -> int:
    """Row length of a padded source: whole blocks of ``VEC*nv`` columns plus one vector (so that
    the byte stride is never a large power of two)."""
    cb = VEC * nv
    return -(-n_cols // cb) * cb + VEC


def padded_rows(a: torch.Tensor, nv: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a[R, C]`` copied into float32 rows of ``padded_width(C, nv)``, zeros after column C
    (into ``out`` when it has that shape)."""
    R, C = a.shape
    shape = (R, padded_width(C, nv))
    if out is None or tuple(out.shape) != shape:
        out = torch.empty(shape, dtype=torch.float32)
    out[:, :C].copy_(a)
    out[:, C:].zero_()
    return out


@njit(cache=True, error_model="numpy", boundscheck=False)
def _transpose(src, dst):
    """``dst[j, i] = src[i, j]`` in 32 x 32 tiles."""
    R, C = src.shape
    for i0 in range(0, R, 32):
        i1 = min(R, i0 + 32)
        for j0 in range(0, C, 32):
            j1 = min(C, j0 + 32)
            for i in range(i0, i1):
                for j in range(j0, j1):
                    dst[j, i] = src[i, j]


# ---------------------------------------------------------------------------------------------
# torch side
# ---------------------------------------------------------------------------------------------


class Events(NamedTuple):
    """The events of a binary ``x[N, in]``: :func:`binary_csr`'s ``seg``, ``idx`` (trimmed to the
    events) and ``counts``."""

    seg: torch.Tensor
    idx: torch.Tensor
    counts: torch.Tensor


def events_of(x2: torch.Tensor, chunk: int, max_density: float = 1.0) -> Events | None:
    """The events of a float32 CPU C-contiguous ``x2[N, in]`` by chunks of ``chunk`` inputs, or
    None if ``x2`` is not binary or has more than ``max_density * N * in`` ones."""
    N, n_in = x2.shape
    seg = torch.empty((N, n_chunks(n_in, chunk) + 1), dtype=torch.int32)
    idx = torch.empty(max(1, N * n_in), dtype=torch.int32)
    counts = torch.zeros(n_in, dtype=torch.int32)
    nnz = binary_csr(x2.detach().numpy(), chunk, seg.numpy(), idx.numpy(), counts.numpy())
    if nnz < 0 or nnz > max_density * N * n_in:
        return None
    return Events(seg, idx[:nnz], counts)


class PaddedWeight:
    """``W^T`` and ``b`` padded for the forward, refreshed (in place) only when the weight or bias
    changes (their ``_version`` counters: an optimizer step bumps them) or is replaced."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.wt: torch.Tensor | None = None
        self.b: torch.Tensor | None = None

    def get(self, weight: torch.Tensor, bias: torch.Tensor | None, nv: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (nv, weight.data_ptr(), weight._version, tuple(weight.shape),
               None if bias is None else (bias.data_ptr(), bias._version))
        if key != self.key or self.wt is None or self.b is None:
            with torch.no_grad():
                self.wt = padded_rows(weight.detach().t(), nv, self.wt)
                b = torch.zeros(self.wt.shape[1], dtype=torch.float32)
                if bias is not None:
                    b[:bias.shape[0]].copy_(bias.detach())
                self.b = b
            self.key = key
        return self.wt, self.b


class EventLinearFunction(torch.autograd.Function):
    """``y = EventLinearFunction.apply(x2, weight, bias, events, wt_pad, bias_pad)``: ``x2[N, in]``
    binary float32 (only its shape is used: its events come from :func:`events_of`),
    ``weight[out, in]``, ``bias[out]`` or None, and their padded copies (:class:`PaddedWeight`).
    Gradients as in the module docstring; ``dx = g W`` is dense."""

    @staticmethod
    def forward(ctx, x2, weight, bias, events, wt_pad, bias_pad):  # type: ignore[override]
        N, n_in = x2.shape
        O = weight.shape[0]
        y = x2.new_empty((N, O))
        _gather_sum(events.seg.numpy(), events.idx.numpy(), wt_pad.numpy(), bias_pad.numpy(), y.numpy(),
                    block_vectors(O))
        ctx.n_in = n_in
        ctx.has_bias = bias is not None
        ctx.save_for_backward(weight, events.seg, events.idx, events.counts)
        return y

    @staticmethod
    @once_differentiable  # the weight gradient is Numba's: a second derivative is an error, not a missing term
    def backward(ctx, g):  # type: ignore[override]
        weight, seg, idx, counts = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = g @ weight if need_x else None
        gw = None
        if need_w:
            n_in, (N, O) = ctx.n_in, g.shape
            nv = block_vectors(O)
            chunk = chunk_rows(N, nv)
            segt = torch.empty((n_in, n_chunks(N, chunk) + 1), dtype=torch.int32)
            rows = torch.empty(max(1, idx.shape[0]), dtype=torch.int32)
            csr_to_csc(seg.numpy(), idx.numpy(), counts.numpy(), chunk, segt.numpy(), rows.numpy())
            gwt = g.new_empty((n_in, O))
            _gather_sum(segt.numpy(), rows.numpy(), padded_rows(g, nv).numpy(),
                        np.zeros(padded_width(O, nv), np.float32), gwt.numpy(), nv)
            if weight.stride() == (1, O):  # stored transposed (SpikeLinear): dW = (dW^T).t(), no copy
                gw = gwt.t()
            else:
                gw = g.new_empty((O, n_in))
                _transpose(gwt.numpy(), gw.numpy())
        gb = g.sum(0) if (need_b and ctx.has_bias) else None
        return gx, gw, gb, None, None, None


def event_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 cache: PaddedWeight | None = None, max_density: float = 1.0) -> torch.Tensor | None:
    """``F.linear(x, weight, bias)`` by events, for a binary float32 CPU ``x[..., in]`` (any
    leading shape, e.g. ``[T, B, in]`` or ``[N, in]``). Returns None, having done nothing but the
    check, when ``x`` is not binary, has more than ``max_density`` ones, is not a float32 CPU
    tensor like ``weight``, or has ``2^31`` elements or more: the caller then runs ``F.linear``.
    ``cache`` keeps the padded ``W^T`` between calls (:class:`PaddedWeight`)."""
    if (x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu"
            or weight.device.type != "cpu" or x.dim() < 1 or weight.dim() != 2
            or (bias is not None and (bias.dtype != torch.float32 or bias.device.type != "cpu"))):
        return None
    lead = x.shape[:-1]
    if math.prod(lead) * x.shape[-1] >= 2**31:  # int32 event indices
        return None
    x2 = x.reshape(math.prod(lead), x.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    nv = block_vectors(weight.shape[0])
    ev = events_of(x2, chunk_rows(x2.shape[1], nv), max_density)
    if ev is None:
        return None
    wt_pad, b_pad = (cache or PaddedWeight()).get(weight, bias, nv)
    y = EventLinearFunction.apply(x2, weight, bias, ev, wt_pad, b_pad)
    return y.reshape(*lead, weight.shape[0])
