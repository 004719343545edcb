"""Helpers that let per-sample layers run on time-first ``[T, B, ...]`` tensors."""
from __future__ import annotations

import torch
from torch import nn


class TimeDistributed(nn.Module):
    """Apply ``module`` to every step: ``[T, B, ...] -> [T*B, ...] -> module -> [T, B, ...]``.

    Conv2d, BatchNorm and pooling expect ``[N, C, H, W]``; wrap them so multi-step networks can
    use them. The compiler sees through the wrapper and lowers the inner module.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"TimeDistributed expects [T, B, ...], got {list(x.shape)}")
        T, B = x.shape[:2]
        y = self.module(x.reshape(T * B, *x.shape[2:]))
        return y.reshape(T, B, *y.shape[1:])
