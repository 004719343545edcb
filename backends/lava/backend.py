"""The lava backend: a Program lowered to lava-nc processes and run in Lava's Loihi 2 simulation.

Unlike the kernel backends, it runs the whole program in Lava (``Backend.runner``): every node
becomes Lava processes, connected as the IR's edges, run for ``T`` steps per sample under
``Loihi2SimCfg(select_tag="fixed_pt")`` (bit-accurate Loihi, programs of precision "fixed") or
``"floating_pt"`` (float32 programs), then stopped, also when the run fails. The result is the
same ``RunResult`` as numba's: outputs and probes ``[T, B, *shape]`` (int32 in fixed point,
float32 otherwise) and the same operation counts, derived from the recorded spike trains and the
weights (``op_counting``).

Lowering, one function per node kind (``_LOWER``):

- ``input``: ``lava.proc.io.source.RingBuffer`` holding the whole batch, one sample after another;
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
  fires whose ``v`` is read by a ``Monitor``);
- ``hostop`` (``add``) -> our ``HostAdd`` Python process (``lava.procs``); any other host op puts the
  program in host mode (below);
- ``gate`` (FTWT, float32 programs only) -> our ``FTWTGate`` Python process reading the gate's
  source (see "Gates" below);
- what a run returns or counts (spikes of every population, outputs, probes) is recorded by
  ``lava.proc.io.sink.RingBuffer`` processes, ``.v``/``.u`` probes and ``li`` readouts by
  ``Monitor`` processes.

Fixed-point weights: a Lava Dense/Sparse with ``weights = 2 * W_int``, ``weight_exp = e - 1``,
``num_weight_bits=8``, sign mode mixed equals our projection exactly (``quantize`` docstring).
The bit-accurate DelayDense/DelaySparse clip and truncate the weights as Dense/Sparse do, sum the
weights of the active inputs per delay slot and shift each sum by ``weight_exp`` the same way;
with one delay for every synapse that is Dense's sum, so the same ``2W`` and ``e - 1`` hold
(``test_fixed_delayed_synapses_equal_numba_for_every_form_and_exponent``).
Float programs: a population's ``gain`` is folded into its projections' weights and their biases
become the LIF's bias (exact for dyadic values, as equality tests use).

Timing: Lava's Dense, Sparse and Conv send at step t what step t-1's spikes produced, and
DelayDense/DelaySparse (``delays`` 0..63) what step ``t - 1 - delays`` produced; so a projection
of delay 1 is a Dense/Sparse/Conv, one of delay ``2 .. 64`` a DelayDense/DelaySparse with
``delays = d - 1``, and delay 0 (or more than 64) is refused naming the projection (compile for a
Loihi target: ``spike.compiler.passes.delays.target_delays`` gives every projection delay >= 1 and
balances merging paths with longer ones; host mode below lifts the refusal for the dense, sparse
and identity projections of delay 0, which it computes itself). A program with a latency
(``Program.latency``) arrives padded with zero steps and its outputs are realigned by the engine
(``engine.padded_inputs``, ``engine.aligned``); the backend runs all ``T + latency`` steps and
counts them. The batch runs one sample at a time through one process graph, whose state (``u``,
``v``, the synapses' buffered currents) is reset between samples (host mode: all samples side by
side, in one run).

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

Host ops (host mode): a float32 program that is stepwise (``metadata["stepwise"]``, e.g. SpikeGPT)
or has a host op other than ``add`` runs in host mode. Its real-valued parts run as custom Lava
Python processes, ``FusedBlock`` (``lava.procs``): float, zero delay (each step: receive every
input port, compute, send, in the same step), computing with ``BlockStep`` exactly what the numba
backend computes, a host op by ``host_ops.run_host_op`` (the shared torch kernel), a population
or a zero-delay projection with the numba kernels' float32 operations in their order.

- What a block computes ("fused" nodes): every host op; every dense/sparse/identity projection of
  delay 0 (Lava's synapses are one step late); and every population Lava's LIF cannot reproduce
  exactly: float32 SpikingJelly/snnTorch neurons (``fire_ge``, ``reset_delay``, resets other than
  zero), ``li`` readouts, and any population fed by a fused node (host ops send real values, which
  Lava's float64 LIF would round differently from numba's float32). Populations fed only by
  projections of delay 1 whose readers are all such populations stay Lava LIFs (gain and bias
  folded as above), and those projections stay Lava synapses (for ``B`` > 1 a ``Sparse`` repeating
  the weights once per sample, LIF parameters tiled); a Lava projection read by blocks keeps gain 1
  and its bias is added by them.
- Fusing, to keep the process count small: each fused population is its own "neurons" block,
  together with the zero-delay projections only it reads (synapses and neurons of one core, e.g.
  SpikeGPT's one-hot ``emb`` Dense with ``emb_spike``). The other fused nodes are merged in
  topological order: a node joins the block of one of its fused sources unless that closes a
  cycle between processes (zero-delay processes on a cycle would wait for each other forever;
  cycles through a Lava synapse, which sends before it receives, do not count), else it starts a
  new block (``_fuse``). A 2-layer SpikeGPT becomes 11 processes: the token source, 5 neuron
  blocks (``emb_spike`` with ``emb``, each SN1/SN2) and 5 host blocks (``ln0`` .. ``att.output``
  of block 0; then one per residual ``add``: ``add1`` .. ``ffn.gated``, ``add2`` .. the next
  block's ``att.output``, the last ``add2`` .. ``head``), ``4L + 3`` for ``L`` layers, and no sinks:
  a block records the members the backend reads back (every population, the sources of
  projections and host ops, outputs, probes, ``.v`` probes) in its ``data`` Var.
- Exactness: a block holds all samples side by side (``[1, B, size]`` per host-op call), since
  MKL's matrix product rounds differently for another batch size, and hands each host op step t
  of a ``[T, B, size]`` array of its source, as numba's stepwise run does (the product also
  depends on the operands' strides and address modulo 16 bytes). So a stepwise program equals the
  numba backend bit for bit (outputs, spikes, membranes, every operation count); a program that is
  not stepwise runs its host ops on all steps at once on numba, which can round differently.
- Lava runs each process in a fork of this process; ``lava.procs._fork_safe_kernels`` keeps the
  host-op kernels off OpenMP thread pools there (torch on one thread, the WKV kernel serial).
  ``timing["processes"]`` of the result counts the Lava processes built (sinks, monitors included).

Gates (``ir.Gate``: per sample, a channel mask computed from ``window`` steps of the gate's
source from the source's latency on (``gate_common._window_values``; ``FTWTGate(start=...)``),
applied to every step of the gated population): a mask is not causal, so a gated program
runs each sample in stages, all in the same process graph. Each gate has a level: 0 when no gated
population lies upstream of its source, else 1 + the highest level among the gates upstream; the
gate depth ``D`` is the highest level + 1, and every sample runs ``D + 1`` times, ``T`` steps each:

- run ``s`` (``s = 0 .. D-1``) applies the masks of the gates of level < ``s`` (known from earlier
  runs of this sample) and leaves the others open (all channels kept); the ``FTWTGate`` processes
  of level ``s`` sum their source over the window and compute the mask with the function every
  backend uses (``gate_common.mask_from_window`` -> ``spike.ftwt.gate_logits``), held in their
  ``mask`` Var, which is read after the run; then the state is reset and the sample re-run;
- run ``D`` applies every mask; only its recordings are the result (the gates, recomputing their
  masks there, must agree with the masks applied, which is checked).

A mask is applied without extra processes, by ``Var.set`` between runs: the weights of the
gated population's conv2d projections into masked channels are set to 0 (a Lava ``Conv``'s
``weight``) and so are the LIF biases of masked neurons (the projections' folded biases), so a
masked neuron receives nothing, stays at ``u = v = 0`` and never fires (its threshold must not be
negative), as on numba, where masked neurons do no updates. The conv2d's recorded output is 0 in
masked channels (numba: no bias there), a gate's output its mask at every step, and the counts
(``op_counting.count_ops`` with the masks read from Lava) are numba's: syn_ops/macs only into kept
channels, neuron_updates only of kept neurons, the gate head's ``host_flops``.

Inputs are replayed in every run (the source ring buffers hold each sample ``D + 1`` times) and
the sinks and monitors record all runs; the result takes each sample's final run. Timing is
honest: ``run_s`` is the time of every run of every stage plus the mask reads and weight/bias
writes between them (not the state resets, as without gates), ``stages`` is ``D + 1`` and
``final_stage_run_s`` the time of the final runs alone (with the bias writes within them);
``ms_per_step`` is ``run_s`` per step.

Refused before anything starts, naming the node: outside host mode, float populations with a
reset other than ``zero``, ``reset_delay=True`` or ``fire_ge=True`` (Lava's LIF resets to zero in
the step it fires on ``v > vth``); in host mode, conv2d, pool2d and gates (the batch runs side by
side, which Lava's Conv and the gate stages do not); host ops other than ``add`` in fixed point;
float ``cuba_lif`` fed by a projection with a bias (Lava adds biases to ``v``, not to the synaptic
current); Lava synapses reading the membrane of an ``li`` readout that is a Lava LIF (it sends only
spikes; a fused ``li`` sends ``v``); max pooling of real values; a program made of several
unconnected parts; gates in a fixed-point program (no backend runs those), gates breaking
``validate.check_gates``, and gated populations with a negative threshold (a masked neuron at rest
would fire on Lava), conv2d projections of delay > 1 into a gated population (a DelaySparse,
whose weights the stages cannot mask). Gated programs cannot run step by step on any backend
(``engine.run``).
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from spike.backends.registry import Backend, BackendError, register_backend
from spike.backends.result import RunResult
from spike.compat.lava import LAVA_INSTALL_HINT, lava_available
from spike import semantics
from spike.compiler.ir.nodes import (
    Conv2d, Dense, Gate, HostOp, Identity, Input, Node, Output, Pool2d, Population, Projection, Sparse,
    conv_output_hw,
)
from spike.compiler.ir.program import Program, ProgramError
from spike.compiler.ir.signals import output_signal
from spike.compiler.ir.validate import LOIHI, check_fixed_point

LOIHI_DELAY = 1  # steps between a spike and the current it causes in Lava (Dense, Sparse, Conv)
MAX_EXTRA_DELAY = 63  # DelayDense / DelaySparse: 0..63 steps on top of Dense's one (Loihi 2's 6-bit delays)

__all__ = ["BACKEND", "LavaBackend", "lower", "LavaPlan"]

_TAGS = {"fixed": "fixed_pt", "float32": "floating_pt"}
_HOST_OPS = ("add",)
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
    # FTWT gates (float32 only; module docstring, "Gates"):
    gate_level: dict[str, int] = field(default_factory=dict)  # gate -> the stage whose run computes its mask
    gated_convs: dict[str, str] = field(default_factory=dict)  # conv2d into a gated population -> its gate
    gated_pops: dict[str, str] = field(default_factory=dict)  # gated population -> its gate
    bias_parts: dict[str, list[tuple[str | None, int, np.ndarray]]] = field(default_factory=dict)
    # Lava LIF -> the parts of its bias_mant in order, each (gate that masks it or None, onset, values):
    # float, its projections' folded biases from each projection's onset; fixed, its own bias_mant
    # from its onset (module docstring, "Biases")
    # host mode (module docstring, "Host ops"):
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


def _lava_weights_fixed(w_int: np.ndarray, exp: int) -> tuple[np.ndarray, int]:
    """(Lava weights, Lava weight_exp) equal to integer weights ``w_int`` shifted by ``exp``."""
    return (2 * np.asarray(w_int).astype(np.int64)).astype(np.int32), int(exp) - 1


def _conv_lava_layout(w: np.ndarray) -> np.ndarray:
    """Torch ``[C_out, C_in/g, kh, kw]`` (correlation) -> Lava ``[C_out, kw, kh, C_in/g]``
    (Lava's Conv convolves, i.e. flips the kernel)."""
    return np.ascontiguousarray(np.asarray(w)[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def _conv_as_csr(node: Conv2d | Pool2d, w: np.ndarray):
    """The synapses of a conv2d (weights ``w`` ``[C_out, C_in/groups, kh, kw]``) or of a pool2d
    (``w`` ``[C, 1, kh, kw]``, one group per channel) as a scipy CSR matrix ``[n_out, n_in]`` over
    flat ``(C, H, W)`` (zero weights dropped)."""
    import scipy.sparse as sp

    C_out, cin_pg, kh, kw = w.shape
    C, H, W = node.in_shape
    Ho, Wo = conv_output_hw((H, W), (kh, kw), tuple(node.stride), tuple(node.padding))
    G = int(node.groups) if isinstance(node, Conv2d) else C
    cout_pg = C_out // G
    co, ci, ky, kx, oy, ox = np.meshgrid(np.arange(C_out), np.arange(cin_pg), np.arange(kh), np.arange(kw),
                                         np.arange(Ho), np.arange(Wo), indexing="ij")
    iy = oy * node.stride[0] - node.padding[0] + ky
    ix = ox * node.stride[1] - node.padding[1] + kx
    c_in = (co // cout_pg) * cin_pg + ci
    vals = w[co, ci, ky, kx]
    ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W) & (vals != 0)
    rows = (co * Ho + oy) * Wo + ox
    cols = (c_in * H + iy) * W + ix
    m = sp.csr_matrix((vals[ok], (rows[ok], cols[ok])), shape=(C_out * Ho * Wo, C * H * W))
    m.sum_duplicates()
    return m


def _csr_of_sparse(node: Sparse, data: np.ndarray):
    import scipy.sparse as sp

    by_source = sp.csr_matrix(
        (data, np.asarray(node.indices, np.int64), np.asarray(node.indptr, np.int64)), shape=(node.in_size, node.size)
    )
    m = by_source.T.tocsr()
    m.sum_duplicates()
    return m


# ---------------------------------------------------------------------------- host mode: fused blocks
@dataclass
class FusedMember:
    """One IR node computed inside a fused block: ``kind`` is "hostop", "population", "dense",
    "sparse" or "identity"; ``srcs`` its sources in the IR's order, each ("ext", input port) or
    ("int", index of an earlier member)."""

    name: str
    kind: str
    node: Node
    srcs: list[tuple[str, int]]


@dataclass
class FusedSpec:
    """A fused block (module docstring, "Host ops"): its members in topological order, the IR nodes
    feeding its input ports ``in0, in1, ...`` (with the bias of a Lava projection to add, if any)
    and the members sent on its output ports ``out0, out1, ...``. ``role``: "host" (host ops and
    zero-delay projections) or "neurons" (one population and the zero-delay synapses only it reads)."""

    role: str
    members: list[FusedMember]
    inputs: list[str]
    input_bias: list[np.ndarray | None]
    outputs: list[int]
    # Program.onset of each member (a projection delivers nothing before it, bias included) and of
    # each input's Lava projection (its bias is added from then on); empty: all 0
    member_onset: list[int] = field(default_factory=list)
    input_onset: list[int] = field(default_factory=list)

    def index(self, name: str) -> int:
        return next(i for i, m in enumerate(self.members) if m.name == name)


class BlockStep:
    """The steps of a fused block for ``lanes`` samples side by side: every member computed in
    order with the numba backend's float32 arithmetic (populations, zero-delay projections) or the
    shared host-op kernels (``host_ops.run_host_op``). A host op gets exactly the tensors the
    numba backend gives it when it runs a program step by step: step ``t`` of a ``[steps, lanes,
    size]`` float32 array holding its source's values (MKL's matrix product rounds differently
    with the operands' shape, strides and even their address modulo 16 bytes, so the block keeps
    such an array per host-op source). Pure numpy/torch: the Lava process model (``lava.procs``)
    calls it, and so can a test without Lava. ``reset()`` starts a new run (zero state, step 0)."""

    def __init__(self, spec: FusedSpec, lanes: int, steps: int) -> None:
        self.spec, self.lanes, self.steps = spec, int(lanes), max(int(steps), 1)
        self.consts = [self._prepare(m) for m in spec.members]
        self.hist_keys = {tuple(src) for m in spec.members if m.kind == "hostop" for src in m.srcs}
        self.hist: dict[tuple[str, int], np.ndarray] = {}
        self.state: list[dict[str, Any]] = []
        self.t = 0
        self.reset()

    def reset(self) -> None:
        self.state = [{} for _ in self.spec.members]
        self.hist = {}  # fresh arrays, as every numba run allocates its own
        self.t = 0

    def _keep(self, key: tuple[str, int], value: np.ndarray) -> np.ndarray:
        """``value`` ``[lanes, size]`` stored at this step of its source's ``[steps, lanes, size]``
        array; the ``[1, lanes, size]`` view a host op reads (as numba's ``out[t:t+1]``)."""
        h = self.hist.get(key)
        if h is None:
            h = self.hist[key] = np.zeros((self.steps, *value.shape), np.float32)
        t = self.t % self.steps
        h[t] = value
        return h[t:t + 1]

    @staticmethod
    def _prepare(m: FusedMember) -> dict[str, Any]:
        node = m.node
        if m.kind == "population":
            return dict(params=list(semantics.neuron_params(node)), flags=semantics.neuron_flags(node),
                        gain=np.float32(node.gain), v_reset=np.float32(node.v_reset))
        bias = getattr(node, "bias", None)
        bias = None if bias is None else np.ascontiguousarray(np.asarray(bias, np.float32).reshape(-1))
        if m.kind == "dense":
            return dict(wt=np.ascontiguousarray(np.asarray(node.weight, np.float32).T), bias=bias)
        if m.kind == "sparse":
            return dict(indptr=np.asarray(node.indptr, np.int64), indices=np.asarray(node.indices, np.int64),
                        data=np.asarray(node.data, np.float32), bias=bias)
        if m.kind == "identity":
            return dict(scale=np.float32(node.scale))
        return {}

    def step(self, ext: list[Any]) -> list[np.ndarray]:
        """The values ``[lanes, size]`` (float32) of every member, given the input ports' values."""
        L, t = self.lanes, self.t
        xs = []
        views: dict[tuple[str, int], np.ndarray] = {}
        for i, (a, bias) in enumerate(zip(ext, self.spec.input_bias)):
            a = np.asarray(a).reshape(L, -1)
            if bias is not None and t >= self._onset(self.spec.input_onset, i):
                a = a.astype(np.float64) + bias  # a Lava projection's bias (Lava synapses have none), from its onset
            xs.append(np.ascontiguousarray(a, dtype=np.float32))
            if ("ext", i) in self.hist_keys:
                views[("ext", i)] = self._keep(("ext", i), xs[-1])
        vals: list[np.ndarray] = []
        for j, m in enumerate(self.spec.members):
            if m.kind == "hostop":
                srcs = [views[(where, i)] for where, i in m.srcs]
            else:
                srcs = [xs[i] if where == "ext" else vals[i] for where, i in m.srcs]
            if m.kind in ("dense", "sparse", "identity") and t < self._onset(self.spec.member_onset, j):
                vals.append(np.zeros((L, m.node.size), np.float32))  # before its onset: nothing, bias included
            else:
                vals.append(getattr(self, "_" + m.kind)(j, m.node, srcs))
            if ("int", j) in self.hist_keys:
                views[("int", j)] = self._keep(("int", j), vals[-1])
        self.t += 1
        return vals

    @staticmethod
    def _onset(onsets: list[int], i: int) -> int:
        return int(onsets[i]) if i < len(onsets) else 0

    # ---- members
    def _hostop(self, j: int, node: HostOp, srcs: list[np.ndarray]) -> np.ndarray:
        import torch

        from spike.backends.host_ops import fresh_input, run_host_op

        xs = [fresh_input(torch.from_numpy(s)) for s in srcs]  # [1, lanes, size], as numba's
        return np.array(run_host_op(node, xs, self.state[j]).numpy()[0], np.float32)

    def membrane(self, j: int) -> np.ndarray:
        """The membrane ``v`` of member ``j`` (a population) after the last step."""
        return self.state[j]["state"][semantics.S_V]

    def _population(self, j: int, node: Population, srcs: list[np.ndarray]) -> np.ndarray:
        c, st = self.consts[j], self.state[j]
        if not st:
            st["state"] = list(semantics.initial_state(node, self.lanes))  # v, s, i, j
        if not srcs:
            x = np.zeros((self.lanes, node.size), np.float32)
        else:  # ((s0 + s1) + s2), as numba
            x = srcs[0]
            for s in srcs[1:]:
                x = x + s
        out, *st["state"] = semantics.numpy_step(x, x, *st["state"], *c["params"], c["gain"], c["v_reset"], *c["flags"])
        return out

    def _dense(self, j: int, node: Dense, srcs: list[np.ndarray]) -> np.ndarray:
        c = self.consts[j]
        (x,) = srcs
        init = c["bias"] if c["bias"] is not None else np.zeros(node.size, np.float32)
        out = np.empty((self.lanes, node.size), np.float32)
        for b in range(self.lanes):  # bias, then the rows of the active inputs in index order (numba)
            idx = np.flatnonzero(x[b])
            rows = c["wt"][idx] * x[b, idx][:, None]
            out[b] = np.add.accumulate(np.vstack([init[None], rows]), axis=0)[-1] if len(idx) else init
        return out

    def _sparse(self, j: int, node: Sparse, srcs: list[np.ndarray]) -> np.ndarray:
        c = self.consts[j]
        (x,) = srcs
        out = np.empty((self.lanes, node.size), np.float32)
        indptr, indices, data = c["indptr"], c["indices"], c["data"]
        for b in range(self.lanes):
            acc = c["bias"].copy() if c["bias"] is not None else np.zeros(node.size, np.float32)
            idx = np.flatnonzero(x[b])
            if len(idx):
                counts = indptr[idx + 1] - indptr[idx]
                ks = np.concatenate([np.arange(indptr[i], indptr[i + 1]) for i in idx])
                np.add.at(acc, indices[ks], data[ks] * np.repeat(x[b, idx], counts))  # in order, unbuffered
            out[b] = acc
        return out

    def _identity(self, j: int, node: Identity, srcs: list[np.ndarray]) -> np.ndarray:
        (x,) = srcs
        scale = self.consts[j]["scale"]
        return x.copy() if scale == 1 else scale * x


def host_mode(program: Program) -> bool:
    """Whether the program runs in host mode (module docstring, "Host ops"): a float32 program that
    is stepwise or has host ops other than ``add``."""
    if program.metadata.get("precision") == "fixed":
        return False
    return bool(program.metadata.get("stepwise")) or any(
        isinstance(node, HostOp) and node.op not in _HOST_OPS for _, node in program.nodes())


def _zero_delay_synapse(node: Node) -> bool:
    return isinstance(node, (Dense, Sparse, Identity)) and int(node.delay) == 0


def _lava_lif_populations(program: Program) -> set[str]:
    """Host mode: the populations that stay Lava LIFs: float ``lif``/``if``/``cuba_lif`` with the
    reset Lava's LIF computes (zero, in the step it fires on ``v > vth``), fed only by projections of
    delay >= 1 (Lava's own synapses) all of whose other consumers are such populations too."""
    ok = set()
    for name, node in program.nodes():
        if not isinstance(node, Population) or node.model not in ("lif", "if", "cuba_lif"):
            continue
        if node.reset != "zero" or node.reset_delay or node.fire_ge or node.beyond_lif():
            continue
        srcs = program.sources(name)
        if srcs and all(isinstance(program.node(s), Projection) and int(program.node(s).delay) >= 1 for s in srcs):
            ok.add(name)
    changed = True
    while changed:
        changed = False
        for name in sorted(ok):
            for s in program.sources(name):
                if any(c not in ok and not isinstance(program.node(c), Output) for c in program.consumers(s)):
                    ok.discard(name)
                    changed = True
                    break
    return ok


def _fuse(program: Program) -> tuple[dict[str, str], dict[str, FusedSpec], set[str]]:
    """Host mode: (IR node -> key of its fused block, block key -> spec, Lava LIF populations).

    Fused are host ops, zero-delay projections and the populations Lava's LIF cannot compute. Each
    such population is its own "neurons" block, with the zero-delay projections that only it reads.
    The other fused nodes are merged greedily in topological order: a node joins the block of one of
    its fused sources unless that would close a cycle between processes (a path from the block back
    to another source of the node); else it starts a new block. Cycles through a projection of
    delay >= 1 do not count: Lava's synapses send before they receive."""
    import networkx as nx

    nodes = dict(program.nodes())
    lif = _lava_lif_populations(program)
    pops = [n for n, node in nodes.items() if isinstance(node, Population) and n not in lif]
    fused = {n for n, node in nodes.items() if isinstance(node, HostOp) or _zero_delay_synapse(node)} | set(pops)
    g0 = program.undelayed_graph().copy()
    g0.remove_nodes_from([n for n, node in nodes.items() if isinstance(node, Output)])
    order_ix = {n: i for i, n in enumerate(program.graph.nodes)}
    order = list(nx.lexicographical_topological_sort(g0, key=lambda n: order_ix[n]))
    group: dict[str, str] = {p: p for p in pops}
    role = {p: "neurons" for p in pops}
    for n in fused:
        if _zero_delay_synapse(nodes[n]):
            cons = program.consumers(n)
            if len(cons) == 1 and cons[0] in role:
                group[n] = cons[0]
    quot = nx.DiGraph()

    def qid(n: str) -> str:
        return group.get(n, n)

    for n in order:
        preds = list(g0.predecessors(n))
        if n in fused and n not in group:
            target = None
            for c in dict.fromkeys(group[p] for p in preds if p in group and role[group[p]] == "host"):
                if all(qid(p) == c or not nx.has_path(quot, c, qid(p)) for p in preds):
                    target = c
                    break
            if target is None:
                target = f"host:{n}"
                role[target] = "host"
            group[n] = target
        g = qid(n)
        quot.add_node(g)
        for p in preds:
            if qid(p) != g:
                quot.add_edge(qid(p), g)
    if not nx.is_directed_acyclic_graph(quot):  # pragma: no cover - the greedy merge never closes a cycle
        raise BackendError("internal: the fused blocks of the lava backend form a cycle")
    specs: dict[str, FusedSpec] = {}
    members: dict[str, list[str]] = {}
    for n in order:
        if n in fused:
            members.setdefault(group[n], []).append(n)
    for key, names in members.items():
        inside = {m: i for i, m in enumerate(names)}
        inputs: list[str] = []
        ms = []
        for m in names:
            srcs = []
            for s in program.sources(m):
                if s in inside:
                    srcs.append(("int", inside[s]))
                else:
                    if s not in inputs:
                        inputs.append(s)
                    srcs.append(("ext", inputs.index(s)))
            node = nodes[m]
            kind = "hostop" if isinstance(node, HostOp) else "population" if isinstance(node, Population) else node.KIND
            ms.append(FusedMember(m, kind, node, srcs))
        outputs = [i for i, m in enumerate(names)
                   if any(c not in inside and not isinstance(nodes[c], Output) for c in program.consumers(m))]
        specs[key] = FusedSpec(role[key], ms, inputs, [None] * len(inputs), outputs,
                               member_onset=[program.onset(m) for m in names],
                               input_onset=[program.onset(s) for s in inputs])
    return {n: group[n] for n in fused}, specs, lif


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
            self.fused, self.specs, _ = _fuse(program)
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

    def not_in_host_mode(self, name: str, node: Node) -> bool:
        if self.host:
            ops = [f"{n} ({h.op})" for n, h in self.program.nodes() if isinstance(h, HostOp) and h.op not in _HOST_OPS]
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
            w, e = _lava_weights_fixed(node.weight, node.weight_exp)
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
            m = _csr_of_sparse(node, np.asarray(node.data).astype(np.int64) * 2)
            if m.nnz and (m.data.max() > 254 or m.data.min() < -256):
                self.problems.append(_err(name, node, "repeated synapses between one pair of neurons sum past 8 bits"))
            args = dict(weights=m.astype(np.int32), weight_exp=int(node.weight_exp) - 1, num_weight_bits=8,
                        sign_mode="mixed", num_message_bits=0)
        else:
            gain = self.float_gain(name, node)
            args = dict(weights=_csr_of_sparse(node, np.asarray(node.data, np.float64) * gain), num_message_bits=24)
        self.add_synapses(name, node, "sparse", args, src)

    def identity(self, name: str, node: Identity) -> None:
        import scipy.sparse as sp

        src = self.check_projection(name, node)
        if src is None:
            return
        if self.fixed:
            w, e = _lava_weights_fixed(np.asarray([node.scale]), node.weight_exp)
            args = dict(weights=sp.identity(node.size, dtype=np.int32, format="csr") * int(w[0]), weight_exp=e,
                        num_weight_bits=8, sign_mode="mixed", num_message_bits=0)
        else:
            gain = self.float_gain(name, node)
            args = dict(weights=sp.identity(node.size, dtype=np.float64, format="csr") * (float(node.scale) * gain),
                        num_message_bits=24)
        self.add_synapses(name, node, "sparse", args, src)

    def conv2d(self, name: str, node: Conv2d) -> None:
        if self.not_in_host_mode(name, node):
            return
        src = self.check_projection(name, node)
        if src is None:
            return
        w = np.asarray(node.weight)
        if w.ndim != 4 or len(node.in_shape) != 3 or len(node.shape) != 3:
            self.problems.append(_err(name, node, f"weight {w.shape} / shapes {node.in_shape} -> {node.shape} are not 2-D"))
            return
        chw_in, chw_out = tuple(node.in_shape), tuple(node.shape)
        conv_args = dict(input_shape=(chw_in[2], chw_in[1], chw_in[0]), padding=(node.padding[1], node.padding[0]),
                         stride=(node.stride[1], node.stride[0]), groups=int(node.groups))
        gated = [self.gate_of_pop[c] for c in self.program.consumers(name) if c in self.gate_of_pop]
        if self.extra_delay(node):  # Lava's Conv has no delays: the same synapses as a DelaySparse
            if gated:
                self.problems.append(_err(name, node, (
                    f"delay {node.delay} into a population gated by {gated[0]!r}: a conv2d of delay > 1 runs as a "
                    "DelaySparse, whose weights the gate stages cannot mask per sample (Lava's Conv, delay 1, can)")))
                return
            if self.fixed:
                args = dict(weights=_conv_as_csr(node, w.astype(np.int64) * 2).astype(np.int32),
                            weight_exp=int(node.weight_exp) - 1, num_weight_bits=8, sign_mode="mixed",
                            num_message_bits=0)
            else:
                gain = _gain_and_bias_targets(self.program, name, self.problems)
                self.fold_bias(name, node, gain)
                args = dict(weights=_conv_as_csr(node, w.astype(np.float64) * gain), num_message_bits=24)
            self.add_synapses(name, node, "sparse", args, src)
            return
        if self.fixed:
            e = int(node.weight_exp)
            w_int = w.astype(np.int64)
            if e >= 0:
                ws = w_int * (1 << e)
                worst = max(np.clip(ws, 0, None).sum(axis=(1, 2, 3)).max(), (-np.clip(ws, None, 0)).sum(axis=(1, 2, 3)).max())
            if e >= 0 and worst < _CONV_LIMIT:
                args = dict(weight=_conv_lava_layout(ws).astype(np.int32), weight_exp=0, num_message_bits=0, **conv_args)
                self.add(LavaProc(name, "conv", args, [src], out_layout="whc", in_layout="whc", chw_in=chw_in,
                                  chw_out=chw_out), output_of=name)
            else:  # Lava's Conv cannot shift right or exceed 24 bits: the same synapses as a Sparse
                m = _conv_as_csr(node, w_int * 2)
                args = dict(weights=m.astype(np.int32), weight_exp=e - 1, num_weight_bits=8, sign_mode="mixed",
                            num_message_bits=0)
                self.add(LavaProc(name, "sparse", args, [src]), output_of=name)
            return
        gain = _gain_and_bias_targets(self.program, name, self.problems)
        args = dict(weight=_conv_lava_layout(w.astype(np.float64) * gain), num_message_bits=24, **conv_args)
        if gated:  # its weights into masked channels are zeroed per sample (module docstring)
            self.plan.gated_convs[name] = gated[0]
        self.fold_bias(name, node, gain)
        self.add(LavaProc(name, "conv", args, [src], out_layout="whc", in_layout="whc", chw_in=chw_in,
                          chw_out=chw_out), output_of=name)

    def pool2d(self, name: str, node: Pool2d) -> None:
        if self.not_in_host_mode(name, node):
            return
        src = self.check_projection(name, node)
        if src is None:
            return
        C, H, W = node.in_shape
        kh, kw = node.kernel
        conv_args = dict(input_shape=(W, H, C), padding=(node.padding[1], node.padding[0]),
                         stride=(node.stride[1], node.stride[0]), groups=int(C))
        chw_in, chw_out = tuple(node.in_shape), tuple(node.shape)
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
                m = _conv_as_csr(node, np.ones((C, 1, kh, kw), np.int64) * (2 if self.fixed else 1))
                args = (dict(weights=m.astype(np.int32), weight_exp=-1, num_weight_bits=8, sign_mode="mixed")
                        if self.fixed else dict(weights=m.astype(np.float64)))
                self.add(LavaProc(f"{name}/sum", "delay_sparse", dict(args, num_message_bits=0, delays=extra), [src]))
            else:
                self.add(LavaProc(f"{name}/sum", "conv", dict(weight=ones, weight_exp=0, num_message_bits=0, **conv_args),
                                  [src], out_layout="whc", in_layout="whc", chw_in=chw_in, chw_out=chw_out))
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
            args = dict(weights=_conv_as_csr(node, np.full((C, 1, kh, kw), wv)), num_message_bits=24)
            self.add_synapses(name, node, "sparse", args, src)
            return
        args = dict(weight=np.full((C, kw, kh, 1), wv), num_message_bits=24, **conv_args)
        self.add(LavaProc(name, "conv", args, [src], out_layout="whc", in_layout="whc", chw_in=chw_in,
                          chw_out=chw_out), output_of=name)

    def hostop(self, name: str, node: HostOp) -> None:
        if node.op not in _HOST_OPS:  # host mode fuses every host op; only fixed point gets here
            self.problems.append(_err(name, node, f"host op {node.op!r} in a fixed-point program (supported there on "
                                      f"lava: {list(_HOST_OPS)})"))
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
        self.add(LavaProc(name, "lif", dict(args, spiking=spiking), list(srcs)), output_of=name)

    def blocks(self) -> None:
        """Host mode: one ``fused`` process per block (``_fuse``)."""
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
    "population": _Planner.population, "gate": _Planner.gate,
}


_PLANS: "weakref.WeakKeyDictionary[Program, LavaPlan]" = weakref.WeakKeyDictionary()


def lower(program: Program) -> LavaPlan:
    """The Lava process plan of ``program``, or a :class:`BackendError` listing every node it
    cannot lower (checked without starting anything; lava need not be installed). Cached per
    program object (programs are immutable)."""
    plan = _PLANS.get(program)
    if plan is None:
        plan = _PLANS[program] = _lower(program)
    return plan


def _lower(program: Program) -> LavaPlan:
    precision = "fixed" if program.metadata.get("precision") == "fixed" else "float32"
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
                                   if not (isinstance(program.node(n), Input) and not program.consumers(n))])
    parts = list(nx.weakly_connected_components(used))
    if len(parts) > 1:
        planner.problems.append(f"the program has {len(parts)} unconnected parts "
                                f"({', '.join(sorted(min(p) for p in parts))}, ...): Lava runs one connected process graph")
    planner.blocks()
    if planner.problems:
        raise BackendError("backend 'lava' cannot execute node(s): " + "; ".join(planner.problems))
    return planner.finish()


# ---------------------------------------------------------------------------- building and running
class _Graph:
    """The Lava processes of one plan, for one batch: built, run sample by sample, read."""

    def __init__(self, program: Program, plan: LavaPlan, arrays: dict[str, np.ndarray], steps: int, batch: int,
                 reps: int = 1, record: frozenset[str] = frozenset(), record_v: frozenset[str] = frozenset()) -> None:
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import DelayDense, Dense
        from lava.proc.io.source import RingBuffer as Source
        from lava.proc.lif.process import LIF
        from lava.proc.sparse.process import DelaySparse, Sparse
        from lava.utils.weightutils import SignMode

        from spike.backends.lava.procs import FTWTGate, FusedBlock, HostAdd, PyFTWTGateFloat, fused_model, host_model

        self.program, self.plan, self.T, self.B = program, plan, steps, batch
        self.fixed = plan.precision == "fixed"
        # samples side by side (host mode: ``lanes`` = B, one pass) or one after another (``passes`` = B)
        self.lanes, self.passes = (batch, 1) if plan.batched else (1, batch)
        lanes = self.lanes
        span = steps * self.passes * reps  # every pass runs ``reps`` times (one run per stage)
        self.span = span
        self.procs: dict[str, Any] = {}
        self.model_map: dict[Any, type] = {}
        self.resets: list[tuple[Any, str]] = []  # (process, var name) zeroed between samples
        self.records: dict[str, list[tuple[str, str, int]]] = {}  # fused block -> (IR node, "out"/"v", rows)
        dt = np.int32 if self.fixed else np.float64
        for key, p in plan.procs.items():
            a = dict(p.args)
            if a.get("sign_mode") == "mixed":
                a["sign_mode"] = SignMode.MIXED
            if p.kind == "source":  # [T, B, n] -> [lanes*n, passes*reps*T]: sample = pass*lanes + lane
                x = arrays[key].reshape(steps, self.passes, lanes, -1).transpose(2, 3, 1, 0)
                x = np.broadcast_to(x[:, :, :, None, :], (*x.shape[:3], reps, steps))
                data = np.ascontiguousarray(x.reshape(-1, span)).astype(dt)
                proc = Source(data=data)
            elif p.kind in ("dense", "sparse", "delay_dense", "delay_sparse"):
                if lanes > 1:  # the same synapses once per lane
                    import scipy.sparse as sp

                    a["weights"] = sp.kron(sp.identity(lanes, format="csr"), sp.csr_matrix(a["weights"]), format="csr")
                    kind = "delay_sparse" if p.kind.startswith("delay_") else "sparse"
                else:
                    kind = p.kind
                if kind == "delay_dense":  # every synapse ``delays`` steps beyond Dense's one
                    a["delays"] = np.full(np.shape(a["weights"]), int(a["delays"]), dtype=int)
                elif kind == "delay_sparse":  # the weights' sparsity pattern, each entry ``delays``
                    import scipy.sparse as sp

                    w = sp.csr_matrix(a["weights"])
                    w.eliminate_zeros()
                    d = w.copy().astype(int)
                    d.data[:] = int(a["delays"])
                    a["weights"], a["delays"] = w, d
                proc = {"dense": Dense, "sparse": Sparse, "delay_dense": DelayDense, "delay_sparse": DelaySparse}[kind](**a)
                self.resets.append((proc, "a_buff"))
            elif p.kind == "conv":
                proc = Conv(**a)
                self.resets.append((proc, "a_buf"))
            elif p.kind == "lif":
                a.pop("spiking", None)
                n = self._size_of(key)
                a = {k: (v.flat[0].item() if isinstance(v, np.ndarray) and v.size and (v == v.flat[0]).all()
                         and k in ("du", "dv", "vth") else v) for k, v in a.items()}
                a = {k: (np.tile(v, lanes) if isinstance(v, np.ndarray) and v.ndim == 1 and v.size == n else v)
                     for k, v in a.items()}
                proc = LIF(shape=(n * lanes,), **a)
                self.resets += [(proc, "u"), (proc, "v")]
            elif p.kind == "host":
                proc = HostAdd(shape=(self._size_of(key),), buffer=span)
                self.model_map[proc] = host_model(a["op"], plan.precision)
            elif p.kind == "fused":
                spec: FusedSpec = a["spec"]
                rec = [(j, m.name, what) for j, m in enumerate(spec.members) for what, wanted in
                       (("out", record), ("v", record_v)) if m.name in wanted
                       and (what == "out" or (m.kind == "population" and m.node.model != "li"))]
                self.records[key] = [(name, what, lanes * spec.members[j].node.size) for j, name, what in rec]
                proc = FusedBlock(spec=spec, lanes=lanes, record=[(j, what) for j, _, what in rec], period=steps,
                                  buffer=span, in_sizes=[program.node(s).size * lanes for s in spec.inputs],
                                  out_sizes=[spec.members[j].node.size * lanes for j in spec.outputs],
                                  name=f"fused {key}")
                self.model_map[proc] = fused_model(len(spec.inputs), len(spec.outputs))
            elif p.kind == "gate":  # the source's window from its latency on (gate_common._window_values)
                (src,) = p.inputs
                trained = steps - program.total_latency
                window = trained if a["window"] <= 0 else min(a["window"], trained)
                proc = FTWTGate(n_in=program.node(src).size, weight=a["weight"], bias=a["bias"], window=window,
                                period=steps, start=program.latency_of(src))
                self.model_map[proc] = PyFTWTGateFloat
            else:  # pragma: no cover - the planner makes only these kinds
                raise BackendError(f"internal: unknown Lava process kind {p.kind!r}")
            self.procs[key] = proc
        for key, p in plan.procs.items():
            if not p.inputs:
                continue
            proc = self.procs[key]
            if p.kind == "fused":  # one port per source
                for i, src in enumerate(p.inputs):
                    self._port(src, "flat", None).connect(getattr(proc, f"in{i}"))
                continue
            dst = proc.a_in if p.kind in ("lif", "host", "gate") else proc.s_in
            for src in p.inputs:
                self._port(src, p.in_layout, p.chw_in).connect(dst)

    def _size_of(self, key: str) -> int:
        return self.program.node(key).size  # neurons and host ops are keyed by their IR node

    def _native(self, name: str) -> tuple[Any, str, tuple[int, int, int] | None]:
        key = self.plan.output_proc[name]
        p = self.plan.procs[key]
        proc = self.procs[key]
        if p.kind == "fused":
            spec = p.args["spec"]
            return getattr(proc, f"out{spec.outputs.index(spec.index(name))}"), "flat", None
        port = proc.a_out if p.kind in ("dense", "sparse", "conv", "delay_dense", "delay_sparse") else proc.s_out
        return port, p.out_layout, p.chw_out

    def _port(self, name: str, layout: str, chw: tuple[int, int, int] | None) -> Any:
        """The output port of IR node (or process key) ``name`` in ``layout``."""
        if name not in self.plan.output_proc:  # an internal process key (max pool's sum)
            p = self.plan.procs[name]
            port, native, chw_native = self.procs[name].a_out, p.out_layout, p.chw_out
        else:
            port, native, chw_native = self._native(name)
        if native == layout:
            return port
        if native == "whc":  # (W, H, C) -> flat C-order (C, H, W)
            C, H, W = chw_native
            return port.transpose([2, 1, 0]).reshape((C * H * W,))
        C, H, W = chw
        return port.reshape((C, H, W)).transpose([2, 1, 0])


class LavaBackend(Backend):
    """Checks by lowering the program (every refusal names its node); runs through ``runner``."""

    def check(self, program: Program) -> None:
        why = self.available()
        if why:
            raise BackendError(f"backend {self.name!r} is not usable here: {why}")
        precision = str(program.metadata.get("precision", "float32"))
        if precision not in self.precisions:
            raise BackendError(f"backend {self.name!r} supports precisions {sorted(self.precisions)}, "
                               f"the program is {precision!r}")
        lower(program)


def _run(program: Program, arrays: dict[str, np.ndarray], sig_probes: set[str], mem_probes: set[str],
         cur_probes: set[str]) -> RunResult:
    from spike.backends.op_counting import count_ops

    plan = lower(program)
    T, B = next(iter(arrays.values())).shape[:2]
    return _execute(program, plan, arrays, T, B, sig_probes, mem_probes, cur_probes, count_ops)


def _execute(program, plan, arrays, T, B, sig_probes, mem_probes, cur_probes, count_ops) -> RunResult:
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.monitor.process import Monitor

    fixed = plan.precision == "fixed"
    out_dtype = np.int32 if fixed else np.float32
    reps = plan.stages  # runs per sample (gates: one per level of masks, then the final run)
    lanes, passes = (B, 1) if plan.batched else (1, B)  # host mode: the batch side by side, one pass
    span = T * passes * reps

    def resolve(name: str) -> str:  # Output nodes read their source
        while isinstance(program.node(name), Output):
            (name,) = program.sources(name)
        return name

    # what to record: every population (counts), projection and gate sources, outputs, probes
    need: set[str] = set()
    for name, node in program.nodes():
        if isinstance(node, Population):
            need.add(name)
        elif isinstance(node, (Projection, Gate, HostOp)):
            need.update(program.sources(name))
    need.update(resolve(o) for o in program.outputs)
    need.update(resolve(p) for p in sig_probes)
    need = {n for n in need if not isinstance(program.node(n), Input)}

    t_build = time.perf_counter()
    g = _Graph(program, plan, arrays, T, B, reps, record=frozenset(need), record_v=frozenset(mem_probes))
    sinks: dict[str, Any] = {}
    monitors: dict[tuple[str, str], Any] = {}
    for name in sorted(need):
        node = program.node(name)
        if isinstance(node, (HostOp, Gate)) or name in plan.fused:
            continue  # records itself / its mask is read after each run / its fused block records it
        proc = g.procs[plan.output_proc[name]]
        if isinstance(node, Population) and node.model == "li":
            monitors[(name, "v")] = None
            if fixed:  # Lava's li is a LIF at the largest threshold: it must never fire
                sinks[f"{name}/guard"] = (proc.s_out, node.size)
        else:
            sinks[name] = (g._port(name, "flat", None), node.size)
    for name in mem_probes:
        if name not in plan.fused:
            monitors[(name, "v")] = None
    for name in cur_probes:
        monitors[(name, "u")] = None
    sink_procs = {}
    for key, (port, n) in sinks.items():
        s = Sink(shape=(n * lanes,), buffer=span)
        port.connect(s.a_in)
        sink_procs[key] = s
    for (name, var) in list(monitors):
        m = Monitor()
        m.probe(getattr(g.procs[plan.output_proc[name]], var), span)
        monitors[(name, var)] = m

    masks = {gate: np.ones((B, program.node(gate).shape[0]), bool) for gate in plan.gate_level}
    gates = _GateStages(plan, g, masks)
    cuts = plan.bias_steps(T)  # a run of T steps is split where a LIF's bias starts (module docstring, "Biases")
    segments = list(zip([0] + cuts, cuts + [T]))
    anchor = next(iter(g.procs.values()))
    cfg = Loihi2SimCfg(select_tag=_TAGS[plan.precision], exception_proc_model_map=dict(g.model_map))
    run_s = final_s = 0.0
    try:
        anchor.create_runtime(run_cfg=cfg)
        build_s = time.perf_counter() - t_build
        for b in range(passes):
            for stage in range(reps):
                if b or stage:
                    for proc, var in g.resets:
                        getattr(proc, var).set(np.zeros(getattr(proc, var).shape))
                t0 = time.perf_counter()
                gates.apply(b, stage)
                final = 0.0
                for lo, hi in segments:
                    t1 = time.perf_counter()
                    gates.apply_biases(b, stage, lo)
                    anchor.run(condition=RunSteps(num_steps=hi - lo))
                    final += time.perf_counter() - t1
                gates.read(b, stage)
                run_s += time.perf_counter() - t0
                if stage == reps - 1:
                    final_s += final
        recorded: dict[str, np.ndarray] = {}
        fused_v: dict[str, np.ndarray] = {}
        for key, s in sink_procs.items():
            recorded[key] = np.asarray(s.data.get())  # [n, B*reps*T]
        for key, p in plan.procs.items():
            if p.kind == "host":
                recorded[key] = np.asarray(g.procs[key].data.get())
            elif p.kind == "fused" and g.records[key]:
                data, row = np.asarray(g.procs[key].data.get()), 0
                for name, what, rows in g.records[key]:
                    if what == "out":
                        recorded[name] = data[row:row + rows]
                    else:
                        fused_v[name] = data[row:row + rows]
                    row += rows
        mem: dict[tuple[str, str], np.ndarray] = {}
        for (name, var), m in monitors.items():
            data = m.get_data()
            target = getattr(g.procs[plan.output_proc[name]], var)
            mem[(name, var)] = np.asarray(data[target.process.name][target.name])  # [B*reps*T, n]
    finally:
        try:
            anchor.stop()
        except Exception:  # noqa: BLE001 - never hide the run's own error behind a failed stop
            pass

    def from_ring(a: np.ndarray) -> np.ndarray:  # [lanes*n, passes*reps*T] -> [T, B, n], each sample's final run
        a = a.reshape(lanes, a.shape[0] // lanes, passes, reps, T)[:, :, :, -1]  # [lanes, n, passes, T]
        return a.transpose(3, 2, 0, 1).reshape(T, B, -1)

    values: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        values[name] = np.asarray(arr).reshape(T, B, -1)
    membranes = {(name, "v"): from_ring(a) for name, a in fused_v.items()}  # fused populations
    for key, a in recorded.items():
        if key.endswith("/guard"):
            if np.any(a):
                name = key[: -len("/guard")]
                raise BackendError(
                    f"li population {name!r} reached v > {LOIHI.VTH_MAX << LOIHI.VTH_SHIFT} on Lava, where a readout is a "
                    "LIF at the largest threshold and resets; numba's li does not (lower the readout's input scale)")
            continue
        v = from_ring(a)
        fix = plan.recorded.get(key)
        values[key] = (fix(v) if fix is not None else v)
    for conv, gate in plan.gated_convs.items():  # masked channels deliver 0 (no bias), as numba
        if conv in values:
            keep = np.repeat(masks[gate], program.node(conv).size // masks[gate].shape[1], axis=1)
            values[conv] = np.where(keep[None], values[conv], 0)
    for gate, keep in masks.items():  # a gate's output: its mask at every step
        values[gate] = np.broadcast_to(keep[None].astype(np.float32), (T, *keep.shape))
    for (name, var), a in mem.items():  # [passes*reps*T, lanes*n]
        a = a.reshape(passes, reps, T, lanes, -1)[:, -1]  # [passes, T, lanes, n]
        membranes[(name, var)] = a.transpose(1, 0, 2, 3).reshape(T, B, -1)
        node = program.node(name)
        if var == "v" and node.model == "li":
            values[name] = membranes[(name, var)]
    for name in mem_probes:  # a fused li's membrane is its output
        if name in plan.fused and (name, "v") not in membranes:
            membranes[(name, "v")] = values[name]

    def get(name: str) -> np.ndarray:
        name = resolve(name)
        if name not in values:
            raise BackendError(f"internal: the lava backend recorded no output for node {name!r}")
        return values[name]

    counts = count_ops(program, get, T, B, masks=masks) if masks else count_ops(program, get, T, B)
    if program.metadata.get("mapping"):
        from spike.backends.routing import add_routing_counts

        add_routing_counts(program, get, counts)

    def shaped(name: str, arr: np.ndarray) -> np.ndarray:
        return np.asarray(arr).astype(out_dtype).reshape(T, B, *program.node(name).shape)

    outputs = {name: shaped(name, get(name)) for name in program.outputs}
    probed = {name: shaped(name, get(name)) for name in sig_probes}
    probed.update({f"{n}.v": shaped(n, membranes[(n, "v")]) for n in mem_probes})
    probed.update({f"{n}.u": shaped(n, membranes[(n, "u")]) for n in cur_probes})
    timing = {"run_s": run_s, "steps": float(T), "ms_per_step": 1e3 * run_s / max(T, 1), "build_s": build_s,
              "stages": float(reps), "final_stage_run_s": final_s,
              "processes": float(len(g.procs) + len(sink_procs) + len(monitors))}
    return RunResult(outputs=outputs, probes=probed, ops=counts, timing=timing, backend="lava")


class _GateStages:
    """The staged runs of a gated program on one process graph (module docstring, "Gates"): before
    run ``stage`` of sample ``b``, the masks of gates of level < ``stage`` are applied (the weights of
    their conv2d projections into masked channels and the LIF biases of masked neurons set to 0),
    the others left open (all channels); after the run, the masks of gates of level ``stage`` are
    read from their ``FTWTGate`` processes; after the final run every mask is read again and must
    be unchanged (each gate's source saw the same masks as when its mask was taken). Also, for
    every program, the LIF biases as a run goes (:meth:`apply_biases`, module docstring "Biases")."""

    def __init__(self, plan: LavaPlan, graph: _Graph, masks: dict[str, np.ndarray]) -> None:
        self.plan, self.g, self.masks = plan, graph, masks
        self.final = plan.stages - 1
        self.applied: dict[Any, Any] = {}  # conv / ("bias", LIF) -> what its Lava Var holds now (None: no mask)

    def _known(self, gate: str | None, b: int, stage: int) -> np.ndarray | None:
        if gate is None or self.plan.gate_level[gate] >= stage:
            return None
        return self.masks[gate][b]

    def apply(self, b: int, stage: int) -> None:
        for conv, gate in self.plan.gated_convs.items():
            keep = self._known(gate, b, stage)
            tag = None if keep is None else keep.tobytes()
            if self.applied.get(conv) != tag:
                w = self.plan.procs[conv].args["weight"]  # [C_out, kw, kh, C_in/groups]
                self.g.procs[conv].weight.set(w if keep is None else np.where(keep[:, None, None, None], w, 0.0))
                self.applied[conv] = tag

    def apply_biases(self, b: int, stage: int, t: int) -> None:
        """Before step ``t`` of run ``stage`` of sample ``b``: every LIF's ``bias_mant`` is the sum of
        its parts whose onset is ``<= t`` (masked channels: none); only changed values are set."""
        for pop, parts in self.plan.bias_parts.items():
            keeps = {gate: self._known(gate, b, stage) for gate, _, _ in parts if gate is not None}
            started = tuple(onset <= t for _, onset, _ in parts)
            tag = (started, tuple(None if k is None else k.tobytes() for k in keeps.values()))
            initial = (tuple(onset <= 0 for _, onset, _ in parts), (None,) * len(keeps))  # as built (finish)
            if self.applied.get(("bias", pop), initial) != tag:
                value = lif_bias(parts, self.g.program.node(pop).size, keeps.get, t)
                self.g.procs[pop].bias_mant.set(np.tile(value, self.g.lanes))
                self.applied[("bias", pop)] = tag

    def read(self, b: int, stage: int) -> None:
        for gate, level in self.plan.gate_level.items():
            if level == stage or stage == self.final:
                keep = np.asarray(self.g.procs[gate].mask.get()) > 0.5
                if stage != self.final:
                    self.masks[gate][b] = keep
                elif not np.array_equal(keep, self.masks[gate][b]):
                    raise BackendError(f"internal: gate {gate!r} decided differently in the final run of sample {b}")


def _available() -> str | None:
    why = lava_available()
    return None if why is None else why if LAVA_INSTALL_HINT in why else f"{why} ({LAVA_INSTALL_HINT})"


BACKEND = register_backend(
    LavaBackend(
        name="lava",
        precisions=frozenset({"float32", "fixed"}),
        available=_available,
        runner=_run,
    )
)
