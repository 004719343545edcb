"""FTWT gates on the torch backend (dense reference): the ``gate`` kernel, and the "gated" variants
of the ``conv2d`` and ``population`` kernels, which the engine runs for the nodes a gate masks
(``Program.gated``; ``ctx.gate`` names the gate).

Same semantics and counts as ``numba.gates``: a conv2d projection into a gated population is
computed densely and its masked channels set to 0 (no bias), and its ``syn_ops``/``macs`` are the
(non-zero input, non-zero weight) pairs into kept channels; the gated population updates its
kept neurons with the plain kernel's formulas (``torch.where`` keeps masked neurons at rest),
counts ``neuron_updates`` for kept neurons only and emits no spike from masked ones.
"""
from __future__ import annotations

import torch

from spike.backends.engine import NodeContext
from spike.backends.gate_common import gate_mask, gate_run
from spike.backends.registry import GATED
from spike.backends.torch.backend import BACKEND, conv2d_masked, population_float


@BACKEND.kernel("gate")
def gate(ctx: NodeContext, t0: int, t1: int) -> None:
    run = gate_run(ctx)
    ctx.out[t0:t1] = torch.from_numpy(run.mask).to(ctx.out.dtype).unsqueeze(0)
    if t0 == 0:
        ctx.counts["host_flops"] += run.host_flops


@BACKEND.kernel("conv2d", GATED)
def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    conv2d_masked(ctx, t0, t1, torch.from_numpy(gate_mask(ctx)).to(torch.float32))


@BACKEND.kernel("population", GATED)
def population(ctx: NodeContext, t0: int, t1: int) -> None:
    st = ctx.state  # the mask is the run's (it depends on the samples)
    if "active" not in st:
        keep = torch.from_numpy(gate_mask(ctx))
        st["active"] = keep.repeat_interleave(ctx.node.size // keep.shape[1], dim=1)  # [B, n] bool
    srcs = [s for i, s in enumerate(ctx.sources) if i != ctx.gate.position]
    population_float(ctx, t0, t1, sources=srcs, active=st["active"])
