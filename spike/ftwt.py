"""Fire-Together-Wire-Together (FTWT) dynamic channel masks for spiking CNNs.

FTWT (Elkerdawy, Elhoushi, Zhang, Ray, CVPR 2022; code ``selkerdawy/FTWT`` ``utils/layers.py``)
gives every masked conv layer a small *head* that predicts, per sample, which of the layer's output
channels to compute. Here, for a layer with input ``s_in[T, B, C_in, H, W]`` (the previous layer's
spikes, or the encoded input) and output channels ``C_out``:

* **Head** (:func:`gate_logits`): per channel, the input's spike count over the steps seen and all
  positions, divided by ``H * W`` (a global average pool of the per-position spike counts)
  -> softmax over channels -> 1x1 conv with bias (``weight [C_out, C_in]``, ``bias [C_out]``)
  -> logits ``P [B, C_out]``. Mask ``M = sigmoid(P) > 0.5``, computed as ``P > 0`` (the same test
  without rounding ``sigmoid`` to 0.5 near zero). ``M`` is a hard threshold: no task-loss gradient
  reaches the head through it.
* **Causality** (the IR's ``Gate`` node has the same rule): the head reads the counts of the
  layer input over the first ``window`` steps (``window=0``: all ``T`` steps of the run) and the
  mask holds for every step of the sample. A layer therefore needs its input's counts (all of
  them by default) before its first step: the network runs layer by layer, as the multi-step
  PyTorch model and the compiled program both do. With ``window = k`` the mask needs only the
  first ``k`` steps of the input.
* **Masked channels** do not integrate, update or spike: the layer emits ``LIF(I) * M`` (for the
  spikes this equals not running the masked neurons at all; the compiled program skips their
  synaptic operations and updates).
* **Targets** (:func:`ftwt_targets`, self-supervised, per sample): the channel "mass" ``a_c`` of the
  layer's *unmasked* output given its (masked) input; ``p = a / sum(a)``; sort descending; keep
  the channels whose cumulative sum stays ``<= r`` (within ``1e-5``, as the reference code);
  ``r >= 1`` drops exactly the channels with ``a_c = 0``. The spiking mass (default,
  ``mass="spikes"``) is the channel's spike count over positions and the steps seen, which is
  proportional to the synaptic operations the channel causes downstream; ``mass="absmax"`` is the
  paper's ``max |O_c|`` taken over positions and steps of the layer's pre-activation (BatchNorm
  output, the neurons' input current), for comparison.
* **Loss** (:func:`ftwt_loss`): ``CE + lambda * mean over layers of (sum over channels of the
  batch-mean BCEWithLogits(P, g))``; :func:`mask_loss_weight` gives ``lambda = 1`` for the first
  half of the epochs, then 0. ``mode="decoupled"`` (default) detaches the head's input; ``"joint"``
  lets the mask loss train the backbone through it.

:class:`GatedConv` is one masked layer (conv -> BatchNorm -> LIF, with its head); it is a leaf for
the compiler, which lowers it to ``Conv2d``, ``BatchNorm``, ``Population`` and ``Gate`` nodes
(``spike.models.cnn.lowering``). Without a gate it is a plain conv layer (the unmasked
baseline shares the architecture, so an FTWT model starts from the baseline's weights).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from spike.layers import TimeDistributed, shift_steps, silent_before
from spike.neurons import LIF

__all__ = [
    "MASS_KINDS",
    "MODES",
    "TARGET_DELTA",
    "channel_sums",
    "gate_logits",
    "ftwt_targets",
    "FTWTGate",
    "GatedConv",
    "LayerStats",
    "gated_layers",
    "ftwt_loss",
    "mask_loss_weight",
    "oracle_masks",
]

MASS_KINDS = ("spikes", "absmax")
MODES = ("decoupled", "joint")
TARGET_DELTA = 1e-5  # the reference code's tolerance on the cumulative mass


def _steps(T: int, window: int) -> int:
    return T if window <= 0 else min(int(window), T)


def channel_sums(x: torch.Tensor, window: int = 0) -> torch.Tensor:
    """``[T, B, C, *spatial] -> [B, C]`` float32: sum over the first ``window`` steps (0: all) and
    all positions, accumulated in float64 (exact for spike counts and dyadic inputs)."""
    if x.dim() < 3:
        raise ValueError(f"channel_sums expects [T, B, C, ...], got shape {tuple(x.shape)}")
    t = _steps(x.shape[0], window)
    dims = (0,) + tuple(range(3, x.dim()))
    return x[:t].detach().to(torch.float64).sum(dim=dims).to(torch.float32)


def head_denominator(in_shape: tuple[int, ...]) -> float:
    """The number of positions ``H * W``: channel sums over it are the global average pool of the
    per-position spike counts."""
    positions = 1
    for d in in_shape[1:]:
        positions *= int(d)
    return float(positions)


def gate_logits(chan_sum: torch.Tensor, denom: float, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Head logits ``[B, C_out]`` from channel sums ``[B, C_in]``: ``softmax(sums / denom) @ W.T + b``.

    Every user (the model, the torch and numba backends) calls this one function, so the masks
    ``logits > 0`` agree bit for bit. Without autograd the 1x1 conv is an element-wise product
    summed over ``C_in`` (the same reduction for any batch size, unlike a BLAS matmul).
    """
    x = chan_sum.to(torch.float32) / torch.tensor(denom, dtype=torch.float32)
    p = torch.softmax(x, dim=1)
    w = weight.to(torch.float32)
    b = bias.to(torch.float32)
    if torch.is_grad_enabled() and (p.requires_grad or w.requires_grad or b.requires_grad):
        return F.linear(p, w, b)
    return (p.unsqueeze(1) * w.unsqueeze(0)).sum(dim=2) + b


@torch.no_grad()
def ftwt_targets(mass: torch.Tensor, ratio: float) -> torch.Tensor:
    """Target mask ``[B, C]`` (float 0/1) from the channel mass ``[B, C]`` (module docstring).

    ``ratio >= 1``: keep exactly the channels with ``mass > 0``. Otherwise ``p = mass / sum``,
    sorted descending (stable), and a channel is kept while the cumulative sum up to and including
    it is ``<= ratio + 1e-5``. A sample whose mass is all zero keeps nothing (nothing fires).
    """
    if mass.dim() != 2:
        raise ValueError(f"ftwt_targets expects mass [B, C], got shape {tuple(mass.shape)}")
    if not ratio > 0:
        raise ValueError(f"ratio must be > 0, got {ratio!r}")
    m = mass.detach().to(torch.float64)
    if ratio >= 1:
        return (m > 0).to(torch.float32)
    total = m.sum(dim=1, keepdim=True)
    p = torch.where(total > 0, m / total.clamp_min(1e-300), torch.zeros_like(m))
    sorted_p, order = torch.sort(p, dim=1, descending=True, stable=True)
    keep_sorted = (torch.cumsum(sorted_p, dim=1) - ratio <= TARGET_DELTA) & (sorted_p > 0)
    keep = torch.zeros_like(keep_sorted)
    keep.scatter_(1, order, keep_sorted)
    return keep.to(torch.float32)


class FTWTGate(nn.Module):
    """The mask head of one layer: ``weight [C_out, C_in]``, ``bias [C_out]`` (a 1x1 conv).

    ``ratio`` (r of the target rule), ``mode`` (``decoupled``/``joint``), ``mass``
    (``spikes``/``absmax``) and ``window`` (steps the head reads; 0 = all). The weight starts at
    zero and the bias at ``init_bias`` (> 0): every channel is on at first, so training starts
    from the unmasked network's behaviour.
    """

    def __init__(self, in_channels: int, out_channels: int, ratio: float = 1.0, mode: str = "decoupled",
                 mass: str = "spikes", window: int = 0, init_bias: float = 1.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if mass not in MASS_KINDS:
            raise ValueError(f"mass: expected one of {MASS_KINDS}, got {mass!r}")
        if not float(ratio) > 0:
            raise ValueError(f"ratio must be > 0, got {ratio!r}")
        if int(window) < 0:
            raise ValueError(f"window must be >= 0 (0 = all steps), got {window!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.ratio, self.mode, self.mass, self.window = float(ratio), mode, mass, int(window)
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels))
        self.bias = nn.Parameter(torch.full((out_channels,), float(init_bias)))

    def forward(self, s_in: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, C_out]`` from the layer input ``[T, B, C_in, ...]``."""
        x = s_in.detach() if self.mode == "decoupled" else s_in
        t = _steps(x.shape[0], self.window)
        dims = (0,) + tuple(range(3, x.dim()))
        if x.requires_grad:  # joint mode: keep the graph (float32 sums)
            sums = x[:t].sum(dim=dims)
        else:
            sums = channel_sums(x, self.window)
        denom = head_denominator(tuple(x.shape[2:]))
        return gate_logits(sums, denom, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, ratio={self.ratio:g}, mode={self.mode!r}, "
                f"mass={self.mass!r}, window={self.window}")


@dataclass
class LayerStats:
    """What one masked layer saw in its last forward (for the loss and the reports)."""

    logits: torch.Tensor | None  # [B, C_out] head logits (None for oracle masks)
    targets: torch.Tensor  # [B, C_out] 0/1
    mask: torch.Tensor  # [B, C_out] 0/1, applied
    in_events: torch.Tensor | None = None  # [B] synaptic-op pairs into kept channels (when counting)
    # [B] the part of in_events from (step, sample)s with an input value outside {-1, 0, 1}: MACs
    # (NeuroBench's rule, decided per step and sample as the backends do); the rest are syn_ops
    in_macs: torch.Tensor | None = None


class GatedConv(nn.Module):
    """``[T, B, C_in, H, W] -> spikes [T, B, C_out, H', W']``: conv (no bias) -> BatchNorm -> LIF,
    times the FTWT channel mask when ``gate`` is set (see the module docstring).

    ``gate``: None (plain layer) or keyword arguments of :class:`FTWTGate`. ``delay``: the conv reads
    its input that many steps late (a synaptic delay, e.g. Loihi's one step; the head reads the
    input undelayed, as the IR's Gate reads its source). ``oracle_ratio`` (set by
    :func:`oracle_masks`) replaces the head by the target rule itself: the mask is the layer's
    own targets at that ratio ("estimate before training"). After each forward ``stats`` holds a
    :class:`LayerStats` when a mask was applied (None otherwise).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, *, beta: float = 0.5, threshold: float = 1.0, reset: str = "subtract",
                 reset_delay: bool = True, surrogate: str = "atan", gate: dict[str, Any] | None = None,
                 delay: int = 0) -> None:
        super().__init__()
        if int(delay) < 0:
            raise ValueError(f"delay must be >= 0, got {delay!r}")
        self.delay = int(delay)
        self.conv = TimeDistributed(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False))
        self.bn = TimeDistributed(nn.BatchNorm2d(out_channels))
        self.lif = LIF(beta=beta, threshold=threshold, reset=reset, reset_delay=reset_delay, surrogate=surrogate)
        self.gate = FTWTGate(in_channels, out_channels, **gate) if gate is not None else None
        self.oracle_ratio: float | None = None
        self.oracle_mass: str = "spikes"
        self.count_pairs = False
        self.stats: LayerStats | None = None

    @property
    def in_channels(self) -> int:
        return self.conv.module.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.module.out_channels

    def _mass(self, kind: str, current: torch.Tensor, spikes: torch.Tensor, window: int) -> torch.Tensor:
        if kind == "spikes":
            return channel_sums(spikes, window)
        t = _steps(current.shape[0], window)
        return current[:t].detach().abs().amax(dim=(0, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = silent_before(self.bn(self.conv(shift_steps(x, self.delay))), self.delay)
        spikes = self.lif(current)
        self.stats = None
        if self.gate is None and self.oracle_ratio is None:
            if self.count_pairs:
                ones = torch.ones(x.shape[1], self.out_channels)
                self.stats = LayerStats(None, ones, ones, *self._pairs(x, ones))
            return spikes
        if self.oracle_ratio is not None:
            window = self.gate.window if self.gate is not None else 0
            targets = ftwt_targets(self._mass(self.oracle_mass, current, spikes, window), self.oracle_ratio)
            logits, mask = None, targets
        else:
            g = self.gate
            targets = ftwt_targets(self._mass(g.mass, current, spikes, g.window), g.ratio)
            logits = g(x)
            mask = (logits.detach() > 0).to(spikes.dtype)
        self.stats = LayerStats(logits, targets, mask, *(self._pairs(x, mask) if self.count_pairs else (None, None)))
        return spikes * mask[None, :, :, None, None]

    @torch.no_grad()
    def _pairs(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, (non-zero input, non-zero weight) pairs delivered into kept channels, and the
        part of them that are MACs (:func:`_real_steps`)."""
        conv = self.conv.module
        x = shift_steps(x, self.delay)
        T, B = x.shape[:2]
        nz_x = (x != 0).to(torch.float32).reshape(T * B, *x.shape[2:])
        nz_w = (conv.weight != 0).to(torch.float32)
        y = F.conv2d(nz_x, nz_w, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        y = y.reshape(T, B, *y.shape[1:]).sum(dim=(3, 4))  # [T, B, C_out]
        pairs = (y * mask[None]).sum(dim=2)  # [T, B]
        return pairs.sum(dim=0), torch.where(_real_steps(x), pairs, torch.zeros_like(pairs)).sum(dim=0)


def _real_steps(x: torch.Tensor) -> torch.Tensor:
    """``[T, B]`` of ``x`` ``[T, B, ...]``: True where a value of that step and sample is outside
    {-1, 0, 1} (NeuroBench's rule, per layer call: that (step, sample)'s pairs are MACs, else
    accumulates, syn_ops)."""
    v = x.reshape(x.shape[0], x.shape[1], -1)
    return ((v != 0) & (v != 1) & (v != -1)).any(dim=2)


def gated_layers(model: nn.Module) -> Iterator[tuple[str, GatedConv]]:
    """``(name, layer)`` for every :class:`GatedConv` with a gate, in module order."""
    for name, m in model.named_modules():
        if isinstance(m, GatedConv) and m.gate is not None:
            yield name, m


def ftwt_loss(model: nn.Module, task_loss: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(task_loss + lam * mask_loss, mask_loss)`` from the last forward of ``model``'s gated layers.

    ``mask_loss`` = mean over layers of ``sum_c mean_b BCEWithLogits(P[b, c], g[b, c])``.
    """
    terms = []
    for _, layer in gated_layers(model):
        st = layer.stats
        if st is None or st.logits is None:
            continue
        bce = F.binary_cross_entropy_with_logits(st.logits, st.targets, reduction="none")
        terms.append(bce.mean(dim=0).sum())
    if not terms:
        zero = task_loss.new_zeros(())
        return task_loss, zero
    mask_loss = torch.stack(terms).mean()
    return (task_loss + lam * mask_loss if lam else task_loss), mask_loss


def mask_loss_weight(epoch: int, epochs: int) -> float:
    """FTWT's schedule: ``lambda = 1`` for the first half of the epochs (0-based ``epoch``), then 0."""
    return 1.0 if epoch < max(1, epochs // 2) else 0.0


class oracle_masks:
    """Context manager: every :class:`GatedConv` of ``model`` masks with its own targets at ``ratio``
    (computed from its unmasked output, given its masked input), gate or not."""

    def __init__(self, model: nn.Module, ratio: float, mass: str = "spikes") -> None:
        self.layers = [m for m in model.modules() if isinstance(m, GatedConv)]
        self.ratio, self.mass = float(ratio), mass

    def __enter__(self) -> "oracle_masks":
        for m in self.layers:
            m.oracle_ratio, m.oracle_mass = self.ratio, self.mass
        return self

    def __exit__(self, *exc: Any) -> None:
        for m in self.layers:
            m.oracle_ratio, m.oracle_mass = None, "spikes"
