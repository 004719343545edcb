"""Torch and snnTorch models for the tests, made exact: dyadic weights (float sums exact in any
order, so a compiled program equals the model bit for bit), BatchNorms whose fold stays dyadic,
random spike inputs; the spiking CNNs with FTWT gates; running an snnTorch ``init_hidden`` net."""
from __future__ import annotations

import torch
from torch import nn

from spike.ftwt import FTWTGate
from spike.layers import TimeDistributed as TD
from spike.models.cnn.model import SpikingCNN
from spike.neurons import IF, LIF, CubaLIF


def dyadic_(model: nn.Module, seed: int, scale: int = 256, spread: int = 96) -> nn.Module:
    """Replace every weight/bias by random multiples of 1/scale (exact float sums)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("weight", "bias")) and "bn" not in name:
                p.copy_(torch.randint(-spread, spread + 8, p.shape, generator=g).float() / scale)
    return model


def dyadic_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    """BatchNorm whose fold stays dyadic: var + eps = 1, dyadic gamma, beta, mean."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_var.fill_(1 - bn.eps)
        bn.running_mean.copy_(torch.randint(-4, 5, bn.running_mean.shape, generator=g).float() / 16)
        bn.weight.copy_(torch.randint(1, 9, bn.weight.shape, generator=g).float() / 4)
        bn.bias.copy_(torch.randint(-4, 5, bn.bias.shape, generator=g).float() / 16)


def spikes_in(shape: tuple[int, ...], seed: int, p: float = 0.3) -> torch.Tensor:
    """0/1 spikes of ``shape`` (``[T, B, ...]``), each 1 with probability ``p``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).float()


# ---------------------------------------------------------------------------- our neurons


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(2), nn.Linear(36, 48), LIF(beta=0.875, threshold=1.0), nn.Dropout(0.2),
            nn.Linear(48, 32), LIF(beta=0.5, threshold=0.75, reset="zero", reset_delay=False),
            nn.Linear(32, 10), CubaLIF(alpha=0.5, beta=0.75),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = TD(nn.Conv2d(2, 4, 3, padding=1))
        self.lif1 = LIF(beta=0.75)
        self.pool1 = TD(nn.MaxPool2d(2))
        self.conv2 = TD(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2))
        self.lif2 = IF(threshold=1.5)
        self.pool2 = TD(nn.AvgPool2d(2))
        self.fc = nn.Linear(6, 5)
        self.out = LIF(beta=0.5, fire_ge=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pool1(self.lif1(self.conv1(x)))
        s = self.pool2(self.lif2(self.conv2(s)))
        return self.out(self.fc(torch.flatten(s, 2)))


class ResidualBlock(nn.Module):
    """conv -> LIF -> conv -> BatchNorm -> LIF -> conv -> BatchNorm (+ the first LIF) -> LIF."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = TD(nn.Conv2d(3, 4, 3, padding=1))
        self.lif0 = LIF(beta=0.75)
        self.conv1 = TD(nn.Conv2d(4, 4, 3, padding=1, bias=False))
        self.bn1 = TD(nn.BatchNorm2d(4))
        self.lif1 = LIF(beta=0.75)
        self.conv2 = TD(nn.Conv2d(4, 4, 3, padding=1, bias=False))
        self.bn2 = TD(nn.BatchNorm2d(4))
        self.lif2 = LIF(beta=0.75, reset="zero")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.lif0(self.conv0(x))
        s1 = self.lif1(self.bn1(self.conv1(s0)))
        return self.lif2(self.bn2(self.conv2(s1)) + s0)


class ConvResidual(nn.Module):
    """conv (bias) -> LIF -> conv -> LIF -> conv (+ identity shortcut: delay 2 on Loihi) -> LIF ->
    fc -> LIF, Loihi-style neurons (reset to zero in the step that fires); ``side``: the input's."""

    def __init__(self, channels: int = 4, side: int = 8, classes: int = 5, conv1_bias: bool = False) -> None:
        super().__init__()
        kw = dict(beta=0.75, reset="zero", reset_delay=False)
        self.conv0 = TD(nn.Conv2d(1, channels, 3, padding=1))
        self.lif0 = LIF(**kw)
        self.conv1 = TD(nn.Conv2d(channels, channels, 3, padding=1, bias=conv1_bias))
        self.lif1 = LIF(**kw)
        self.conv2 = TD(nn.Conv2d(channels, channels, 3, padding=1, bias=False))
        self.lif2 = LIF(**kw)
        self.fc = nn.Linear(channels * side * side, classes)
        self.out = LIF(**kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.lif0(self.conv0(x))
        s2 = self.lif2(self.conv2(self.lif1(self.conv1(s0))) + s0)
        return self.out(self.fc(torch.flatten(s2, 2)))


class ConvMaxPoolLIF(nn.Module):
    """conv -> max pool of the currents (a host op) -> LIF -> fc -> LIF, on ``[T, B, 2, 8, 8]``."""

    def __init__(self, padding: int = 0, kernel: int = 2, stride: int | None = None) -> None:
        super().__init__()
        self.conv = TD(nn.Conv2d(2, 4, 3, padding=1))
        self.pool = TD(nn.MaxPool2d(kernel, stride=stride, padding=padding))
        self.lif = LIF(beta=0.75, threshold=0.5)
        self.fc = nn.Linear(4 * self.side(padding, kernel, stride) ** 2, 5)
        self.out = LIF(beta=0.5)

    @staticmethod
    def side(padding: int, kernel: int, stride: int | None) -> int:
        return (8 + 2 * padding - kernel) // (stride or kernel) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif(self.pool(self.conv(x)))
        return self.out(self.fc(torch.flatten(s, 2)))


# ---------------------------------------------------------------------------- snnTorch


def snntorch_net() -> nn.Module:
    import snntorch as snn

    return nn.Sequential(
        nn.Linear(24, 32), snn.Leaky(beta=0.875, init_hidden=True),
        nn.Linear(32, 16), snn.Synaptic(alpha=0.75, beta=0.5, init_hidden=True),
        nn.Linear(16, 6), snn.Leaky(beta=0.75, init_hidden=True, reset_mechanism="zero", output=True),
    )


def run_snntorch(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An ``init_hidden`` snnTorch net stepped over ``x[t]`` from reset: the stacked spikes."""
    import snntorch.utils

    snntorch.utils.reset(net)
    with torch.no_grad():
        outs = [net(x[t]) for t in range(x.shape[0])]
        return torch.stack([o[0] if isinstance(o, tuple) else o for o in outs])


# ---------------------------------------------------------------------------- FTWT-gated CNNs


def dyadic_cnn(model: nn.Module, seed: int) -> nn.Module:
    """Dyadic weights (multiples of 1/64), BatchNorms whose fold stays dyadic, varied gate heads."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".bn" in name or "sc_bn" in name or ".gate." in name:
                continue
            p.copy_(torch.randint(-40, 48, p.shape, generator=g).float() / 64)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.fill_(1 - m.eps)
                m.running_mean.copy_(torch.randint(-4, 5, m.running_mean.shape, generator=g).float() / 16)
                m.weight.copy_(torch.randint(2, 9, m.weight.shape, generator=g).float() / 4)
                m.bias.copy_(torch.randint(-2, 9, m.bias.shape, generator=g).float() / 16)
            if isinstance(m, FTWTGate):
                m.weight.copy_(torch.randint(-24, 25, m.weight.shape, generator=g).float() / 8)
                m.bias.copy_(torch.randint(-8, 9, m.bias.shape, generator=g).float() / 16)
    return model.eval()


def digits_like(T: int, B: int, seed: int) -> torch.Tensor:
    """``[T, B, 1, 8, 8]`` pixel values in sixteenths, like the digits dataset's."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, (T, B, 1, 8, 8), generator=g).float() / 16


def ftwt_models() -> dict[str, SpikingCNN]:
    """Gated CNNs: VGG-style (window 0 and 3), ResNet, and both trained with a synaptic delay."""
    return {
        "vgg": SpikingCNN("digits", layers=[6, "M", 8, 8, "M"], ftwt=dict(ratio=0.9)),
        "vgg_window": SpikingCNN("digits", layers=[6, "M", 8, "M"], ftwt=dict(ratio=0.9, window=3)),
        "resnet": SpikingCNN("digits_resnet", widths=[4, 6, 8], ftwt=dict(ratio=0.9), reset="zero"),
        "vgg_delay": SpikingCNN("digits", layers=[6, "M", 8, "M"], ftwt=dict(ratio=0.9), synaptic_delay=1),
        "resnet_delay": SpikingCNN("digits_resnet", widths=[4, 6, 8], ftwt=dict(ratio=0.9), synaptic_delay=1),
    }
