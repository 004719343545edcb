"""Convolution of binary inputs (spikes) by table lookups: a 2-D ``conv2d`` without multiplies.

For ``x[N, Cin, H, W]`` with every element 0 or 1, stride 1, dilation 1, one group, zero padding
``(ph, pw)`` and ``w[Cout, Cin, KH, KW]``, the input channels are taken four at a time: at each
input position a group's four spikes form a 4-bit number ``n``, and per tap ``(ky, kx)``, group
``g`` and output channel ``o`` a table holds the sum of the weights that ``n`` selects::

    L[ky, kx, g, n, o] = (((0 + w[o, 4g+a, ky, kx]) + w[o, 4g+b, ky, kx]) + ...)   (set bits a < b < ..)
    out[i, o, y, x] = bias[o] + L[0, 0, 0, n_0(y, x)] + L[0, 0, 1, n_1(y, x)] + ...   (taps (ky, kx), then
                      groups g, in order; n_g(y, x) the group's number at padded input (y+ky, x+kx))

``ceil(Cin/4) * KH * KW`` vector additions per 16 output channels and position, where the GEMM does
``Cin * KH * KW`` multiply-adds. A tile of 16 positions by 16 output channels keeps its 16 sums in
registers and is transposed in registers before its rows are stored.

The weight gradient sorts each image's input positions by their number, per group (a counting
sort, the zero numbers left out), and sums the transposed output gradient ``gT[p, :]`` over each
list, per tap in registers::

    B[ky, kx, g, n, :] = sum_{q : n_g(q) = n} gT[q - (ky, kx), :]
    dw[o, 4g+k, ky, kx] = sum_{n : bit k of n} B[ky, kx, g, n, o]        dbias[o] = sum_p g[p, o]

The images are split into a fixed number of work items (a function of ``N`` only), each with its
own sums, then added item after item, so the results do not depend on the number of threads. The
input gradient does not depend on the spikes: it is :mod:`spike.kernels.conv_input_grad`'s (which
skips the output gradient's zeros), or torch's where that kernel's sums do not fit the registers.

Summation orders: the forward's is the one written above; the weight gradient's is, per list,
the positions in ascending order, per work item the images in order, then the items in order and
the numbers ``n`` in ascending order; ``dbias`` per tile of 16 positions a pairwise sum, tiles in
row order. None is oneDNN's, so values equal ``conv2d``'s within float32 rounding, exactly when
every partial sum is exact (dyadic weights and gradients, design §3), for finite weights: a NaN or
infinite weight reaches only the outputs where its input spiked (``conv2d`` multiplies it by the
zeros too).
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
from torch.autograd.function import once_differentiable

from spike.kernels import conv_input_grad
from spike.kernels.max_pool import (
    _I32, VEC, _c, _f32_ptr, _lanes_below, _masked_op, _tile_columns, _transpose16, _vptr,
)

__all__ = ["GROUP", "MAX_IN_CHANNELS", "MAX_KERNEL", "WGRAD_ITEMS", "SPARSE_GRAD_MAX_DENSITY", "binary_masks",
           "lookup_table", "forward", "weight_grad", "padded_out", "mask_len", "supported", "EventConv2dFunction",
           "event_conv2d"]

GROUP = 4  # input channels per table index: 16 entries
MAX_IN_CHANNELS = 31  # a position's spikes in one int32 (stored shifted left by 4 in an int64)
MAX_KERNEL = 5  # kernel sides 1..5: the weight gradient keeps KH*KW vector sums in registers
WGRAD_ITEMS = 8  # work items of the weight gradient (fewer when N is smaller)
# the input gradient skips the output gradient's zeros where at most this fraction is nonzero: with
# independent zeros it breaks even between 0.5 and 0.9 (benchmarks/conv_input_grad.py, 2-core AMD
# EPYC (Zen 5), one thread: 1.45-1.66x oneDNN at 0.3, 1.11-1.33x at 0.5, 0.83-0.89x dense)
SPARSE_GRAD_MAX_DENSITY = 0.6

_VF = ir.VectorType(ir.FloatType(), VEC)


def padded_out(cout: int) -> int:
    """Output channels rounded up to whole vectors (the table's and sums' row length)."""
    return -(-cout // VEC) * VEC


def mask_len(n: int, hp: int, wp: int, kh: int, kw: int) -> int:
    """Length of the flat mask array of ``n`` padded ``hp x wp`` images: the tiles read up to one
    vector and ``kh`` rows past the last image (those values never reach an output)."""
    return n * hp * wp + (kh + 1) * wp + VEC + kw


def _data(context, builder, aty, arr):
    return context.make_array(aty)(context, builder, arr).data


@intrinsic
def _lut_tile(typingctx, out, o0, ostep, nx, nco, m, m0, wp, kh, kw, groups, lut, l0, bias, b0):
    """One tile of the forward: for the 16 positions ``p`` from flat mask index ``m0`` (the tile's
    top-left padded input position, row stride ``wp``) and the 16 output channels of the table
    block at ``lut[l0:]`` (``[KH, KW, groups, 16, 16]``), the sums ``bias[b0 + c] + lut[...]`` of
    the module docstring in 16 registers, transposed, and stored as rows ``out[o0 + c*ostep + p]``
    for ``c < nco``, ``p < nx``. Masks are int64 spike bits shifted left by 4."""
    sig = types.void(out, o0, ostep, nx, nco, m, m0, wp, kh, kw, groups, lut, l0, bias, b0)

    def codegen(context, builder, signature, args):
        a_out, a_o0, a_ostep, a_nx, a_nco, a_m, a_m0, a_wp, a_kh, a_kw, a_groups, a_lut, a_l0, a_bias, a_b0 = args
        store = _masked_op(builder, "store", _VF)
        pout = _f32_ptr(context, builder, signature.args[0], a_out, a_o0)
        pm = builder.gep(_data(context, builder, signature.args[5], a_m), [a_m0])
        plut = _f32_ptr(context, builder, signature.args[11], a_lut, a_l0)
        bv = builder.load(_vptr(builder, _f32_ptr(context, builder, signature.args[13], a_bias, a_b0), _c(0)), align=4)
        accs = [cgutils.alloca_once_value(builder, bv) for _ in range(VEC)]
        with cgutils.for_range(builder, a_kh) as ky:
            with cgutils.for_range(builder, a_kw) as kx:
                tap = builder.add(builder.mul(ky.index, a_kw), kx.index)
                row = builder.gep(pm, [builder.add(builder.mul(ky.index, a_wp), kx.index)])
                ms = [builder.load(builder.gep(row, [_c(p)])) for p in range(VEC)]
                with cgutils.for_range(builder, a_groups) as g:
                    shift = builder.mul(g.index, _c(GROUP))
                    table = builder.gep(plut, [builder.mul(builder.add(builder.mul(tap, a_groups), g.index), _c(16 * VEC))])
                    vals = [builder.load(a) for a in accs]
                    for p in range(VEC):  # (n << 4) & 0xF0: the entry's offset in floats
                        off = builder.and_(builder.lshr(ms[p], shift), _c(0xF0))
                        vals[p] = builder.fadd(vals[p], builder.load(_vptr(builder, table, off), align=4))
                    for p in range(VEC):
                        builder.store(vals[p], accs[p])
        rows = _transpose16(builder, [builder.load(a) for a in accs])
        mask = _lanes_below(builder, a_nx, VEC)
        for c in range(VEC):
            with builder.if_then(builder.icmp_signed("<", _c(c), a_nco)):
                builder.call(store, [rows[c], _vptr(builder, pout, builder.mul(_c(c), a_ostep)),
                                     ir.Constant(_I32, 4), mask])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _tile_to_rows(typingctx, dst, d0, dstep, g, g0, gstep, nx, nco, gb, gb0):
    """The transpose of one tile of ``g``: the rows ``g[g0 + c*gstep + p]`` (``c < nco``, ``p < nx``;
    zero elsewhere) as ``dst[d0 + p*dstep + c]`` for ``p < nx``; adds the pairwise sum over ``p`` to
    ``gb[gb0 + c]``."""
    sig = types.void(dst, d0, dstep, g, g0, gstep, nx, nco, gb, gb0)

    def codegen(context, builder, signature, args):
        a_dst, a_d0, a_dstep, a_g, a_g0, a_gstep, a_nx, a_nco, a_gb, a_gb0 = args
        pg = _f32_ptr(context, builder, signature.args[3], a_g, a_g0)
        pd = _f32_ptr(context, builder, signature.args[0], a_dst, a_d0)
        cols = _tile_columns(builder, pg, a_gstep, a_nco, _lanes_below(builder, a_nx, VEC))
        pgb = _vptr(builder, _f32_ptr(context, builder, signature.args[8], a_gb, a_gb0), _c(0))
        level = list(cols)
        while len(level) > 1:
            level = [builder.fadd(level[2 * k], level[2 * k + 1]) for k in range(len(level) // 2)]
        builder.store(builder.fadd(builder.load(pgb, align=4), level[0]), pgb, align=4)
        for p in range(VEC):
            with builder.if_then(builder.icmp_signed("<", _c(p), a_nx)):
                builder.store(cols[p], _vptr(builder, pd, builder.mul(_c(p), a_dstep)), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _list_sums(typingctx, bk, b0, bstep, gt, gt0, gstride, lst, k0, k1, gw, kh, kw, nv):
    """Per tap ``t = (ky, kx)``: ``bk[b0 + t*bstep + c] += sum_{k0 <= k < k1} gt[gt0 + (lst[k] - ky*gw
    - kx)*gstride + c]`` for ``c < 16*nv``, the ``kh*kw*nv`` vector sums in registers over ``k`` in
    order. ``kh``, ``kw``, ``nv`` compile-time constants."""
    if not all(isinstance(a, types.IntegerLiteral) for a in (kh, kw, nv)):
        return None
    KH, KW, NV = kh.literal_value, kw.literal_value, nv.literal_value
    sig = types.void(bk, b0, bstep, gt, gt0, gstride, lst, k0, k1, gw, kh, kw, nv)

    def codegen(context, builder, signature, args):
        a_bk, a_b0, a_bstep, a_gt, a_gt0, a_gstride, a_lst, a_k0, a_k1, a_gw = args[:10]
        pgt = _f32_ptr(context, builder, signature.args[3], a_gt, a_gt0)
        plst = _data(context, builder, signature.args[6], a_lst)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_VF, None)) for _ in range(KH * KW * NV)]
        with cgutils.for_range(builder, builder.sub(a_k1, a_k0)) as kl:
            q = builder.load(builder.gep(plst, [builder.add(a_k0, kl.index)]))
            vals = [builder.load(a) for a in accs]
            for ky in range(KH):
                for kx in range(KW):
                    r = builder.mul(builder.sub(q, builder.add(builder.mul(a_gw, _c(ky)), _c(kx))), a_gstride)
                    for v in range(NV):
                        t = (ky * KW + kx) * NV + v
                        src = _vptr(builder, pgt, builder.add(r, _c(v * VEC)))
                        vals[t] = builder.fadd(vals[t], builder.load(src, align=4))
            for t in range(KH * KW * NV):
                builder.store(vals[t], accs[t])
        pbk = _f32_ptr(context, builder, signature.args[0], a_bk, a_b0)
        for t in range(KH * KW):
            for v in range(NV):
                dst = _vptr(builder, pbk, builder.add(builder.mul(_c(t), a_bstep), _c(v * VEC)))
                builder.store(builder.fadd(builder.load(dst, align=4), builder.load(accs[t * NV + v])), dst, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, error_model="numpy", boundscheck=False)
def binary_masks(x, n, cin, h, w, ph, pw, m):
    """``m[(i*hp + y + ph)*wp + x + pw] = sum_c (x[i, c, y, x] != 0) << (c + 4)`` for the flat
    float32 ``x[n, cin, h, w]`` into the zeroed flat int64 ``m`` (``hp = h + 2ph``, ``wp = w +
    2pw``). Returns whether every element of ``x`` is 0 or 1. One thread: vectorised over each
    plane, it reads ``x`` about as fast as memory delivers it (a parallel loop here did not
    vectorise and ran 6x slower)."""
    hp, wp, hw = h + 2 * ph, w + 2 * pw, h * w
    bits = np.empty(hw, np.int32)
    odd = np.zeros(hw, np.int32)
    for i in range(n):
        bits[:] = 0
        for c in range(cin):
            base = (i * cin + c) * hw
            for k in range(hw):
                v = x[base + k]
                odd[k] |= np.int32(v != 0) & np.int32(v != 1)
                bits[k] |= np.int32(v != 0) << c
        for y in range(h):
            row = (i * hp + y + ph) * wp + pw
            for xx in range(w):
                m[row + xx] = np.int64(bits[y * w + xx]) << 4
    return odd.max() == 0


@njit(cache=True, error_model="numpy", boundscheck=False)
def lookup_table(w, cop, groups, lut):
    """The forward's table into flat ``lut[cop/16, KH, KW, groups, 16, 16]`` from ``w[Cout, Cin,
    KH, KW]`` (zero for the padding channels)."""
    cout, cin, kh, kw = w.shape
    for cb in range(cop // VEC):
        for ky in range(kh):
            for kx in range(kw):
                for g in range(groups):
                    for nb in range(16):
                        base = ((((cb * kh + ky) * kw + kx) * groups + g) * 16 + nb) * VEC
                        for c in range(VEC):
                            o = cb * VEC + c
                            acc = np.float32(0.0)
                            if o < cout:
                                for k in range(GROUP):
                                    ci = GROUP * g + k
                                    if nb >> k & 1 and ci < cin:
                                        acc += w[o, ci, ky, kx]
                            lut[base + c] = acc


@njit(cache=True, error_model="numpy", boundscheck=False)
def _forward_image(m, i, hp, wp, kh, kw, groups, lut, bias, out, cout, ho, wo):
    """Image ``i`` of :func:`forward`, a function of its own as the weight gradient's work items are
    (inlined into a parallel loop's body, that code ran a quarter slower)."""
    block = kh * kw * groups * 16 * VEC
    for cb in range(bias.shape[0] // VEC):  # a block's table (36 KiB at 3x3, 16 inputs) stays in L1
        for y in range(ho):
            for x0 in range(0, wo, VEC):
                _lut_tile(out, ((i * cout + cb * VEC) * ho + y) * wo + x0, ho * wo, min(VEC, wo - x0),
                          min(VEC, cout - cb * VEC), m, (i * hp + y) * wp + x0, wp, kh, kw, groups,
                          lut, cb * block, bias, cb * VEC)


@njit(cache=True, parallel=True, error_model="numpy", boundscheck=False)
def forward(m, n, hp, wp, kh, kw, groups, lut, bias, out, cout, ho, wo):
    """The forward into the flat ``out[n, cout, ho, wo]`` from the masks ``m``
    (:func:`binary_masks`), the table (:func:`lookup_table`) and ``bias`` (padded to
    :func:`padded_out`, zeros without a bias)."""
    for i in prange(n):
        _forward_image(m, i, hp, wp, kh, kw, groups, lut, bias, out, cout, ho, wo)


@njit(cache=True, error_model="numpy", boundscheck=False)
def _finish(bk, gbi, dw, db, groups, cop):
    """``dw`` and ``db`` from the work items' sums (items in order, then the numbers)."""
    cout, cin, kh, kw = dw.shape
    tot = bk[0].copy()
    for it in range(1, bk.shape[0]):
        tot += bk[it]
    for ky in range(kh):
        for kx in range(kw):
            for ci in range(cin):
                g, k = divmod(ci, GROUP)
                base = ((ky * kw + kx) * groups + g) * 16
                for o in range(cout):
                    acc = np.float32(0.0)
                    for nb in range(16):
                        if nb >> k & 1:
                            acc += tot[(base + nb) * cop + o]
                    dw[o, ci, ky, kx] = acc
    for o in range(cout):
        s = gbi[0, o]
        for it in range(1, gbi.shape[0]):
            s += gbi[it, o]
        db[o] = s


@functools.lru_cache(maxsize=None)
def weight_grad(kh: int, kw: int) -> Callable:
    """The weight-gradient kernel of a ``kh x kw`` convolution (compiled on first use, then from
    Numba's cache): ``wgrad(m, n, hp, wp, ph, pw, g, cout, ho, wo, groups, per_item, bk, gbi, dw,
    db)`` with ``g`` the flat output gradient ``[n, cout, ho, wo]`` (plus ``VEC`` floats of slack),
    ``bk`` ``[items, KH*KW*groups*16*cop]`` and ``gbi`` ``[items, cop]`` zeroed per-item sums, and
    ``dw`` ``[Cout, Cin, KH, KW]``, ``db`` ``[Cout]`` the results."""
    if not (1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL):
        raise ValueError(f"event_conv: kernel sides must be 1..{MAX_KERNEL}, got ({kh}, {kw})")
    KH, KW = int(kh), int(kw)
    PAIRS = 2 * KH * KW <= 24  # the sums of two output vectors fit the 32 vector registers

    @njit(cache=True, error_model="numpy", boundscheck=False)
    def item(m, i0, i1, hp, wp, ph, pw, g, cout, ho, wo, groups, bk, gb):
        cop = gb.shape[0]
        gh, gw = ho + 2 * (KH - 1), wo + 2 * (KW - 1)
        h, w = hp - 2 * ph, wp - 2 * pw
        bstep = groups * 16 * cop
        gt = np.zeros(gh * gw * cop, np.float32)
        lst = np.empty(groups * 16 * h * w, np.int64)
        cnt = np.zeros(groups * 16, np.int64)
        for i in range(i0, i1):
            for y in range(ho):  # gT: the image's gradient, channels last, zero border
                for x0 in range(0, wo, VEC):
                    for cb in range(cop // VEC):
                        _tile_to_rows(gt, ((y + KH - 1) * gw + x0 + KW - 1) * cop + cb * VEC, cop, g,
                                      ((i * cout + cb * VEC) * ho + y) * wo + x0, ho * wo, min(VEC, wo - x0),
                                      min(VEC, cout - cb * VEC), gb, cb * VEC)
            cnt[:] = 0
            for qy in range(ph, ph + h):  # counting sort of the input positions by number
                for qx in range(pw, pw + w):
                    bits = m[(i * hp + qy) * wp + qx] >> 4
                    at = (qy + KH - 1) * gw + qx + KW - 1
                    for gi in range(groups):
                        j = gi * 16 + ((bits >> (GROUP * gi)) & 15)
                        lst[j * h * w + cnt[j]] = at
                        cnt[j] += 1
            for gi in range(groups):
                for nb in range(1, 16):
                    j = gi * 16 + nb
                    k0, k1 = j * h * w, j * h * w + cnt[j]
                    cb = 0
                    if PAIRS:  # two vectors of outputs per pass over a list: half the passes
                        for cb in range(0, cop // VEC - 1, 2):
                            _list_sums(bk, j * cop + cb * VEC, bstep, gt, cb * VEC, cop, lst, k0, k1, gw, KH, KW, 2)
                        cb = cop // VEC // 2 * 2
                    for c in range(cb, cop // VEC):
                        _list_sums(bk, j * cop + c * VEC, bstep, gt, c * VEC, cop, lst, k0, k1, gw, KH, KW, 1)

    @njit(cache=True, parallel=True, error_model="numpy", boundscheck=False)
    def wgrad(m, n, hp, wp, ph, pw, g, cout, ho, wo, groups, per_item, bk, gbi, dw, db):
        for it in prange(bk.shape[0]):  # each item a function of its own (see _forward_image)
            item(m, it * per_item, min(n, (it + 1) * per_item), hp, wp, ph, pw, g, cout, ho, wo, groups, bk[it],
                 gbi[it])
        _finish(bk, gbi, dw, db, groups, gbi.shape[1])

    return wgrad


def supported(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: tuple[int, int]) -> bool:
    """Whether :func:`event_conv2d` computes this call (before looking at the values): float32 CPU
    ``x[N, Cin, H, W]`` and parameters, ``Cin <= MAX_IN_CHANNELS``, kernel sides ``1..MAX_KERNEL``,
    padding below the kernel size, an output at least one position wide and high."""
    if (x.dtype != torch.float32 or weight.dtype != torch.float32 or x.device.type != "cpu" or weight.device.type != "cpu"
            or x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1] or x.numel() == 0
            or (bias is not None and (bias.dtype != torch.float32 or bias.device.type != "cpu"))):
        return False
    _, cin, h, w = x.shape
    kh, kw = weight.shape[2:]
    ph, pw = padding
    return (1 <= cin <= MAX_IN_CHANNELS and 1 <= kh <= MAX_KERNEL and 1 <= kw <= MAX_KERNEL and 0 <= ph < kh
            and 0 <= pw < kw and h + 2 * ph >= kh and w + 2 * pw >= kw)


class EventConv2dFunction(torch.autograd.Function):
    """``y = EventConv2dFunction.apply(x, weight, bias, masks, padding)``: ``x[N, Cin, H, W]`` binary
    float32 (its spikes are in ``masks``, from :func:`binary_masks`), ``weight[Cout, Cin, KH, KW]``,
    ``bias[Cout]`` or None. Gradients as in the module docstring; ``dx`` is
    :func:`spike.kernels.conv_input_grad.input_grad` where it is supported, else torch's
    ``convolution_backward`` (input gradient only)."""

    @staticmethod
    def forward(ctx, x, weight, bias, masks, padding):  # type: ignore[override]
        n, cin, h, w = x.shape
        cout, _, kh, kw = weight.shape
        ph, pw = padding
        hp, wp = h + 2 * ph, w + 2 * pw
        ho, wo = hp - kh + 1, wp - kw + 1
        groups, cop = -(-cin // GROUP), padded_out(cout)
        lut = np.empty(cop * kh * kw * groups * 16, np.float32)
        lookup_table(weight.detach().contiguous().numpy(), cop, groups, lut)
        bpad = np.zeros(cop, np.float32)
        if bias is not None:
            bpad[:cout] = bias.detach().numpy()
        y = x.new_empty((n, cout, ho, wo))
        forward(masks.numpy(), n, hp, wp, kh, kw, groups, lut, bpad, y.view(-1).numpy(), cout, ho, wo)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, masks)
        return y

    @staticmethod
    @once_differentiable  # the weight gradient is Numba's: a second derivative is an error, not zeros
    def backward(ctx, g):  # type: ignore[override]
        x, weight, masks = ctx.saved_tensors
        (n, cin, h, w), (ph, pw) = x.shape, ctx.padding
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g = g.contiguous()
        gx = None
        if need_x and conv_input_grad.supported(g, weight):
            gx = conv_input_grad.input_grad(g, weight, (ph, pw), (h, w), SPARSE_GRAD_MAX_DENSITY)
        if need_x and gx is None:  # torch's own (F.grad.conv2d_input would copy an expanded stand-in for x)
            gx = torch.ops.aten.convolution_backward(g, x, weight, None, [1, 1], [ph, pw], [1, 1], False, [0, 0], 1,
                                                     [True, False, False])[0]
        gw = gb = None
        if need_w or (need_b and ctx.has_bias):
            cout, _, kh, kw = weight.shape
            ho, wo = g.shape[2:]
            groups, cop = -(-cin // GROUP), padded_out(cout)
            items = min(n, WGRAD_ITEMS)
            per_item = -(-n // items)
            items = -(-n // per_item)
            bk = np.zeros((items, kh * kw * groups * 16 * cop), np.float32)
            gbi = np.zeros((items, cop), np.float32)
            dw = torch.empty((cout, cin, kh, kw), dtype=torch.float32)
            db = torch.empty(cout, dtype=torch.float32)
            weight_grad(kh, kw)(masks.numpy(), n, h + 2 * ph, w + 2 * pw, ph, pw, g.view(-1).numpy(), cout, ho, wo,
                                groups, per_item, bk, gbi, dw.numpy(), db.numpy())
            gw = dw if need_w else None
            gb = db if (need_b and ctx.has_bias) else None
        return gx, gw, gb, None, None


def event_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 padding: tuple[int, int]) -> torch.Tensor | None:
    """``F.conv2d(x, weight, bias, padding=padding)`` (stride 1, dilation 1, one group) by table
    lookups, for a binary float32 CPU ``x[N, Cin, H, W]``. Returns None, having done nothing but
    the check, when :func:`supported` says no or ``x`` is not binary: the caller then runs
    ``F.conv2d``."""
    if not supported(x, weight, bias, padding):
        return None
    n, cin, h, w = x.shape
    kh, kw = weight.shape[2:]
    ph, pw = padding
    hp, wp = h + 2 * ph, w + 2 * pw
    masks = torch.zeros(mask_len(n, hp, wp, kh, kw), dtype=torch.int64)
    if not binary_masks(x.detach().contiguous().view(-1).numpy(), n, cin, h, w, ph, pw, masks.numpy()):
        return None
    return EventConv2dFunction.apply(x, weight, bias, masks, (ph, pw))
