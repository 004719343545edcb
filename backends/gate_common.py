"""What every backend's FTWT gate execution shares: graph look-ups, the mask and its cost.

A :class:`~spike.compiler.ir.nodes.Gate` masks the Population it feeds. During a run the mask of a gate
is computed once (from the complete output of its source, see ``ir.Gate``) by whichever kernel
needs it first, the gate's own or a projection into the gated population, and kept in the run's
``ctx.shared``. The logits come from :func:`spike.ftwt.gate_logits`, the function the PyTorch
model uses, so compiled masks equal the model's.

Counts of a gate node (``host_flops``, per sample): one add per non-zero source value over the
window (the channel sums), then ``4*C_in`` (divide, exp, sum, normalise: the softmax of the
pooled counts), ``2*C_in*C_out`` (the 1x1 conv), ``2*C_out`` (bias and the sign test).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from spike.backends.registry import Backend, BackendError
from spike.compiler.ir.nodes import Gate, Population
from spike.compiler.ir.program import Program, ProgramError
from spike.compiler.ir.validate import check_gates

__all__ = ["gate_of_population", "gated_consumer", "gate_mask", "mask_from_window", "gate_host_flops",
           "add_gate_checks"]

_MASKS = "ftwt_gate_masks"


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def gate_of_population(program: Program, name: str) -> tuple[str, int] | None:
    """``(gate name, index among the population's sources)`` or None."""
    for i, s in enumerate(program.sources(name)):
        if isinstance(program.node(s), Gate):
            return s, i
    return None


def gated_consumer(program: Program, projection: str) -> tuple[str, str] | None:
    """``(population, gate)`` when ``projection`` feeds a gated population, else None."""
    for c in program.consumers(projection):
        node = program.node(c)
        if isinstance(node, Population):
            g = gate_of_population(program, c)
            if g is not None:
                return c, g[0]
    return None


def _window_values(ctx: Any, gate: str) -> tuple[Gate, np.ndarray]:
    program: Program = ctx.program
    node = program.node(gate)
    if not isinstance(node, Gate):
        raise BackendError(f"node {gate!r} is a {node.KIND}, not a gate")
    (src,) = program.sources(gate)
    if src not in ctx.values:
        raise BackendError(f"gate {gate!r}: its source {src!r} has not run yet (a gate needs its source's steps first)")
    vals = _to_numpy(ctx.values[src])
    T, B = vals.shape[:2]
    T -= program.total_latency  # the trained run's steps; the source's start at its latency
    lo = program.latency_of(src)
    steps = T if node.window <= 0 else min(node.window, T)
    return node, vals[lo : lo + steps].reshape(steps, B, node.in_shape[0], -1)


def gate_mask(ctx: Any, gate: str) -> np.ndarray:
    """The mask ``[B, C_out]`` (bool, True = kept) of ``gate`` in this run, computed once."""
    masks = ctx.shared.setdefault(_MASKS, {})
    if gate in masks:
        return masks[gate]
    node, vals = _window_values(ctx, gate)
    mask = mask_from_window(node.weight, node.bias, vals)
    masks[gate] = mask
    return mask


def mask_from_window(weight: Any, bias: Any, vals: np.ndarray) -> np.ndarray:
    """The mask ``[B, C_out]`` (bool) of a gate head (``weight [C_out, C_in]``, ``bias``) from its
    source's values over the window, ``[steps, B, C_in, positions]`` (also used by the lava
    backend's gate process, so every backend decides alike)."""
    from spike.ftwt import gate_logits

    sums = vals.astype(np.float64).sum(axis=(0, 3)).astype(np.float32)  # [B, C_in]
    positions = float(vals.shape[3])
    with torch.no_grad():
        logits = gate_logits(torch.from_numpy(sums), positions, torch.from_numpy(np.asarray(weight, np.float32)),
                             torch.from_numpy(np.asarray(bias, np.float32)))
    return np.ascontiguousarray(logits.numpy() > 0)


def gate_host_flops(ctx: Any, gate: str) -> np.ndarray:
    """Per-sample host operations of the gate head (module docstring)."""
    node, vals = _window_values(ctx, gate)
    events = np.count_nonzero(vals.reshape(vals.shape[0], vals.shape[1], -1), axis=(0, 2)).astype(np.int64)
    c_in, c_out = node.in_shape[0], node.shape[0]
    return events + 4 * c_in + 2 * c_in * c_out + 2 * c_out


def add_gate_checks(backend: Backend) -> None:
    """Make ``backend.check`` also apply the gate rules (``validate.check_gates``) before a run."""
    plain = backend.check

    def check(program: Program) -> None:
        plain(program)
        if any(isinstance(n, Gate) for _, n in program.nodes()):
            try:
                check_gates(program)
            except ProgramError as e:
                raise BackendError(f"backend {backend.name!r} cannot execute this program: {e}") from None

    backend.check = check  # type: ignore[method-assign]
