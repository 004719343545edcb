"""Run a compiled program over a dataset split in batches and build the report."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from spike.backends import OpCounts, run
from spike.compiler.ir import Population
from spike.compiler.program import Program
from spike.encoders import Encoder


@dataclass
class Report:
    accuracy: float
    num_samples: int
    steps: int
    backend: str
    ops: OpCounts
    program: Program
    timing: dict[str, float]

    def per_node_rows(self) -> list[dict[str, Any]]:
        rows = []
        for entry in self.ops.to_json()["per_node"]:
            node = self.program.node(entry["name"])
            rate = entry["spikes"] / (node.size * self.steps) if isinstance(node, Population) else None
            rows.append({**entry, "neurons": node.size if isinstance(node, Population) else 0, "firing_rate": rate})
        return rows

    def to_json(self) -> dict[str, Any]:
        ops = self.ops.to_json()
        ops["per_node"] = self.per_node_rows()
        return {
            "accuracy": self.accuracy,
            "num_samples": self.num_samples,
            "steps": self.steps,
            "backend": self.backend,
            "target": self.program.metadata.get("target", "generic"),
            "ops": ops,
            "timing": self.timing,
            "counts_are": "per sample, summed over steps (mean over samples)",
        }

    def table(self) -> str:
        head = f"{'node':<24} {'kind':<10} {'spikes':>10} {'rate':>7} {'syn_ops':>12} {'macs':>12} {'dense_ops':>12}"
        lines = [head, "-" * len(head)]
        for r in self.per_node_rows():
            rate = f"{r['firing_rate']:.3f}" if r["firing_rate"] is not None else ""
            lines.append(
                f"{r['name']:<24} {r['kind']:<10} {r['spikes']:>10.1f} {rate:>7} {r['syn_ops']:>12.0f} "
                f"{r['macs']:>12.0f} {r['dense_ops']:>12.0f}"
            )
        t = self.ops.total()
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<24} {'':<10} {t['spikes']:>10.1f} {'':>7} {t['syn_ops']:>12.0f} {t['macs']:>12.0f} {t['dense_ops']:>12.0f}"
        )
        lines.append(f"neuron_updates {t['neuron_updates']:.0f}, host_flops {t['host_flops']:.0f} (per sample)")
        return "\n".join(lines)


def encoder_of(program: Program, steps: int | None = None) -> Encoder:
    enc = dict(program.metadata.get("encoding") or {"kind": "direct", "num_steps": steps or 1, "params": {}})
    if steps is not None:
        enc["num_steps"] = steps
    return Encoder.from_dict(enc)


def predictions(output: np.ndarray) -> np.ndarray:
    """Class per sample from an output ``[T, B, C]``: most spikes (or largest summed value)."""
    return output.reshape(output.shape[0], output.shape[1], -1).sum(axis=0).argmax(axis=1)


def evaluate_program(
    program: Program,
    x: torch.Tensor,
    y: torch.Tensor,
    backend: str = "numba",
    steps: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Report:
    """Encode ``x`` as the program was trained, run it batch by batch, score and count."""
    encoder = encoder_of(program, steps)
    gen = torch.Generator().manual_seed(seed)
    correct, parts, run_s = 0, [], 0.0
    starts = range(0, len(x), batch_size)
    for start in tqdm(starts, desc=f"run on {backend}", disable=not progress, unit="batch"):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        result = run(program, encoder(xb, generator=gen), backend=backend)
        correct += int((predictions(result.output) == yb.numpy()).sum())
        parts.append(result.ops)
        run_s += result.timing["run_s"]
    n = len(x)
    return Report(
        accuracy=correct / max(n, 1),
        num_samples=n,
        steps=encoder.num_steps,
        backend=backend,
        ops=OpCounts.concat(parts),
        program=program,
        timing={"run_s": run_s, "ms_per_sample": 1e3 * run_s / max(n, 1)},
    )
