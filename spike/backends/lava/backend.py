"""The lava backend: a Program lowered to lava-nc processes and run in Lava's Loihi 2 simulation.

Unlike the kernel backends, it runs the whole program in Lava (``Backend.runner``): every node
becomes Lava processes, connected as the IR's edges, run for ``T`` steps per sample in Lava's
Loihi 2 simulation (fixed point bit-accurate), then stopped; the result is the same ``RunResult``
as numba's, with the same operation counts. This module registers the backend and holds its
entry points: :func:`lower` (the plan, cached per program; what ``check`` runs) and the runner.
The parts, one module each:

- ``plan``: what runs as which Lava process (one lowering per node kind), timing, biases, and
  every refusal;
- ``synapses``: the weights in Lava's forms (fixed point: ``2 * W``, ``weight_exp - 1``);
- ``fusion``: host mode, the fused blocks that compute host ops, zero-delay projections and the
  populations Lava's LIF cannot (``BlockStep``);
- ``build``: the lava-nc process graph of a plan;
- ``run``: running it sample by sample, recording, reading back, counting;
- ``gates``: the staged runs of FTWT-gated programs;
- ``procs``: our own Lava processes (``HostAdd``, ``FTWTGate``, ``FusedBlock``).

Refused before anything starts, naming the node: outside host mode, float populations with a
reset other than ``zero``, ``reset_delay=True`` or ``fire_ge=True`` (Lava's LIF resets to zero in
the step it fires on ``v > vth``); in host mode, conv2d, pool2d and gates (the batch runs side by
side, which Lava's Conv and the gate stages do not); host ops other than ``add`` in fixed point;
float ``cuba_lif`` fed by a projection with a bias (Lava adds biases to ``v``, not to the synaptic
current); Lava synapses reading the membrane of an ``li`` readout that is a Lava LIF (it sends only
spikes; a fused ``li`` sends ``v``); max pooling of real values; a program made of several
unconnected parts; gates in a fixed-point program (no backend runs those), gates breaking
``validate.check_gates``, and gated populations with a negative threshold (a masked neuron at rest
would fire on Lava), conv2d projections of delay > 1 into a gated population (a DelaySparse,
whose weights the stages cannot mask). Gated programs cannot run step by step on any backend
(``engine.run``).
"""
from __future__ import annotations

import weakref

import numpy as np

from spike.backends.lava.plan import LavaPlan, plan_program
from spike.backends.lava.run import execute
from spike.backends.registry import Backend, register_backend
from spike.backends.result import RunResult
from spike.compat.lava import LAVA_INSTALL_HINT, lava_available
from spike.compiler.ir.program import Program

__all__ = ["BACKEND", "LavaBackend", "lower"]


_PLANS: "weakref.WeakKeyDictionary[Program, LavaPlan]" = weakref.WeakKeyDictionary()


def lower(program: Program) -> LavaPlan:
    """The Lava process plan of ``program``, or a :class:`BackendError` listing every node it
    cannot lower (checked without starting anything; lava need not be installed). Cached per
    program object (programs are immutable)."""
    plan = _PLANS.get(program)
    if plan is None:
        plan = _PLANS[program] = plan_program(program)
    return plan


class LavaBackend(Backend):
    """Checks by lowering the program (every refusal names its node); runs through ``runner``."""

    def check(self, program: Program) -> None:
        self.check_usable(program)
        lower(program)


def _run(program: Program, arrays: dict[str, np.ndarray], sig_probes: set[str], mem_probes: set[str],
         cur_probes: set[str], steps: int, batch: int) -> RunResult:
    from spike.backends.op_counting import count_ops

    plan = lower(program)
    return execute(program, plan, arrays, steps, batch, sig_probes, mem_probes, cur_probes, count_ops)


def _available() -> str | None:
    why = lava_available()
    return None if why is None else why if LAVA_INSTALL_HINT in why else f"{why} ({LAVA_INSTALL_HINT})"


BACKEND = register_backend(
    LavaBackend(
        name="lava",
        precisions=frozenset({"float32", "fixed"}),
        available=_available,
        runner=_run,
    )
)
