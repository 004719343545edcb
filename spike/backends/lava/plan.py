"""The Lava process plan of a Program: what runs as which Lava process, and every refusal.

:func:`plan_program` checks the program and lowers it node by node to a :class:`LavaPlan` (no
lava import needed); ``backend.lower`` caches it per program. Refusals are collected for every
node and raised together as one :class:`BackendError` (the list is in ``backend``'s docstring).

Lowering, one function per node kind (``_LOWER``):

- ``input``: ``lava.proc.io.source.RingBuffer`` holding the whole batch, one sample after another;
  ``bernoulli``: the same, holding the spikes ``spike.semantics`` generates (the engine passes
  them with the inputs);
- ``dense`` -> ``Dense``; ``sparse`` (CSR over sources) -> ``Sparse`` (scipy CSR over targets);
  ``identity`` -> a diagonal ``Sparse``; ``conv2d`` -> ``lava.proc.conv.Conv`` (Lava's ``(W, H,
  C)`` layout, connected through reshape/transpose ports), or, in fixed point when Lava's Conv
  cannot reproduce the projection exactly (it ignores ``weight_exp`` and wraps at 24 bits), the
  same synapses as a ``Sparse``; ``pool2d`` avg/sum (float) -> a depthwise ``Conv`` with weights
  ``1/(kh*kw)`` (a power of two, else refused) or 1; ``pool2d`` max of spikes -> a depthwise
  ``Conv`` of ones into a LIF that fires when any input fired (an OR, exact in both precisions);
  a projection of delay ``d > 1`` -> ``DelayDense`` (dense) or ``DelaySparse`` (the others, a
  conv2d or pool2d through its CSR form), every synapse delayed ``d - 1`` steps (see "Timing");
- ``population`` -> ``LIF`` (per-neuron ``du``, ``dv``, ``vth``, bias; ``li``: a LIF that never
  fires whose ``v`` is read by a ``Monitor``); its ``v_init`` is the LIF's initial ``v`` (also
  between samples), its own float ``bias`` one more part of the LIF's ``bias_mant`` (below);
- ``hostop`` (``add``) -> our ``HostAdd`` Python process (``lava.procs``); any other host op puts the
  program in host mode (``fusion``);
- ``gate`` (FTWT, float32 programs only) -> our ``FTWTGate`` Python process reading the gate's
  source (``gates``);
- what a run returns or counts is recorded by sinks and monitors (``run``).

Float programs: a population's ``gain`` is folded into its projections' weights and their biases
become the LIF's bias (exact for dyadic values, as equality tests use).

Timing: Lava's Dense, Sparse and Conv send at step t what step t-1's spikes produced, and
DelayDense/DelaySparse (``delays`` 0..63) what step ``t - 1 - delays`` produced; so a projection
of delay 1 is a Dense/Sparse/Conv, one of delay ``2 .. 64`` a DelayDense/DelaySparse with
``delays = d - 1``, and delay 0 (or more than 64) is refused naming the projection (compile for a
Loihi target: ``spike.compiler.passes.delays.target_delays`` gives every projection delay >= 1 and
balances merging paths with longer ones; host mode (``fusion``) lifts the refusal for the dense,
sparse and identity projections of delay 0, which it computes itself).

Biases: a projection's bias is delivered from its onset on (``Program.onset``: its delay after its
source's latency), a fixed-point population's own bias (``bias_mant << bias_exp``) from its
latency on; before that, nothing (numba, torch and cuda do the same). Lava's LIF applies
``bias_mant`` in every step, so each run of ``T`` steps is split at the steps where some LIF's
bias starts (``LavaPlan.bias_parts``: a float LIF's folded projection biases, each with its
onset, which may differ per projection; a fixed LIF's own mantissa with the population's onset),
and between those runs the LIFs whose bias changes get ``bias_mant.set(...)`` (zero before the
first onset, the sum of the started parts after): Lava's own LIF model, bit for bit numba's
membranes. A recorded float projection adds its bias from its onset; a fused block (host mode)
adds a Lava projection's bias from that projection's onset and its own zero-delay projections
deliver nothing before theirs (``FusedSpec.member_onset``, ``input_onset``).

Gates: each gate gets a level (:func:`_gate_levels`, the stage whose run computes its mask) and
the conv2d projections and populations it masks are listed (``LavaPlan.gated_convs``,
``gated_pops``); ``gates`` applies them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from spike.backends.lava.fusion import NATIVE_HOST_OPS, FusedSpec, fuse, host_mode
from spike.backends.lava.synapses import conv_as_csr, conv_lava_layout, csr_of_sparse, lava_weights_fixed
from spike.backends.registry import BackendError
from spike.compiler.ir.nodes import (
    Bernoulli, Conv2d, Dense, Gate, HostOp, Identity, Input, Node, Output, Pool2d, Population, Projection, Sparse,
)
from spike.compiler.ir.precision import check_fixed_point, program_precision
from spike.compiler.ir.program import Program, ProgramError
from spike.compiler.ir.signals import output_signal
from spike.semantics import LOIHI

LOIHI_DELAY = 1  # steps between a spike and the current it causes in Lava (Dense, Sparse, Conv)
MAX_EXTRA_DELAY = 63  # DelayDense / DelaySparse: 0..63 steps on top of Dense's one (Loihi 2's 6-bit delays)

__all__ = ["LavaProc", "LavaPlan", "lif_bias", "plan_program", "LOIHI_DELAY", "MAX_EXTRA_DELAY"]

_CONV_LIMIT = 1 << 23  # Lava's fixed Conv wraps its output to 24 bits and has no weight exponent
_OR_FIXED = dict(du=LOIHI.DECAY_MAX, dv=LOIHI.DECAY_MAX, vth=0, bias_mant=0, bias_exp=0)
_OR_FLOAT = dict(du=1.0, dv=1.0, vth=0.5, bias_mant=0.0, bias_exp=0)


# ---------------------------------------------------------------------------- the plan
@dataclass
class LavaProc:
    """One Lava process to create: ``kind`` (source, dense, sparse, conv, lif, host), its
    constructor arguments, and the IR nodes whose outputs feed its input port (in order)."""

    key: str  # unique; the IR node name, or name + "/sum" for a max pool's synapses
    kind: str
    args: dict[str, Any]
    inputs: list[str] = field(default_factory=list)  # keys of the processes (or IR nodes) feeding it
    out_layout: str = "flat"  # "flat" ([n]) or "whc" (Lava's (W, H, C) image layout)
    in_layout: str = "flat"
    chw_in: tuple[int, int, int] | None = None  # (C, H, W) of the input, for layout changes
    chw_out: tuple[int, int, int] | None = None


@dataclass
class LavaPlan:
    """Everything needed to build the Lava process graph of a program (no lava import needed)."""

    precision: str
    procs: dict[str, LavaProc]
    output_proc: dict[str, str]  # IR node -> key of the process whose output port is its output
    chw: dict[str, tuple[int, int, int] | None]  # IR node -> (C, H, W) of its output, if an image
    recorded: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    # IR node -> fix-up applied to the recorded port values (float projections: undo the folded gain, add the bias)
    # FTWT gates (float32 only; ``gates`` docstring):
    gate_level: dict[str, int] = field(default_factory=dict)  # gate -> the stage whose run computes its mask
    gated_convs: dict[str, str] = field(default_factory=dict)  # conv2d into a gated population -> its gate
    gated_pops: dict[str, str] = field(default_factory=dict)  # gated population -> its gate
    bias_parts: dict[str, list[tuple[str | None, int, np.ndarray]]] = field(default_factory=dict)
    # Lava LIF -> the parts of its bias_mant in order, each (gate that masks it or None, onset, values):
    # float, its projections' folded biases from each projection's onset; fixed, its own bias_mant
    # from its onset (module docstring, "Biases")
    # host mode (``fusion`` docstring):
    batched: bool = False  # the batch runs side by side (every process ``B`` lanes wide), once
    fused: dict[str, str] = field(default_factory=dict)  # IR node computed in a fused block -> the block's key
    synapse_bias: dict[str, np.ndarray] = field(default_factory=dict)  # Lava projection -> bias its fused readers add

    @property
    def stages(self) -> int:
        """Runs per sample: the gate depth + 1 (1 without gates)."""
        return max(self.gate_level.values(), default=-1) + 2

    def bias_steps(self, steps: int) -> list[int]:
        """The steps ``0 < t < steps`` at which some LIF's bias changes (a part's onset): every run
        of ``steps`` steps is split there (module docstring, "Biases")."""
        return sorted({on for parts in self.bias_parts.values() for _, on, _ in parts if 0 < on < steps})


def lif_bias(parts: list[tuple[str | None, int, np.ndarray]], n: int,
             keep: Callable[[str], np.ndarray | None] = lambda gate: None, t: int = 0) -> np.ndarray:
    """A LIF's ``bias_mant`` for the steps from ``t`` on: the parts whose onset is ``<= t`` summed
    in order (float: its projections' biases, gain folded; fixed: its own mantissa); ``keep(gate)``
    is the per-channel mask of a gate when known (masked channels get no bias)."""
    total: Any = 0.0
    for gate, onset, part in parts:
        if onset > t:
            continue
        k = None if gate is None else keep(gate)
        total = total + (part if k is None else np.where(np.repeat(k, len(part) // len(k)), part, 0.0))
    return np.zeros(n) + total


def _plus_bias(x: np.ndarray, bias: np.ndarray, onset: int, gain: float = 1.0) -> np.ndarray:
    """A recorded float projection output ``[T, B, n]`` as numba's: the folded gain undone and the
    bias added from step ``onset`` (before it the projection delivers nothing, bias included)."""
    y = np.asarray(x, np.float64) / gain if gain != 1.0 else np.array(x, np.float64)
    y[onset:] += bias
    return y


def _err(name: str, node: Node, msg: str) -> str:
    return f"{name} ({node.KIND}): {msg}"


def _gain_and_bias_targets(program: Program, name: str, problems: list[str]) -> float:
    """Float programs: the gain folded into projection ``name``'s weights (its consumers'
    common gain; 1 if it feeds anything but populations)."""
    node = program.node(name)
    consumers = [program.node(c) for c in program.consumers(name)]
    pops = [c for c in consumers if isinstance(c, Population)]
    gains = {float(p.gain) for p in pops}
    if len(gains) > 1:
        problems.append(_err(name, node, f"feeds populations with different gains {sorted(gains)}; one Lava "
                             "synapse has one set of weights"))
        return 1.0
    gain = gains.pop() if gains else 1.0
    if gain != 1.0 and len(pops) != len(consumers):
        problems.append(_err(name, node, f"feeds a population of gain {gain} and also other nodes; the gain is "
                             "folded into the weights on Lava"))
    bias = getattr(node, "bias", None)
    if bias is not None and np.any(np.asarray(bias) != 0):
        if len(pops) != len(consumers) or not consumers:
            problems.append(_err(name, node, "has a bias and feeds something other than populations: Lava's "
                                 "synapses have no bias (it is added to the LIF's bias)"))
        bad = [c for c in program.consumers(name) if isinstance(program.node(c), Population)
               and program.node(c).model == "cuba_lif"]
        if bad:
            problems.append(_err(name, node, f"has a bias and feeds cuba_lif population(s) {bad}: Lava adds biases "
                                 "to v, numba to the synaptic current"))
    return gain


class _Planner:
    def __init__(self, program: Program, precision: str) -> None:
        self.program = program
        self.fixed = precision == "fixed"
        self.plan = LavaPlan(precision=precision, procs={}, output_proc={}, chw={})
        self.problems: list[str] = []
        self.gate_of_pop = {pop: g for g, node in program.nodes() if isinstance(node, Gate)
                            for pop in program.consumers(g)}
        self.host = host_mode(program)
        self.specs: dict[str, FusedSpec] = {}
        self.fused: dict[str, str] = {}
        if self.host:
            self.fused, self.specs, _ = fuse(program)
            self.plan.batched = True
            self.plan.fused = dict(self.fused)

    # ---- helpers
    def add(self, proc: LavaProc, output_of: str | None = None) -> None:
        self.plan.procs[proc.key] = proc
        if output_of is not None:
            self.plan.output_proc[output_of] = proc.key

    def graded(self, src: str) -> int:
        """num_message_bits for a synapse reading ``src``: binary events in fixed point (any
        non-zero value is a spike, as numba), the values themselves in float."""
        return 0 if self.fixed else 24

    def check_projection(self, name: str, node: Projection) -> str | None:
        srcs = self.program.sources(name)
        if len(srcs) != 1:
            self.problems.append(_err(name, node, f"needs exactly one source, has {len(srcs)}"))
            return None
        (src,) = srcs
        if self.program.node(src).size != node.in_size:
            self.problems.append(_err(name, node, f"expects {node.in_size} inputs, source {src!r} has "
                                      f"{self.program.node(src).size}"))
            return None
        d = int(node.delay)
        if d < LOIHI_DELAY:
            self.problems.append(_err(name, node, (
                f"delay {d}: Lava's Dense/Sparse/Conv deliver {LOIHI_DELAY} step late at the earliest, so the lava "
                f"backend needs delay >= {LOIHI_DELAY} on every projection; compile for a Loihi target "
                "(compile(..., target='loihi2') runs spike.compiler.passes.delays.target_delays)")))
        elif d > LOIHI_DELAY + MAX_EXTRA_DELAY:
            self.problems.append(_err(name, node, (
                f"delay {d}: Lava's DelayDense/DelaySparse delay a spike by at most {MAX_EXTRA_DELAY} steps after "
                f"Dense's {LOIHI_DELAY} (delay <= {LOIHI_DELAY + MAX_EXTRA_DELAY})")))
        src_node = self.program.node(src)
        if isinstance(src_node, Population) and src_node.model == "li" and src not in self.fused:
            self.problems.append(_err(name, node, f"reads the membrane of li population {src!r}: Lava's LIF "
                                      "sends only spikes"))
        return src

    def image(self, name: str) -> tuple[int, int, int] | None:
        node = self.program.node(name)
        return tuple(int(x) for x in node.shape) if len(node.shape) == 3 else None

    @staticmethod
    def extra_delay(node: Projection) -> int:
        """Steps a projection delays beyond Lava's one (> 0: DelayDense/DelaySparse)."""
        return max(int(node.delay) - LOIHI_DELAY, 0)

    def fold_bias(self, name: str, node: Projection, gain: float) -> None:
        bias = getattr(node, "bias", None)
        if self.fixed or bias is None:
            return
        b = np.asarray(bias, np.float64).reshape(-1)
        if isinstance(node, Conv2d):
            b = np.repeat(b, node.size // len(b))
        gate = self.plan.gated_convs.get(name)
        onset = self.program.onset(name)  # the bias travels with the events (Program.onset)
        for c in self.program.consumers(name):
            if isinstance(self.program.node(c), Population):
                self.plan.bias_parts.setdefault(c, []).append((gate, onset, gain * b))
        if np.any(b != 0):  # a recorded current must equal numba's: undo the gain, add the bias from its onset
            self.plan.recorded[name] = lambda x, g=gain, bb=b, on=onset: _plus_bias(x, bb, on, g)
        elif gain != 1.0:
            self.plan.recorded[name] = lambda x, g=gain: x / g

    def float_gain(self, name: str, node: Projection) -> float:
        """A float projection's gain folded into its Lava weights (its biases folded into the LIFs
        it feeds); in host mode, a projection read by fused blocks keeps gain 1 and its bias is
        added by the blocks (``synapse_bias``), which apply the gain themselves."""
        if self.host and any(c in self.fused for c in self.program.consumers(name)):
            bias = getattr(node, "bias", None)
            if bias is not None and np.any(np.asarray(bias) != 0):
                b = np.asarray(bias, np.float64).reshape(-1)
                self.plan.synapse_bias[name] = b
                self.plan.recorded[name] = lambda x, bb=b, on=self.program.onset(name): _plus_bias(x, bb, on)
            return 1.0
        gain = _gain_and_bias_targets(self.program, name, self.problems)
        self.fold_bias(name, node, gain)
        return gain

    def image_source(self, name: str, node: Conv2d | Pool2d) -> str | None:
        """The source of a conv2d or pool2d; None when refused (host mode, or
        :meth:`check_projection`)."""
        if self.not_in_host_mode(name, node):
            return None
        return self.check_projection(name, node)

    def add_conv(self, key: str, node: Conv2d | Pool2d, args: dict[str, Any], src: str, groups: int,
                 output_of: str | None = None) -> None:
        """A Lava Conv process ``key`` reading ``src``: ``args`` plus ``node``'s geometry in ``groups``
        groups, both sides in Lava's (W, H, C) layout."""
        chw_in = tuple(node.in_shape)
        geometry = dict(input_shape=chw_in[::-1], padding=(node.padding[1], node.padding[0]),
                        stride=(node.stride[1], node.stride[0]), groups=int(groups))
        self.add(LavaProc(key, "conv", dict(args, **geometry), [src], out_layout="whc", in_layout="whc",
                          chw_in=chw_in, chw_out=tuple(node.shape)), output_of=output_of)

    def not_in_host_mode(self, name: str, node: Node) -> bool:
        if self.host:
            ops = [f"{n} ({h.op})" for n, h in self.program.nodes() if isinstance(h, HostOp) and h.op not in NATIVE_HOST_OPS]
            why = f"host op(s) {', '.join(ops)}" if ops else "a stepwise program"
            self.problems.append(_err(name, node, "not supported in a program with host ops other than add or a "
                                      f"stepwise program (here: {why}): the lava backend runs those with the batch "
                                      "side by side (host mode), which Lava's Conv and the FTWT gates do not"))
        return self.host

    # ---- one lowering per node kind
    def input(self, name: str, node: Input) -> None:
        if self.fixed and node.signal != "spike":
            self.problems.append(_err(name, node, "a fixed-point program takes spike inputs"))
        if all(isinstance(self.program.node(c), Output) for c in self.program.consumers(name)):
            return  # no process reads it: none is made (its values come from the inputs)
        self.add(LavaProc(name, "source", {}), output_of=name)

    def output(self, name: str, node: Output) -> None:
        (src,) = self.program.sources(name)
        self.plan.output_proc[name] = self.plan.output_proc.get(src, src)  # resolved after all nodes

    def dense(self, name: str, node: Dense) -> None:
        src = self.check_projection(name, node)
        if src is None:
            return
        if self.fixed:
            w, e = lava_weights_fixed(node.weight, node.weight_exp)
            args = dict(weights=w, weight_exp=e, num_weight_bits=8, sign_mode="mixed", num_message_bits=0)
        else:
            gain = self.float_gain(name, node)
            args = dict(weights=np.asarray(node.weight, np.float64) * gain, num_message_bits=24)
        self.add_synapses(name, node, "dense", args, src)

    def add_synapses(self, name: str, node: Projection, kind: str, args: dict[str, Any], src: str) -> None:
        """A Dense or Sparse process for projection ``name``; DelayDense / DelaySparse (``delays``:
        the steps beyond Lava's one, the same for every synapse) when its delay is > 1."""
        extra = self.extra_delay(node)
        if extra:
            kind = "delay_" + kind
            args = dict(args, delays=extra)
        self.add(LavaProc(name, kind, args, [src]), output_of=name)

    def sparse(self, name: str, node: Sparse) -> None:
        src = self.check_projection(name, node)
        if src is None:
            return
        if self.fixed:
            m = csr_of_sparse(node, np.asarray(node.data).astype(np.int64) * 2)
            if m.nnz and (m.data.max() > 254 or m.data.min() < -256):
                self.problems.append(_err(name, node, "repeated synapses between one pair of neurons sum past 8 bits"))
            args = dict(weights=m.astype(np.int32), weight_exp=int(node.weight_exp) - 1, num_weight_bits=8,
                        sign_mode="mixed", num_message_bits=0)
        else:
            gain = self.float_gain(name, node)
            args = dict(weights=csr_of_sparse(node, np.asarray(node.data, np.float64) * gain), num_message_bits=24)
        self.add_synapses(name, node, "sparse", args, src)

    def identity(self, name: str, node: Identity) -> None:
        import scipy.sparse as sp

        src = self.check_projection(name, node)
        if src is None:
            return
        if self.fixed:
            w, e = lava_weights_fixed(np.asarray([node.scale]), node.weight_exp)
            args = dict(weights=sp.identity(node.size, dtype=np.int32, format="csr") * int(w[0]), weight_exp=e,
                        num_weight_bits=8, sign_mode="mixed", num_message_bits=0)
        else:
            gain = self.float_gain(name, node)
            args = dict(weights=sp.identity(node.size, dtype=np.float64, format="csr") * (float(node.scale) * gain),
                        num_message_bits=24)
        self.add_synapses(name, node, "sparse", args, src)

    def conv2d(self, name: str, node: Conv2d) -> None:
        src = self.image_source(name, node)
        if src is None:
            return
        w = np.asarray(node.weight)
        if w.ndim != 4 or len(node.in_shape) != 3 or len(node.shape) != 3:
            self.problems.append(_err(name, node, f"weight {w.shape} / shapes {node.in_shape} -> {node.shape} are not 2-D"))
            return
        gated = [self.gate_of_pop[c] for c in self.program.consumers(name) if c in self.gate_of_pop]
        if self.extra_delay(node):  # Lava's Conv has no delays: the same synapses as a DelaySparse
            if gated:
                self.problems.append(_err(name, node, (
                    f"delay {node.delay} into a population gated by {gated[0]!r}: a conv2d of delay > 1 runs as a "
                    "DelaySparse, whose weights the gate stages cannot mask per sample (Lava's Conv, delay 1, can)")))
                return
            if self.fixed:
                args = dict(weights=conv_as_csr(node, w.astype(np.int64) * 2).astype(np.int32),
                            weight_exp=int(node.weight_exp) - 1, num_weight_bits=8, sign_mode="mixed",
                            num_message_bits=0)
            else:
                gain = _gain_and_bias_targets(self.program, name, self.problems)
                self.fold_bias(name, node, gain)
                args = dict(weights=conv_as_csr(node, w.astype(np.float64) * gain), num_message_bits=24)
            self.add_synapses(name, node, "sparse", args, src)
            return
        if self.fixed:
            e = int(node.weight_exp)
            w_int = w.astype(np.int64)
            if e >= 0:
                ws = w_int * (1 << e)
                worst = max(np.clip(ws, 0, None).sum(axis=(1, 2, 3)).max(), (-np.clip(ws, None, 0)).sum(axis=(1, 2, 3)).max())
            if e >= 0 and worst < _CONV_LIMIT:
                args = dict(weight=conv_lava_layout(ws).astype(np.int32), weight_exp=0, num_message_bits=0)
                self.add_conv(name, node, args, src, node.groups, output_of=name)
            else:  # Lava's Conv cannot shift right or exceed 24 bits: the same synapses as a Sparse
                m = conv_as_csr(node, w_int * 2)
                args = dict(weights=m.astype(np.int32), weight_exp=e - 1, num_weight_bits=8, sign_mode="mixed",
                            num_message_bits=0)
                self.add(LavaProc(name, "sparse", args, [src]), output_of=name)
            return
        gain = _gain_and_bias_targets(self.program, name, self.problems)
        args = dict(weight=conv_lava_layout(w.astype(np.float64) * gain), num_message_bits=24)
        if gated:  # its weights into masked channels are zeroed per sample (``gates`` docstring)
            self.plan.gated_convs[name] = gated[0]
        self.fold_bias(name, node, gain)
        self.add_conv(name, node, args, src, node.groups, output_of=name)

    def pool2d(self, name: str, node: Pool2d) -> None:
        src = self.image_source(name, node)
        if src is None:
            return
        C, _, _ = node.in_shape
        kh, kw = node.kernel
        if node.mode == "max":
            if output_signal(self.program, src) != "spike":
                self.problems.append(_err(name, node, "max pooling of real values has no exact Lava form (max of "
                                          "spikes is an OR: a conv of ones into a LIF that fires on any input)"))
                return
            ones = np.ones((C, kw, kh, 1), np.int32 if self.fixed else np.float64)
            if f"{name}/sum" in self.program.graph:
                self.problems.append(_err(name, node, f"the name {name + '/sum'!r} of its Lava synapses is taken by a node"))
            extra = self.extra_delay(node)
            if extra:  # the window's count as a DelaySparse (fixed: 2 * 1 >> 1, as any Lava synapse here)
                m = conv_as_csr(node, np.ones((C, 1, kh, kw), np.int64) * (2 if self.fixed else 1))
                args = (dict(weights=m.astype(np.int32), weight_exp=-1, num_weight_bits=8, sign_mode="mixed")
                        if self.fixed else dict(weights=m.astype(np.float64)))
                self.add(LavaProc(f"{name}/sum", "delay_sparse", dict(args, num_message_bits=0, delays=extra), [src]))
            else:
                self.add_conv(f"{name}/sum", node, dict(weight=ones, weight_exp=0, num_message_bits=0), src, C)
            self.add(LavaProc(name, "lif", dict(_OR_FIXED if self.fixed else _OR_FLOAT), [f"{name}/sum"]),
                     output_of=name)
            return
        if self.fixed:
            self.problems.append(_err(name, node, f"{node.mode!r} pooling in a fixed-point program (quantize turns it "
                                      "into a depthwise conv2d)"))
            return
        area = kh * kw
        if node.mode == "avg" and area & (area - 1):
            self.problems.append(_err(name, node, f"average pooling over {kh}x{kw} = {area} inputs: Lava multiplies "
                                      f"by 1/{area}, which is not exact in binary (numba divides the sum); use a window "
                                      "of 1, 2, 4, 8, ... inputs or sum pooling"))
            return
        gain = _gain_and_bias_targets(self.program, name, self.problems)
        wv = (1.0 / area if node.mode == "avg" else 1.0) * gain
        self.fold_bias(name, node, gain)
        if self.extra_delay(node):
            args = dict(weights=conv_as_csr(node, np.full((C, 1, kh, kw), wv)), num_message_bits=24)
            self.add_synapses(name, node, "sparse", args, src)
            return
        self.add_conv(name, node, dict(weight=np.full((C, kw, kh, 1), wv), num_message_bits=24), src, C, output_of=name)

    def hostop(self, name: str, node: HostOp) -> None:
        if node.op not in NATIVE_HOST_OPS:  # host mode fuses every host op; only fixed point gets here
            self.problems.append(_err(name, node, f"host op {node.op!r} in a fixed-point program (supported there on "
                                      f"lava: {list(NATIVE_HOST_OPS)})"))
            return
        srcs = self.program.sources(name)
        for s in srcs:
            sn = self.program.node(s)
            if sn.size != node.size:
                self.problems.append(_err(name, node, f"source {s!r} has {sn.size} values, expected {node.size}"))
            if isinstance(sn, Population) and sn.model == "li":
                self.problems.append(_err(name, node, f"reads the membrane of li population {s!r}: Lava's LIF sends "
                                          "only spikes"))
        self.add(LavaProc(name, "host", dict(op=node.op), list(srcs)), output_of=name)

    def gate(self, name: str, node: Gate) -> None:
        if self.not_in_host_mode(name, node):
            return
        if self.fixed:
            self.problems.append(_err(name, node, "FTWT gates run in float32 programs only"))
            return
        srcs = self.program.sources(name)
        if len(srcs) != 1 or self.program.node(srcs[0]).size != node.in_size:
            self.problems.append(_err(name, node, f"needs one source of {node.in_size} values, has {srcs}"))
            return
        sn = self.program.node(srcs[0])
        if isinstance(sn, Population) and sn.model == "li":
            self.problems.append(_err(name, node, f"reads the membrane of li population {srcs[0]!r}: Lava's LIF "
                                      "sends only spikes"))
        args = dict(weight=np.asarray(node.weight, np.float32), bias=np.asarray(node.bias, np.float32),
                    window=int(node.window))
        self.add(LavaProc(name, "gate", args, list(srcs)))

    def population(self, name: str, node: Population) -> None:
        n = node.size
        if node.late_recurrent:
            self.problems.append(_err(name, node, "adds its recurrent inputs after its charge (late_recurrent, snnTorch's "
                                      "RLeaky/RSynaptic): no Lava process computes that order"))
        gate = self.gate_of_pop.get(name)
        srcs = [s for s in self.program.sources(name) if s != gate]
        if gate is not None:
            self.plan.gated_pops[name] = gate
            thr = np.asarray(1.0 if node.threshold is None else node.threshold)
            if node.model != "li" and np.any(thr < 0):
                self.problems.append(_err(name, node, f"gated by {gate!r} with a negative threshold: on Lava a masked "
                                          "neuron rests at v = 0 and would fire"))
        for s in srcs:
            sn = self.program.node(s)
            if sn.size != n:
                self.problems.append(_err(name, node, f"source {s!r} has {sn.size} values per step, expected {n}"))
            if isinstance(sn, Population) and sn.model == "li":
                self.problems.append(_err(name, node, f"reads the membrane of li population {s!r}: Lava's LIF sends "
                                          "only spikes"))
            weighted = isinstance(sn, Projection) and not (isinstance(sn, Pool2d) and sn.mode == "max")
            if not self.fixed and float(node.gain) != 1.0 and not weighted:
                self.problems.append(_err(name, node, f"gain {node.gain} with input {s!r} that is not a projection: "
                                          "Lava folds the gain into synaptic weights (a max pool passes spikes unweighted)"))
        spiking = node.model != "li"
        if self.fixed:
            from spike.compiler.passes.quantize import loihi_neuron_params

            try:
                loihi_neuron_params(node, name)
            except ProgramError as e:
                self.problems.append(str(e))
                return
            args = {f: np.asarray(getattr(node, f)).astype(np.int64).reshape(-1) for f in
                    ("du", "dv", "vth", "bias_mant", "bias_exp")}
            if not spiking:
                args["vth"] = np.full(n, LOIHI.VTH_MAX, np.int64)
            mant = np.broadcast_to(args["bias_mant"], (n,)).copy()
            if np.any(mant != 0):  # its own bias applies from its onset (Program.onset): set between runs
                self.plan.bias_parts[name] = [(None, self.program.onset(name), mant)]
            if node.v_init is not None:  # the integer v it starts from (and is reset to between samples)
                args["v"] = np.broadcast_to(np.asarray(node.v_init).astype(np.int64).reshape(-1), (n,)).copy()
        else:
            beyond = node.beyond_lif()
            if beyond and beyond[0] != "late_recurrent":
                self.problems.append(_err(name, node, f"{beyond[0]} {beyond[1]!r}: Lava's LIF computes v' = (1-dv)*v + u "
                                          "(run the program in host mode, or on another backend)"))
            if spiking:
                for f, bad, why in (("reset", node.reset != "zero", f"{node.reset!r}: Lava's LIF resets v to zero"),
                                    ("reset_delay", node.reset_delay, "True: Lava's LIF resets in the step it fires"),
                                    ("fire_ge", node.fire_ge, "True: Lava's LIF fires on v > vth")):
                    if bad:
                        self.problems.append(_err(name, node, f"{f} {why}"))
            beta = np.broadcast_to(np.asarray(1.0 if node.beta is None else node.beta, np.float64).reshape(-1), (n,))
            alpha = (np.broadcast_to(np.asarray(node.alpha, np.float64).reshape(-1), (n,))
                     if node.model == "cuba_lif" else np.zeros(n))
            thr = np.broadcast_to(np.asarray(1.0 if node.threshold is None else node.threshold, np.float64).reshape(-1), (n,))
            args = dict(du=1.0 - alpha, dv=1.0 - beta, vth=thr.copy() if spiking else np.full(n, np.inf),
                        bias_mant=np.zeros(n), bias_exp=0)
            if node.bias is not None:  # its own bias, added to v as Lava's bias_mant from its onset
                bias = np.broadcast_to(np.asarray(node.bias, np.float64).reshape(-1), (n,)).copy()
                self.plan.bias_parts.setdefault(name, []).append((gate, self.program.onset(name), bias))
            if node.v_init is not None:  # the v it starts from (and is reset to between samples)
                args["v"] = np.broadcast_to(np.asarray(node.v_init, np.float32).astype(np.float64).reshape(-1), (n,)).copy()
        if gate is not None and node.v_init is not None:
            self.problems.append(_err(name, node, f"gated by {gate!r} with v_init: on Lava a masked neuron still leaks "
                                      "(its inputs and bias are masked, not its update)"))
        self.add(LavaProc(name, "lif", dict(args, spiking=spiking), list(srcs)), output_of=name)

    def bernoulli(self, name: str, node: Bernoulli) -> None:
        """Its spikes, generated by ``spike.semantics`` before the run (the engine hands them in
        with the inputs), played by a RingBuffer source like an input's."""
        if all(isinstance(self.program.node(c), Output) for c in self.program.consumers(name)):
            return
        self.add(LavaProc(name, "source", {}), output_of=name)

    def blocks(self) -> None:
        """Host mode: one ``fused`` process per block (``fuse``)."""
        for key, spec in self.specs.items():
            if key in self.program.graph and key not in {m.name for m in spec.members}:
                self.problems.append(f"{key}: the name of a fused Lava block is taken by a node")
            spec.input_bias = [self.plan.synapse_bias.get(s) for s in spec.inputs]
            self.add(LavaProc(key, "fused", dict(spec=spec), list(spec.inputs)))
            for m in spec.members:
                self.plan.output_proc[m.name] = key

    def finish(self) -> LavaPlan:
        for name, proc in self.plan.procs.items():
            if proc.kind == "lif" and name in self.plan.bias_parts:  # the bias of step 0 (later: set between runs)
                b = lif_bias(self.plan.bias_parts[name], self.program.node(name).size)
                proc.args["bias_mant"] = b.astype(np.int64) if self.fixed else b
        self.plan.gate_level = _gate_levels(self.program, self.gate_of_pop)
        for name in self.program.graph.nodes:  # chains of outputs
            key = self.plan.output_proc.get(name)
            seen = set()
            while key is not None and key not in self.plan.procs and key not in seen:
                seen.add(key)
                key = self.plan.output_proc.get(key)
            if key is not None:
                self.plan.output_proc[name] = key
        for name in self.program.graph.nodes:
            self.plan.chw[name] = self.image(name)
        return self.plan


def _gate_levels(program: Program, gate_of_pop: dict[str, str]) -> dict[str, int]:
    """Gate -> level: 0 when no gated population lies upstream of (or is) its source, else 1 + the
    highest level among the gates of those populations. A gate of level ``s`` gets its mask from
    run ``s`` of a sample, when every mask of a lower level is applied."""
    import networkx as nx

    levels: dict[str, int] = {}

    def level(gate: str, seen: tuple[str, ...] = ()) -> int:
        if gate not in levels:
            if gate in seen:  # pragma: no cover - check_gates refuses gates on cycles
                raise BackendError(f"gate {gate!r} depends on its own mask")
            (src,) = program.sources(gate)
            up = nx.ancestors(program.graph, src) | {src}
            levels[gate] = max((level(gate_of_pop[p], seen + (gate,)) + 1 for p in up if p in gate_of_pop), default=0)
        return levels[gate]

    for gate in sorted(set(gate_of_pop.values())):
        level(gate)
    return levels


_LOWER: dict[str, Callable[[_Planner, str, Any], None]] = {
    "input": _Planner.input, "output": _Planner.output, "dense": _Planner.dense, "sparse": _Planner.sparse,
    "identity": _Planner.identity, "conv2d": _Planner.conv2d, "pool2d": _Planner.pool2d, "hostop": _Planner.hostop,
    "population": _Planner.population, "gate": _Planner.gate, "bernoulli": _Planner.bernoulli,
}


def plan_program(program: Program) -> LavaPlan:
    """The Lava process plan of ``program``, or a :class:`BackendError` listing every node it
    cannot lower (``backend.lower`` caches it per program)."""
    precision = program_precision(program)
    if precision == "fixed":
        try:
            check_fixed_point(program)
        except ProgramError as e:
            raise BackendError(f"backend 'lava' cannot execute this fixed-point program: {e}") from None
    if any(isinstance(node, Gate) for _, node in program.nodes()):
        from spike.compiler.ir.validate import check_gates

        try:
            check_gates(program)
        except ProgramError as e:
            raise BackendError(f"backend 'lava' cannot execute this program: {e}") from None
    planner = _Planner(program, precision)
    for stage in program.schedule():
        for name in stage.nodes:
            node = program.node(name)
            if name in planner.fused:
                continue  # computed in a fused block (planner.blocks)
            fn = _LOWER.get(node.KIND)
            if fn is None:
                planner.problems.append(_err(name, node, f"node kind {node.KIND!r} has no Lava lowering "
                                             f"(supported: {sorted(_LOWER)})"))
                continue
            if isinstance(node, Population) and node.precision != precision:
                planner.problems.append(_err(name, node, f"population precision {node.precision!r} in a {precision} program"))
                continue
            fn(planner, name, node)
    import networkx as nx

    used = program.graph.subgraph([n for n in program.graph.nodes
                                   if not (isinstance(program.node(n), (Input, Bernoulli)) and not program.consumers(n))])
    parts = list(nx.weakly_connected_components(used))
    if len(parts) > 1:
        planner.problems.append(f"the program has {len(parts)} unconnected parts "
                                f"({', '.join(sorted(min(p) for p in parts))}, ...): Lava runs one connected process graph")
    planner.blocks()
    if planner.problems:
        raise BackendError("backend 'lava' cannot execute node(s): " + "; ".join(planner.problems))
    return planner.finish()
