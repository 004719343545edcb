"""What every backend's FTWT gate execution shares: the gate a kernel applies, its mask, its cost.

A :class:`~spike.compiler.ir.nodes.Gate` masks the Population it feeds (``Program.gated`` names
the population and its projections, ``spike.compiler.passes.gates``). The engine resolves, once
per run, the :class:`GateRef` of every node that needs a mask (the gate node itself, the gated
population, the projections into it) and hands it to the node's kernel as ``ctx.gate``. The mask
of a gate is computed once per run (from the complete output of its source, see ``ir.Gate``) by
whichever kernel needs it first, and kept in the run's ``ctx.shared``. The logits come from
:func:`spike.ftwt.gate_logits`, the function the PyTorch model uses, so compiled masks equal the
model's.

Counts of a gate node (``host_flops``, per sample): one add per non-zero source value over the
window (the channel sums), then ``4*C_in`` (divide, exp, sum, normalise: the softmax of the
pooled counts), ``2*C_in*C_out`` (the 1x1 conv), ``2*C_out`` (bias and the sign test).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from spike.backends.registry import BackendError
from spike.compiler.ir.nodes import Gate
from spike.compiler.ir.program import Program
from spike.ftwt import gate_logits

__all__ = ["GateRef", "GateRun", "gate_ref", "gate_window", "mask_from_window", "window_host_flops", "gate_run",
           "gate_mask"]

_RUNS = "ftwt_gates"  # key of the run's gates in ctx.shared


@dataclass(frozen=True)
class GateRef:
    """The FTWT gate whose mask a node applies, resolved by the engine once per run.

    ``source`` is the node the gate reads; its window is steps ``start .. start + steps - 1`` of
    the run (the source's latency on, ``node.window`` steps or all of the trained run's);
    ``position`` is the gate's index among the sources of a gated population (-1 elsewhere)."""

    name: str
    node: Gate
    source: str
    start: int
    steps: int
    position: int = -1


@dataclass(frozen=True)
class GateRun:
    """A gate in one run: its mask ``[B, C_out]`` (bool, True = kept) and its ``host_flops`` ``[B]``."""

    mask: np.ndarray
    host_flops: np.ndarray


def gate_ref(program: Program, gate: str, run_steps: int, position: int = -1) -> GateRef:
    """The :class:`GateRef` of ``gate`` in a run of ``run_steps`` steps (the input padded by the
    program's latency)."""
    node = program.node(gate)
    if not isinstance(node, Gate):
        raise TypeError(f"node {gate!r} is a {node.KIND}, not a gate")
    (src,) = program.sources(gate)
    trained = run_steps - program.total_latency  # the trained run's steps; the source's start at its latency
    steps = trained if node.window <= 0 else min(node.window, trained)
    return GateRef(gate, node, src, program.latency_of(src), max(steps, 0), position)


def _host(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def gate_window(ref: GateRef, values: Any) -> np.ndarray:
    """The source's values over the gate's window, ``[steps, B, C_in, positions]``, from its whole
    output ``values`` ``[T, B, size]`` (host array or tensor)."""
    vals = _host(values)
    B = vals.shape[1]
    return vals[ref.start : ref.start + ref.steps].reshape(ref.steps, B, ref.node.in_shape[0], -1)


def mask_from_window(weight: Any, bias: Any, vals: np.ndarray) -> np.ndarray:
    """The mask ``[B, C_out]`` (bool) of a gate head (``weight [C_out, C_in]``, ``bias``) from its
    source's values over the window, ``[steps, B, C_in, positions]`` (also used by the lava
    backend's gate process, so every backend decides alike)."""
    sums = vals.astype(np.float64).sum(axis=(0, 3)).astype(np.float32)  # [B, C_in]
    positions = float(vals.shape[3])
    with torch.no_grad():
        logits = gate_logits(torch.from_numpy(sums), positions, torch.from_numpy(np.asarray(weight, np.float32)),
                             torch.from_numpy(np.asarray(bias, np.float32)))
    return np.ascontiguousarray(logits.numpy() > 0)


def window_host_flops(ref: GateRef, window: np.ndarray) -> np.ndarray:
    """Per-sample host operations of the gate head (module docstring) over its ``window``."""
    events = np.count_nonzero(window.reshape(window.shape[0], window.shape[1], -1), axis=(0, 2)).astype(np.int64)
    c_in, c_out = ref.node.in_shape[0], ref.node.shape[0]
    return events + 4 * c_in + 2 * c_in * c_out + 2 * c_out


def gate_run(ctx: Any, to_host: Callable[[Any], Any] = _host) -> GateRun:
    """The :class:`GateRun` of ``ctx.gate`` in this run, computed once (kept in ``ctx.shared``) from
    the source's output ``ctx.values[ctx.gate.source]`` (complete when a node after it runs),
    brought to the host by ``to_host``."""
    ref: GateRef = ctx.gate
    runs = ctx.shared.setdefault(_RUNS, {})
    run = runs.get(ref.name)
    if run is None:
        if ref.source not in ctx.values:
            raise BackendError(f"gate {ref.name!r}: its source {ref.source!r} has not run yet (a gate needs its "
                               "source's steps first)")
        window = gate_window(ref, to_host(ctx.values[ref.source]))
        run = runs[ref.name] = GateRun(mask_from_window(ref.node.weight, ref.node.bias, window),
                                       window_host_flops(ref, window))
    return run


def gate_mask(ctx: Any, to_host: Callable[[Any], Any] = _host) -> np.ndarray:
    """The mask ``[B, C_out]`` (bool, True = kept) of ``ctx.gate`` in this run."""
    return gate_run(ctx, to_host).mask
