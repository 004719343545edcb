"""FTWT gates on the lava backend: a gated program runs each sample in stages.

Gates (``ir.Gate``: per sample, a channel mask computed from ``window`` steps of the gate's
source from the source's latency on (``gate_common._window_values``; ``FTWTGate(start=...)``),
applied to every step of the gated population): a mask is not causal, so a gated program
runs each sample in stages, all in the same process graph. Each gate has a level: 0 when no gated
population lies upstream of its source, else 1 + the highest level among the gates upstream; the
gate depth ``D`` is the highest level + 1, and every sample runs ``D + 1`` times, ``T`` steps each:

- run ``s`` (``s = 0 .. D-1``) applies the masks of the gates of level < ``s`` (known from earlier
  runs of this sample) and leaves the others open (all channels kept); the ``FTWTGate`` processes
  of level ``s`` sum their source over the window and compute the mask with the function every
  backend uses (``gate_common.mask_from_window`` -> ``spike.ftwt.gate_logits``), held in their
  ``mask`` Var, which is read after the run; then the state is reset and the sample re-run;
- run ``D`` applies every mask; only its recordings are the result (the gates, recomputing their
  masks there, must agree with the masks applied, which is checked).

A mask is applied without extra processes, by ``Var.set`` between runs: the weights of the
gated population's conv2d projections into masked channels are set to 0 (a Lava ``Conv``'s
``weight``) and so are the LIF biases of masked neurons (the projections' folded biases), so a
masked neuron receives nothing, stays at ``u = v = 0`` and never fires (its threshold must not be
negative), as on numba, where masked neurons do no updates. The conv2d's recorded output is 0 in
masked channels (numba: no bias there), a gate's output its mask at every step, and the counts
(``op_counting.count_ops`` with the masks read from Lava) are numba's: syn_ops/macs only into kept
channels, neuron_updates only of kept neurons, the gate head's ``host_flops``.

Inputs are replayed in every run (the source ring buffers hold each sample ``D + 1`` times) and
the sinks and monitors record all runs; the result takes each sample's final run. Timing is
honest: ``run_s`` is the time of every run of every stage plus the mask reads and weight/bias
writes between them (not the state resets, as without gates), ``stages`` is ``D + 1`` and
``final_stage_run_s`` the time of the final runs alone (with the bias writes within them);
``ms_per_step`` is ``run_s`` per step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from spike.backends.lava.build import LavaGraph
from spike.backends.lava.plan import LavaPlan, lif_bias
from spike.backends.registry import BackendError

__all__ = ["GateStages"]


class GateStages:
    """The staged runs of a gated program on one process graph (module docstring): before
    run ``stage`` of sample ``b``, the masks of gates of level < ``stage`` are applied (the weights of
    their conv2d projections into masked channels and the LIF biases of masked neurons set to 0),
    the others left open (all channels); after the run, the masks of gates of level ``stage`` are
    read from their ``FTWTGate`` processes; after the final run every mask is read again and must
    be unchanged (each gate's source saw the same masks as when its mask was taken). Also, for
    every program, the LIF biases as a run goes (:meth:`apply_biases`, ``plan`` docstring "Biases")."""

    def __init__(self, plan: LavaPlan, graph: LavaGraph, masks: dict[str, np.ndarray]) -> None:
        self.plan, self.g, self.masks = plan, graph, masks
        self.final = plan.stages - 1
        self.applied: dict[Any, Any] = {}  # conv / ("bias", LIF) -> what its Lava Var holds now (None: no mask)

    def _known(self, gate: str | None, b: int, stage: int) -> np.ndarray | None:
        if gate is None or self.plan.gate_level[gate] >= stage:
            return None
        return self.masks[gate][b]

    def apply(self, b: int, stage: int) -> None:
        for conv, gate in self.plan.gated_convs.items():
            keep = self._known(gate, b, stage)
            tag = None if keep is None else keep.tobytes()
            if self.applied.get(conv) != tag:
                w = self.plan.procs[conv].args["weight"]  # [C_out, kw, kh, C_in/groups]
                self.g.procs[conv].weight.set(w if keep is None else np.where(keep[:, None, None, None], w, 0.0))
                self.applied[conv] = tag

    def apply_biases(self, b: int, stage: int, t: int) -> None:
        """Before step ``t`` of run ``stage`` of sample ``b``: every LIF's ``bias_mant`` is the sum of
        its parts whose onset is ``<= t`` (masked channels: none); only changed values are set."""
        for pop, parts in self.plan.bias_parts.items():
            keeps = {gate: self._known(gate, b, stage) for gate, _, _ in parts if gate is not None}
            started = tuple(onset <= t for _, onset, _ in parts)
            tag = (started, tuple(None if k is None else k.tobytes() for k in keeps.values()))
            initial = (tuple(onset <= 0 for _, onset, _ in parts), (None,) * len(keeps))  # as built (finish)
            if self.applied.get(("bias", pop), initial) != tag:
                value = lif_bias(parts, self.g.program.node(pop).size, keeps.get, t)
                self.g.procs[pop].bias_mant.set(np.tile(value, self.g.lanes))
                self.applied[("bias", pop)] = tag

    def read(self, b: int, stage: int) -> None:
        for gate, level in self.plan.gate_level.items():
            if level == stage or stage == self.final:
                keep = np.asarray(self.g.procs[gate].mask.get()) > 0.5
                if stage != self.final:
                    self.masks[gate][b] = keep
                elif not np.array_equal(keep, self.masks[gate][b]):
                    raise BackendError(f"internal: gate {gate!r} decided differently in the final run of sample {b}")
