"""Trace a PyTorch model with torch.fx (neurons as leaves) and lower it to IR nodes.

Handles our neurons (`spike.neurons`), snnTorch's Leaky, Synaptic, Lapicque, Alpha, RLeaky and
RSynaptic (``init_hidden=True``; exactly as snnTorch computes them: ``reset_rule`` "snntorch",
reset "drop" where snnTorch zeroes the new membrane, recurrent inputs added after the charge),
Linear, Conv2d, BatchNorm (folded later by a pass), AvgPool2d, MaxPool2d (on spikes an OR of
events; on currents or real values a ``maxpool2d`` host op, exact on the host; also written as
``F.max_pool2d`` / ``torch.max_pool2d`` / ``F.avg_pool2d``), Flatten and reshapes, Dropout
(dropped), residual adds and recurrent layers (`spike.recurrent.RecurrentLIF`, lowered to a
projection of delay 1). Models are multi-step (``[T, B, ...]``, our neurons) or
single-step (``[B, ...]``, snnTorch's stateful neurons); the IR is the same either way.
One lowering function per module type, registered in ``MODULE_LOWERINGS``; another library's
neurons join through ``LIBRARIES`` (SpikingJelly: ``frontends.spikingjelly``).

Node names (:func:`node_name`) are the module paths with dots as underscores (``conv1``,
``features_lif1``); an index in a container (``nn.Sequential``/``nn.ModuleList`` child ``"1"``)
becomes the layer's lower-cased class name and that index (``linear_0``, ``leaky_1``), so a
report says what each layer is.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import snntorch
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from spike.compiler.ir.nodes import (
    BatchNorm, Conv2d, Dense, HostOp, Identity, Input, Output, Pool2d, Population, Projection, Sparse,
    conv_output_hw,
)
from spike.compiler.ir.program import Program, ProgramBuilder
from spike.compiler.passes.delays import bias_from_start
from spike.compiler.ir.signals import output_signal
from spike.layers import Delayed, MaxPool2d, SpikeConv2d, SpikeLinear, TimeDistributed, silent_before
from spike.neurons import IF, LI, LIF, CubaLIF
from spike.recurrent import RecurrentLIF


# snnTorch neurons this frontend lowers (``_neuron_params``), exactly as snnTorch computes them
SNNTORCH_NEURONS: tuple[type, ...] = (snntorch.Leaky, snntorch.Synaptic, snntorch.Lapicque, snntorch.Alpha,
                                      snntorch.RLeaky, snntorch.RSynaptic)


class LoweringError(ValueError):
    """A module or operation the compiler cannot lower; names it, its type and its path."""


@dataclass(frozen=True)
class NeuronLibrary:
    """How another library's neurons join this frontend; its own frontend module appends one to
    ``LIBRARIES`` (and its layers to ``MODULE_LOWERINGS``), e.g. ``frontends.spikingjelly``."""

    neuron_types: tuple[type, ...]  # leaf modules lowered to a Population
    params: Callable[[nn.Module, str, tuple[int, ...]], dict[str, Any]]  # (neuron, path, shape) -> Population fields
    single_step: Callable[[nn.Module], bool]  # whether a neuron runs one step per call ([B, ...])
    is_leaf: Callable[[nn.Module], bool] | None = None  # further modules torch.fx keeps whole (MODULE_LOWERINGS)
    reset: Callable[[nn.Module], None] | None = None  # clears the state a model's modules keep


LIBRARIES: list[NeuronLibrary] = []

#: wrapper type -> the attribute holding the layer it wraps: the wrapper is named after that layer
#: and the attribute adds nothing to a node's name
WRAPPERS: dict[type, str] = {Delayed: "module", TimeDistributed: "module"}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _wrapped_attr(m: nn.Module) -> str | None:
    return next((attr for t, attr in WRAPPERS.items() if isinstance(m, t)), None)


def layer_kind(m: nn.Module) -> str:
    """The lower-cased class name of the layer ``m`` is: through :data:`WRAPPERS` to the wrapped
    layer (``Delayed(nn.Linear)`` -> ``"linear"``), the wrapper's own when it wraps a container."""
    inner = m
    while (attr := _wrapped_attr(inner)) is not None and isinstance(getattr(inner, attr, None), nn.Module):
        inner = getattr(inner, attr)
    if isinstance(inner, _CONTAINERS) and inner is not m:
        inner = m
    return type(inner).__name__.lower()


def node_name(model: nn.Module, path: str) -> str:
    """The IR node name of ``path`` (a module path of ``model``, optionally followed by a part the
    lowering adds, e.g. ``".recurrent"``): its components joined by ``"_"``, where a container
    index ``i`` (a component made of digits) is ``f"{layer_kind(child)}_{i}"`` and a wrapper's
    wrapped attribute is left out. ``nn.Sequential(nn.Linear, snn.Leaky)``: ``linear_0``,
    ``leaky_1``; ``self.net = nn.Sequential(...)``: ``net_linear_0``; ``self.fc1``: ``fc1``.
    Components that name no submodule are kept as they are."""
    parts: list[str] = []
    m: nn.Module | None = model
    for c in path.split("."):
        child = m._modules.get(c) if m is not None else None
        if child is not None and c == _wrapped_attr(m):
            m = child
            continue
        parts.append(f"{layer_kind(child)}_{c}" if child is not None and c.isdigit() else c)
        m = child
    return "_".join(parts)


def _library(m: nn.Module) -> NeuronLibrary | None:
    return next((lib for lib in LIBRARIES if isinstance(m, lib.neuron_types)), None)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _np(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)


def _neuron_types() -> tuple[type, ...]:
    types: list[type] = [LIF, IF, CubaLIF, LI, RecurrentLIF, snntorch.SpikingNeuron]
    types.extend(t for lib in LIBRARIES for t in lib.neuron_types)
    return tuple(types)


class _Tracer(fx.Tracer):
    def __init__(self, leaves: tuple[type, ...]):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (TimeDistributed, *self.leaves)) or type(m) in MODULE_LOWERINGS or any(
                lib.is_leaf is not None and lib.is_leaf(m) for lib in LIBRARIES):
            return True  # modules with their own lowering (e.g. spike.ftwt.GatedConv) stay whole
        return super().is_leaf_module(m, qualname)


@dataclass
class _Lowering:
    """State while lowering one traced graph."""

    gm: fx.GraphModule
    time_dims: int  # 2 for [T, B, ...], 1 for [B, ...]
    input_signal: str | None
    example: torch.Tensor
    root: nn.Module | None = None  # the model whose module paths name the nodes (node_name)
    b: ProgramBuilder = field(default_factory=ProgramBuilder)
    value: dict[str, Any] = field(default_factory=dict)  # fx node name -> IR node name | _Sum
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # IR node -> feature shape
    bias_from_start: list[str] = field(default_factory=list)  # delayed projections whose bias starts at step 0

    def feature_shape(self, n: fx.Node) -> tuple[int, ...]:
        meta = n.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise LoweringError(f"{_where(n)}: cannot infer the shape of its output")
        return tuple(int(s) for s in meta.shape[self.time_dims :])

    def add(self, name: str, node: Any, sources: list[str]) -> str:
        name = self.unique(name)
        self.b.add(name, node, sources)
        self.shapes[name] = tuple(node.shape)
        return name

    def unique(self, name: str) -> str:
        """``name`` (a module path or an fx name) as a node name (:func:`node_name`), numbered
        ``_2``, ``_3``, ... when taken."""
        base = node_name(self.root, name) if self.root is not None else name.replace(".", "_")
        base, i = base or "node", 1
        name = base
        while name in self.b.graph:
            i += 1
            name = f"{base}_{i}"
        return name

    def source(self, n: fx.Node, arg: Any) -> str:
        """The IR node an fx argument refers to (sums are materialised as a host add)."""
        if not isinstance(arg, fx.Node):
            raise LoweringError(f"{_where(n)}: expected a tensor input, got {type(arg).__name__}")
        v = self.value[arg.name]
        if isinstance(v, _Sum):
            terms = [self.as_projection(n, t) for t in v.terms]
            v = self.add(f"{arg.name}", HostOp(shape=self.shapes[terms[0]], op="add"), terms)
            self.value[arg.name] = v
        return v

    def as_projection(self, n: fx.Node, name: str) -> str:
        """``name`` if it delivers a current; else an identity projection from it (so events count)."""
        node = self.b.graph.nodes[name]["node"]
        if isinstance(node, Projection) and not (isinstance(node, Pool2d) and node.mode == "max"):
            return name
        if isinstance(node, BatchNorm):  # fold_batchnorm turns it into its Dense/Conv2d source
            srcs = list(self.b.graph.predecessors(name))
            if len(srcs) == 1 and isinstance(self.b.graph.nodes[srcs[0]]["node"], (Dense, Conv2d)):
                return name
        shape = self.shapes[name]
        return self.add(f"{name}_id", Identity(shape=shape, in_shape=shape), [name])


@dataclass
class _Sum:
    """A residual add not yet materialised: populations take its terms as separate inputs."""

    terms: list[str]


def _where(n: fx.Node) -> str:
    return f"node {n.name!r} ({n.op} {n.target})"


def _module_where(path: str, m: nn.Module) -> str:
    return f"module {path!r} of type {type(m).__module__}.{type(m).__name__}"


# ---- module lowerings ----------------------------------------------------------------------
ModuleLowering = Callable[[_Lowering, fx.Node, nn.Module, str], Any]
MODULE_LOWERINGS: dict[type, ModuleLowering] = {}


def module_lowering(m: nn.Module) -> ModuleLowering | None:
    """The lowering registered for ``m``'s type or its nearest base class (None if none is)."""
    return next((MODULE_LOWERINGS[t] for t in type(m).__mro__ if t in MODULE_LOWERINGS), None)


def lowers(*types: type) -> Callable[[ModuleLowering], ModuleLowering]:
    def register(fn: ModuleLowering) -> ModuleLowering:
        for t in types:
            MODULE_LOWERINGS[t] = fn
        return fn

    return register


@lowers(nn.Linear, SpikeLinear)  # SpikeLinear: a Linear computed by events; lowered alike
def _linear(L: _Lowering, n: fx.Node, m: nn.Linear, path: str) -> str:
    src = L.source(n, n.args[0])
    if L.feature_shape(n.args[0]) != (m.in_features,):
        raise LoweringError(
            f"{_module_where(path, m)}: expects {m.in_features} input features, its input has "
            f"shape {L.feature_shape(n.args[0])} (flatten it first)"
        )
    bias = None if m.bias is None else _np(m.bias)
    return L.add(path, Dense(shape=(m.out_features,), in_shape=(m.in_features,), weight=_np(m.weight), bias=bias), [src])


@lowers(nn.Conv2d, SpikeConv2d)  # SpikeConv2d: a Conv2d computed by table lookups; lowered alike
def _conv(L: _Lowering, n: fx.Node, m: nn.Conv2d, path: str) -> str:
    if _pair(m.dilation) != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise LoweringError(
            f"{_module_where(path, m)}: only dilation 1, numeric padding and padding_mode 'zeros' "
            f"can be lowered (got dilation={m.dilation}, padding={m.padding!r}, padding_mode={m.padding_mode!r})"
        )
    src = L.source(n, n.args[0])
    in_shape = L.feature_shape(n.args[0])
    if len(in_shape) != 3 or in_shape[0] != m.in_channels:
        raise LoweringError(f"{_module_where(path, m)}: expects input (C={m.in_channels}, H, W), got {in_shape}")
    stride, padding, kernel = _pair(m.stride), _pair(m.padding), _pair(m.kernel_size)
    hw = conv_output_hw(in_shape[1:], kernel, stride, padding)
    node = Conv2d(
        shape=(m.out_channels, *hw), in_shape=in_shape, weight=_np(m.weight),
        bias=None if m.bias is None else _np(m.bias), stride=stride, padding=padding, groups=m.groups,
    )
    return L.add(path, node, [src])


@lowers(nn.BatchNorm1d, nn.BatchNorm2d)
def _batchnorm(L: _Lowering, n: fx.Node, m: nn.modules.batchnorm._BatchNorm, path: str) -> str:
    if not m.track_running_stats or m.running_mean is None:
        raise LoweringError(f"{_module_where(path, m)}: needs running statistics (track_running_stats=True)")
    src = L.source(n, n.args[0])
    c = m.num_features
    w = _np(m.weight) if m.affine else np.ones(c, np.float32)
    b = _np(m.bias) if m.affine else np.zeros(c, np.float32)
    node = BatchNorm(
        shape=L.feature_shape(n.args[0]), weight=w, bias=b, running_mean=_np(m.running_mean),
        running_var=_np(m.running_var), eps=float(m.eps),
    )
    return L.add(path, node, [src])


@lowers(nn.AvgPool2d, nn.MaxPool2d, MaxPool2d)  # MaxPool2d: nn.MaxPool2d on Numba kernels; lowered alike
def _pool(L: _Lowering, n: fx.Node, m: nn.Module, path: str) -> str:
    src = L.source(n, n.args[0])
    in_shape = L.feature_shape(n.args[0])
    if len(in_shape) != 3:
        raise LoweringError(f"{_module_where(path, m)}: expects input (C, H, W), got {in_shape}")
    is_max = isinstance(m, nn.MaxPool2d)
    if m.ceil_mode or (is_max and _pair(m.dilation) != (1, 1)) or (
        not is_max and (not m.count_include_pad or m.divisor_override is not None)
    ):
        raise LoweringError(
            f"{_module_where(path, m)}: only floor mode, dilation 1, count_include_pad=True and no "
            "divisor_override can be lowered"
        )
    kernel = _pair(m.kernel_size)
    stride = _pair(m.stride if m.stride is not None else m.kernel_size)
    padding = _pair(m.padding)
    hw = conv_output_hw(in_shape[1:], kernel, stride, padding)
    if is_max and getattr(m, "return_indices", False):
        raise LoweringError(f"{_module_where(path, m)}: return_indices=True cannot be lowered")
    if is_max:
        if output_signal(L.b.build(), src) != "spike":  # currents or real values: max on the host
            node = HostOp(shape=(in_shape[0], *hw), op="maxpool2d", in_shape=in_shape, kernel=kernel,
                          stride=stride, padding=padding)
            return L.add(path, node, [src])
    node = Pool2d(
        shape=(in_shape[0], *hw), in_shape=in_shape, mode="max" if is_max else "avg",
        kernel=kernel, stride=stride, padding=padding,
    )
    return L.add(path, node, [src])


@lowers(nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.Flatten, nn.Unflatten)
def _passthrough(L: _Lowering, n: fx.Node, m: nn.Module, path: str) -> Any:
    return _reshape_like(L, n, n.args[0])


def _reshape_like(L: _Lowering, n: fx.Node, arg: fx.Node) -> Any:
    """Flatten/reshape/dropout: no node; arrays are flat in C order, so only the view changes."""
    v = L.value[arg.name]
    before, after = L.feature_shape(arg), L.feature_shape(n)
    if int(np.prod(before)) != int(np.prod(after)):
        raise LoweringError(
            f"{_where(n)}: reshapes features {before} to {after}; reshapes that mix the time or "
            "batch dimensions with features cannot be lowered"
        )
    return v


@lowers(Delayed)
def _delayed(L: _Lowering, n: fx.Node, m: Delayed, path: str) -> Any:
    """``Delayed(module, steps)``: ``module``'s projection with ``steps`` added to its delay;
    ``Delayed(nn.Identity(), steps)`` an Identity projection with that delay (e.g. a residual path
    on Loihi)."""
    inner = m.module
    while isinstance(inner, TimeDistributed):
        inner = inner.module
    if isinstance(inner, nn.Identity):
        src = L.source(n, n.args[0])
        shape = L.shapes[src]
        return L.add(path, Identity(shape=shape, in_shape=shape, delay=m.steps), [src])
    fn = module_lowering(inner)
    if fn is None:
        raise LoweringError(f"{_module_where(path, m)}: its inner {type(inner).__name__} cannot be lowered")
    name = fn(L, n, inner, path)
    node = L.b.graph.nodes[name]["node"] if isinstance(name, str) and name in L.b.graph else None
    if not isinstance(node, Projection):
        raise LoweringError(f"{_module_where(path, m)}: only a synaptic layer (a projection) can be delayed, "
                            f"{type(inner).__name__} is not one")
    L.b.graph.nodes[name]["node"] = node.replace(delay=node.delay + m.steps)
    return name


def _neuron_params(m: nn.Module, path: str, shape: tuple[int, ...]) -> dict[str, Any]:
    lib = _library(m)
    if lib is not None:
        return lib.params(m, path, shape)
    size = int(np.prod(shape))

    def per_neuron(value: Any, field_name: str) -> np.ndarray:
        arr = _np(value)
        try:
            return np.ascontiguousarray(np.broadcast_to(arr, shape).reshape(size), dtype=np.float32)
        except ValueError:
            raise LoweringError(
                f"{_module_where(path, m)}: {field_name} of shape {arr.shape} does not broadcast to the "
                f"layer's shape {shape}"
            ) from None

    if isinstance(m, (LIF, IF, CubaLIF, LI)):
        beta = torch.as_tensor(m.beta).detach().clamp(0, 1)
        params = dict(
            model=m.model, beta=per_neuron(beta, "beta"), threshold=per_neuron(m.threshold, "threshold"),
            gain=float(m.gain), reset=m.reset, reset_delay=bool(m.reset_delay), fire_ge=bool(m.fire_ge),
        )
        if m.model == "li":  # never spikes: its threshold is unused (files hold no infinities)
            params["threshold"] = np.zeros(size, np.float32)
        if m.model == "cuba_lif":
            params["alpha"] = per_neuron(torch.as_tensor(m.alpha).detach().clamp(0, 1), "alpha")
        return params

    check_snntorch_neuron(m, path)
    kind = type(m).__name__
    reset = reset_mechanism(m)
    if reset == "zero" and kind != "Leaky":  # snnTorch zeroes the new membrane there, input included
        reset = "drop"
    params = dict(
        model="lif", beta=per_neuron(torch.as_tensor(m.beta).detach().clamp(0, 1), "beta"),
        threshold=per_neuron(m.threshold, "threshold"), gain=1.0, reset=reset,
        reset_delay=bool(getattr(m, "reset_delay", True)), fire_ge=False, reset_rule="snntorch",
        late_recurrent=kind in ("RLeaky", "RSynaptic"),
    )
    if kind in ("Synaptic", "RSynaptic"):
        params.update(model="cuba_lif", alpha=per_neuron(torch.as_tensor(m.alpha).detach().clamp(0, 1), "alpha"))
    elif kind == "Alpha":
        a, b = torch.as_tensor(m.alpha).detach().clamp(0, 1), torch.as_tensor(m.beta).detach().clamp(0, 1)
        tau_alpha = torch.log(a) / (torch.log(b) - torch.log(a)) + 1  # as snnTorch's Alpha computes it
        params.update(model="alpha", alpha=per_neuron(a, "alpha"), beta=per_neuron(b, "beta"),
                      tau=per_neuron(tau_alpha, "tau_alpha"))
        if reset == "drop":
            params["reset"] = "zero"
    elif kind == "Lapicque":
        params.update(_lapicque_charge(m, path, per_neuron))
    return params


def check_snntorch_neuron(m: nn.Module, path: str) -> None:
    """Refuse, naming the module, an snnTorch neuron or option that has no exact IR form (before
    anything runs it: some of them fail inside snnTorch itself)."""
    unsupported = {
        "inhibition": getattr(m, "inhibition", False),
        "state_quant": bool(getattr(m, "state_quant", False)),
        "graded_spikes_factor != 1": float(torch.as_tensor(getattr(m, "graded_spikes_factor", 1.0))) != 1.0,
        "init_hidden=False (pass the state explicitly)": not getattr(m, "init_hidden", True),
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise LoweringError(f"{_module_where(path, m)}: unsupported option(s) {', '.join(bad)}")
    if type(m) not in SNNTORCH_NEURONS:
        raise LoweringError(f"{_module_where(path, m)}: snnTorch neuron type not supported "
                            f"({', '.join(t.__name__ for t in SNNTORCH_NEURONS)} are)")
    if isinstance(m, snntorch.RSynaptic) and not m.reset_delay and reset_mechanism(m) != "none":
        raise LoweringError(f"{_module_where(path, m)}: RSynaptic with reset_delay=False cannot be lowered: snnTorch 1.0 "
                            "computes its reset from the spk argument (None with init_hidden=True, the previous step's "
                            "spikes otherwise), not from the step's spikes; use reset_delay=True")


def reset_mechanism(m: nn.Module) -> str:
    """An snnTorch neuron's reset as the IR names it."""
    return {0: "subtract", 1: "zero", 2: "none"}[int(m.reset_mechanism_val)]


def _lapicque_charge(m: nn.Module, path: str, per_neuron: Callable[[Any, str], np.ndarray]) -> dict[str, Any]:
    """snnTorch's Lapicque charge ``x*R*(1/(R*C))*dt + (1 - dt/(R*C))*v`` as ``beta*v + gain*x``:
    exact when ``R`` and ``time_step`` are powers of two (products by them are exact) and one gain
    serves the whole layer."""
    R, C, dt = (torch.as_tensor(v).detach() for v in (m.R, m.C, m.time_step))
    for what, v in (("R", R), ("time_step", dt)):
        exps = torch.frexp(v.double())
        if not (bool((v > 0).all()) and bool((exps.mantissa == 0.5).all())):
            raise LoweringError(f"{_module_where(path, m)}: Lapicque with {what}={v.tolist()} cannot be lowered exactly "
                                "(the input is multiplied by R, 1/(R*C) and time_step in turn; R and time_step must be "
                                "powers of two)")
    q = 1 / (R * C)
    gain = (q * R * dt).reshape(-1)
    if gain.numel() != 1 and not bool((gain == gain[0]).all()):
        raise LoweringError(f"{_module_where(path, m)}: Lapicque with a different input gain R*dt/(R*C) per neuron "
                            "cannot be lowered (a population has one gain)")
    beta = 1 - dt / (R * C)
    if bool((beta < 0).any()) or bool((beta > 1).any()):
        raise LoweringError(f"{_module_where(path, m)}: Lapicque with time_step/(R*C) outside [0, 1] (decay "
                            f"{beta.tolist()}) cannot be lowered")
    return dict(beta=per_neuron(beta, "1 - time_step/(R*C)"), gain=float(gain[0]))


def _lower_neuron(L: _Lowering, n: fx.Node, m: nn.Module, path: str) -> str:
    arg = n.args[0]
    v = L.value[arg.name] if isinstance(arg, fx.Node) else None
    terms = v.terms if isinstance(v, _Sum) else [L.source(n, arg)]
    sources = [L.as_projection(n, t) for t in terms]
    shape = L.feature_shape(arg)  # the neuron's own output may be a (spikes, membrane) tuple
    for s in sources:
        if int(np.prod(L.shapes[s])) != int(np.prod(shape)):
            raise LoweringError(
                f"{_module_where(path, m)}: an input of shape {L.shapes[s]} feeds neurons of shape {shape}"
            )
    params = _neuron_params(getattr(m, "neuron", m), path, shape)  # RecurrentLIF wraps its LIF
    pop = L.add(path, Population(shape=shape, **params), sources)
    rec = getattr(m, "recurrent", None)
    if rec is not None:  # s[t-1] -> recurrent synapses -> the same population (delay 1)
        node = _recurrent_projection(m, rec, path, shape)
        proj = L.add(f"{path}.recurrent", node, [pop])
        L.b.connect(proj, pop)
        if getattr(node, "bias", None) is not None and not params.get("late_recurrent"):
            L.bias_from_start.append(proj)  # the layer adds b from step 0: s[-1] = 0, V s + b = b
        # (a late_recurrent population's recurrent bias holds from step 0 on its own: Program.onset)
    return pop


def _recurrent_projection(m: nn.Module, rec: nn.Module, path: str, shape: tuple[int, ...]) -> Projection:
    """The recurrent synapses of ``spike.recurrent.RecurrentLIF`` (a Linear) or snnTorch's
    RLeaky/RSynaptic (all-to-all Linear or Conv2d, or one-to-one ``V``), delivered one step late."""
    size = int(np.prod(shape))
    if isinstance(rec, nn.Linear):
        bias = None if rec.bias is None else _np(rec.bias)
        return Dense(shape=(size,), in_shape=(size,), weight=_np(rec.weight), bias=bias, delay=1)
    if isinstance(rec, nn.Conv2d):
        if len(shape) != 3:
            raise LoweringError(f"{_module_where(path, m)}: a recurrent Conv2d needs (C, H, W) neurons, got {shape}")
        stride, padding, kernel = _pair(rec.stride), _pair(rec.padding), _pair(rec.kernel_size)
        if stride != (1, 1) or conv_output_hw(shape[1:], kernel, stride, padding) != tuple(shape[1:]) \
                or _pair(rec.dilation) != (1, 1):
            raise LoweringError(f"{_module_where(path, m)}: its recurrent Conv2d must keep the shape {shape} "
                                "(stride 1, dilation 1, 'same' padding)")
        return Conv2d(shape=shape, in_shape=shape, weight=_np(rec.weight), stride=stride, padding=padding,
                      groups=rec.groups, bias=None if rec.bias is None else _np(rec.bias), delay=1)
    V = getattr(rec, "V", None)
    if V is None:
        raise LoweringError(f"{_module_where(path, m)}: recurrent module of type {type(rec).__name__} cannot be lowered "
                            "(a Linear, a Conv2d or snnTorch's one-to-one V can)")
    v = _np(torch.as_tensor(V))
    if v.size == 1:
        return Identity(shape=shape, in_shape=shape, scale=float(v.reshape(())), delay=1)
    try:
        data = np.ascontiguousarray(np.broadcast_to(v, shape).reshape(size), dtype=np.float32)
    except ValueError:
        raise LoweringError(f"{_module_where(path, m)}: V of shape {v.shape} does not broadcast to {shape}") from None
    return Sparse(shape=shape, in_shape=shape, indptr=np.arange(size + 1, dtype=np.int64),
                  indices=np.arange(size, dtype=np.int64), data=data, delay=1)


# ---- function / method lowerings -----------------------------------------------------------
def _lower_add(L: _Lowering, n: fx.Node) -> _Sum:
    if len(n.args) != 2 or n.kwargs or not all(isinstance(a, fx.Node) for a in n.args):
        raise LoweringError(f"{_where(n)}: only the sum of two tensors can be lowered")
    terms: list[str] = []
    for a in n.args:
        v = L.value[a.name]
        terms.extend(v.terms if isinstance(v, _Sum) else [v])
    return _Sum(terms)


def _lower_silent_before(L: _Lowering, n: fx.Node) -> Any:
    """``spike.layers.silent_before(y, steps)`` after a projection delayed by at least ``steps``
    (through a BatchNorm folded into it) is what that projection delivers already
    (``Program.onset``): the same node."""
    y, steps = (list(n.args) + [n.kwargs.get("steps")])[:2]
    v = L.value[y.name] if isinstance(y, fx.Node) else None
    node = L.b.graph.nodes[v]["node"] if isinstance(v, str) else None
    if isinstance(node, BatchNorm):
        (src,) = L.b.graph.predecessors(v)
        node = L.b.graph.nodes[src]["node"]
    if not isinstance(node, Projection) or node.delay < int(steps):
        raise LoweringError(f"{_where(n)}: silent_before(y, {steps}) can be lowered only right after a synaptic "
                            f"layer delayed by at least {steps} step(s) (spike.layers.Delayed), optionally followed by "
                            "BatchNorm")
    return v


_POOL_ARGS = {  # the parameters after the input, in order, of each functional pooling
    "max": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
}


def _lower_pool_function(mode: str) -> Callable[[_Lowering, fx.Node], Any]:
    """``F.max_pool2d(x, ...)`` / ``F.avg_pool2d(x, ...)`` (the snnTorch tutorials' functional
    pooling) lowered as the equivalent ``nn.MaxPool2d`` / ``nn.AvgPool2d``."""

    def lower(L: _Lowering, n: fx.Node) -> Any:
        names = _POOL_ARGS[mode]
        if len(n.args) - 1 > len(names) or any(k not in names for k in n.kwargs):
            raise LoweringError(f"{_where(n)}: unexpected arguments of {mode} pooling")
        kw = {**dict(zip(names, n.args[1:])), **n.kwargs}
        if kw.get("stride") in ([], ()):  # torch.max_pool2d's default: the kernel size
            kw["stride"] = None
        module = (nn.MaxPool2d if mode == "max" else nn.AvgPool2d)(**kw)
        return _pool(L, n, module, n.name)

    return lower


_FUNCTIONS: dict[Any, Callable[[_Lowering, fx.Node], Any]] = {
    F.max_pool2d: _lower_pool_function("max"),
    torch.max_pool2d: _lower_pool_function("max"),
    F.avg_pool2d: _lower_pool_function("avg"),
    silent_before: _lower_silent_before,
    operator.add: _lower_add,
    torch.add: _lower_add,
    operator.iadd: _lower_add,
    torch.flatten: lambda L, n: _reshape_like(L, n, n.args[0]),
}
_METHODS: dict[str, Callable[[_Lowering, fx.Node], Any]] = {
    "add": _lower_add,
    "flatten": lambda L, n: _reshape_like(L, n, n.args[0]),
    "view": lambda L, n: _reshape_like(L, n, n.args[0]),
    "reshape": lambda L, n: _reshape_like(L, n, n.args[0]),
    "contiguous": lambda L, n: L.value[n.args[0].name],
}


def _lower_getitem(L: _Lowering, n: fx.Node) -> Any:
    base, idx = n.args
    v = L.value[base.name]
    if isinstance(v, tuple):  # (spikes, membrane) from a neuron
        if idx != 0:
            raise LoweringError(
                f"{_where(n)}: only the spike output of a neuron can be used in a compiled program "
                "(probe the membrane at run time with '<population>.v')"
            )
        return v[0]
    raise LoweringError(f"{_where(n)}: indexing a tensor cannot be lowered")


def trace(
    model: nn.Module,
    example_input: torch.Tensor,
    input_signal: str | None = None,
    metadata: dict[str, Any] | None = None,
    names_from: nn.Module | None = None,
) -> Program:
    """Trace ``model`` on ``example_input`` and lower it to an (un-optimised) Program whose nodes
    are named by :func:`node_name` from the module paths of ``names_from`` (default ``model``)."""
    neuron_types = _neuron_types()
    neurons: list[tuple[str, nn.Module]] = []
    for p, m in model.named_modules():
        inside = any(p.startswith(q + ".") for q, _ in neurons)  # e.g. the LIF inside RecurrentLIF
        if isinstance(m, neuron_types) and not inside:
            neurons.append((p, m))
            if isinstance(m, snntorch.SpikingNeuron):
                check_snntorch_neuron(m, p)
    single = [p for p, m in neurons if _is_single_step(m)]
    multi = [p for p, m in neurons if not _is_single_step(m)]
    if single and multi:
        raise LoweringError(
            f"model mixes single-step neurons ({single[0]!r}) and multi-step neurons ({multi[0]!r})"
        )
    time_dims = 1 if single else 2
    if example_input.dim() <= time_dims:
        raise LoweringError(
            f"example input of shape {list(example_input.shape)}: expected "
            + ("[B, ...] (single-step model)" if single else "[T, B, ...] (multi-step model)")
        )
    tracer = _Tracer(neuron_types)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many kinds; name the model
        raise LoweringError(f"torch.fx could not trace {type(model).__name__}: {exc}") from exc
    gm = fx.GraphModule(tracer.root, graph)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _reset_states(model)
            ShapeProp(gm).propagate(example_input)
            _reset_states(model)
    finally:
        model.train(was_training)
    L = _Lowering(gm=gm, time_dims=time_dims, input_signal=input_signal, example=example_input,
                  root=model if names_from is None else names_from)
    modules = dict(gm.named_modules())
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            signal = input_signal or _detect_signal(example_input)
            L.value[n.name] = L.add(n.name, Input(shape=L.feature_shape(n), signal=signal), [])
        elif n.op == "call_module":
            m = modules[n.target]
            while isinstance(m, TimeDistributed):  # per-step layer on [T, B, ...]: lower the inner one
                m = m.module
            if isinstance(m, neuron_types):
                pop = _lower_neuron(L, n, m, n.target)
                L.value[n.name] = (pop, None) if _returns_tuple(m) else pop
                continue
            fn = module_lowering(m)
            if fn is None:
                raise LoweringError(f"{_module_where(n.target, m)} cannot be lowered to the IR")
            L.value[n.name] = fn(L, n, m, n.target)
        elif n.op == "call_function":
            if n.target is operator.getitem:
                L.value[n.name] = _lower_getitem(L, n)
            elif n.target in _FUNCTIONS:
                L.value[n.name] = _FUNCTIONS[n.target](L, n)
            else:
                raise LoweringError(f"{_where(n)}: function {getattr(n.target, '__name__', n.target)} cannot be lowered")
        elif n.op == "call_method":
            if n.target not in _METHODS:
                raise LoweringError(f"{_where(n)}: method .{n.target}() cannot be lowered")
            L.value[n.name] = _METHODS[n.target](L, n)
        elif n.op == "output":
            results = n.args[0] if isinstance(n.args[0], (tuple, list)) else (n.args[0],)
            for i, r in enumerate(results):
                v = L.value[r.name]
                if isinstance(v, tuple):
                    v = v[0]
                if isinstance(v, _Sum):
                    v = L.source(n, r)
                shape = L.feature_shape(r) if hasattr(r.meta.get("tensor_meta"), "shape") else L.shapes[v]
                L.add(f"output{i}" if len(results) > 1 else "output", Output(shape=shape), [v])
        elif n.op == "get_attr":
            raise LoweringError(f"{_where(n)}: parameters used outside modules cannot be lowered")
    meta = {"step_mode": "single" if single else "multi", **(metadata or {})}
    return bias_from_start(L.b.build(meta), L.bias_from_start)


def _is_single_step(m: nn.Module) -> bool:
    lib = _library(m)
    if lib is not None:
        return lib.single_step(m)
    mode = getattr(m, "step_mode", None)
    if mode is not None:
        return mode == "single"
    return True  # snnTorch neurons are stateful single-step modules


def _returns_tuple(m: nn.Module) -> bool:
    if getattr(m, "return_mem", False):
        return True
    return bool(getattr(m, "output", False)) and hasattr(m, "init_hidden")


def _reset_states(model: nn.Module) -> None:
    for m in model.modules():
        for attr in ("reset_state", "reset_hidden_state"):
            fn = getattr(m, attr, None)
            if callable(fn):
                fn()
        if hasattr(m, "init_hidden") and getattr(m, "init_hidden", False) and hasattr(m, "reset_mem"):
            m.reset_mem()
        if hasattr(m, "syn") and hasattr(m, "init_hidden") and getattr(m, "init_hidden", False):
            m.syn = torch.zeros_like(m.syn)
    for lib in LIBRARIES:
        if lib.reset is not None:
            lib.reset(model)


def _detect_signal(x: torch.Tensor) -> str:
    return "spike" if bool(((x == 0) | (x == 1)).all()) else "real"

