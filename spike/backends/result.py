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
    ``steps`` is the number of steps the counts are summed over: the steps the backend ran, the
    program's ``total_latency`` of padding included (``T + latency`` for an input of ``T`` steps;
    None when not known). :meth:`table` prints them; :meth:`to_records` and :meth:`to_dict` give
    them as rows and as columns (``pandas.DataFrame(counts.to_dict())``).
    """

    per_node: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    steps: int | None = None

    def keys(self) -> tuple[str, ...]:
        """:data:`OP_KEYS`, then the routing keys that some node has."""
        present = {k for c in self.per_node.values() for k in c}
        return OP_KEYS + tuple(k for k in ROUTING_KEYS if k in present)

    def per_sample_total(self) -> dict[str, np.ndarray]:
        total = {k: np.zeros(self.batch, dtype=np.float64) for k in self.keys()}
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

    @property
    def batch(self) -> int:
        """Samples counted (the length of every per-node array)."""
        return next((len(a) for c in self.per_node.values() for a in c.values()), 0)

    def to_records(self) -> list[dict[str, Any]]:
        """One row per node, in run order: ``{"node", "kind", <each of keys()>}``, the counts per
        sample (mean over samples, summed over steps), as floats."""
        return [{"node": n, "kind": self.kinds.get(n, ""), **self.node_mean(n)} for n in self.per_node]

    def to_dict(self) -> dict[str, list[Any]]:
        """The rows of :meth:`to_records` as columns, ``{"node": [...], "kind": [...], "syn_ops":
        [...], ...}``: what ``pandas.DataFrame(...)`` takes."""
        columns = ("node", "kind", *self.keys())
        rows = self.to_records()
        return {c: [r[c] for r in rows] for c in columns}

    def table(self) -> str:
        """The counts per node and in total, per sample (mean over samples, summed over steps); a
        column per key that some node counted (``syn_ops`` and ``spikes`` always)."""
        keys = [k for k in self.keys()
                if k in ("syn_ops", "spikes") or any(np.any(c.get(k, 0)) for c in self.per_node.values())]
        width = max([len("total"), *(len(n) for n in self.per_node)]) + 2
        head = f"{'node':<{width}}{'kind':<12}" + "".join(f"{k:>{max(len(k), 10) + 2}}" for k in keys)
        steps = f"summed over {self.steps} steps" if self.steps is not None else "summed over steps"
        lines = [f"operations per sample ({steps}, mean over {self.batch} sample(s))", head, "-" * len(head)]
        rows = [(r["node"], r["kind"], r) for r in self.to_records()] + [("total", "", self.total())]
        decimals = {k: 0 if all(float(c.get(k, 0.0)).is_integer() for _, _, c in rows) else 1 for k in keys}
        for i, (name, kind, counts) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("-" * len(head))
            lines.append(f"{name:<{width}}{kind:<12}" + "".join(
                f"{counts.get(k, 0.0):>{max(len(k), 10) + 2}.{decimals[k]}f}" for k in keys))
        return "\n".join(lines)

    @classmethod
    def concat(cls, parts: "list[OpCounts]") -> "OpCounts":
        """Join the counts of several batches of the same program (samples are appended); their
        ``steps`` must agree."""
        if not parts:
            return cls()
        steps = {p.steps for p in parts}
        if len(steps) > 1:
            raise ValueError("OpCounts.concat: the parts were counted over different numbers of steps "
                             f"{sorted(steps, key=str)}")
        merged = cls(kinds=dict(parts[0].kinds), steps=parts[0].steps)
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
    """``outputs`` and ``probes`` are numpy arrays ``[T, B, *shape]``. A backend builds it from the
    whole run (``T`` = the steps it ran), so ``ops.steps`` is that ``T`` unless the backend set it;
    the engine then cuts the outputs to the input's aligned steps (``spike.backends.engine.aligned``).
    ``spike_counts`` (int64 ``[B, *shape]``) and ``spike_lists`` (``recording.SpikeList``) hold what
    ``run(..., record=...)`` asked for, by node name (``spike.backends.recording``)."""

    outputs: dict[str, np.ndarray]
    probes: dict[str, np.ndarray]
    ops: OpCounts
    timing: dict[str, float]
    backend: str
    spike_counts: dict[str, np.ndarray] = field(default_factory=dict)
    spike_lists: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ops.steps is None:
            arrays = [*self.outputs.values(), *self.probes.values()]
            if arrays:
                self.ops.steps = int(np.shape(arrays[0])[0])

    @property
    def output(self) -> np.ndarray:
        """The single output (error if the program has several)."""
        if len(self.outputs) != 1:
            raise ValueError(f"program has {len(self.outputs)} outputs: {sorted(self.outputs)}")
        return next(iter(self.outputs.values()))
