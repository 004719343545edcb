"""Input gradient of a stride-1 ``conv2d`` from a sparse output gradient, on CPU.

For ``g[N, Cout, Ho, Wo]`` (the gradient of ``conv2d(x, w, padding=(ph, pw))``, stride 1,
dilation 1, one group) and ``w[Cout, Cin, KH, KW]``::

    dx[i, c, y, x] = sum_{oy, ox} sum_o g[i, o, oy, ox] * w[o, c, y + ph - oy, x + pw - ox]

Behind a spiking layer's max pooling and LIF adjoint, much of ``g`` is zero (a neuron gets a
gradient at step t only if it was its window's maximum at step t or later: 41% nonzero on the CNN
of ``benchmarks/vs_training.py``), which the dense correlation of oneDNN multiplies through. Here
a first pass sets, per image and output position, one bit per output channel whose gradient is
nonzero (64 channels to an int64) and counts them, so that the caller can leave a dense gradient
to oneDNN. Then, per image, position (in row order) and set bit (ascending channel), one vector
FMA per tap and 16 input channels adds ``g * w[o, :, ky, kx]`` to sums held in registers; the
position's ``KH*KW`` tap sums are then added to a padded, channels-last input gradient of the
image (in cache), which is written back channels-first by 16 x 16 transposes in registers. That is
``KH*KW*ceil(Cin/16)`` vector FMAs per nonzero gradient, where the dense correlation does that
many per gradient element. 320 images, 32 -> 16 channels on 14x14, 3x3, padding 1, one thread,
2-core AMD EPYC (Zen 5), ``benchmarks/conv_input_grad.py``: the CNN's gradient (41% nonzero)
1.32-1.46x oneDNN's; independent zeros 1.45-1.66x at 30% nonzero, 1.11-1.33x at 50%, 0.83-0.89x
when dense.

Summation order (the results equal ``conv2d``'s gradient within float32 rounding, exactly when
every partial sum is exact, e.g. dyadic weights and gradients, design §3): for one input element,
per chunk of 64 output channels in order, the output positions' contributions in row order, each
of them the fused multiply-adds over the chunk's channels with a nonzero gradient, ascending.
Zero gradients contribute nothing, so a NaN or infinite weight reaches only the inputs of
positions whose gradient is nonzero (oneDNN multiplies it by the zeros too). Images are
independent work items: the results do not depend on the number of threads.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from spike.kernels.max_pool import (
    _I1, _I32, _I64, VEC, _c, _f32_ptr, _fma, _lanes_below, _masked_op, _splat, _tile_columns, _vptr,
)

__all__ = ["MAX_TAP_VECTORS", "CHANNEL_CHUNK", "tap_vectors", "supported", "nonzero_bits", "kernel", "input_grad"]

MAX_TAP_VECTORS = 27  # KH*KW*ceil(Cin/16) sums in registers (of 32), with the splat and a weight
CHANNEL_CHUNK = 64  # output channels per bitmask (one int64)

_VF = ir.VectorType(ir.FloatType(), VEC)


def tap_vectors(cin: int, kh: int, kw: int) -> int:
    """Vector sums per output position: ``KH*KW`` taps of ``ceil(Cin/16)`` vectors."""
    return kh * kw * (-(-cin // VEC))


def supported(g: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`input_grad` takes this gradient and weight: float32 CPU tensors of a
    convolution whose sums fit the registers (:data:`MAX_TAP_VECTORS`)."""
    return (g.dtype == torch.float32 and weight.dtype == torch.float32 and g.device.type == "cpu"
            and weight.device.type == "cpu" and g.dim() == 4 and weight.dim() == 4
            and g.shape[1] == weight.shape[0] and g.numel() > 0
            and tap_vectors(weight.shape[1], weight.shape[2], weight.shape[3]) <= MAX_TAP_VECTORS)


@intrinsic
def _position_sums(typingctx, acc, a0, row, wt, g, p, plane, bits, o0, kh, kw, nv):
    """One output position: ``acc[a0 + ky*row + (kx*nv + v)*16 + c] += sum_o g[o*plane + p] *
    wt[((o*kh + ky)*kw + kx)*nv*16 + v*16 + c]`` over the channels ``o = o0 + b`` of the set bits
    ``b`` of ``bits`` (ascending), the ``kh*kw*nv`` vector sums in registers (one FMA each per
    channel). ``kh``, ``kw``, ``nv`` compile-time constants."""
    if not all(isinstance(a, types.IntegerLiteral) for a in (kh, kw, nv)):
        return None
    KH, KW, NV = kh.literal_value, kw.literal_value, nv.literal_value
    A = KH * KW * NV
    sig = types.void(acc, a0, row, wt, g, p, plane, bits, o0, kh, kw, nv)

    def codegen(context, builder, signature, args):
        a_acc, a_a0, a_row, a_wt, a_g, a_p, a_plane, a_bits, a_o0 = args[:9]
        cttz = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64, _I1]), "llvm.cttz.i64")
        fma = _fma(builder, _VF)
        pwt = _f32_ptr(context, builder, signature.args[3], a_wt, _c(0))
        pg = _f32_ptr(context, builder, signature.args[4], a_g, a_p)
        sums = [cgutils.alloca_once_value(builder, ir.Constant(_VF, None)) for _ in range(A)]
        left = cgutils.alloca_once_value(builder, a_bits)
        test = builder.append_basic_block("bits.test")
        body = builder.append_basic_block("bits.body")
        done = builder.append_basic_block("bits.done")
        builder.branch(test)
        builder.position_at_end(test)
        m = builder.load(left)
        builder.cbranch(builder.icmp_unsigned("!=", m, _c(0)), body, done)
        builder.position_at_end(body)
        o = builder.add(a_o0, builder.call(cttz, [m, ir.Constant(_I1, 1)]))
        builder.store(builder.and_(m, builder.sub(m, _c(1))), left)  # clear the lowest set bit
        gv = _splat(builder, builder.load(builder.gep(pg, [builder.mul(o, a_plane)])), _VF)
        w0 = builder.mul(o, _c(A * VEC))
        for t, s in enumerate(sums):
            w = builder.load(_vptr(builder, pwt, builder.add(w0, _c(t * VEC))), align=4)
            builder.store(builder.call(fma, [gv, w, builder.load(s)]), s)
        builder.branch(test)
        builder.position_at_end(done)
        pacc = _f32_ptr(context, builder, signature.args[0], a_acc, a_a0)
        for ky in range(KH):
            for kx in range(KW):
                for v in range(NV):
                    t = (ky * KW + kx) * NV + v
                    dst = _vptr(builder, pacc, builder.add(builder.mul(a_row, _c(ky)), _c(t % (KW * NV) * VEC)))
                    builder.store(builder.fadd(builder.load(dst, align=4), builder.load(sums[t])), dst, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _tile_to_channels(typingctx, dst, d0, dstep, src, s0, sstep, nx, nc):
    """The transpose of one tile: ``dst[d0 + c*dstep + x] = src[s0 + x*sstep + c]`` for ``x < nx``,
    ``c < nc`` (both at most 16); nothing else is read or written."""
    sig = types.void(dst, d0, dstep, src, s0, sstep, nx, nc)

    def codegen(context, builder, signature, args):
        a_dst, a_d0, a_dstep, a_src, a_s0, a_sstep, a_nx, a_nc = args
        store = _masked_op(builder, "store", _VF)
        psrc = _f32_ptr(context, builder, signature.args[3], a_src, a_s0)
        pdst = _f32_ptr(context, builder, signature.args[0], a_dst, a_d0)
        cols = _tile_columns(builder, psrc, a_sstep, a_nx, _lanes_below(builder, a_nc, VEC))
        lanes = _lanes_below(builder, a_nx, VEC)
        for c in range(VEC):
            with builder.if_then(builder.icmp_signed("<", _c(c), a_nc)):
                builder.call(store, [cols[c], _vptr(builder, pdst, builder.mul(_c(c), a_dstep)), ir.Constant(_I32, 4),
                                     lanes])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, parallel=True, error_model="numpy", boundscheck=False)
def nonzero_bits(g, bits, count):
    """``bits[i, k, p]``: bit ``b`` set where ``g[i, 64k + b, p] != 0`` (a NaN too), for ``g``
    ``[N, Cout, plane]`` and the zeroed ``bits`` ``[N, ceil(Cout/64), plane]``; ``count[i]``: the
    image's nonzero elements."""
    n, cout, plane = g.shape
    for i in prange(n):
        c = 0
        for o in range(cout):
            go = g[i, o]
            bo = bits[i, o // CHANNEL_CHUNK]
            bit = np.uint64(1) << np.uint64(o % CHANNEL_CHUNK)
            for p in range(plane):
                nz = go[p] != 0
                bo[p] |= bit if nz else np.uint64(0)
                c += nz
        count[i] = c


@functools.lru_cache(maxsize=None)
def kernel(kh: int, kw: int, nv: int) -> Callable:
    """The kernel for ``kh x kw`` taps of ``nv`` vectors of input channels (``Cin <= 16*nv``;
    compiled on first use, then from Numba's cache): ``grad(g, bits, wt, dx, ho, wo, h, w, ph, pw)``
    with ``g`` ``[N, Cout, ho*wo]``, ``bits`` its :func:`nonzero_bits`, ``wt`` the flat weight
    ``[Cout, KH, KW, 16*nv]`` (zeros past ``Cin``) and ``dx`` ``[N, Cin, h*w]``, the result."""
    if not 1 <= kh * kw * nv <= MAX_TAP_VECTORS:
        raise ValueError(f"conv_input_grad: {kh}x{kw} taps of {nv} vectors need {kh * kw * nv} sums "
                         f"(1..{MAX_TAP_VECTORS})")
    KH, KW, NV = int(kh), int(kw), int(nv)
    CIP = NV * VEC

    @njit(cache=True, parallel=True, error_model="numpy", boundscheck=False)
    def grad(g, bits, wt, dx, ho, wo, h, w, ph, pw):
        n, cout, plane = g.shape
        cin = dx.shape[1]
        wp = wo + KW - 1
        row = wp * CIP
        gf = g.reshape(n * cout * plane)
        df = dx.reshape(dx.size)
        for i in prange(n):
            acc = np.zeros((ho + KH - 1) * row, np.float32)  # the image's padded gradient, channels last
            for k in range(bits.shape[1]):
                bk = bits[i, k]
                for oy in range(ho):
                    for ox in range(wo):
                        p = oy * wo + ox
                        if bk[p] != 0:
                            _position_sums(acc, oy * row + ox * CIP, row, wt, gf, i * cout * plane + p, plane, bk[p],
                                           k * CHANNEL_CHUNK, KH, KW, NV)
            for c0 in range(0, cin, VEC):
                for y in range(h):
                    for x0 in range(0, w, VEC):
                        _tile_to_channels(df, ((i * cin + c0) * h + y) * w + x0, h * w, acc,
                                          ((y + ph) * wp + x0 + pw) * CIP + c0, CIP, min(VEC, w - x0),
                                          min(VEC, cin - c0))

    return grad


def input_grad(g: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int], size: tuple[int, int],
               max_density: float = 1.0) -> torch.Tensor | None:
    """``dx[N, Cin, H, W]`` of ``conv2d(x, weight, padding=padding)`` (stride 1) for the output
    gradient ``g[N, Cout, Ho, Wo]``; ``size`` = ``(H, W)``. The caller checks :func:`supported`.
    Returns None, having only counted, when more than ``max_density`` of ``g`` is nonzero."""
    n, cout, ho, wo = g.shape
    _, cin, kh, kw = weight.shape
    h, w = size
    ph, pw = padding
    if ho != h + 2 * ph - kh + 1 or wo != w + 2 * pw - kw + 1:
        raise ValueError(f"conv_input_grad: an output gradient of {ho}x{wo} does not fit an input of {h}x{w} "
                         f"with padding {padding} and a {kh}x{kw} kernel")
    g3 = g.detach().contiguous().view(n, cout, ho * wo).numpy()
    bits = np.zeros((n, -(-cout // CHANNEL_CHUNK), ho * wo), np.uint64)
    count = np.empty(n, np.int64)
    nonzero_bits(g3, bits, count)
    if count.sum() > max_density * g.numel():
        return None
    nv = -(-cin // VEC)
    wt = torch.zeros((cout, kh, kw, nv * VEC), dtype=torch.float32)
    wt[..., :cin] = weight.detach().permute(0, 2, 3, 1)
    dx = torch.empty((n, cin, h, w), dtype=torch.float32)
    kernel(kh, kw, nv)(g3, bits, wt.view(-1).numpy(), dx.view(n, cin, h * w).numpy(), ho, wo, h, w, ph, pw)
    return dx
