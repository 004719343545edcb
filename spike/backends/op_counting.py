"""Operation counts from recorded signals, equal to what the numba backend counts while it runs.

A backend that does not count inside its kernels (lava: the work happens in Lava processes) records
every node's output and derives the counts afterwards from those spike trains and the weights,
with the numba backend's rules (``numba.backend`` docstring, design §7), per sample, summed over
steps:

- projections: non-zero (input, weight) pairs delivered in the run, i.e. the events of source
  steps ``0 .. T-1-delay`` times the number of non-zero weights each event reaches (border
  clipping included for conv2d), add to ``syn_ops`` or ``macs`` per (sample, source step): the
  pairs of a step are ``syn_ops`` when all of that sample's source values at that step are in
  {-1, 0, 1}, else ``macs`` (NeuroBench's per-call rule, with batch size 1); every pair from a
  source of signal "spike" is ``syn_ops`` (no test);
  ``dense_ops`` += all pairs of a step, every step; avg/sum pooling counts its (event, window)
  pairs as ``pool_ops`` (no ``syn_ops``/``macs``, no ``dense_ops``: NeuroBench counts no pooling);
  max pooling counts nothing;
- populations: ``neuron_updates`` += size per step; ``spikes`` += spikes (``li`` never spikes);
- host ops: ``host_flops`` += size * (number of sources - 1) per step.
- FTWT gates (as ``numba.gates``), per sample with the gate's mask (passed in as ``masks``, or
  recomputed from the recorded source values with ``gate_common``): a conv2d into a gated
  population (``Program.gated``) counts only the pairs delivered into kept channels
  (``dense_ops`` unchanged); the gated population counts ``neuron_updates`` for the neurons of
  kept channels only; the gate node counts ``gate_common.window_host_flops``.

Nodes appear in ``OpCounts`` in schedule order, as the engine inserts them.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from spike.backends.gate_common import gate_ref, gate_window, mask_from_window, window_host_flops
from spike.backends.layout import conv_layout, csr_row_nnz, windows_per_position
from spike.backends.registry import OP_KEYS
from spike.backends.result import OpCounts
from spike.compiler.ir.nodes import (
    Bernoulli, Conv2d, Dense, Gate, HostOp, Identity, Input, Node, Output, Pool2d, Population, Sparse, conv_output_hw,
)
from spike.compiler.ir.program import Program
from spike.compiler.ir.signals import output_signal
from spike.compiler.passes.gates import gate_record
from spike.backends.host_ops import host_op_counts

__all__ = ["count_ops", "projection_pair_weights"]


def projection_pair_weights(node: Node) -> tuple[np.ndarray, int] | None:
    """For a projection: (pairs each input element delivers per event ``[in_size]``, all pairs of
    one step), or None for max pooling (which routes events and counts nothing). For avg/sum
    pooling the pairs are its ``pool_ops`` (its dense figure is not added to ``dense_ops``)."""
    if isinstance(node, Dense):
        w = np.asarray(node.weight)
        return np.count_nonzero(w, axis=0).astype(np.int64), node.in_size * node.size
    if isinstance(node, Sparse):
        return csr_row_nnz(node.indptr, node.data), node.in_size * node.size
    if isinstance(node, Identity):
        return np.ones(node.size, np.int64), node.size
    if isinstance(node, Conv2d):
        layout = conv_layout(node, "")
        return layout.in_pairs, layout.dense_per_step
    if isinstance(node, Pool2d):
        if node.mode == "max":
            return None
        kh, kw = node.kernel
        C, H, W = node.in_shape
        Ho, Wo = conv_output_hw((H, W), (kh, kw), tuple(node.stride), tuple(node.padding))
        wy = windows_per_position(H, Ho, kh, node.stride[0], node.padding[0])
        wx = windows_per_position(W, Wo, kw, node.stride[1], node.padding[1])
        win = np.outer(wy, wx).reshape(-1)
        return np.tile(win, C), int(win.sum()) * C
    raise TypeError(f"not a projection: {node.KIND}")


class _Gates:
    """The gates of a recorded run: the record (``Program.gated``), each gate's mask ``keep[gate]``
    ``[B, C_out]`` (bool) and its ``host_flops``, from the recorded outputs of the gates' sources."""

    def __init__(self, program: Program, get: Callable[[str], np.ndarray], T: int, B: int,
                 masks: Mapping[str, np.ndarray] | None) -> None:
        self.gated = gate_record(program)
        self.keep: dict[str, np.ndarray] = {}
        self.host_flops: dict[str, np.ndarray] = {}
        for g, node in program.nodes():
            if not isinstance(node, Gate):
                continue
            ref = gate_ref(program, g, T)
            window = gate_window(ref, np.asarray(get(ref.source)).reshape(T, B, -1))
            m = None if masks is None else masks.get(g)
            self.keep[g] = mask_from_window(node.weight, node.bias, window) if m is None \
                else np.asarray(m).astype(bool).reshape(B, -1)
            self.host_flops[g] = window_host_flops(ref, window)

    def neurons(self, gate: str, size: int) -> np.ndarray:
        """``[B, size]`` bool: the neurons (channel-major) of kept channels."""
        keep = self.keep[gate]
        return np.repeat(keep, size // keep.shape[1], axis=1)


def _gated_conv_pairs(node: Conv2d, name: str, keep: np.ndarray) -> np.ndarray:
    """``[B, in_size]``: per sample, the (event, non-zero weight) pairs one event at each input
    element delivers into the kept output channels ``keep [B, C_out]`` (as ``numba.gates``)."""
    layout = conv_layout(node, name)
    nz = (layout.wc != 0).astype(np.int64)  # [G, cin_pg, kh, kw, cout_pg]
    B = keep.shape[0]
    kg = keep.reshape(B, layout.groups, layout.cout_pg).astype(np.int64)
    taps = np.einsum("gcyxj,bgj->bgcyx", nz, kg).reshape(B, layout.C, layout.kh, layout.kw)
    return np.stack([layout.input_pairs(taps[b]) for b in range(B)])


def count_ops(program: Program, output_of: Callable[[str], np.ndarray] | Mapping[str, np.ndarray],
              steps: int, batch: int, masks: Mapping[str, np.ndarray] | None = None) -> OpCounts:
    """The counts of a run of ``program`` whose node outputs (``[T, B, size]``, any numeric dtype)
    ``output_of(name)`` returns; only the outputs of projection sources and of populations are read
    (and of gate sources). ``masks``: the FTWT mask ``[B, C_out]`` of each gate when the caller
    knows it (else recomputed from the recorded source values)."""
    get = output_of.__getitem__ if isinstance(output_of, Mapping) else output_of
    T, B = steps, batch
    counts = OpCounts()
    gates = _Gates(program, get, T, B, masks)
    for stage in program.schedule():
        for name in stage.nodes:
            node = program.node(name)
            counts.kinds[name] = node.KIND
            if isinstance(node, (Input, Output, Bernoulli)):  # sources (given or generated) are not counted
                continue
            c = {k: np.zeros(B, dtype=np.int64) for k in OP_KEYS}
            counts.per_node[name] = c
            if isinstance(node, Population):
                gate = gates.gated.get(name)
                if gate is None:
                    c["neuron_updates"] += node.size * T
                else:  # only the neurons of kept channels update
                    c["neuron_updates"] += gates.neurons(gate, node.size).sum(axis=1) * T
                if node.model != "li":
                    c["spikes"] += np.count_nonzero(np.asarray(get(name)).reshape(T, B, -1), axis=(0, 2))
            elif isinstance(node, HostOp):
                srcs = program.sources(name)
                xs = [np.asarray(get(s), np.float32).reshape(T, B, -1) for s in srcs]
                spiking = [output_signal(program, s) == "spike" for s in srcs]
                for key, value in host_op_counts(node, xs, spiking).items():
                    c[key] += value
            elif isinstance(node, Gate):
                c["host_flops"] += gates.host_flops[name]
            else:  # a projection
                pw = projection_pair_weights(node)
                if pw is None:
                    continue
                per_input, dense_per_step = pw
                (src,) = program.sources(name)
                pool = isinstance(node, Pool2d)  # avg/sum pooling: pool_ops, no dense_ops (NeuroBench)
                x = np.asarray(get(src)).reshape(T, B, -1)[: max(T - node.delay, 0)]
                nz = (x != 0).astype(np.int64)  # [steps, B, in_size]
                gate = gates.gated.get(name)
                if gate is None:
                    pairs = nz @ per_input  # [steps, B]
                else:  # only the pairs into kept channels
                    pairs = np.einsum("tbi,bi->tb", nz, _gated_conv_pairs(node, name, gates.keep[gate]))
                if pool:
                    c["pool_ops"] += pairs.sum(axis=0)
                elif output_signal(program, src) == "spike":
                    c["syn_ops"] += pairs.sum(axis=0)
                else:
                    real = ((x != 0) & (x != 1) & (x != -1)).any(axis=2)  # [steps, B]
                    c["syn_ops"] += np.where(real, 0, pairs).sum(axis=0)
                    c["macs"] += np.where(real, pairs, 0).sum(axis=0)
                if not pool:
                    c["dense_ops"] += dense_per_step * T
    return counts
