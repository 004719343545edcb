"""The event-driven IR: small frozen dataclasses, one per node kind, over a networkx graph.

A node's output is a per-step signal of shape ``[B, *shape]``: ``spike`` (binary events),
``real`` (analog values) or ``current`` (what a projection delivers). A population sums every
signal that enters it; a projection reads exactly one source, ``delay`` steps late. Arrays are
stored flattened in C order, so ``Flatten`` never needs a node.

Node kinds (the string in ``KIND``) are the keys of :data:`NODE_TYPES`; backends register one
kernel per kind, and serialisation validates every field against the dataclass declaration.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

SIGNALS = ("spike", "real", "current")
NEURON_MODELS = ("lif", "if", "cuba_lif", "li", "alpha")
RESET_MODES = ("subtract", "zero", "none", "drop")
CHARGES = ("beta", "tau", "tau_input", "rate", "rate_input")
RESET_RULES = ("standard", "snntorch")
POOL_MODES = ("max", "avg", "sum")
PRECISIONS = ("float32", "float64", "fixed")
#: the float precisions and their arrays' dtype (float64: every value, state and sum in double,
#: as NEST and Brian2 compute; the update and its order of operations are float32's)
FLOAT_DTYPES: dict[str, type] = {"float32": np.float32, "float64": np.float64}


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(int(s) for s in shape)


@dataclass(frozen=True, eq=False)
class Node:
    """Base of every IR node. ``KIND`` names the node kind; ``shape`` is its output shape."""

    KIND: ClassVar[str] = ""
    shape: tuple[int, ...]

    @functools.cached_property  # the fields are frozen: computed once per node (kernels read it per step)
    def size(self) -> int:
        return _size(self.shape)

    def replace(self, **changes: Any) -> "Node":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Input(Node):
    """External source: ``spike`` events or ``real`` values, fed each step."""

    KIND: ClassVar[str] = "input"
    signal: str = "spike"


@dataclass(frozen=True, eq=False)
class Output(Node):
    """What a run returns: the output of its single source node."""

    KIND: ClassVar[str] = "output"


@dataclass(frozen=True, eq=False)
class Population(Node):
    """Neurons of one model with per-neuron parameters (flattened to ``size``); the update is
    ``spike.semantics`` (design §3), written once for every backend.

    ``charge`` "beta": ``v' = beta*v + gain*I``; "tau"/"tau_input"/"rate"/"rate_input": the
    SpikingJelly charges ``v - (v - v_reset)/tau + I``, ``v + (I - (v - v_reset))/tau`` and their
    ``*rate`` forms (ParametricLIF, ``rate = sigmoid(w)``). ``cuba_lif`` filters the input first
    (``i = alpha*i + I``); ``alpha`` is snnTorch's Alpha neuron (excitatory ``alpha`` and
    inhibitory ``beta`` currents, ``v = tau*(e + n)``). Spike on ``v' > threshold`` (``>=`` when
    ``fire_ge``); reset ``subtract``/``zero`` (to ``v_reset``)/``drop`` (the new membrane, input
    included)/``none``, delayed by one step when ``reset_delay``; ``reset_rule`` "snntorch" takes
    the reset signal from the stored membrane (snnTorch's ``mem_reset``). ``late_recurrent`` adds
    the population's recurrent inputs after the charge (snnTorch's RLeaky/RSynaptic). ``bias``
    (per neuron or one value) is a constant input added every step right after the charge,
    ``m = charge + bias`` (design §3's ``v' = beta*v + gain*I + bias``; not scaled by ``gain``,
    not filtered by ``cuba_lif``'s synapse), from the population's latency on. The membrane starts
    at ``v_init`` (per neuron or one value) when given, else at ``v_reset``. ``li`` neurons never
    spike and output their membrane (a ``real`` signal). Fixed point (precision "fixed"): the bias
    is ``bias_mant << bias_exp`` (``bias`` must be None; ``quantize`` maps a float ``bias`` there)
    and ``v_init`` is the integer 24-bit ``v``.
    """

    KIND: ClassVar[str] = "population"
    model: str = "lif"
    beta: np.ndarray | None = None
    threshold: np.ndarray | None = None
    alpha: np.ndarray | None = None
    gain: float = 1.0
    reset: str = "subtract"
    reset_delay: bool = True
    fire_ge: bool = False
    precision: str = "float32"
    charge: str = "beta"
    tau: np.ndarray | None = None  # charges "tau"/"tau_input": the divisor; model "alpha": tau_alpha
    rate: np.ndarray | None = None  # charges "rate"/"rate_input": the factor 1/tau
    v_reset: float = 0.0  # reset "zero" of a SpikingJelly hard reset, and the rest value of its charges
    reset_rule: str = "standard"
    late_recurrent: bool = False
    # Loihi fixed point (precision "fixed", set by ``spike.compiler.passes.quantize``): per-neuron int32
    # arrays; see ``quantize`` for the update rule and the mapping from the float fields.
    du: np.ndarray | None = None  # current decay, 0..4095 (effective decay du + 1)
    dv: np.ndarray | None = None  # voltage decay, 0..4095
    vth: np.ndarray | None = None  # threshold mantissa, 0..2^17-1, compared as vth << 6
    bias_mant: np.ndarray | None = None  # bias mantissa, -4096..4095
    bias_exp: np.ndarray | None = None  # bias exponent, 0..7: bias = bias_mant << bias_exp
    # Both precisions (per neuron or one value; the class docstring):
    bias: np.ndarray | None = None  # constant input per step, added after the charge (float programs)
    v_init: np.ndarray | None = None  # initial membrane (None: v_reset); fixed point: the integer v

    def beyond_lif(self) -> tuple[str, Any] | None:
        """None for the plain design-§3 LIF family that Loihi and NIR express (beta charge, standard
        reset rule, no drop reset, rest at 0, no late inputs, no Alpha neuron); else the first
        field that goes beyond it and its value."""
        for name, plain in (("model", self.model != "alpha"), ("charge", self.charge == "beta"),
                             ("reset_rule", self.reset_rule == "standard"), ("reset", self.reset != "drop"),
                             ("v_reset", self.v_reset == 0), ("late_recurrent", not self.late_recurrent)):
            if not plain:
                return name, getattr(self, name)
        return None


@dataclass(frozen=True, eq=False)
class Bernoulli(Node):
    """Spikes generated inside the run, no input array: neuron ``k`` of sample ``b`` fires at step
    ``t`` with probability ``p[k]`` (one value or one per neuron, in [0, 1]), independently of
    every other (neuron, sample, step): a Poisson process of rate ``p / dt`` in discrete time.

    The spike is ``h(seed, b, t - latency, k) < floor(p[k] * 2^32)`` with ``h`` the counter-based
    32-bit hash of ``spike.semantics`` (``make_spike_hash``), exact in integer arithmetic, so every
    backend emits the same spikes bit for bit; the node is silent before its latency. ``seed``: 0
    .. 2^63 - 1. A program whose only sources are these nodes (or population biases) runs without
    inputs: ``run(..., steps=T, batch=B)``.
    """

    KIND: ClassVar[str] = "bernoulli"
    p: np.ndarray | None = None
    seed: int = 0


@dataclass(frozen=True, eq=False)
class Projection(Node):
    """Synapses from one source node; delivers a current ``delay`` steps after the source fired."""

    in_shape: tuple[int, ...] = ()
    delay: int = 0

    @functools.cached_property
    def in_size(self) -> int:
        return _size(self.in_shape)


@dataclass(frozen=True, eq=False)
class Dense(Projection):
    """All-to-all synapses; ``weight`` is ``[n_out, n_in]`` (torch's Linear layout)."""

    KIND: ClassVar[str] = "dense"
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    weight_exp: int = 0  # fixed point: delivered = (sum of integer weights) shifted by weight_exp
    num_weight_bits: int = 8  # fixed point: signed integer weights in [-2^(b-1), 2^(b-1)-1]


@dataclass(frozen=True, eq=False)
class Sparse(Projection):
    """Synapses in CSR over source neurons: targets of source ``i`` are
    ``indices[indptr[i]:indptr[i+1]]`` with weights ``data[...]``."""

    KIND: ClassVar[str] = "sparse"
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    data: np.ndarray | None = None
    bias: np.ndarray | None = None
    weight_exp: int = 0  # fixed point: delivered = (sum of integer weights) shifted by weight_exp
    num_weight_bits: int = 8  # fixed point: signed integer weights in [-2^(b-1), 2^(b-1)-1]


@dataclass(frozen=True, eq=False)
class Conv2d(Projection):
    """2-D convolution, delivered by scattering the kernel of each input event.

    ``in_shape`` is ``(C_in, H, W)``, ``shape`` is ``(C_out, H_out, W_out)``, ``weight`` is
    ``[C_out, C_in/groups, kh, kw]``.
    """

    KIND: ClassVar[str] = "conv2d"
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    weight_exp: int = 0  # fixed point: delivered = (sum of integer weights) shifted by weight_exp
    num_weight_bits: int = 8  # fixed point: signed integer weights in [-2^(b-1), 2^(b-1)-1]


@dataclass(frozen=True, eq=False)
class Pool2d(Projection):
    """Pooling over ``(C, H, W)``: ``max`` of spikes is an OR of events (a spike signal);
    ``avg`` and ``sum`` deliver ``count/(kh*kw)`` and ``count``. Padding counts as zero."""

    KIND: ClassVar[str] = "pool2d"
    mode: str = "avg"
    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int] = (0, 0)


@dataclass(frozen=True, eq=False)
class Identity(Projection):
    """One-to-one synapses with one weight, e.g. a residual connection."""

    KIND: ClassVar[str] = "identity"
    scale: float = 1.0
    weight_exp: int = 0  # fixed point: delivered = (sum of integer weights) shifted by weight_exp
    num_weight_bits: int = 8  # fixed point: signed integer weights in [-2^(b-1), 2^(b-1)-1]


@dataclass(frozen=True, eq=False)
class BatchNorm(Node):
    """Per-channel affine of inference-mode BatchNorm; only lives until ``fold_batchnorm``."""

    KIND: ClassVar[str] = "batchnorm"
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    eps: float = 1e-5


@dataclass(frozen=True, eq=False)
class HostOp(Node):
    """Real-valued computation done on the host: LayerNorm, matmul on real inputs, sigmoid,
    squared ReLU, token shift, the WKV recurrence, max pooling of currents, add, ...

    ``op`` names the operation; :data:`spike.compiler.ir.hostops.HOST_OPS` says, per op, its sources,
    what ``weight``/``bias``/``eps`` mean, its output shape and how it is counted (``macs`` for a
    matmul, ``syn_ops`` for spikes added into an ``add``, ``host_flops`` otherwise).
    """

    KIND: ClassVar[str] = "hostop"
    op: str = "add"
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    eps: float = 1e-5
    # the window of a pooling host op ("maxpool2d": its source is (C, H, W) = in_shape; unused otherwise)
    in_shape: tuple[int, ...] = ()
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()


NODE_TYPES: dict[str, type[Node]] = {
    cls.KIND: cls
    for cls in (Input, Output, Population, Dense, Sparse, Conv2d, Pool2d, Identity, BatchNorm, HostOp, Bernoulli)
}
PROJECTION_KINDS = tuple(k for k, c in NODE_TYPES.items() if issubclass(c, Projection))


def conv_output_hw(
    hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    """Output height and width of a convolution or pooling window (dilation 1, floor mode)."""
    return tuple(
        (hw[i] + 2 * padding[i] - kernel[i]) // stride[i] + 1 for i in range(2)
    )  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Gate(Node):
    """An FTWT channel mask (``spike.ftwt``): a predictor head that reads its single source and the
    mask it applies to the Population it feeds (edge Gate -> Population; ``shape`` is ``(C_out,)``,
    one entry per channel of that population, whose neurons are channel-major).

    Per sample: ``sums[c]`` = the source's values summed over the first ``window`` steps (0: all
    steps of the run) and over all positions of channel ``c`` of ``in_shape`` ``(C_in, ...)``;
    ``P = softmax(sums / positions) @ weight.T + bias`` (``weight [C_out, C_in]``, ``bias
    [C_out]``, see ``spike.ftwt.gate_logits``); channel ``c`` is kept when ``P[c] > 0``
    (``sigmoid(P) > 0.5``), for every step. A masked channel's neurons receive no synaptic
    operations, do no updates and never spike. The output of the node is the mask (1 kept, 0
    masked) at every step. Rules (``validate``): the population's other inputs are conv2d
    projections reading the gate's source; nothing here is on a cycle.
    """

    KIND: ClassVar[str] = "gate"
    in_shape: tuple[int, ...] = ()
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    window: int = 0

    @functools.cached_property
    def in_size(self) -> int:
        return _size(self.in_shape)


NODE_TYPES[Gate.KIND] = Gate
