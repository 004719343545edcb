"""What each ``HostOp`` computes: its sources, parameters, output shape and operation count.

One :class:`HostOpSpec` per ``HostOp.op`` in :data:`HOST_OPS`; validation checks nodes against it
and every backend executes the same definitions (``spike.backends.host_kernels``). Sources are
per-step signals ``[B, size]``; stateful ops (``token_mix``, ``wkv``) carry state along the steps
and start from zero for every run.

Counting per step and sample: ``matmul`` counts the non-zero input x non-zero weight pairs as
``macs`` (``syn_ops`` when its input is a spike signal) and all pairs as ``dense_ops``, like a
projection; ``add`` treats its first source as the accumulator and charges each further source as
``syn_ops`` (one accumulate per event) when it carries spikes, else ``size`` ``host_flops``; every
other op charges ``flops`` ``host_flops`` per output element.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["HostOpSpec", "HOST_OPS", "ELEMENTWISE_HOST_OPS", "STATEFUL_HOST_OPS"]


@dataclass(frozen=True)
class HostOpSpec:
    """``sources``: how many inputs ("1", "2", "1+"); ``params``: required array fields and their
    meaning (``optional``: allowed ones); ``elementwise``: the output has each source's shape;
    ``flops``: host flops per output element per step; ``stateful``: depends on earlier steps."""

    sources: str
    doc: str
    params: dict[str, str] = field(default_factory=dict)
    optional: dict[str, str] = field(default_factory=dict)
    elementwise: bool = True
    flops: int = 1
    stateful: bool = False


HOST_OPS: dict[str, HostOpSpec] = {
    "add": HostOpSpec("1+", "sum of the sources (the first is the accumulator)"),
    "sub": HostOpSpec("2", "first source minus second"),
    "mul": HostOpSpec("2", "element-wise product"),
    "neg": HostOpSpec("1", "-x"),
    "exp": HostOpSpec("1", "exp(x)"),
    "relu": HostOpSpec("1", "max(x, 0)"),
    "tanh": HostOpSpec("1", "tanh(x)", flops=4),
    "sigmoid": HostOpSpec("1", "1 / (1 + exp(-x))", flops=4),
    "squared_relu": HostOpSpec("1", "relu(x)^2", flops=2),
    "identity": HostOpSpec("1", "x", flops=0),
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
    ),
    "wkv": HostOpSpec(
        "2", "RWKV-4 WKV recurrence of sources (k, v) with the running-max stabilisation "
        "(spike.wkv): y_t = (a + e^(u+k_t) v_t) / (b + e^(u+k_t)), a <- e^w a + e^k_t v_t, "
        "b <- e^w b + e^k_t, w = -exp(weight), u = bias (flops per channel and step of the "
        "stabilised update)",
        params={"weight": "time_decay, one per channel", "bias": "time_first, one per channel"},
        flops=23, stateful=True,
    ),
}

#: Host ops whose output has the shape of each of their (equally sized) sources.
ELEMENTWISE_HOST_OPS = frozenset(op for op, spec in HOST_OPS.items() if spec.elementwise)
STATEFUL_HOST_OPS = frozenset(op for op, spec in HOST_OPS.items() if spec.stateful)
