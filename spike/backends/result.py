"""What a run returns: outputs, probed values, measured operation counts and timing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spike.backends.registry import OP_KEYS

# Added by spike.backends.routing after a run of a mapped program (design §7); reported only
# when present.
ROUTING_KEYS = ("spikes_routed_local", "spikes_routed_hops", "syn_mem_reads_bytes")


@dataclass
class OpCounts:
    """Counts measured by the executing backend, per node and per sample (summed over steps).

    ``per_node[name][key]`` is an array ``[B]``; keys are :data:`OP_KEYS`, plus
    :data:`ROUTING_KEYS` for a mapped program. ``kinds[name]`` is the node kind, for reports.
    """

    per_node: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def keys(self) -> tuple[str, ...]:
        """:data:`OP_KEYS`, then the routing keys that some node has."""
        present = {k for c in self.per_node.values() for k in c}
        return OP_KEYS + tuple(k for k in ROUTING_KEYS if k in present)

    def per_sample_total(self) -> dict[str, np.ndarray]:
        batch = next((len(a) for c in self.per_node.values() for a in c.values()), 0)
        total = {k: np.zeros(batch, dtype=np.float64) for k in self.keys()}
        for counts in self.per_node.values():
            for k, a in counts.items():
                total[k] = total[k] + a
        return total

    def total(self) -> dict[str, float]:
        """Mean over samples of the per-sample totals."""
        return {k: float(np.mean(v)) if len(v) else 0.0 for k, v in self.per_sample_total().items()}

    def node_mean(self, name: str) -> dict[str, float]:
        counts = self.per_node[name]
        return {k: float(np.mean(counts[k])) if k in counts and len(counts[k]) else 0.0 for k in self.keys()}

    @classmethod
    def concat(cls, parts: "list[OpCounts]") -> "OpCounts":
        """Join the counts of several batches of the same program (samples are appended)."""
        if not parts:
            return cls()
        merged = cls(kinds=dict(parts[0].kinds))
        for name in parts[0].per_node:
            merged.per_node[name] = {
                k: np.concatenate([p.per_node[name][k] for p in parts]) for k in parts[0].per_node[name]
            }
        return merged

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total(),
            "per_node": [
                {"name": n, "kind": self.kinds.get(n, ""), **self.node_mean(n)} for n in self.per_node
            ],
        }


@dataclass
class RunResult:
    """``outputs`` and ``probes`` are numpy arrays ``[T, B, *shape]``."""

    outputs: dict[str, np.ndarray]
    probes: dict[str, np.ndarray]
    ops: OpCounts
    timing: dict[str, float]
    backend: str

    @property
    def output(self) -> np.ndarray:
        """The single output (error if the program has several)."""
        if len(self.outputs) != 1:
            raise ValueError(f"program has {len(self.outputs)} outputs: {sorted(self.outputs)}")
        return next(iter(self.outputs.values()))
