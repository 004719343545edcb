"""What each ``HostOp`` computes: its sources, parameters, output shape and operation count.

One :class:`HostOpSpec` per ``HostOp.op`` in :data:`HOST_OPS`; validation checks nodes against it
and every backend executes the same definitions (``spike.backends.host_ops``). Sources are
per-step signals ``[B, size]``; stateful ops (``token_mix``, ``wkv``) carry state along the steps
and start from zero for every run.

Counting per step and sample: ``matmul`` counts the non-zero input x non-zero weight pairs as
``macs`` (``syn_ops`` when its input is a spike signal) and all pairs as ``dense_ops``, like a
projection; ``add`` treats its first source as the accumulator and charges each further source as
``syn_ops`` (one accumulate per event) when it carries spikes, else ``size`` ``host_flops``;
``maxpool2d`` charges its comparisons, ``kh * kw - 1`` ``host_flops`` per output element; every
other op charges ``flops`` ``host_flops`` per output element.

``zero_preserving`` ops output zeros for all-zero sources when they have no (non-zero) bias and no
state: before its inputs arrive such a node is silent, so the target-delay pass may start it late
(``spike.compiler.passes.delays``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["HostOpSpec", "HOST_OPS", "ELEMENTWISE_HOST_OPS", "STATEFUL_HOST_OPS", "silent_at_rest"]


@dataclass(frozen=True)
class HostOpSpec:
    """``sources``: how many inputs ("1", "2", "1+"); ``params``: required array fields and their
    meaning (``optional``: allowed ones); ``elementwise``: the output has each source's shape;
    ``flops``: host flops per output element per step; ``stateful``: depends on earlier steps;
    ``window``: takes the pooling window fields ``in_shape``, ``kernel``, ``stride``, ``padding``
    (the others take none); ``zero_preserving``: all-zero sources give a zero output (without a
    non-zero bias)."""

    sources: str
    doc: str
    params: dict[str, str] = field(default_factory=dict)
    optional: dict[str, str] = field(default_factory=dict)
    elementwise: bool = True
    flops: int = 1
    stateful: bool = False
    window: bool = False
    zero_preserving: bool = False


HOST_OPS: dict[str, HostOpSpec] = {
    "add": HostOpSpec("1+", "sum of the sources (the first is the accumulator)", zero_preserving=True),
    "sub": HostOpSpec("2", "first source minus second", zero_preserving=True),
    "mul": HostOpSpec("2", "element-wise product", zero_preserving=True),
    "neg": HostOpSpec("1", "-x", zero_preserving=True),
    "exp": HostOpSpec("1", "exp(x)"),
    "relu": HostOpSpec("1", "max(x, 0)", zero_preserving=True),
    "tanh": HostOpSpec("1", "tanh(x)", flops=4, zero_preserving=True),
    "sigmoid": HostOpSpec("1", "1 / (1 + exp(-x))", flops=4),
    "squared_relu": HostOpSpec("1", "relu(x)^2", flops=2, zero_preserving=True),
    "identity": HostOpSpec("1", "x", flops=0, zero_preserving=True),
    "layernorm": HostOpSpec(
        "1", "LayerNorm over the whole feature vector: (x - mean) / sqrt(var + eps) * weight + bias "
        "(flops: mean, centre, square-accumulate, scale, affine)",
        params={"weight": "gain, one per element", "bias": "shift, one per element"}, flops=7,
    ),
    "token_mix": HostOpSpec(
        "1", "RWKV token shift and mix: weight * x_t + (1 - weight) * x_{t-1}, x_{-1} = 0 "
        "(torch.lerp(x_{t-1}, x_t, weight))",
        params={"weight": "mix factor mu, one per element"}, flops=3, stateful=True,
    ),
    "matmul": HostOpSpec(
        "1", "weight @ x (+ bias): a matrix product on real-valued inputs; shape (n_out,)",
        params={"weight": "[n_out, n_in]"}, optional={"bias": "[n_out]"}, elementwise=False, flops=0,
        zero_preserving=True,
    ),
    "maxpool2d": HostOpSpec(
        "1", "max pooling of a real-valued (C, H, W) = in_shape source over kernel windows (torch's "
        "F.max_pool2d: padding counts as -inf, floor mode, dilation 1); shape (C, H_out, W_out)",
        elementwise=False, flops=0, window=True, zero_preserving=True,
    ),
    "wkv": HostOpSpec(
        "2", "RWKV-4 WKV recurrence of sources (k, v) with the running-max stabilisation "
        "(spike.kernels.wkv): y_t = (a + e^(u+k_t) v_t) / (b + e^(u+k_t)), a <- e^w a + e^k_t v_t, "
        "b <- e^w b + e^k_t, w = -exp(weight), u = bias (flops per channel and step of the "
        "stabilised update)",
        params={"weight": "time_decay, one per channel", "bias": "time_first, one per channel"},
        flops=23, stateful=True,
    ),
}

#: Host ops whose output has the shape of each of their (equally sized) sources.
ELEMENTWISE_HOST_OPS = frozenset(op for op, spec in HOST_OPS.items() if spec.elementwise)
STATEFUL_HOST_OPS = frozenset(op for op, spec in HOST_OPS.items() if spec.stateful)


def silent_at_rest(node: object) -> bool:
    """Whether host op ``node`` outputs zeros while its sources are all zero (``zero_preserving``,
    stateless, no non-zero bias)."""
    spec = HOST_OPS.get(getattr(node, "op", None))
    bias = getattr(node, "bias", None)
    return bool(spec is not None and spec.zero_preserving and not spec.stateful
                and (bias is None or not np.any(np.asarray(bias) != 0)))
