"""Spiking VGG- and ResNet-style CNNs (conv -> BatchNorm -> LIF), optionally pruned on the fly with
FTWT channel masks (:mod:`spike.ftwt`). Time-first input ``[T, B, C, H, W]``, output spikes
``[T, B, num_classes]`` (classify by spike count).

Presets (:data:`PRESETS`; any field can be overridden):

- ``digits``: a small VGG for the built-in 8x8 digits (input ``[1, 8, 8]``): 32 channels, 2x2 max
  pooling (an OR of spikes), 64 and 64 channels, 2x2 max pooling, a linear layer to 10 LIF outputs;
- ``mnist``: a VGG for MNIST (``[1, 28, 28]``): 32, 64, 128 channels, each followed by 2x2 pooling;
- ``digits_resnet``: a ResNet-8 for the digits (widths 8/16/32);
- ``vgg16``: VGG-16 with BatchNorm on CIFAR-10 (``[3, 32, 32]``), as FTWT's ``vgg16_bn``;
- ``resnet20``, ``resnet56``: CIFAR ResNets (3 stages of (depth-2)/6 basic blocks, widths
  16/32/64, global average pooling, linear classifier).

Every conv layer of a VGG is a :class:`~spike.ftwt.GatedConv`; in a ResNet the stem and the first
conv of every block are, and the second conv of a block is a plain conv whose neurons also take the
shortcut (identity, or a 1x1 conv + BatchNorm when the shape changes): the identity path is never
masked. ``ftwt`` (None for the unmasked baseline) holds the :class:`~spike.ftwt.FTWTGate` settings
(``ratio``, ``mode``, ``mass``, ``window``) used for every gated layer.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spike.ftwt import GatedConv, _real_steps
from spike.layers import Delayed, MaxPool2d, silent_before
from spike.layers import TimeDistributed as TD
from spike.neurons import LIF

torch.fx.wrap("silent_before")  # traced as one call; the compiler checks the delayed projection before it

__all__ = ["PRESETS", "DATASET_PRESETS", "SpikingCNN", "ResidualBlock", "count_syn_ops"]

_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

#: The preset ``spike train cnn`` uses for each dataset unless ``--preset`` says otherwise.
DATASET_PRESETS = {"digits": "digits", "mnist": "mnist", "cifar10": "vgg16"}

PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(arch="vgg", in_channels=1, input_size=8, num_classes=10, layers=[32, "M", 64, 64, "M"]),
    "mnist": dict(arch="vgg", in_channels=1, input_size=28, num_classes=10, layers=[32, "M", 64, "M", 128, "M"]),
    "digits_resnet": dict(arch="resnet", in_channels=1, input_size=8, num_classes=10, depth=8, widths=[8, 16, 32]),
    "vgg16": dict(arch="vgg", in_channels=3, input_size=32, num_classes=10, layers=_VGG16),
    "resnet20": dict(arch="resnet", in_channels=3, input_size=32, num_classes=10, depth=20, widths=[16, 32, 64]),
    "resnet56": dict(arch="resnet", in_channels=3, input_size=32, num_classes=10, depth=56, widths=[16, 32, 64]),
}


class ResidualBlock(nn.Module):
    """Spiking basic block: ``s1 = GatedConv(x)``; ``out = LIF(BN(conv(s1)) + shortcut(x))``."""

    def __init__(self, in_planes: int, planes: int, stride: int, neuron: dict[str, Any],
                 gate: dict[str, Any] | None, delay: int = 0) -> None:
        super().__init__()
        self.conv1 = GatedConv(in_planes, planes, 3, stride, 1, gate=gate, delay=delay, **neuron)
        self.conv2 = Delayed(TD(nn.Conv2d(planes, planes, 3, 1, 1, bias=False)), delay)
        self.bn2 = TD(nn.BatchNorm2d(planes))
        self.downsample = stride != 1 or in_planes != planes
        if self.downsample:
            self.sc_conv = Delayed(TD(nn.Conv2d(in_planes, planes, 1, stride, 0, bias=False)), delay)
            self.sc_bn = TD(nn.BatchNorm2d(planes))
        else:
            self.shortcut = Delayed(nn.Identity(), delay)
        self.lif2 = LIF(**neuron)
        self.delay = int(delay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.conv1(x)
        main = silent_before(self.bn2(self.conv2(s1)), self.delay)  # BN's shift travels with the events
        if self.downsample:
            return self.lif2(main + silent_before(self.sc_bn(self.sc_conv(x)), self.delay))
        return self.lif2(main + self.shortcut(x))


class SpikingCNN(nn.Module):
    """``[T, B, C, H, W] -> spikes [T, B, num_classes]``; see the module docstring.

    ``SpikingCNN(preset="digits", *, arch, in_channels, input_size, num_classes, layers (VGG:
    channel counts and "M" for 2x2 max pooling), depth, widths (ResNet), beta, threshold, reset,
    reset_delay, surrogate, ftwt, synaptic_delay)``. All arguments are plain values (they go into
    checkpoints). ``synaptic_delay`` delays every synaptic layer (convs, pooling, the classifier,
    the residual identity) by that many steps, as Loihi's synapses do (1): such a model equals its
    program compiled for a Loihi target; give it ``synaptic_delay`` more steps per layer:
    :attr:`latency` (``synaptic_delay * synaptic_depth``, the synaptic layers on the longest path)
    more in all.
    """

    def __init__(
        self,
        preset: str | None = "digits",
        *,
        arch: str | None = None,
        in_channels: int | None = None,
        input_size: int | None = None,
        num_classes: int | None = None,
        layers: Sequence[int | str] | None = None,
        depth: int | None = None,
        widths: Sequence[int] | None = None,
        beta: float = 0.5,
        threshold: float = 1.0,
        reset: str = "subtract",
        reset_delay: bool = True,
        surrogate: str = "atan",
        ftwt: dict[str, Any] | None = None,
        synaptic_delay: int = 0,
    ) -> None:
        super().__init__()
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
        cfg = dict(PRESETS[preset]) if preset is not None else {}
        given = dict(arch=arch, in_channels=in_channels, input_size=input_size, num_classes=num_classes,
                     layers=layers, depth=depth, widths=widths)
        cfg.update({k: v for k, v in given.items() if v is not None})
        for key in ("arch", "in_channels", "input_size", "num_classes"):
            if cfg.get(key) is None:
                raise ValueError(f"SpikingCNN: {key} is required (no preset gives it)")
        self.arch = cfg["arch"]
        self.config = cfg
        neuron = dict(beta=beta, threshold=threshold, reset=reset, reset_delay=reset_delay, surrogate=surrogate)
        gate = dict(ftwt) if ftwt else None
        d = int(synaptic_delay)
        if d < 0:
            raise ValueError(f"SpikingCNN: synaptic_delay must be >= 0, got {synaptic_delay!r}")
        self.synaptic_delay = d
        size = int(cfg["input_size"])
        c_in = int(cfg["in_channels"])
        if self.arch == "vgg":
            if not cfg.get("layers"):
                raise ValueError("SpikingCNN(arch='vgg'): layers is required")
            feats: list[nn.Module] = []
            for v in cfg["layers"]:
                if v == "M":
                    if size < 2:
                        raise ValueError(f"SpikingCNN: too many poolings for input size {cfg['input_size']}")
                    feats.append(Delayed(TD(MaxPool2d(2)), d))
                    size //= 2
                else:
                    feats.append(GatedConv(c_in, int(v), 3, 1, 1, gate=gate, delay=d, **neuron))
                    c_in = int(v)
            self.features = nn.Sequential(*feats)
            depth_synaptic = len(cfg["layers"])  # every conv and pooling
            n_flat = c_in * size * size
            self.pool = None
        elif self.arch == "resnet":
            depth = cfg.get("depth")
            widths = list(cfg.get("widths") or [16, 32, 64])
            if depth is None or (int(depth) - 2) % 6 or int(depth) < 8:
                raise ValueError(f"SpikingCNN(arch='resnet'): depth must be 6n+2 >= 8, got {depth!r}")
            n = (int(depth) - 2) // 6
            blocks: list[nn.Module] = [GatedConv(c_in, widths[0], 3, 1, 1, gate=gate, delay=d, **neuron)]
            c_in = widths[0]
            for stage, w in enumerate(widths):
                for i in range(n):
                    stride = 2 if (stage > 0 and i == 0) else 1
                    blocks.append(ResidualBlock(c_in, w, stride, neuron, gate, d))
                    c_in = w
                    size = (size - 1) // stride + 1
            self.features = nn.Sequential(*blocks)
            self.pool = Delayed(TD(nn.AvgPool2d(size)), d)  # global average of the spikes
            depth_synaptic = 1 + 2 * n * len(widths) + 1  # stem, two convs per block (the longer path), pooling
            n_flat = c_in
        else:
            raise ValueError(f"SpikingCNN: arch must be 'vgg' or 'resnet', got {self.arch!r}")
        self.fc = Delayed(nn.Linear(n_flat, int(cfg["num_classes"])), d)
        self.out = LIF(**neuron)
        #: synaptic layers on the longest path from the input to the output (the classifier included)
        self.synaptic_depth = depth_synaptic + 1

    @property
    def latency(self) -> int:
        """Steps by which the output trails the input: ``synaptic_delay * synaptic_depth``."""
        return self.synaptic_delay * self.synaptic_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.features(x)
        if self.pool is not None:
            s = self.pool(s)
        return self.out(self.fc(torch.flatten(s, 2)))


@torch.no_grad()
def count_syn_ops(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` and count, per sample, the (non-zero input, non-zero weight) pairs of
    every conv and linear layer and every residual identity, as the compiled program's backends do:
    per (step, sample), ``syn_ops`` when all that sample's layer inputs of that step are in
    {-1, 0, 1}, ``macs`` otherwise (NeuroBench's rule); average pooling's (non-zero
    input, window) pairs go to ``pool_ops`` (as the backends: NeuroBench counts no pooling). Gated
    layers count only pairs into the channels they keep. Returns ``{"syn_ops", "macs",
    "pool_ops"}`` ``[B]`` and ``"output"``."""
    B = x.shape[1]
    totals = {k: torch.zeros(B, dtype=torch.float64) for k in ("syn_ops", "macs", "pool_ops")}
    gated = [m for m in model.modules() if isinstance(m, GatedConv)]
    inside = {id(m.conv.module) for m in gated}
    hooks = []

    def add(k: str, per_sample: torch.Tensor) -> None:
        totals[k] += per_sample.to(torch.float64)

    def add_pairs(inp: torch.Tensor, pairs: torch.Tensor) -> None:
        """``pairs`` ``[T, B]`` from the layer input ``inp`` (``[T, B, ...]`` or ``[T*B, ...]``)."""
        real = _real_steps(inp.reshape(pairs.shape[0], B, -1))
        zero = torch.zeros_like(pairs)
        add("macs", torch.where(real, pairs, zero).sum(dim=0))
        add("syn_ops", torch.where(real, zero, pairs).sum(dim=0))

    def conv_hook(m: nn.Conv2d, args: tuple, out: torch.Tensor) -> None:
        inp = args[0]  # [T*B, C, H, W]
        y = F.conv2d((inp != 0).float(), (m.weight != 0).float(), None, m.stride, m.padding, m.dilation, m.groups)
        add_pairs(inp, y.reshape(-1, B, *y.shape[1:]).sum(dim=(2, 3, 4)))

    def linear_hook(m: nn.Linear, args: tuple, out: torch.Tensor) -> None:
        inp = args[0]  # [T, B, F]
        y = F.linear((inp != 0).float(), (m.weight != 0).float())
        add_pairs(inp, y.reshape(-1, B, y.shape[-1]).sum(dim=2))

    def avgpool_hook(m: nn.AvgPool2d, args: tuple, out: torch.Tensor) -> None:
        inp = args[0]
        y = F.avg_pool2d((inp != 0).float(), m.kernel_size, m.stride, m.padding, divisor_override=1)
        add("pool_ops", y.reshape(-1, B, *y.shape[1:]).sum(dim=(0, 2, 3, 4)))

    def identity_hook(m: nn.Identity, args: tuple, out: torch.Tensor) -> None:
        inp = args[0]  # [T, B, C, H, W], already delayed
        add_pairs(inp, (inp != 0).float().sum(dim=(2, 3, 4)))

    for m in model.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in inside:
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, nn.AvgPool2d):
            hooks.append(m.register_forward_hook(avgpool_hook))
        elif isinstance(m, ResidualBlock) and not m.downsample:
            hooks.append(m.shortcut.module.register_forward_hook(identity_hook))
    was = model.training
    model.eval()
    for m in gated:
        m.count_pairs = True
    try:
        out = model(x)
        for m in gated:
            if m.stats is not None and m.stats.in_events is not None:
                add("syn_ops", m.stats.in_events - m.stats.in_macs)
                add("macs", m.stats.in_macs)
    finally:
        for h in hooks:
            h.remove()
        for m in gated:
            m.count_pairs = False
        model.train(was)
    totals["output"] = out
    return totals
