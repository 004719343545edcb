"""2-D max pooling with kernel == stride on the CPU (Numba), equal to torch's bit for bit.

Input ``x[..., H, W]`` (float32; every leading index is one plane), kernel ``(kh, kw)``, stride
``(kh, kw)``, no padding, dilation 1, floor mode: ``Ho = H // kh``, ``Wo = W // kw`` (the last
``H % kh`` rows and ``W % kw`` columns belong to no window). Window ``(i, j)`` holds the inputs
``x[kh*i + r, kw*j + c]``, numbered ``pos = r*kw + c`` in row-major order. Its output is what the
scan of torch's CPU kernel gives::

    m = -inf ; k = 0
    for pos in 0 .. kh*kw - 1:   v = window[pos]
                                 if v > m or isnan(v):  m = v ; k = pos
    y[i, j] = m ;  argmax[i, j] = k          (uint8)

i.e. ``k`` is the last NaN of the window if it holds one, else the first position of the maximum
(``-0.0`` and ``0.0`` compare equal, so the earlier wins; a window of ``-inf`` gives ``k = 0``), and
``y = window[k]`` bit for bit. Starting the scan at ``m = window[0], k = 0`` gives the same
result, which the kernels do. Backward (windows do not overlap)::

    grad_in[kh*i + r, kw*j + c] = 0 + grad_out[i, j]   if r*kw + c == argmax[i, j]
                                = 0                    elsewhere (dropped rows/columns included)

(``0 + g`` as torch accumulates into zeros: a ``-0.0`` gradient arrives as ``0.0``). The derivative
of the backward with respect to ``grad_out`` (double backward), and the forward-mode derivative of
the pooling, gather at the argmax: ``out[i, j] = t[kh*i + r, kw*j + c]``, ``r*kw + c = argmax[i, j]``.

How it is fast: a column of output rows is done in blocks of ``VEC`` = 16 windows, each column by
one LLVM intrinsic (:func:`_fwd_rows`, :func:`_bwd_rows`) on vector registers: per input row of a
block one masked load of ``16*kw`` floats, deinterleaved by shuffles into ``kw`` vectors of 16 (one
per window column), then the scan as vector compares and selects; backward does the selects and
interleaves them back for one masked store per input row. The masks cover the windows left in the
row (``Wo`` = 7 or 14 of the usual CNN maps fill part of one block), so nothing outside the row is
read or written; they are built once per column of rows (built per block, they took 40% of the
time: 2x2 windows of 14x14 planes in cache, 0.18 against 0.11 ns per input, 2-core AMD EPYC).
Kernel sizes are compile-time constants: :func:`kernels` builds (and Numba caches on disk) one set
per ``(kh, kw)``, ``kh, kw <= MAX_KERNEL``. ``prange`` runs over planes, on at most one numba thread
per ``PLANE_ELEMENTS_PER_THREAD`` input elements (a small input stays on the calling thread,
:func:`spike.numba_threads.threads_at_most`).

Measured (one thread, 2-core Xeon with AVX-512, shared and noisy: medians of 21 calls), 2x2 on
0/1 spikes at 15%: ``[320, 16, 28, 28]`` forward 0.65 ms vs torch's 11.5 ms (with indices),
backward 0.9 ms vs 1.45 ms; ``[320, 32, 14, 14]`` forward 0.45 ms vs 6.2 ms, backward 0.4 vs
0.75 ms. The backward writes the whole ``grad_in`` (a 16 MB memset alone takes ~0.5 ms there).

:class:`MaxPool2dFunction` is the autograd function, :func:`max_pool2d` the entry point that falls
back to ``F.max_pool2d`` for what the kernels do not take; ``spike.layers.MaxPool2d`` is the module.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from spike.numba_threads import threads_at_most

__all__ = ["VEC", "MAX_KERNEL", "PLANE_ELEMENTS_PER_THREAD", "Kernels", "pair", "kernel_supported",
           "input_supported", "kernels", "max_pool2d_forward", "max_pool2d_backward", "max_pool2d_gather",
           "MaxPool2dFunction", "MaxPool2dBackwardFunction", "max_pool2d"]

VEC = 16  # windows per block (float32 lanes of a 512-bit vector; LLVM splits it on narrower CPUs)
MAX_KERNEL = 8  # kh, kw <= 8: the positions fit uint8 and a block's row load stays <= 128 floats
PLANE_ELEMENTS_PER_THREAD = 1 << 16  # input elements per numba thread (fewer: fewer threads woken)

_I1, _I8, _I32, _I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
_F32 = ir.FloatType()
_ZERO = np.float32(0.0)

# ---------------------------------------------------------------------------------------------
# LLVM primitives
# ---------------------------------------------------------------------------------------------


def _masked_op(builder: ir.IRBuilder, kind: str, vty: ir.VectorType) -> ir.Function:
    """``llvm.masked.load`` / ``llvm.masked.store`` for the vector type ``vty`` (f32 or i8)."""
    mty = ir.VectorType(_I1, vty.count)
    name = f"llvm.masked.{kind}.v{vty.count}{'f32' if vty.element == _F32 else 'i8'}.p0"
    if kind == "load":
        fnty = ir.FunctionType(vty, [vty.as_pointer(), _I32, mty, vty])
    else:
        fnty = ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), _I32, mty])
    return cgutils.get_or_insert_function(builder.module, fnty, name)


def _lanes_below(builder: ir.IRBuilder, n: ir.Value, count: int, scale: int = 1) -> ir.Value:
    """The ``<count x i1>`` mask ``lane < scale * n``."""
    vty = ir.VectorType(_I64, count)
    undef = ir.Constant(vty, ir.Undefined)
    one = builder.insert_element(undef, builder.mul(n, ir.Constant(_I64, scale)), ir.Constant(_I32, 0))
    limit = builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, count), [0] * count))
    return builder.icmp_signed("<", ir.Constant(vty, list(range(count))), limit)


def _c(v: int) -> ir.Constant:
    """The int64 constant ``v``."""
    return ir.Constant(_I64, v)


def _transpose16(builder: ir.IRBuilder, rows: list) -> list:
    """The 16x16 transpose of 16 ``<16 x float>`` rows: four rounds of swapping the off-diagonal
    ``s x s`` blocks (``s`` = 8, 4, 2, 1), each a two-source shuffle per row."""
    rows = list(rows)
    s = VEC // 2
    while s:
        new = list(rows)
        for i in range(VEC):
            if i & s:
                continue
            lo = [j if not j & s else VEC + j - s for j in range(VEC)]
            hi = [j + s if not j & s else VEC + j for j in range(VEC)]
            new[i] = builder.shuffle_vector(rows[i], rows[i + s], ir.Constant(ir.VectorType(_I32, VEC), lo))
            new[i + s] = builder.shuffle_vector(rows[i], rows[i + s], ir.Constant(ir.VectorType(_I32, VEC), hi))
        rows, s = new, s // 2
    return rows


def _splat(builder: ir.IRBuilder, value: ir.Value, vty: ir.VectorType) -> ir.Value:
    """``value`` in every lane of ``vty``."""
    undef = ir.Constant(vty, ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count))


def _f32_ptr(context, builder: ir.IRBuilder, aty: types.Array, arr: ir.Value, off: ir.Value) -> ir.Value:
    """Pointer to element ``off`` of the 1-D array ``arr`` (``float*`` for the float32 arrays it is
    named for; the element type of ``arr`` in general)."""
    return builder.gep(context.make_array(aty)(context, builder, arr).data, [off])


def _vptr(builder: ir.IRBuilder, p: ir.Value, off: ir.Value) -> ir.Value:
    """``<VEC x float>*`` to ``p + off`` (``p`` a ``float*``)."""
    return builder.bitcast(builder.gep(p, [off]), ir.VectorType(_F32, VEC).as_pointer())


def _fma(builder: ir.IRBuilder, vty: ir.VectorType) -> ir.Function:
    """``llvm.fma`` for the vector type ``vty``: ``a*b + c`` rounded once."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                          f"llvm.fma.v{vty.count}f32")


def _tile_columns(builder: ir.IRBuilder, p: ir.Value, step: ir.Value, rows: ir.Value, lanes: ir.Value) -> list:
    """The 16 columns of the tile whose rows ``r < rows`` are the 16 floats at ``p + r*step`` in the
    lanes ``lanes`` (a ``<16 x i1>``; everything else zero, nothing else read): masked loads and
    :func:`_transpose16`."""
    vf = ir.VectorType(_F32, VEC)
    load = _masked_op(builder, "load", vf)
    loaded = []
    for r in range(VEC):
        ok = builder.icmp_signed("<", _c(r), rows)
        at = _vptr(builder, p, builder.mul(builder.select(ok, _c(r), _c(0)), step))
        mask = builder.and_(lanes, _splat(builder, ok, ir.VectorType(_I1, VEC)))
        loaded.append(builder.call(load, [at, ir.Constant(_I32, 4), mask, ir.Constant(vf, None)]))
    return _transpose16(builder, loaded)


def _vec_at(builder: ir.IRBuilder, context, aty: types.Array, arr: ir.Value, offset: ir.Value,
            vty: ir.VectorType) -> ir.Value:
    """``vty*`` to element ``offset`` of the 1-D array ``arr``."""
    return builder.bitcast(_f32_ptr(context, builder, aty, arr, offset), vty.as_pointer())


def _shuffle(builder: ir.IRBuilder, a: ir.Value, b: ir.Value, mask: list[int]) -> ir.Value:
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(mask)), mask))


def _block_vectors(kw: int) -> tuple[ir.VectorType, ir.VectorType, ir.VectorType]:
    """A block's vector types: ``VEC`` float32 values, ``VEC`` int8 argmax positions, and one
    input row of ``VEC`` windows ``kw`` wide."""
    return ir.VectorType(_F32, VEC), ir.VectorType(_I8, VEC), ir.VectorType(_F32, VEC * kw)


def _literal_kernel(kh, kw) -> tuple[int, int] | None:
    if isinstance(kh, types.IntegerLiteral) and isinstance(kw, types.IntegerLiteral):
        return kh.literal_value, kw.literal_value
    return None


@intrinsic
def _fwd_rows(typingctx, x, a, w, y, q, o, wo, rows, n, kh, kw, nan):
    """Windows ``l < n`` (``n <= VEC``) of ``rows`` output rows ``wo`` apart: window ``l`` of row
    ``k`` has its top-left input at ``x[a + k*kh*w + kw*l]``, its rows ``w`` apart, and writes
    ``y[o + k*wo + l]`` and ``q[o + k*wo + l]`` (the scan of the module docstring). ``nan``
    (compile-time bool): False drops the scan's NaN test, for inputs that hold no NaN (the scan
    then gives the same result). ``kh``, ``kw`` are compile-time constants; 1-D C arrays, int64
    offsets. The masks are built once for all rows."""
    k = _literal_kernel(kh, kw)
    if k is None or not isinstance(nan, types.BooleanLiteral):
        return None
    KH, KW = k
    NAN = nan.literal_value
    sig = types.void(x, a, w, y, q, o, wo, rows, n, kh, kw, nan)

    def codegen(context, builder, signature, args):
        ax, aa, aw, ay, aq, ao, awo, arows, an = args[:9]
        vf, vb, row_ty = _block_vectors(KW)
        load_row = _masked_op(builder, "load", row_ty)
        store_f, store_b = _masked_op(builder, "store", vf), _masked_op(builder, "store", vb)
        row_mask = _lanes_below(builder, an, VEC * KW, KW)
        out_mask = _lanes_below(builder, an, VEC)
        with cgutils.for_range(builder, arows) as rl:
            top = builder.add(aa, builder.mul(rl.index, builder.mul(aw, ir.Constant(_I64, KH))))
            out = builder.add(ao, builder.mul(rl.index, awo))
            m = k = None
            for r in range(KH):
                p = _vec_at(builder, context, signature.args[0], ax,
                            builder.add(top, builder.mul(aw, ir.Constant(_I64, r))), row_ty)
                row = builder.call(load_row, [p, ir.Constant(_I32, 4), row_mask, ir.Constant(row_ty, None)])
                for c in range(KW):
                    v = _shuffle(builder, row, ir.Constant(row_ty, ir.Undefined), [c + KW * lane for lane in range(VEC)])
                    if m is None:  # position 0 starts the scan
                        m, k = v, ir.Constant(vb, [0] * VEC)
                        continue
                    up = builder.fcmp_ordered(">", v, m)
                    if NAN:
                        up = builder.or_(up, builder.fcmp_unordered("uno", v, v))
                    m = builder.select(up, v, m)
                    k = builder.select(up, ir.Constant(vb, [r * KW + c] * VEC), k)
            builder.call(store_f, [m, _vec_at(builder, context, signature.args[3], ay, out, vf), ir.Constant(_I32, 4),
                                   out_mask])
            builder.call(store_b, [k, _vec_at(builder, context, signature.args[4], aq, out, vb), ir.Constant(_I32, 1),
                                   out_mask])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _bwd_rows(typingctx, g, q, o, wo, gi, a, w, rows, n, kh, kw):
    """The inputs of the windows ``l < n`` of ``rows`` output rows (see :func:`_fwd_rows`):
    ``gi[a + (k*kh + r)*w + kw*l + c] = 0 + g[o + k*wo + l]`` if ``q[o + k*wo + l] == r*kw + c``
    else 0. The masks are built once for all rows."""
    k = _literal_kernel(kh, kw)
    if k is None:
        return None
    KH, KW = k
    sig = types.void(g, q, o, wo, gi, a, w, rows, n, kh, kw)

    def codegen(context, builder, signature, args):
        ag, aq, ao, awo, agi, aa, aw, arows, an = args[:9]
        vf, vb, row_ty = _block_vectors(KW)
        mask = _lanes_below(builder, an, VEC)
        row_mask = _lanes_below(builder, an, VEC * KW, KW)
        load_f, load_b = _masked_op(builder, "load", vf), _masked_op(builder, "load", vb)
        store_row = _masked_op(builder, "store", row_ty)
        zero = ir.Constant(vf, [0.0] * VEC)
        # columns c0 | c1 | ... (VEC each) -> window-major order: lane KW*l + c from column c, lane l
        interleave = [(i % KW) * VEC + i // KW for i in range(VEC * KW)]
        with cgutils.for_range(builder, arows) as rl:
            top = builder.add(aa, builder.mul(rl.index, builder.mul(aw, ir.Constant(_I64, KH))))
            out = builder.add(ao, builder.mul(rl.index, awo))
            gv = builder.call(load_f, [_vec_at(builder, context, signature.args[0], ag, out, vf), ir.Constant(_I32, 4),
                                       mask, ir.Constant(vf, None)])
            qv = builder.call(load_b, [_vec_at(builder, context, signature.args[1], aq, out, vb), ir.Constant(_I32, 1),
                                       mask, ir.Constant(vb, None)])
            v = builder.fadd(zero, gv)
            for r in range(KH):
                cols = [builder.select(builder.icmp_unsigned("==", qv, ir.Constant(vb, [r * KW + c] * VEC)), v, zero)
                        for c in range(KW)]
                joined = cols[0]
                for col in cols[1:]:  # concatenate (shufflevector takes two operands of one type)
                    width = joined.type.count
                    if width != VEC:
                        col = _shuffle(builder, col, ir.Constant(vf, ir.Undefined), [i % VEC for i in range(width)])
                    joined = _shuffle(builder, joined, col, list(range(width + VEC)))
                row = joined if KW == 1 else _shuffle(builder, joined, ir.Constant(row_ty, ir.Undefined), interleave)
                p = _vec_at(builder, context, signature.args[4], agi,
                            builder.add(top, builder.mul(aw, ir.Constant(_I64, r))), row_ty)
                builder.call(store_row, [row, p, ir.Constant(_I32, 4), row_mask])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, error_model="numpy", inline="always")
def _zero_outside(gi, a, h, w, KH, KW):
    """Zero the inputs of the plane ``gi[a : a + h*w]`` that belong to no window: the columns right
    of the last window and the rows below it (``KH``, ``KW`` compile-time constants)."""
    ho, wo = h // KH, w // KW
    if KW * wo < w:
        for r in range(KH * ho):
            for c in range(a + r * w + KW * wo, a + (r + 1) * w):
                gi[c] = _ZERO
    for c in range(a + KH * ho * w, a + h * w):
        gi[c] = _ZERO


# ---------------------------------------------------------------------------------------------
# kernels over flat C-order arrays: x, grad_in [P*H*W]; y, argmax, grad_out [P*Ho*Wo]
# ---------------------------------------------------------------------------------------------


class Kernels(NamedTuple):
    """The compiled kernels of one kernel size; each takes ``(..., h, w)`` after its arrays."""

    forward: Callable  # (x, y, q, h, w): y, q from x
    backward: Callable  # (g, q, gi, h, w): gi from g, q
    gather: Callable  # (t, q, out, h, w): out[o] = t at the argmax of window o


@functools.lru_cache(maxsize=None)
def kernels(kh: int, kw: int) -> Kernels:
    """The kernels for windows of ``kh x kw`` (compiled on first use, then from Numba's cache)."""
    if not kernel_supported((kh, kw)):
        raise ValueError(f"max_pool kernels: kh and kw must be in 1..{MAX_KERNEL}, got ({kh}, {kw})")
    KH, KW = int(kh), int(kw)

    @njit(cache=True, parallel=True, error_model="numpy")
    def forward(x, y, q, h, w):
        ho = h // KH
        wo = w // KW
        plane = h * w
        oplane = ho * wo
        for p in prange(y.size // oplane):
            for j in range(0, wo, VEC):
                _fwd_rows(x, p * plane + KW * j, w, y, q, p * oplane + j, wo, ho, min(VEC, wo - j), KH, KW, True)

    @njit(cache=True, parallel=True, error_model="numpy")
    def backward(g, q, gi, h, w):
        ho = h // KH
        wo = w // KW
        plane = h * w
        oplane = ho * wo
        for p in prange(gi.size // plane):
            for j in range(0, wo, VEC):
                _bwd_rows(g, q, p * oplane + j, wo, gi, p * plane + KW * j, w, ho, min(VEC, wo - j), KH, KW)
            _zero_outside(gi, p * plane, h, w, KH, KW)

    @njit(cache=True, parallel=True, error_model="numpy")
    def gather(t, q, out, h, w):
        ho = h // KH
        wo = w // KW
        oplane = ho * wo
        for p in prange(out.size // oplane):
            for i in range(ho):
                for j in range(wo):
                    o = p * oplane + i * wo + j
                    k = int(q[o])
                    out[o] = t[p * h * w + (KH * i + k // KW) * w + KW * j + k % KW]

    return Kernels(forward, backward, gather)


# ---------------------------------------------------------------------------------------------
# torch entry points
# ---------------------------------------------------------------------------------------------

def pair(kernel_size: int | tuple[int, int]) -> tuple[int, int]:
    """``(kh, kw)`` of an int or a pair (torch's convention for 2-D sizes)."""
    if isinstance(kernel_size, int):
        return kernel_size, kernel_size
    kh, kw = kernel_size
    return int(kh), int(kw)


def kernel_supported(kernel_size: int | tuple[int, int]) -> bool:
    """Whether the kernels take windows of this size (``1 <= kh, kw <= MAX_KERNEL``)."""
    kh, kw = pair(kernel_size)
    return 1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL


def input_supported(x: torch.Tensor, kernel_size: int | tuple[int, int]) -> bool:
    """Whether :func:`max_pool2d` runs ``x`` on the kernels: a float32 CPU tensor ``[C, H, W]``
    or ``[N, C, H, W]`` (not channels-last, whose output torch keeps channels-last), at least one
    window high and wide, not empty, and a supported kernel size."""
    if not kernel_supported(kernel_size):
        return False
    kh, kw = pair(kernel_size)
    return (x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() in (3, 4) and x.numel() > 0
            and x.shape[-2] >= kh and x.shape[-1] >= kw
            and (x.dim() == 3 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last)))


def _flat(t: torch.Tensor):
    return t.detach().contiguous().view(-1).numpy()


def max_pool2d_forward(x: torch.Tensor, kernel_size: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled values ``[..., Ho, Wo]`` (float32) and the argmax inside each window (uint8,
    ``r*kw + c``) of the float32 CPU tensor ``x[..., H, W]`` (any strides)."""
    kh, kw = pair(kernel_size)
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() < 2 or x.shape[-2] < kh or x.shape[-1] < kw:
        raise ValueError(f"max_pool2d_forward: expects a float32 CPU tensor [..., H, W] with H >= {kh}, W >= {kw}; "
                         f"got dtype {x.dtype}, device {x.device}, shape {list(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    out_shape = (*x.shape[:-2], h // kh, w // kw)
    y = torch.empty(out_shape, dtype=torch.float32)
    q = torch.empty(out_shape, dtype=torch.uint8)
    if y.numel():
        with threads_at_most(x.numel() // PLANE_ELEMENTS_PER_THREAD):
            kernels(kh, kw).forward(_flat(x), y.view(-1).numpy(), q.view(-1).numpy(), h, w)
    return y, q


def max_pool2d_backward(grad_out: torch.Tensor, argmax: torch.Tensor, in_shape: torch.Size | tuple[int, ...],
                        kernel_size: int | tuple[int, int]) -> torch.Tensor:
    """``grad_in`` of shape ``in_shape`` (float32): ``0 + grad_out`` at each window's argmax, 0
    elsewhere."""
    kh, kw = pair(kernel_size)
    h, w = int(in_shape[-2]), int(in_shape[-1])
    gi = torch.empty(tuple(in_shape), dtype=torch.float32)
    if gi.numel():
        with threads_at_most(gi.numel() // PLANE_ELEMENTS_PER_THREAD):
            kernels(kh, kw).backward(_flat(grad_out.to(torch.float32)), _flat(argmax), gi.view(-1).numpy(), h, w)
    return gi


def max_pool2d_gather(t: torch.Tensor, argmax: torch.Tensor, kernel_size: int | tuple[int, int]) -> torch.Tensor:
    """``t[..., H, W]`` read at each window's argmax (shape of ``argmax``): the double backward and
    the forward-mode derivative."""
    kh, kw = pair(kernel_size)
    h, w = int(t.shape[-2]), int(t.shape[-1])
    out = torch.empty(argmax.shape, dtype=torch.float32)
    if out.numel():
        with threads_at_most(t.numel() // PLANE_ELEMENTS_PER_THREAD):
            kernels(kh, kw).gather(_flat(t.to(torch.float32)), _flat(argmax), out.view(-1).numpy(), h, w)
    return out


class MaxPool2dFunction(torch.autograd.Function):
    """``y = max_pool2d(x)`` with kernel = stride (see the module docstring); keeps only the uint8
    argmax for backward. Backward is :class:`MaxPool2dBackwardFunction` (twice differentiable);
    forward mode (``jvp``) gathers the tangent."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        y, q = max_pool2d_forward(x, kernel_size)
        ctx.save_for_backward(q)
        ctx.save_for_forward(q)
        ctx.in_shape = x.shape
        ctx.kernel = kernel_size
        return y

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (q,) = ctx.saved_tensors
        return MaxPool2dBackwardFunction.apply(grad_out, q, ctx.in_shape, ctx.kernel), None

    @staticmethod
    def jvp(ctx, x_t: torch.Tensor, _kernel_t: None) -> torch.Tensor:  # type: ignore[override]
        (q,) = ctx.saved_tensors
        return max_pool2d_gather(x_t, q, ctx.kernel)


class MaxPool2dBackwardFunction(torch.autograd.Function):
    """``grad_in`` as a function of ``grad_out`` (linear; as torch's
    ``max_pool2d_with_indices_backward``, differentiable once more): its derivative gathers at the
    argmax."""

    @staticmethod
    def forward(ctx, grad_out: torch.Tensor, argmax: torch.Tensor, in_shape: torch.Size,  # type: ignore[override]
                kernel_size: tuple[int, int]) -> torch.Tensor:
        ctx.save_for_backward(argmax)
        ctx.save_for_forward(argmax)
        ctx.in_shape = in_shape
        ctx.kernel = kernel_size
        return max_pool2d_backward(grad_out, argmax, in_shape, kernel_size)

    @staticmethod
    def backward(ctx, gg: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        (q,) = ctx.saved_tensors
        return max_pool2d_gather(gg, q, ctx.kernel), None, None, None

    @staticmethod
    def jvp(ctx, g_t: torch.Tensor, *_: None) -> torch.Tensor:  # type: ignore[override]
        (q,) = ctx.saved_tensors
        return max_pool2d_backward(g_t, q, ctx.in_shape, ctx.kernel)


def max_pool2d(x: torch.Tensor, kernel_size: int | tuple[int, int]) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size)`` (stride = kernel, padding 0, dilation 1, floor mode), with
    autograd: on the kernels when :func:`input_supported`, else ``F.max_pool2d`` itself (which
    also raises torch's errors). Values and gradients equal torch's bit for bit either way."""
    kh, kw = pair(kernel_size)
    if not input_supported(x, (kh, kw)):
        return F.max_pool2d(x, (kh, kw))
    return MaxPool2dFunction.apply(x, (kh, kw))
