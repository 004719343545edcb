"""FTWT gates on the cuda backend: the ``gate`` kernel, and the "gated" variants of the ``conv2d``
and ``population`` kernels, which the engine runs for the nodes a gate masks (``Program.gated``;
``ctx.gate`` names the gate). Same semantics, operation order and counts as ``numba.gates``, bit
for bit:

- the mask of a gate (``gate_common.gate_mask``) is computed on the host, once per run, from its
  source's values copied back from the device (small: ``[T, B, C_in*H*W]``);
- a conv2d projection into a gated population (``cuda.kernels.conv2d_kernel(gated=True)``) adds
  each input event's taps into the kept output channels only, in ascending event order; its
  ``syn_ops``/``macs`` are the (event, non-zero weight) pairs into kept channels, counted on the
  device (``syn_ops`` or ``macs`` per (sample, step) as ``gather_active`` decides from all the
  step's input values); ``dense_ops`` stays the dense count of the layer; masked channels output 0 (no bias);
- the gated population (``cuda.neurons.population_forward`` with ``gated``) updates only the
  neurons of kept channels (the plain kernel's float32 operations); masked neurons keep ``v = 0``,
  emit no spike and are not counted in ``neuron_updates`` (added on the host from the mask);
- the gate node outputs the mask (1.0 kept) at every step and counts its head as ``host_flops``.

Gated programs run in float32 (backends refuse fixed-point programs with gates before a run).
"""
from __future__ import annotations

import numpy as np

from spike.backends.cuda.backend import (
    BACKEND, conv_arrays, device_kernels, events, finish, from_host, pair_counters, population_float, to_device,
    to_host,
)
from spike.backends.engine import NodeContext
from spike.backends.gate_common import gate_mask, gate_run
from spike.backends.registry import GATED


@BACKEND.kernel("gate")
def gate(ctx: NodeContext, t0: int, t1: int) -> None:
    K = device_kernels()
    run = gate_run(ctx, to_host)
    mask = run.mask.astype(np.float32)  # [B, C]
    nsteps = t1 - t0
    total = nsteps * ctx.batch * mask.shape[1]
    if total:
        dev = from_host(np.broadcast_to(mask[None], (nsteps, *mask.shape)))
        K.copy_steps[K.blocks_for(total), K.TPB](ctx.out, t0, dev, 0, nsteps)
    if t0 == 0:
        ctx.counts["host_flops"] += run.host_flops


@BACKEND.kernel("conv2d", GATED)
def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    c = conv_arrays(ctx)
    L = c["layout"]
    K = device_kernels()
    if "no_pairs" not in c:  # pairs are counted on delivery, into kept channels only
        c["no_pairs"] = to_device(np.zeros(max(L.C * L.H * L.W, 1), np.int64))
    st = ctx.state
    if "keep" not in st:  # the mask is the run's (it depends on the samples)
        st["keep"] = from_host(gate_mask(ctx, to_host).astype(np.uint8))  # [B, C_out]
    if t1 > t0 and ctx.batch > 0:
        src, idx, cnt, weight_exp, delay, start = events(ctx, t0, t1, c["no_pairs"])
        acs, macs, _ = pair_counters(ctx)
        K.conv2d_kernel(False, True)[K.grid_for((t1 - t0) * ctx.batch), K.TPB](
            src, idx, cnt, c["wc"], c["bias"], c["has_bias"], weight_exp, c["no_acc"], st["keep"], ctx.out, t0,
            t1 - t0, delay, start, c["geom"], acs, macs, st["pair_real"],
        )
    ctx.counts["dense_ops"] += L.dense_per_step * (t1 - t0)
    finish(ctx, t1)


@BACKEND.kernel("population", GATED)
def population(ctx: NodeContext, t0: int, t1: int) -> None:
    st = ctx.state
    if "keep" not in st:  # the mask is the run's (it depends on the samples)
        keep = gate_mask(ctx, to_host)  # [B, C]
        neuron_keep = np.repeat(keep, ctx.node.size // keep.shape[1], axis=1)  # channel-major neurons
        st["keep"] = from_host(neuron_keep.astype(np.uint8))
        st["nactive"] = neuron_keep.sum(axis=1).astype(np.int64)
    population_float(ctx, t0, t1, skip=ctx.gate.position, keep=st["keep"], nactive=st["nactive"])
