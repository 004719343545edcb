"""Run a compiled program over a dataset split in batches and build the report.

One encoding of a split: :func:`encode_samples` encodes sample ``i`` of a split (its index in the
split) with a generator of its own, seeded from ``(seed, i)``, so the spikes of a sample do not
depend on the batch size, on the samples before it, or on ``--limit``. :func:`evaluate_program`
(``spike run``) and the final test evaluation of ``spike train`` (:func:`evaluate_model`) both
encode through it, so a compiled float program and the model it came from are scored on the
same spikes and report the same accuracy (up to float rounding in the backend).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from spike.backends import OpCounts, run
from spike.compiler.ir.nodes import Input, Population
from spike.compiler.ir.program import Program
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
            "target_delays": self.program.metadata.get("target_delays"),  # mode, synaptic_delay, latency
            "ops": ops,
            "timing": self.timing,
            "counts_are": "per sample, summed over steps (mean over samples)",
        }

    def table(self) -> str:
        head = f"{'node':<24} {'kind':<10} {'spikes':>10} {'rate':>7} {'syn_ops':>12} {'macs':>12} {'dense_ops':>12} {'pool_ops':>12}"
        lines = [head, "-" * len(head)]
        for r in self.per_node_rows():
            rate = f"{r['firing_rate']:.3f}" if r["firing_rate"] is not None else ""
            lines.append(
                f"{r['name']:<24} {r['kind']:<10} {r['spikes']:>10.1f} {rate:>7} {r['syn_ops']:>12.0f} "
                f"{r['macs']:>12.0f} {r['dense_ops']:>12.0f} {r.get('pool_ops', 0.0):>12.0f}"
            )
        t = self.ops.total()
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<24} {'':<10} {t['spikes']:>10.1f} {'':>7} {t['syn_ops']:>12.0f} {t['macs']:>12.0f} {t['dense_ops']:>12.0f} {t.get('pool_ops', 0.0):>12.0f}"
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


def sample_seed(seed: int, index: int) -> int:
    """The 32-bit seed of sample ``index`` of a split under ``seed`` (numpy's SeedSequence mixes the
    pair; torch's CPU generator keeps only 32 bits of a seed)."""
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and sample index must be >= 0, got seed={seed!r}, index={index!r}")
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def encode_samples(encoder: Encoder, x: torch.Tensor, first: int = 0, seed: int = 0) -> torch.Tensor:
    """Encode ``x``, the samples ``first, first + 1, ...`` of a split, as ``spike run`` does: ``[T, B, ...]``.

    A random encoding (rate) draws sample ``i`` with a generator seeded by
    :func:`sample_seed(seed, i) <sample_seed>`; deterministic ones encode the batch at once. The
    result for a sample is therefore the same in any batch that holds it.
    """
    if encoder.kind != "rate":
        return encoder(x)
    if len(x) == 0:
        return encoder(x)
    parts = [encoder(x[i : i + 1], generator=torch.Generator().manual_seed(sample_seed(seed, first + i)))
             for i in range(len(x))]
    return torch.cat(parts, dim=1)


def encoded_batches(
    encoder: Encoder, x: torch.Tensor, batch_size: int = 64, seed: int = 0
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(start, stop, spikes of x[start:stop])`` for consecutive batches (:func:`encode_samples`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(x), batch_size):
        stop = min(start + batch_size, len(x))
        yield start, stop, encode_samples(encoder, x[start:stop], start, seed)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    encoder: Encoder,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Score a PyTorch model on ``(x, y)`` with the encoding :func:`evaluate_program` uses.

    Returns ``{"accuracy", "correct", "num_samples", "seed", "steps"}``; the model runs in eval
    mode (restored after) on the CPU tensors it is given. Prediction as :func:`predictions`.
    """
    was = model.training
    model.eval()
    correct = 0
    try:
        for start, stop, spikes in encoded_batches(encoder, x, batch_size, seed):
            out = model(spikes)
            correct += int((predictions(out.detach().cpu().numpy()) == y[start:stop].numpy()).sum())
    finally:
        model.train(was)
    n = len(x)
    return {"accuracy": correct / max(n, 1), "correct": correct, "num_samples": n, "seed": int(seed),
            "steps": encoder.num_steps}


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
    """Encode ``x`` as the program was trained, run it batch by batch, score and count.

    The spikes come from :func:`encoded_batches` (sample ``i`` seeded from ``(seed, i)``), so the
    report is a function of ``(program, x, y, steps, seed)`` whatever the batch size, and equals
    the accuracy :func:`evaluate_model` gives the float model with the same seed.
    """
    encoder = encoder_of(program, steps)
    correct, parts, run_s = 0, [], 0.0
    total = -(-len(x) // batch_size) if batch_size >= 1 else None
    batches = encoded_batches(encoder, x, batch_size, seed)
    for start, stop, spikes in tqdm(batches, total=total, desc=f"run on {backend}", disable=not progress, unit="batch"):
        yb = y[start:stop]
        result = run(program, spikes, backend=backend)
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


def calibration_rates(program: Program, inputs: Any, backend: str = "numba") -> dict[str, np.ndarray]:
    """Per-neuron events per step of every population and input, from one run on ``inputs``: the
    firing rates ``spike.compiler.compile(..., firing_rates=)`` weights spike traffic by when it
    places a program on a target's cores."""
    names = [n for n, node in program.nodes() if isinstance(node, (Population, Input))]
    probed = run(program, inputs, backend=backend, probes=names).probes
    return {
        n: (probed[n] != 0).reshape(probed[n].shape[0], probed[n].shape[1], -1).mean(axis=(0, 1))
        for n in names
    }
