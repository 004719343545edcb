"""SpikingJelly 2.0 (``spikingjelly.activation_based``) models, lowered exactly by the torch.fx frontend.

Importing this module registers SpikingJelly's neurons (``frontends.torch_fx.LIBRARIES``) and layers
(``frontends.torch_fx.MODULE_LOWERINGS``); :func:`spike.compiler.compile` imports it, and calls
:func:`trace`, only for a model that holds SpikingJelly modules.

Step modes. ``step_mode="s"``: the example input is ``[B, ...]`` and the user calls the model once per
step, the neurons keeping their state (``functional.reset_net`` between samples); ``"m"``: the
example input is ``[T, B, ...]``. The program is the same either way and runs on ``[T, B, ...]``.

Neurons, as SpikingJelly's CPU forward computes them in float32 (``spikingjelly/_ops/{if_,lif,plif}/cpu.py``,
``_ops/reset.py``), with ``X`` the input, ``V`` the membrane, ``H`` the charged membrane and ``V_r``
``v_reset`` (0 for a soft reset), and the :class:`~spike.compiler.ir.nodes.Population` fields they map to:

- ``IFNode``: ``H = V + X`` -> model "if", beta 1, gain 1, charge "beta";
- ``LIFNode(tau, decay_input=True)``: ``H = V + (X - (V - V_r)) / tau`` -> model "lif", charge "tau_input", ``tau``;
- ``LIFNode(tau, decay_input=False)``: ``H = V - (V - V_r) / tau + X`` -> charge "tau";
- ``ParametricLIFNode``: the same with ``* q`` for ``/ tau``, ``q = w.float().sigmoid()`` -> charges
  "rate_input" / "rate", ``rate = q`` (computed here by the same torch call);
- fire ``S = (H >= v_threshold)`` -> ``fire_ge``, ``threshold = v_threshold``;
- reset in the same step (``reset_delay`` False): hard (``v_reset`` a float) ``V = S*v_reset + (1 - S)*H``
  -> reset "zero" with ``v_reset``; soft (``v_reset=None``) ``V = H - S*v_threshold`` -> reset
  "subtract", ``v_reset`` 0;
- ``V`` starts at ``v_reset`` (0 for a soft reset), as a Population's membrane does. A probe
  ``"<population>.v"`` gives ``V`` after the step's reset: SpikingJelly's ``v`` after each
  single step, or ``v_seq`` (``store_v_seq=True``) of a multi-step neuron.

The surrogate function changes only gradients while its forward is the Heaviside step (the
built-in surrogates with ``spiking=True``, or ``surrogate.heaviside``); ``detach_reset`` and
``store_v_seq`` change nothing at inference. Anything else (another neuron type or a subclass,
``spiking=False``, a custom surrogate, an explicit neuron precision) raises ``LoweringError``.

Layers: ``layer.Linear``, ``Conv2d``, ``BatchNorm1d``, ``BatchNorm2d``, ``MaxPool2d`` (an OR
of events on spikes, a host op on currents), ``AvgPool2d``, ``Flatten`` and ``Dropout`` /
``Dropout2d`` (identities at inference) lower as their torch.nn counterparts, in the step mode of
the model's neurons; ``layer.SeqToANNContainer`` (multi-step models) lowers the plain layers it
applies to ``[T*B, ...]`` one after the other. Plain torch.nn layers and ``nn.Sequential`` lower
as in ``frontends.torch_fx``. BatchNorm is folded into the projection before it (``W*gamma/sqrt(var +
eps)`` in float64): bit-exact where that scale is exact in float32 and float64 alike (e.g.
``sqrt(var + eps)`` a power of two); otherwise currents and membranes may differ in their last
bits (spikes only where a membrane lands that close to the threshold). Any other SpikingJelly
module, a subclass of a supported one, a layer in the other step mode or a non-float32 parameter
raises ``LoweringError`` naming the module's path, its type and the supported forms.
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import spikingjelly.activation_based.surrogate as sj_surrogate
import torch
import torch.fx as fx
from spikingjelly.activation_based import base, layer, neuron
from torch import nn

from spike.compiler.frontends.torch_fx import (
    LIBRARIES, MODULE_LOWERINGS, LoweringError, ModuleLowering, NeuronLibrary, _Lowering, _batchnorm, _conv,
    _linear, _module_where, _neuron_types, _passthrough, _pool, lowers, module_lowering,
)
from spike.compiler.frontends.torch_fx import trace as _trace_torch
from spike.compiler.ir.program import Program

NEURONS: tuple[type, ...] = (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode)
_NEURON_BASES: tuple[type, ...] = (neuron.BaseNode, neuron.SimpleBaseNode)  # every spiking neuron: lowered or refused
# surrogate functions whose forward (spiking=True) is the Heaviside step ``x >= 0``
HEAVISIDE_SURROGATES: tuple[type, ...] = (
    sj_surrogate.Sigmoid, sj_surrogate.ATan, sj_surrogate.PiecewiseQuadratic, sj_surrogate.PiecewiseExp,
    sj_surrogate.SoftSign, sj_surrogate.SuperSpike, sj_surrogate.Erf, sj_surrogate.NonzeroSignLogAbs,
    sj_surrogate.PiecewiseLeakyReLU, sj_surrogate.SquarewaveFourierSeries, sj_surrogate.S2NN,
    sj_surrogate.QPseudoSpike, sj_surrogate.LeakyKReLU, sj_surrogate.FakeNumericalGradient,
    sj_surrogate.LogTailedReLU, sj_surrogate.Rect, sj_surrogate.DeterministicPass,
)
# layers whose forward differs between step modes (Linear and Dropout compute the same either way)
_MODE_DEPENDENT: tuple[type, ...] = (
    layer.Conv2d, layer.BatchNorm1d, layer.BatchNorm2d, layer.MaxPool2d, layer.AvgPool2d, layer.Flatten,
)
SUPPORTED = ("neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode, layer.Linear, layer.Conv2d, "
             "layer.BatchNorm1d, layer.BatchNorm2d, layer.MaxPool2d, layer.AvgPool2d, layer.Flatten, "
             "layer.Dropout, layer.Dropout2d and layer.SeqToANNContainer of torch.nn layers")
try:
    VERSION: str | None = importlib.metadata.version("spikingjelly")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree
    VERSION = None


def trace(
    model: nn.Module,
    example_input: torch.Tensor,
    input_signal: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Program:
    """Check ``model``'s SpikingJelly modules (version, step modes, dtypes), then lower it with
    :func:`spike.compiler.frontends.torch_fx.trace`."""
    if VERSION is not None and VERSION.split(".")[0] != "2":
        raise LoweringError(f"spikingjelly {VERSION}: this frontend reproduces spikingjelly 2.x (2.0.0); install it")
    _check_modules(model)
    meta = {"frontend": "spikingjelly", **(metadata or {})}
    return _trace_torch(model, example_input, input_signal=input_signal, metadata=meta)


def _check_modules(model: nn.Module) -> None:
    """Every SpikingJelly layer in the step mode its neurons run in (single-step inside a
    SeqToANNContainer), and float32 parameters (SpikingJelly would compute in another dtype)."""
    containers = [p for p, m in model.named_modules() if isinstance(m, layer.SeqToANNContainer)]
    modes: set[str] = set()
    for p, m in model.named_modules():
        if isinstance(m, _NEURON_BASES):
            if any(p.startswith(c + ".") for c in containers):
                raise LoweringError(f"{_module_where(p, m)}: a neuron inside a SeqToANNContainer runs on [T*B, ...] "
                                    "as one step; put neurons outside the container")
            modes.add(m.step_mode)
    for p, m in model.named_modules():
        for name, t in (*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)):
            if t.is_floating_point() and t.dtype != torch.float32:
                raise LoweringError(f"{_module_where(p, m)}: {name} is {t.dtype}; only float32 models are "
                                    "compiled (their programs run in float32)")
        if isinstance(m, layer.SeqToANNContainer) and modes == {"s"}:
            raise LoweringError(f"{_module_where(p, m)}: a SeqToANNContainer flattens [T, B, ...]; it belongs in "
                                "multi-step models (step_mode 'm'), this model's neurons are single-step")
        if not isinstance(m, _MODE_DEPENDENT) or len(modes) != 1:
            continue
        inside = any(p.startswith(c + ".") for c in containers)
        want = "s" if inside else next(iter(modes))
        if m.step_mode != want:
            where = "inside a SeqToANNContainer" if inside else f"with this model's neurons (step_mode {want!r})"
            raise LoweringError(f"{_module_where(p, m)}: step_mode {m.step_mode!r}; it must be {want!r} {where}")


# ---- neurons ---------------------------------------------------------------------------------
def _neuron_params(m: nn.Module, path: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """The Population fields of an IFNode, LIFNode or ParametricLIFNode (module docstring)."""
    if type(m) not in NEURONS:
        raise LoweringError(f"{_module_where(path, m)}: SpikingJelly neuron type not supported (IFNode, LIFNode and "
                            "ParametricLIFNode are, not their subclasses)")
    f = m.surrogate_function
    if not (f is sj_surrogate.heaviside or (type(f) in HEAVISIDE_SURROGATES and getattr(f, "spiking", False))):
        raise LoweringError(f"{_module_where(path, m)}: surrogate_function {f!r} does not fire by the Heaviside step "
                            "in its forward; use a built-in surrogate with spiking=True (e.g. surrogate.Sigmoid())")
    if getattr(m, "_neuron_precision", None) is not None:
        raise LoweringError(f"{_module_where(path, m)}: an explicit neuron precision {m._neuron_precision} cannot be "
                            "lowered (the program computes in float32, as SpikingJelly's default)")
    size = int(np.prod(shape))

    def full(value: Any) -> np.ndarray:
        return np.full(size, value, np.float32)

    hard = m.v_reset is not None
    params: dict[str, Any] = dict(
        model="lif", threshold=full(float(m.v_threshold)), gain=1.0, reset="zero" if hard else "subtract",
        reset_delay=False, fire_ge=True, v_reset=float(m.v_reset) if hard else 0.0, reset_rule="standard",
    )
    if type(m) is neuron.IFNode:
        params.update(model="if", beta=full(1.0), charge="beta")
    elif type(m) is neuron.LIFNode:
        params.update(charge="tau_input" if m.decay_input else "tau", tau=full(float(m.tau)))
    else:
        w = m.w.detach()
        if w.numel() != 1:
            raise LoweringError(f"{_module_where(path, m)}: ParametricLIFNode with w of shape {tuple(w.shape)} "
                                "cannot be lowered (one w per layer, as SpikingJelly creates it)")
        rate = w.float().sigmoid()  # SpikingJelly's q, by the same call
        params.update(charge="rate_input" if m.decay_input else "rate", rate=full(rate.reshape(()).item()))
    return params


def _single_step(m: nn.Module) -> bool:
    """SpikingJelly's step modes: "s" single-step, "m" multi-step."""
    return m.step_mode == "s"


def _is_leaf(m: nn.Module) -> bool:
    """SpikingJelly's own modules and subclasses of the layers lowered here stay whole (torch.fx
    would trace their step-mode reshapes); a user's block built on ``base.StepModule`` is traced."""
    return type(m).__module__.startswith("spikingjelly.") or isinstance(m, (*_LAYERS, layer.SeqToANNContainer))


def _reset(model: nn.Module) -> None:
    """``functional.reset_net`` for the modules with state (membranes back to ``v_reset``)."""
    for m in model.modules():
        if isinstance(m, base.MemoryModule):
            m.reset()


# ---- layers ----------------------------------------------------------------------------------
def _exactly(sj_type: type, lower: ModuleLowering) -> ModuleLowering:
    """``lower`` for ``sj_type`` itself; a subclass (which may compute otherwise) is refused."""

    def lowering(L: _Lowering, n: fx.Node, m: nn.Module, path: str) -> Any:
        if type(m) is not sj_type:
            raise LoweringError(f"{_module_where(path, m)}: a subclass of {sj_type.__module__}.{sj_type.__name__} "
                                f"cannot be lowered (its forward may differ); supported: {SUPPORTED}")
        return lower(L, n, m, path)

    lowering.__name__ = f"_lower_{sj_type.__name__}"
    return lowering


_LAYERS: dict[type, ModuleLowering] = {  # SpikingJelly layer -> the lowering of its torch.nn counterpart
    layer.Linear: _linear, layer.Conv2d: _conv, layer.BatchNorm1d: _batchnorm, layer.BatchNorm2d: _batchnorm,
    layer.MaxPool2d: _pool, layer.AvgPool2d: _pool, layer.Flatten: _passthrough, layer.Dropout: _passthrough,
    layer.Dropout2d: _passthrough,
}
for _sj, _lower in _LAYERS.items():
    MODULE_LOWERINGS[_sj] = _exactly(_sj, _lower)


@lowers(base.StepModule)
def _unsupported(L: _Lowering, n: fx.Node, m: nn.Module, path: str) -> Any:
    raise LoweringError(f"{_module_where(path, m)}: this SpikingJelly module cannot be lowered; supported: {SUPPORTED}")


@lowers(layer.SeqToANNContainer)
def _seq_to_ann(L: _Lowering, n: fx.Node, m: nn.Module, path: str) -> Any:
    """The container's layers, each applied to ``[T*B, ...]``, lowered one after the other as
    layers of a multi-step model (their shapes from a run of the layers on one zero sample)."""
    if type(m) is not layer.SeqToANNContainer:
        raise LoweringError(f"{_module_where(path, m)}: a subclass of SeqToANNContainer cannot be lowered; "
                            f"supported: {SUPPORTED}")
    if L.time_dims != 2:
        raise LoweringError(f"{_module_where(path, m)}: a SeqToANNContainer belongs in multi-step models ([T, B, ...])")
    (arg,) = n.args
    lead = tuple(arg.meta["tensor_meta"].shape[:2])
    graph = fx.Graph()
    prev = graph.placeholder("x")
    prev.meta["tensor_meta"] = arg.meta["tensor_meta"]
    sub = replace(L, value={prev.name: L.value[arg.name]})  # same program builder, own fx names
    probe = torch.zeros(1, *L.feature_shape(arg))
    neuron_types = _neuron_types()
    with _evaluating(m), torch.no_grad():
        for p, child in _layers(m, path):
            if isinstance(child, neuron_types):
                raise LoweringError(f"{_module_where(p, child)}: a neuron inside a SeqToANNContainer runs on "
                                    "[T*B, ...] as one step; put neurons outside the container")
            fn = module_lowering(child)
            if fn is None:
                raise LoweringError(f"{_module_where(p, child)} cannot be lowered to the IR")
            probe = child(probe)
            node = graph.call_module(p, (prev,))
            node.meta["tensor_meta"] = SimpleNamespace(shape=torch.Size((*lead, *probe.shape[1:])))
            sub.value[node.name] = fn(sub, node, child, p)
            prev = node
    return sub.value[prev.name]


def _layers(m: nn.Sequential, path: str) -> Iterator[tuple[str, nn.Module]]:
    """The container's layers in order, nested plain ``nn.Sequential`` flattened."""
    for name, child in m.named_children():
        if type(child) is nn.Sequential:
            yield from _layers(child, f"{path}.{name}")
        else:
            yield f"{path}.{name}", child


@contextmanager
def _evaluating(m: nn.Module) -> Iterator[None]:
    """``m`` in eval mode (BatchNorm keeps its running statistics), then as it was."""
    modes = [(x, x.training) for x in m.modules()]
    m.eval()
    try:
        yield
    finally:
        for x, training in modes:
            x.training = training


LIBRARIES.append(NeuronLibrary(
    neuron_types=_NEURON_BASES, params=_neuron_params, single_step=_single_step,
    is_leaf=_is_leaf, reset=_reset,
))
