"""Score a PyTorch model on a dataset split, encoded as ``spike run`` encodes it.

One encoding of a split: :func:`encode_samples` encodes sample ``i`` of a split (its index in the
split) with a generator of its own, seeded from ``(seed, i)``, so the spikes of a sample do not
depend on the batch size, on the samples before it, or on ``--limit``.
:func:`spike.workflows.evaluate_program` (``spike run``) and the final test evaluation of ``spike
train`` (:func:`evaluate_model`) both encode through it, so a compiled float program and the model
it came from are scored on the same spikes and report the same accuracy (up to float rounding in
the backend).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from spike.encoders import Encoder

__all__ = ["predictions", "sample_seed", "encode_on_cpu", "encode_samples", "encoded_batches", "evaluate_model"]


def predictions(output: np.ndarray) -> np.ndarray:
    """Class per sample from an output ``[T, B, C]``: most spikes (or largest summed value)."""
    return output.reshape(output.shape[0], output.shape[1], -1).sum(axis=0).argmax(axis=1)


def sample_seed(seed: int, index: int) -> int:
    """The 32-bit seed of sample ``index`` of a split under ``seed`` (numpy's SeedSequence mixes the
    pair; torch's CPU generator keeps only 32 bits of a seed)."""
    if int(seed) < 0 or int(index) < 0:
        raise ValueError(f"seed and sample index must be >= 0, got seed={seed!r}, index={index!r}")
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def encode_on_cpu(encoder: Encoder, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``encoder(x)`` drawn on the CPU (``generator`` a CPU generator), returned on ``x``'s device:
    a model trained on a GPU sees the spikes it would see on the CPU with the same seed."""
    return encoder(x.cpu(), generator=generator).to(x.device)


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
    encoder: Encoder, x: torch.Tensor, batch_size: int = 64, seed: int = 0, first: int = 0
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(start, stop, spikes of x[start:stop])`` for consecutive batches (:func:`encode_samples`);
    ``x[0]`` is sample ``first`` of the whole set (a shard's offset), whose seed it gets."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(x), batch_size):
        stop = min(start + batch_size, len(x))
        yield start, stop, encode_samples(encoder, x[start:stop], first + start, seed)


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    encoder: Encoder,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Score a PyTorch model on ``(x, y)`` with the encoding :func:`spike.workflows.evaluate_program` uses.

    Returns ``{"accuracy", "correct", "num_samples", "seed", "steps"}``; the model runs in eval
    mode (restored after); the CPU-encoded spikes go to the device of its parameters. Prediction as
    :func:`predictions`.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was = model.training
    model.eval()
    correct = 0
    try:
        for start, stop, spikes in encoded_batches(encoder, x, batch_size, seed):
            out = model(spikes.to(device))
            correct += int((predictions(out.detach().cpu().numpy()) == y[start:stop].numpy()).sum())
    finally:
        model.train(was)
    n = len(x)
    return {"accuracy": correct / max(n, 1), "correct": correct, "num_samples": n, "seed": int(seed),
            "steps": encoder.num_steps}
