"""Counts that describe a program: nodes by kind, neurons, synapses."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from spike.compiler.ir.nodes import Conv2d, Dense, Identity, Pool2d, Population, Sparse
from spike.compiler.ir.program import Program


def synapse_count(node: object) -> int:
    """Stored synapses of a projection (non-zero weights; conv: shared kernel weights)."""
    if isinstance(node, Dense):
        return int(np.count_nonzero(node.weight))
    if isinstance(node, Sparse):
        return int(np.count_nonzero(node.data))
    if isinstance(node, Conv2d):
        return int(np.count_nonzero(node.weight))
    if isinstance(node, Identity):
        return node.size if node.scale != 0 else 0
    if isinstance(node, Pool2d):
        return 0
    return 0


@dataclass(frozen=True)
class ProgramStats:
    kinds: dict[str, int]
    neurons: int
    synapses: int
    rows: list[tuple[str, str, str, int, int]]  # name, kind, shape, neurons, synapses
    metadata: dict

    def render(self) -> str:
        lines = [
            f"program: {sum(self.kinds.values())} nodes ("
            + ", ".join(f"{k} {v}" for k, v in sorted(self.kinds.items()))
            + f"), {self.neurons} neurons, {self.synapses} synapses",
            f"target {self.metadata.get('target', 'generic')}, precision {self.metadata.get('precision', 'float32')}",
            f"{'node':<28} {'kind':<11} {'shape':<16} {'neurons':>9} {'synapses':>10}",
        ]
        for name, kind, shape, n, s in self.rows:
            lines.append(f"{name:<28} {kind:<11} {shape:<16} {n:>9} {s:>10}")
        return "\n".join(lines)


def program_stats(program: Program) -> ProgramStats:
    kinds: Counter[str] = Counter()
    rows = []
    for name, node in program.nodes():
        kinds[node.KIND] += 1
        neurons = node.size if isinstance(node, Population) else 0
        syn = synapse_count(node)
        rows.append((name, node.KIND, "x".join(map(str, node.shape)), neurons, syn))
    return ProgramStats(
        kinds=dict(kinds),
        neurons=sum(r[3] for r in rows),
        synapses=sum(r[4] for r in rows),
        rows=rows,
        metadata=dict(program.metadata),
    )
