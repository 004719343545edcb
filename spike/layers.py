"""Layers for time-first ``[T, B, ...]`` spiking networks: per-step wrappers, delays, the
event-driven :class:`SpikeLinear`, :class:`SpikeConv2d` (a convolution of spikes by table
lookups), :class:`MaxPool2d` on the Numba pooling kernels,
:class:`LIFMaxPool2d`, a neuron and its max pooling fused, and :class:`ConvLIFMaxPool2d`, a
convolution, a neuron and its max pooling fused."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spike.kernels.event_conv import MAX_IN_CHANNELS, MAX_KERNEL, event_conv2d
from spike.kernels.event_linear import PaddedWeight, event_linear
from spike.kernels.max_pool import MaxPool2dFunction, input_supported, kernel_supported, pair
from spike.neurons import _Neuron


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


def shift_steps(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x[t - steps]`` at step ``t`` (zeros for ``t < steps``), on a time-first ``[T, ...]`` tensor."""
    if steps <= 0:
        return x
    if steps >= x.shape[0]:
        return torch.zeros_like(x)
    return torch.cat((torch.zeros_like(x[:steps]), x[:-steps]), dim=0)


def silent_before(y: torch.Tensor, steps: int) -> torch.Tensor:
    """``y`` with its first ``steps`` steps set to 0: what a synaptic path with a delay of ``steps``
    delivers before its first event arrives (its bias, e.g. a folded BatchNorm's, travels with the
    events, as a compiled projection's does: ``Program.onset``)."""
    if steps <= 0:
        return y
    return torch.cat((torch.zeros_like(y[:steps]), y[steps:]), dim=0)


class Delayed(nn.Module):
    """``module`` applied to its input ``steps`` steps late: ``y[t] = module(x[t - steps])`` for
    ``t >= steps`` and ``y[t] = 0`` before (a bias travels with the events, as a compiled
    projection's does: ``Program.onset``).

    Wrap a synaptic layer (Linear, Conv2d, pooling, or ``nn.Identity`` for a residual path; inside
    ``TimeDistributed`` where needed) to model a synaptic delay, e.g. Loihi's one step: the compiler
    lowers it to the same projection with ``delay`` increased by ``steps``, so the model equals the
    program compiled for a Loihi target.
    """

    def __init__(self, module: nn.Module, steps: int = 1) -> None:
        super().__init__()
        if int(steps) < 0:
            raise ValueError(f"Delayed: steps must be >= 0, got {steps!r}")
        self.module = module
        self.steps = int(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return silent_before(self.module(shift_steps(x, self.steps)), self.steps)

    def extra_repr(self) -> str:
        return f"steps={self.steps}"


class SpikeLinear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict and lowering: the compiler sees a Linear) that
    computes ``y = x W^T + b`` by events when its input is spikes (:mod:`spike.kernels.event_linear`):
    ``y[n] = b + sum_{i: x[n, i] = 1} W^T[i]`` and ``dW^T[i] = sum_{n: x[n, i] = 1} g[n]``, no
    multiplies, ``p * N*in*out`` additions at spike density ``p``; ``dx = g W`` stays dense.

    ``event`` chooses the path per call:

    * ``"auto"`` (default): the event path when ``out_features >= min_out`` and the input is a
      float32 CPU tensor of 0s and 1s with at most ``max_density`` ones, else ``F.linear``. The
      input is checked by the pass that lists its events (one vectorised read, about 3% of the
      layer's time), so an analog input costs that pass and then runs dense. The defaults come
      from the measured break-even on a 1-thread AVX-512 CPU against MKL's GEMM (fwd+bwd, 1600 x
      784 inputs, weight gradient only): at density 0.2 the paths tie at 64-96 outputs, events
      take 1/1.3 of the time at 128 and 1/1.5 at 512; at 512 outputs they tie at density ~0.33
      and take 1/2.8 of the time at 0.05;
    * ``"on"``: the event path whenever the input is binary float32 on the CPU, whatever the size
      or density; any other input is an error (declares the input to be spikes and verifies it);
    * ``"off"``: always ``F.linear``.

    Under CPU autocast (e.g. bf16) every mode runs ``F.linear``, as autocast expects.

    The two paths agree within float32 rounding (the sums run in another order; exactly for
    dyadic weights). Under ``torch.fx`` tracing the layer is a leaf lowered as ``nn.Linear``.

    ``weight`` has nn.Linear's shape ``[out, in]`` and values. When a call may take the event path
    (:meth:`may_take_events`) it is stored transposed (strides ``(1, out)``: ``weight.t()`` is a
    contiguous ``W^T``), so that the event path reads weight rows and returns ``dW`` in the
    parameter's layout without a transposing copy either way; torch's dense ops, optimizers and
    state dicts work on it as on any parameter (a checkpoint loads into an ``nn.Linear`` and back).
    A layer that always runs ``F.linear`` keeps nn.Linear's layout: MKL's backward of a few-output
    layer is slower on the transposed one (512 -> 10 on 1600 rows, 1 thread, AMD EPYC: fwd+bwd
    0.6 ms against 2.2 ms). A weight of another layout (``from_linear``, ``load_state_dict(...,
    assign=True)``) works on either path, at the cost of those copies on the event path.
    """

    EVENT_MODES = ("auto", "on", "off")

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None,
                 *, event: str = "auto", min_out: int = 128, max_density: float = 0.3) -> None:
        if event not in self.EVENT_MODES:
            raise ValueError(f"SpikeLinear: event must be one of {self.EVENT_MODES}, got {event!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.event = event
        self.min_out = int(min_out)
        self.max_density = float(max_density)
        if self.may_take_events():
            self.weight = nn.Parameter(self.weight.detach().t().contiguous().t(), requires_grad=self.weight.requires_grad)
        self._padded = PaddedWeight()

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> "SpikeLinear":
        """A SpikeLinear sharing ``linear``'s parameters (the same tensors)."""
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype, **kwargs)
        m.weight = linear.weight
        m.bias = linear.bias
        return m

    def may_take_events(self) -> bool:
        """Whether the mode and size let a call take the event path (``"on"``, or ``"auto"`` with
        at least ``min_out`` outputs)."""
        return self.event == "on" or (self.event == "auto" and self.out_features >= self.min_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy) or not self.may_take_events() or torch.is_autocast_enabled("cpu"):
            return F.linear(x, self.weight, self.bias)
        y = event_linear(x, self.weight, self.bias, self._padded,
                         self.max_density if self.event == "auto" else 1.0)
        if y is not None:
            return y
        if self.event == "on":
            raise ValueError(
                f"SpikeLinear(event='on'): the input must be a float32 CPU tensor of 0s and 1s (got dtype "
                f"{x.dtype}, device {x.device}, shape {list(x.shape)}); event='auto' falls back to F.linear")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, event={self.event!r}"


def symmetric_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """``conv``'s padding ``(ph, pw)`` if it is a stride-1, dilation-1, one-group convolution with zero
    padding on both sides of each axis (numeric, ``"valid"``, or ``"same"`` with odd kernel sides),
    else None."""
    if (tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1
            or conv.padding_mode != "zeros"):
        return None
    if conv.padding == "valid":
        return 0, 0
    if conv.padding == "same":
        kh, kw = conv.kernel_size
        return (kh // 2, kw // 2) if kh % 2 and kw % 2 else None  # an even side pads unevenly
    return int(conv.padding[0]), int(conv.padding[1])


class SpikeConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same constructor, parameters, state dict and lowering: the compiler sees a
    Conv2d) that computes the convolution by table lookups when its input is spikes
    (:mod:`spike.kernels.event_conv`): per tap, the spikes of four input channels at a position
    index a 16-entry table of their weights' sums, so ``ceil(Cin/4)`` vector additions replace
    ``Cin`` multiply-adds per tap and 16 outputs; the weight gradient sums the output gradient over
    the positions sorted by those indices; the input gradient skips the output gradient's zeros
    (:mod:`spike.kernels.conv_input_grad`) where at most 60% of it is nonzero, as behind a LIF and
    max pooling, and is torch's otherwise.

    ``event`` chooses the path per call:

    * ``"auto"`` (default): the lookup path when the configuration allows it, the layer has at
      least ``min_in`` input channels, and the input is a float32 CPU ``[N, Cin, H, W]`` tensor of
      0s and 1s, else ``nn.Conv2d.forward``. The input is checked by the pass that reads its spikes
      (about 7% of the forward's time);
    * ``"on"``: the lookup path whatever the number of channels; any other input or configuration
      is an error;
    * ``"off"``: always ``nn.Conv2d.forward``.

    The configuration: stride 1, dilation 1, one group, zero padding below the kernel size (or
    ``"valid"``, or ``"same"`` with odd sides), kernel sides 1..5, at most 31 input channels.
    Calls under CPU autocast, ``torch.compile`` or ``torch.fx`` tracing run ``nn.Conv2d.forward``.

    Measured (fwd+bwd, 3x3, padding 1, 320 images of spikes at 20-22%, 2-core AMD EPYC (Zen 5),
    one thread, against oneDNN): 16 -> 32 channels on 14x14 (the CNN of
    ``benchmarks/vs_training.py``) 8.8 against 10.7 ms, 8 -> 16 on 28x28 1.35x, 24 -> 64 on 7x7
    1.15x, 31 -> 32 on 14x14 1.25x; but 2 -> 8 on 28x28 0.92x and 1 -> 16 on 28x28 0.67-0.83x
    (a table of one or two channels saves no additions): hence ``min_in`` = 8. Those figures take
    torch's input gradient on both paths (about 3 ms of the 16 -> 32 layer's 8.8); on the CNN's own
    output gradient (41% nonzero) the lookup path's is 1.32-1.46x oneDNN's
    (``benchmarks/conv_input_grad.py``).
    The sums run in an order of their own (see the kernels' docstrings): the two paths agree within
    float32 rounding, exactly for dyadic weights and gradients (design §3), so a spike of the next
    layer may differ where a membrane lies within rounding of the threshold.
    """

    EVENT_MODES = ("auto", "on", "off")

    def __init__(self, *args, event: str = "auto", min_in: int = 8, **kwargs) -> None:
        if event not in self.EVENT_MODES:
            raise ValueError(f"SpikeConv2d: event must be one of {self.EVENT_MODES}, got {event!r}")
        super().__init__(*args, **kwargs)
        self.event = event
        self.min_in = int(min_in)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **kwargs) -> "SpikeConv2d":
        """A SpikeConv2d sharing ``conv``'s parameters (the same tensors)."""
        m = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype, **kwargs)
        m.weight = conv.weight
        m.bias = conv.bias
        return m

    def lookup_padding(self) -> tuple[int, int] | None:
        """The padding the lookup path takes (stride 1, dilation 1, one group, symmetric zero
        padding), else None; the kernels' own limits (channels, kernel sides, padding below the
        kernel) are checked with the input (:func:`spike.kernels.event_conv.supported`)."""
        return symmetric_padding(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.event == "off" or (self.event == "auto" and self.in_channels < self.min_in)
                or isinstance(x, torch.fx.Proxy) or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling()):
            return super().forward(x)
        pad = self.lookup_padding()
        y = None if pad is None else event_conv2d(x, self.weight, self.bias, pad)
        if y is not None:
            return y
        if self.event == "on":
            raise ValueError(
                f"SpikeConv2d(event='on'): needs stride 1, dilation 1, one group, zero padding below the kernel size, "
                f"kernel sides 1..{MAX_KERNEL}, at most {MAX_IN_CHANNELS} input channels and a float32 CPU input "
                f"[N, C, H, W] of 0s and 1s (got {self.extra_repr()}; input dtype {x.dtype}, device {x.device}, "
                f"shape {list(x.shape)}); event='auto' falls back to nn.Conv2d")
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, event={self.event!r}"


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` (same constructor, no parameters, same state dict and lowering: the compiler
    sees a MaxPool2d) that pools on :mod:`spike.kernels.max_pool` when it can: values, the window
    position chosen among ties and NaNs, and gradients equal torch's bit for bit, in a fraction of
    the time (2x2 on the CNN's ``[320, 16, 28, 28]`` spikes, one thread: forward ~1/15, backward
    ~2/3 of torch's).

    The kernels run when the configuration is ``stride == kernel_size`` (or ``stride=None``),
    ``padding=0``, ``dilation=1``, ``ceil_mode=False``, ``return_indices=False``, both kernel sides
    in ``1..8``, and the input is a float32 CPU tensor ``[C, H, W]`` or ``[N, C, H, W]`` (not
    channels-last) at least one window high and wide, outside CPU autocast, ``torch.compile``
    and ``torch.fx`` tracing (a ``Proxy``). Everything else runs ``nn.MaxPool2d.forward``, so the
    results never depend on the path. Double backward and forward-mode derivatives
    (``torch.autograd.forward_ad``) work on both paths; ``torch.func`` transforms (``vmap``,
    ``grad``) do not take the kernel path's autograd function: use ``nn.MaxPool2d`` under them.
    """

    def kernel_window(self) -> tuple[int, int] | None:
        """The window ``(kh, kw)`` if the kernels compute this configuration (see above), else None."""
        kh, kw = pair(self.kernel_size)
        stride = pair(self.stride if self.stride is not None else self.kernel_size)
        if (stride != (kh, kw) or pair(self.padding) != (0, 0) or pair(self.dilation) != (1, 1)
                or self.ceil_mode or self.return_indices or not kernel_supported((kh, kw))):
            return None
        return kh, kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling():
            k = self.kernel_window()
            if k is not None and input_supported(x, k):
                return MaxPool2dFunction.apply(x, k)
        return super().forward(x)


class LIFMaxPool2d(nn.Module):
    """A spiking neuron and the 2-D max pooling of its spikes, ``pool(neuron(x))`` on ``x[T, B, C, H,
    W]`` with ``pool = TimeDistributed(MaxPool2d(kernel_size))`` (window = stride): the LIF -> pool
    of a spiking CNN's conv -> LIF -> pool block, as one module.

    With one of our neurons (:class:`~spike.neurons.LIF`, ``IF``, ``CubaLIF``) the pair runs as one
    fused kernel (:mod:`spike.kernels.lif_pool_cpu`) when :meth:`spike.neurons.LIF.max_pool2d` takes
    the call (multi-step, a float32 CPU input, no membrane output): each step's spikes are pooled
    in cache as they are made, and the backward rebuilds each step's spike gradient in cache from
    the pooled one, so the ``[T, B, C, H, W]`` spike map and its gradient are never written to
    memory (on the CNN of ``benchmarks/vs_training.py``, 2-core AMD EPYC, one thread: fwd+bwd of
    ``[10, 32, 16, 28, 28]`` 5.8-6.1 ms fused against 7.5-8.2 ms as two modules). Values and gradients equal
    the two modules' bit for bit. Everything else runs the two modules, as do calls under
    ``torch.fx`` tracing (the compiler lowers the neuron and the pooling as usual) or
    ``torch.compile``, and calls while a forward hook or pre-hook is registered on either module or
    globally (a hook sees what it would see on the two modules).

    The state dict holds the neuron's under ``neuron.``.
    """

    def __init__(self, neuron: nn.Module, kernel_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.neuron = neuron
        self.pool = TimeDistributed(MaxPool2d(kernel_size))

    def fusable(self, x) -> bool:
        """Whether a call on ``x`` may run fused: one of our neurons, a tensor outside ``torch.fx``
        tracing and ``torch.compile``, and no forward hook or pre-hook on the modules (or global)."""
        return (isinstance(self.neuron, _Neuron) and isinstance(x, torch.Tensor) and not isinstance(x, torch.fx.Proxy)
                and not torch.compiler.is_compiling() and not _hooked(self.neuron, self.pool, self.pool.module))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fusable(x):
            k = self.pool.module.kernel_window()
            y = None if k is None else self.neuron.max_pool2d(x, k)
            if y is not None:
                return y
        return self.pool(self.neuron(x))


class ConvLIFMaxPool2d(nn.Module):
    """The first block of a spiking CNN, ``pool(neuron(conv(x)))`` on ``x[T, B, Cin, H, W]``: an
    ``nn.Conv2d`` applied to every step (``TimeDistributed(conv)``) followed by a
    :class:`LIFMaxPool2d` (``neuron``, max pooling of ``kernel_size``).

    With one of our neurons, the three run as one kernel (:mod:`spike.kernels.conv_lif_pool_cpu`)
    when :meth:`spike.neurons.LIF.conv_max_pool2d` takes the call (multi-step, no membrane output;
    a float32 CPU input that needs no gradient, as a network's input) and the convolution is a plain
    ``nn.Conv2d`` (or :class:`SpikeConv2d`) with stride 1, dilation 1, one group, zero padding of
    fewer than its kernel size (or ``"valid"``, or ``"same"`` with odd sides) and a kernel of 1..7 per
    side: each step's currents are computed in cache from the input, fed to the neuron and its spikes
    pooled, so neither the ``[T, B, Cout, H, W]`` currents nor their gradient are written to memory;
    the backward recomputes them and adds up the weight and bias gradients in cache (on the CNN of
    ``benchmarks/vs_training.py``, 2-core AMD EPYC, one thread: fwd+bwd of ``[10, 32, 1, 28, 28]``
    -> 16 channels 5.6 ms fused against 8.7 ms as a convolution and a :class:`LIFMaxPool2d`).
    Everything else, calls under ``torch.fx`` tracing (the compiler lowers a convolution, a neuron
    and a pooling), ``torch.compile``, or while a forward hook or pre-hook is registered on a part
    (or globally), runs the modules.

    The fused currents are summed in a fixed order of their own, not oneDNN's: the two paths agree
    within float32 rounding (exactly for dyadic weights, design §3), so a spike may differ where a
    membrane lies within rounding of the threshold. The state dict holds ``conv.module.weight``,
    ``conv.module.bias`` and the neuron's under ``lif_pool.neuron.``.
    """

    def __init__(self, conv: nn.Conv2d, neuron: nn.Module, kernel_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv = TimeDistributed(conv)
        self.lif_pool = LIFMaxPool2d(neuron, kernel_size)

    @property
    def neuron(self) -> nn.Module:
        return self.lif_pool.neuron

    def conv_padding(self) -> tuple[int, int] | None:
        """The convolution's padding if the fused kernel computes it (see above; ``"valid"``, and
        ``"same"`` with odd kernel sides, are symmetric paddings too), else None."""
        c = self.conv.module
        return symmetric_padding(c) if type(c) in (nn.Conv2d, SpikeConv2d) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lif_pool.fusable(x) and not _hooked(self.conv, self.conv.module, self.lif_pool):
            k, pad = self.lif_pool.pool.module.kernel_window(), self.conv_padding()
            conv = self.conv.module
            y = None if (k is None or pad is None) else self.neuron.conv_max_pool2d(x, conv.weight, conv.bias, pad, k)
            if y is not None:
                return y
        return self.lif_pool(self.conv(x))


def _hooked(*mods: nn.Module) -> bool:
    """Whether a forward hook or pre-hook is registered on one of ``mods`` or globally."""
    return bool(any(m._forward_hooks or m._forward_pre_hooks for m in mods)
                or nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
