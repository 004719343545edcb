"""FTWT gates: record which nodes each gate's mask acts on (``Program.gated``).

A :class:`~spike.compiler.ir.nodes.Gate` masks the output channels of the Population it feeds:
the population's neurons in masked channels do no updates and send no spikes, and the
projections into it deliver nothing into those channels. :func:`record_gates` writes this down
once, at compile time, as the typed field ``Program.gated``, a mapping

    node name -> name of the gate whose mask applies to the node

with one entry per gated population and one per projection into a gated population (by the gate
rules, :func:`~spike.compiler.ir.validate.check_gates`, conv2d projections reading the gate's
source). A gate node itself is not an entry; nodes no gate touches are absent. Backends choose
the kernel of every node once per run from it: the registered ``(kind, "gated")`` variant for an
entry, the plain kernel otherwise (``spike.backends.engine``), so no kernel looks the graph up.

The record is a function of the graph alone (:func:`gated_nodes`): files do not store it
(``spike.compiler.io.hdf5.load_program`` derives it again), a pass that changes the graph after
this one must run it again, and :func:`gate_record` gives the record of a program that never went
through the pass (one built by hand) by deriving it. A backend refuses a program whose record
disagrees with its graph.
"""
from __future__ import annotations

from typing import Mapping

from spike.compiler.ir.nodes import Gate, Population
from spike.compiler.ir.program import Program, rebuild_graph
from spike.compiler.ir.validate import check_gates

__all__ = ["record_gates", "gated_nodes", "gate_record"]


def gated_nodes(program: Program) -> dict[str, str]:
    """Node -> gate, for every population fed by a gate and every other source of that population
    (its projections), in graph order. Assumes the gate rules hold (:func:`record_gates` checks)."""
    out: dict[str, str] = {}
    for name, node in program.nodes():
        if not isinstance(node, Population):
            continue
        sources = program.sources(name)
        gates = [s for s in sources if isinstance(program.node(s), Gate)]
        if not gates:
            continue
        out[name] = gates[0]
        for s in sources:
            if s != gates[0]:
                out[s] = gates[0]
    return out


def record_gates(program: Program) -> Program:
    """The gate pass: check the gate rules and record ``Program.gated`` (module docstring). A
    program whose record is already current comes back as it is."""
    check_gates(program)
    gated = gated_nodes(program)
    if dict(program.gated) == gated:
        return program
    return program.with_graph(rebuild_graph(program), gated=gated)


def gate_record(program: Program) -> Mapping[str, str]:
    """``program.gated``; derived with :func:`gated_nodes` when the program has gates but no record
    (it did not go through :func:`record_gates`)."""
    if program.gated or not any(isinstance(node, Gate) for _, node in program.nodes()):
        return program.gated
    return gated_nodes(program)
