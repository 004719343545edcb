"""Passes for Loihi targets (design brief §4): make Lava's one-step synaptic latency explicit.

Lava's ``Dense``, ``Sparse`` and ``Conv`` processes send, at step t, what their input spikes of
step t-1 produced: every synaptic projection on Loihi is one step late, feed-forward and recurrent
alike. A program compiled for a Loihi target says so in the IR with ``delay=1`` on each projection;
the numba, cuda and torch backends honour delays, so the one program gives one result on every
backend, Lava included.

Rule of :func:`loihi_delays`: delay 0 becomes 1; delay 1 stays 1 (a recurrent projection already
needs delay >= 1 to break its cycle, and Lava's recurrent Dense is also exactly one step late, so
it is not made two steps late); a delay above 1 has no lowering on Loihi here (no axonal delays)
and is an error naming the projection.
"""
from __future__ import annotations

from spike.compiler.ir import Node, Projection
from spike.compiler.program import Program, ProgramError
from spike.compiler.validate import rebuild_graph

__all__ = ["LOIHI_DELAY", "is_loihi_target", "loihi_delays"]

LOIHI_DELAY = 1  # steps between a spike and the current it causes, on Loihi / in Lava


def is_loihi_target(target: object) -> bool:
    """True for the Loihi targets (``loihi1``, ``loihi2``, or a target object named so)."""
    name = getattr(target, "name", target)
    return isinstance(name, str) and name.strip().lower().startswith("loihi")


def loihi_delays(program: Program) -> Program:
    """A program with ``delay=1`` on every projection (see the module docstring).

    Raises :class:`ProgramError` naming a projection whose delay is above 1. Returns
    ``program`` itself when nothing changes; never mutates it."""
    changed: dict[str, Node] = {}
    for name, node in program.nodes():
        if not isinstance(node, Projection):
            continue
        if node.delay > LOIHI_DELAY:
            raise ProgramError(
                f"node {name!r} ({node.KIND}), field delay: {node.delay} steps; on a Loihi target every "
                f"projection is exactly {LOIHI_DELAY} step late (Lava's Dense/Sparse/Conv), longer delays "
                "are not supported"
            )
        if node.delay != LOIHI_DELAY:
            changed[name] = node.replace(delay=LOIHI_DELAY)
    if not changed:
        return program
    return program.with_graph(rebuild_graph(program, nodes=changed))
