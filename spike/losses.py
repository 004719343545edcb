"""Classification losses and accuracies for time-first SNN outputs ``[T, B, C]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "rate_cross_entropy",
    "count_mse",
    "membrane_cross_entropy",
    "accuracy_from_spikes",
    "accuracy_from_logits",
]


def _check(outputs: torch.Tensor, targets: torch.Tensor, what: str) -> None:
    if outputs.dim() != 3:
        raise ValueError(f"{what} must be time-first [T, B, C], got shape {tuple(outputs.shape)}")
    if targets.shape != (outputs.shape[1],):
        raise ValueError(f"targets must be [B] = [{outputs.shape[1]}] class indices, got {tuple(targets.shape)}")


def rate_cross_entropy(spikes: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy with the spike counts ``spikes.sum(0)`` ([B, C]) as logits.

    Equals ``snntorch.functional.ce_count_loss()`` (no population code, no class weights) in
    value and gradient. (snnTorch's ``ce_rate_loss`` differs: it averages the cross-entropy of
    each step's spikes over time.)
    """
    _check(spikes, targets, "spikes")
    return F.cross_entropy(spikes.sum(0), targets, reduction=reduction)


def count_mse(
    spikes: torch.Tensor,
    targets: torch.Tensor,
    correct_rate: float = 0.8,
    incorrect_rate: float = 0.2,
) -> torch.Tensor:
    """MSE between spike counts and target counts, divided by T: as ``snntorch.functional.mse_count_loss``.

    Target count is ``int(T * correct_rate)`` for the correct class and ``int(T * incorrect_rate)``
    for the others (truncated to integers, as snnTorch does); the loss is
    ``mean((spikes.sum(0) - target)**2) / T``.
    """
    _check(spikes, targets, "spikes")
    if not 0 <= incorrect_rate <= correct_rate <= 1:
        raise ValueError(f"need 0 <= incorrect_rate <= correct_rate <= 1, got {incorrect_rate}, {correct_rate}")
    num_steps, _, num_classes = spikes.shape
    on, off = int(num_steps * correct_rate), int(num_steps * incorrect_rate)
    one_hot = F.one_hot(targets.long(), num_classes).bool()
    counts = spikes.sum(0)
    target_counts = torch.full_like(counts, float(off)).masked_fill(one_hot, float(on))
    return F.mse_loss(counts, target_counts) / num_steps


def membrane_cross_entropy(mem: torch.Tensor, targets: torch.Tensor, over_time: str = "last") -> torch.Tensor:
    """Cross-entropy of a non-spiking readout's membrane ``[T, B, C]`` used as logits.

    ``over_time``: ``"last"`` uses ``mem[-1]``, ``"mean"`` the mean over T, ``"max"`` the max over T
    (``"max"`` equals ``snntorch.functional.ce_max_membrane_loss``).
    """
    _check(mem, targets, "mem")
    if over_time == "last":
        logits = mem[-1]
    elif over_time == "mean":
        logits = mem.mean(0)
    elif over_time == "max":
        logits = mem.max(0).values
    else:
        raise ValueError(f"over_time must be 'last', 'mean' or 'max', got {over_time!r}")
    return F.cross_entropy(logits, targets)


def accuracy_from_logits(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows of ``logits`` [B, C] whose argmax (first on ties) equals ``targets`` [B]."""
    if logits.dim() != 2 or targets.shape != (logits.shape[0],):
        raise ValueError(f"want logits [B, C] and targets [B], got {tuple(logits.shape)}, {tuple(targets.shape)}")
    if logits.shape[0] == 0:
        return float("nan")
    return (logits.argmax(-1) == targets).float().mean().item()


def accuracy_from_spikes(spikes: torch.Tensor, targets: torch.Tensor) -> float:
    """Accuracy of the most-spiking class: ``accuracy_from_logits(spikes.sum(0), targets)`` for ``[T, B, C]``."""
    _check(spikes, targets, "spikes")
    return accuracy_from_logits(spikes.sum(0), targets)
