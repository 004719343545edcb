"""FTWT gates on the torch backend (dense reference): the ``gate`` kernel, and gated forms of the
``conv2d`` and ``population`` kernels (registered onto ``torch.backend.BACKEND``; nodes that no
gate touches run the plain kernels).

Same semantics and counts as ``numba.gates``: a conv2d projection into a gated population is
computed densely and its masked channels set to 0 (no bias), and its ``syn_ops``/``macs`` are the
(non-zero input, non-zero weight) pairs into kept channels; the gated population updates its
kept neurons with the plain kernel's formulas (``torch.where`` keeps masked neurons at rest),
counts ``neuron_updates`` for kept neurons only and emits no spike from masked ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spike.backends.torch import backend as TB
from spike.backends.engine import NodeContext
from spike.backends.gate_common import add_gate_checks, gate_host_flops, gate_mask, gate_of_population, gated_consumer
from spike.backends.registry import BackendError

BACKEND = TB.BACKEND
_plain_conv2d = BACKEND.kernels["conv2d"]
_plain_population = BACKEND.kernels["population"]


def _float_only(ctx: NodeContext, what: str) -> None:
    if ctx.precision == "fixed":
        raise BackendError(f"{what} {ctx.name!r}: FTWT gates run in float32 programs only")


@BACKEND.kernel("gate")
def gate(ctx: NodeContext, t0: int, t1: int) -> None:
    _float_only(ctx, "gate")
    mask = torch.from_numpy(gate_mask(ctx, ctx.name))
    ctx.out[t0:t1] = mask.to(ctx.out.dtype).unsqueeze(0)
    if t0 == 0:
        ctx.counts["host_flops"] += gate_host_flops(ctx, ctx.name)


def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    target = gated_consumer(ctx.program, ctx.name) if ctx.program is not None else None
    if target is None:
        _plain_conv2d(ctx, t0, t1)
        return
    _float_only(ctx, "conv2d")
    node = ctx.node
    keep = torch.from_numpy(gate_mask(ctx, target[1])).to(torch.float32)  # [B, C_out]
    w, b = TB._weights(ctx)
    x = TB._delayed(ctx.sources[0], node.delay, t0, t1)
    t, B = x.shape[:2]
    xi = x.reshape(t * B, *node.in_shape)
    kw = dict(stride=node.stride, padding=node.padding, groups=node.groups)
    y = F.conv2d(xi, w, b, **kw)
    y = y.reshape(t, B, *y.shape[1:])
    kept = keep[None, :, :, None, None]
    y = torch.where(kept > 0, y, torch.zeros_like(y))
    ctx.out[t0:t1] = y.reshape(t, B, node.size)
    TB._silent_before_onset(ctx, t0, t1)
    pairs = F.conv2d((xi != 0).to(torch.float32), (w != 0).to(torch.float32), **kw)
    pairs = pairs.reshape(t, B, *pairs.shape[1:]) * kept
    if "dense_per_step" not in ctx.cache:
        ones = torch.ones((1, *node.in_shape))
        ctx.cache["dense_per_step"] = float(F.conv2d(ones, torch.ones_like(w), **kw).sum())
    TB._count_pairs(ctx, x, pairs.reshape(t, B, -1), ctx.cache["dense_per_step"])


def population(ctx: NodeContext, t0: int, t1: int) -> None:
    found = gate_of_population(ctx.program, ctx.name) if ctx.program is not None else None
    if found is None:
        _plain_population(ctx, t0, t1)
        return
    _float_only(ctx, "population")
    gate_name, gi = found
    node = ctx.node
    st = ctx.state  # the mask is the run's (it depends on the samples)
    if "active" not in st:
        keep = torch.from_numpy(gate_mask(ctx, gate_name))
        st["active"] = keep.repeat_interleave(node.size // keep.shape[1], dim=1)  # [B, n] bool
    srcs = [s for i, s in enumerate(ctx.sources) if i != gi]
    TB.population_float(ctx, t0, t1, sources=srcs, active=st["active"])


BACKEND.kernels["conv2d"] = conv2d
BACKEND.kernels["population"] = population
add_gate_checks(BACKEND)
