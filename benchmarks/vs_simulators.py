"""Our numba backend vs NEST 3.10 and Brian2 2.9 (cpp_standalone, and its numpy runtime), side by side.

Every tool simulates the same network from the same arrays: connectivity (pre, post, weight, delay),
generated once with numpy, and the same input spikes (one numpy Bernoulli array, fed as our
``Input``, as NEST ``spike_generator`` s and as a Brian2 ``SpikeGeneratorGroup``). One process,
one thread each (numba threads 1, NEST ``local_num_threads`` 1, Brian2 standalone without OpenMP),
the tools back to back per case; every population's spikes are compared before ratios are printed.
Every tool records every population's spikes as a spike list (ours ``record="spikes"``, and the
program's Output, the last population, as ``"counts"``, so that nothing is returned as a dense
array; NEST ``spike_recorder``, Brian2 ``SpikeMonitor``).

The neuron (step dt = 1 ms), identical in the three tools (order of operations taken from NEST's
``iaf_psc_delta::update`` and Brian2's schedule):

    v = beta * v + I     I: the sum of the weights of the spikes arriving this step
    spike if v >= 1      (NEST ``iaf_psc_delta`` fires on ``>=``)
    v = 0 after a spike  (no refractory period: NEST ``t_ref`` = 0)

* ours: ``Population(model="lif", beta, threshold=1, reset="zero", reset_delay=False,
  fire_ge=True)``; every projection a ``Sparse`` (``Dense`` for the MLP) with ``delay`` 1: a spike
  of step t arrives at step t + 1. The MLP is built from the IR nodes directly; the sparse cases
  with ``spike.models.random_net`` (``Network.input`` for the spike array, ``fixed_fan_out``
  connections), whose synapses (``random_net.synapses``, read back from the built program) are
  what NEST and Brian2 get.
* NEST: ``iaf_psc_delta`` with ``E_L = V_reset = V_m = 0``, ``V_th = 1``, ``t_ref = 0``, ``I_e = 0``
  and ``tau_m`` chosen so that NEST's ``P33 = exp(-h/tau_m)`` is exactly ``beta`` (checked on a
  probe neuron): NEST computes ``V = P30*(I_syn + I_e) + P33*V + spikes = P33*V + spikes``;
  ``static_synapse`` with delay h; a spike of step t (time stamp (t+1) h) lands in step t + 1;
  input spike of step t: ``spike_generator`` time (t+1) h.
* Brian2: ``NeuronGroup`` with ``v`` and an accumulator ``I``: ``on_pre: I_post += w`` in the
  ``synapses`` slot (after ``thresholds``), ``run_regularly("v = beta*v + I; I = 0")`` in the
  ``groups`` slot, threshold ``v >= thr``, reset ``v = 0``: a spike of step t is added at step t + 1
  (Brian2 synaptic delay 0). Compiled with Brian2's default flags plus ``-ffp-contract=off``
  (``-march=native`` would otherwise fuse ``beta*v + I`` into an FMA, which NEST does not do).

Weights are multiples of 2^-10, so every sum of weights is exact in float32 and float64. With
beta = 1 (IF, the ``brunel_if`` case) every value is exact and the spikes must be identical. With
beta = 0.875 = 1 - 2^-3 (LIF, every other case) the decay ``beta*v`` is rounded, to 53 bits by NEST
and Brian2 and to 24 by us, so a membrane within ~1e-7 of threshold can fire in one and not in the
other. NEST and Brian2 (both float64, same order of operations) must agree exactly with each other.
For each case whose spikes differ from ours, the first differing step is replayed in numpy
(``--no-diagnose`` skips it): ours must equal a float32 replay and NEST a float64 replay of the same
update up to that step, which shows that rounding alone makes the difference; in the recurrent
``brunel`` case one such flip spreads through the network (chaos) and the rasters part after it.

Ours runs each case twice: in float32 (the default precision, ``ours``; ``ratio_*``,
``min_ratio_*``) and in float64 (``compile(precision="float64")``, ``passes.float_precision``:
the same update in double, ``ours_float64``; ``ratio_*_float64``, ``min_ratio_*_float64``;
``--no-float64`` skips it). ``spikes_equal`` per case and run: every population's per-neuron
spike counts (so its total) equal between ours and each peer; ``rasters_equal``: every (neuron,
step) spike equal. The top-level ``spikes_equal`` (``rasters_equal``) is true when every case's
float64 run equals the peers, which compute in float64 too; ``spikes_equal_float32`` says the
same of the float32 runs, which part from the peers only through rounding (above).

Cases (``--cases``; ``--quick``: tiny sizes for the smoke test, one Brian2 binary for all cases):

* ``mlp_1pct`` / ``mlp_5pct`` / ``mlp_20pct``: dense MLP 784-2048-2048-10, T=100, batch 1, input
  Bernoulli at 1%, 5%, 20% per step (ours ``Dense``; the peers get every pair as a synapse, zero
  weights included);
* ``ff_k100`` / ``ff_k1000``: sparse random feed-forward net: 25k input spike sources at 2% per
  step, then 4 layers of 25k LIF (N = 100k), every neuron with fixed fan-out K into the next layer
  (distinct random targets), weights normal with zero mean, T=1000: layers at 2-3% per step;
* ``brunel``: recurrent, N=100k LIF, ``exc`` 80k (weight J = 1/16) and ``inh`` 20k (-gJ, g=6),
  every neuron with fixed fan-out 100 split 80/20 between them, no autapses, delay 1 step, driven
  by 10k external spike sources (fixed fan-out 500, weight 1/8, 2% per step), T=1000: about 4% per
  step;
* ``brunel_if``: the same with beta = 1 (IF) and external weight 1/16 (about 3% per step): exact
  in every tool.

Timing covers the simulation alone: ours after a warm-up run, the fastest of ``--repeats`` runs
or more, while they add up to less than 1 s (numba compile or cache load as ``compile_s``, program
construction as ``build_s``; ``cpu_s_dense_probes``: the same run returning dense spike arrays
instead of spike lists); NEST ``Run`` after ``Create``/``Connect`` (``build_s``) and ``Prepare``
(``prepare_s``), rebuilt and rerun up to ``--repeats`` times while the runs add up to less than
3 s (the big cases run once); Brian2 standalone the
network's own run time (``Network::_last_run_time``, written per network by code inserted after
its run) of the compiled binary, best of ``--repeats`` runs of it (code generation and compilation
as ``compile_s``; a project left unchanged in ``--brian2-dir`` is not recompiled); Brian2's runtime
numpy target ``Network.run`` after a ``run(0 ms)`` that generates its code, once (``--no-numpy``
skips it). Times are CPU seconds of the simulating process (``process_time``; Brian2 times
itself with ``std::clock``), which other work on the machine disturbs less than wall time; wall
seconds are reported beside them. ``events`` = synaptic events delivered (spikes x out-degree,
zero weights included), the same for every tool; ``events_per_s`` divides it by a tool's time;
ratios are peer time / our time.

    python benchmarks/vs_simulators.py [--cases mlp_5pct brunel] [--quick] [--json out.json]

Peers are benchmark-only extras: ``make bench-peers`` installs them (``pip install -e '.[bench]'``).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # NEST's OpenMP and numpy's BLAS: one thread each
os.environ.setdefault("PYNEST_QUIET", "1")

import argparse
import gc
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version as _pkg_version
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np
import scipy.sparse

from spike.backends import run
from spike.compiler.ir.nodes import Dense, Input, Output, Population, Sparse
from spike.compiler.ir.program import Program, ProgramBuilder
from spike.compiler.passes import float_precision
from spike.models.random_net import Network, fixed_fan_out, synapses
from spike.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
DT_MS = 1.0
THRESHOLD = 1.0
LIF_BETA = 0.875  # 1 - 2^-3: exact in float32 and, with the tau_m of ``nest_tau_m``, NEST's P33
QUANT = 2.0 ** -10  # dyadic weights: every sum of them is exact in float32 and float64
# Feed-forward weights: zero mean, std SIGMA_GAIN / sqrt(expected input spikes per step), so a
# layer driven at its reference rate fires at about 2% per step (fluctuation-driven; the rate
# changes little from layer to layer).
SIGMA_GAIN = 0.33
OURS_BUDGET_S = 1.0  # ours: best of --repeats runs, more while they add up to less CPU time than this
NEST_BUDGET_S = 3.0  # NEST: rebuilt and rerun (up to --repeats runs) while its runs add up to less


# ---------------------------------------------------------------------------------------------
# the networks, as plain arrays that every tool is built from
# ---------------------------------------------------------------------------------------------


@dataclass
class Proj:
    """Synapses ``pre[k] -> post[k]`` with ``weight[k]``, ``delay`` steps (>= 1). ``dense``: the
    same synapses as a ``[n_post, n_pre]`` matrix (all pairs, zeros included) for our ``Dense``."""

    name: str
    src: str
    dst: str
    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    delay: int = 1
    dense: np.ndarray | None = None


@dataclass
class Net:
    name: str
    desc: str
    T: int
    n_in: int
    pops: dict[str, int]
    projs: list[Proj]
    spikes: np.ndarray  # [T, n_in] bool: the input spike sources
    beta: float = LIF_BETA
    info: dict[str, Any] = field(default_factory=dict)
    program: Program | None = None  # ours, when a builder made it (else ``build_program``)
    build_s: float = 0.0  # seconds the builder took for ``program``

    def size(self, name: str) -> int:
        return self.n_in if name == "input" else self.pops[name]

    @property
    def n_synapses(self) -> int:
        return int(sum(p.pre.shape[0] for p in self.projs))


def dyadic(x: np.ndarray) -> np.ndarray:
    return (np.round(x / QUANT) * QUANT).astype(np.float32)


def bernoulli(rate: float, T: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((T, n), dtype=np.float32) < rate


def dense_proj(name: str, src: str, dst: str, w: np.ndarray) -> Proj:
    n_out, n_in = w.shape
    pre = np.repeat(np.arange(n_in, dtype=np.int32), n_out)  # source-major: source 0's targets first
    post = np.tile(np.arange(n_out, dtype=np.int32), n_in)
    return Proj(name, src, dst, pre, post, np.ascontiguousarray(w.T).reshape(-1), 1, w)


def fanout_proj(name: str, src: str, dst: str, n_src: int, n_dst: int, k: int, rng: np.random.Generator,
                weight: Callable[[np.ndarray], np.ndarray]) -> Proj:
    """Every source neuron to ``k`` random targets (repeats allowed, as NEST's ``fixed_outdegree``)."""
    pre = np.repeat(np.arange(n_src, dtype=np.int32), k)
    post = rng.integers(0, n_dst, size=n_src * k, dtype=np.int32)
    return Proj(name, src, dst, pre, post, weight(pre))


def mlp_case(rate: float, quick: bool, seed: int = 0) -> Net:
    sizes = (100, 128, 128, 10) if quick else (784, 2048, 2048, 10)
    T = 20 if quick else 100
    ref_rates = (0.03, 0.02, 0.02)  # per layer, the input rate its weights are scaled for
    rng = np.random.default_rng(seed)
    projs, pops, src = [], {}, "input"
    for i, (n_in, n_out, r) in enumerate(zip(sizes[:-1], sizes[1:], ref_rates)):
        w = dyadic(rng.normal(0.0, SIGMA_GAIN / np.sqrt(n_in * r), size=(n_out, n_in)))
        dst = f"lif{i + 1}"
        pops[dst] = n_out
        projs.append(dense_proj(f"fc{i + 1}", src, dst, w))
        src = dst
    return Net(f"mlp_{round(rate * 100)}pct",
               f"dense MLP {'-'.join(map(str, sizes))}, T={T}, batch 1, input {rate:.0%}",
               T, sizes[0], pops, projs, bernoulli(rate, T, sizes[0], seed + 1),
               info={"sizes": list(sizes), "input_rate": rate})


def from_random_net(rn: Network, name: str, desc: str, T: int, spikes: np.ndarray, beta: float,
                    info: dict[str, Any]) -> Net:
    """A ``spike.models.random_net`` network (input ``"input"``) as a :class:`Net`: our program is
    the builder's, the peers get its synapses (``random_net.synapses``, read from that program)."""
    with Timer() as tb:
        program = rn.build()
    projs = []
    for syn in synapses(program).values():
        delays = np.unique(syn.delay)
        assert delays.size == 1, "one delay per connection"
        projs.append(Proj(syn.name, syn.source, syn.target, syn.pre.astype(np.int32), syn.post.astype(np.int32),
                          syn.weight.astype(np.float32), int(delays[0])))
    pops = {k: v.size for k, v in rn.nodes.items() if isinstance(v, Population)}
    return Net(name, desc, T, rn.size("input"), pops, projs, spikes, beta, info, program, tb.wall)


def lif(rn: Network, name: str, n: int, beta: float) -> None:
    """The neuron of the module docstring (``random_net``'s defaults: reset to 0 in the step it
    fires, no refractory period; NEST's ``>=``)."""
    rn.population(name, n, beta=beta, threshold=THRESHOLD, fire_ge=True, reset="zero", reset_delay=False)


def ff_case(k: int, quick: bool, seed: int = 0) -> Net:
    n, depth, T = (500, 2, 50) if quick else (25_000, 4, 1000)
    k = min(k, 50) if quick else k
    rate = 0.02  # input spikes per source and step; every layer fires near it
    sigma = SIGMA_GAIN / np.sqrt(k * rate)  # layers of equal size: in-degree k on average
    rn = Network(seed=seed)
    rn.input("input", n)
    src = "input"
    for i in range(depth):
        lif(rn, f"lif{i + 1}", n, LIF_BETA)
        rn.connect(src, f"lif{i + 1}", fixed_fan_out(k), weight=lambda rng, m: dyadic(rng.normal(0.0, sigma, m)),
                   delay=1, name=f"syn{i + 1}")
        src = f"lif{i + 1}"
    return from_random_net(rn, f"ff_k{k}", f"sparse feed-forward, {n} input sources -> {depth} x {n} LIF, fan-out {k}, "
                           f"input {rate:.0%}, T={T}", T, bernoulli(rate, T, n, seed + 1), LIF_BETA,
                           {"layer_size": n, "depth": depth, "fan_out": k, "input_rate": rate})


def brunel_case(quick: bool, seed: int = 0, beta: float = LIF_BETA, J: float = 1 / 16, g: float = 6.0,
                J_ext: float = 1 / 8, p_ext: float = 0.02, K_ext: int = 500, N: int = 100_000, T: int = 1000) -> Net:
    """``exc`` (80%, weight J) and ``inh`` (20%, weight -gJ): every neuron has fan-out 100 split 80/20
    between them, delay 1 step, no autapses; ``n_ext = N/10`` external spike sources at ``p_ext``
    per step with fan-out ``K_ext`` (split alike), weight ``J_ext``. LIF: the external drive holds
    the free membrane at threshold (8 x 1/8 per step: 50 external inputs per neuron at 2%), the
    recurrence is inhibition-dominated: about 4% per step (40 Hz)."""
    N, T = (2000, 200) if quick else (N, T)
    n_ext, K = N // 10, 100
    pops = {"exc": int(N * 0.8), "inh": N - int(N * 0.8)}
    share = {name: size / N for name, size in pops.items()}
    rn = Network(seed=seed)
    rn.input("input", n_ext)
    for name, size in pops.items():
        lif(rn, name, size, beta)
    for name in pops:
        rn.connect("input", name, fixed_fan_out(round(K_ext * share[name])), weight=J_ext, delay=1)
    for src, w in (("exc", J), ("inh", -g * J)):
        for dst in pops:
            rn.connect(src, dst, fixed_fan_out(round(K * share[dst])), weight=w, delay=1)
    kind = "IF" if beta == 1 else "LIF"
    return from_random_net(
        rn, "brunel" if beta != 1 else "brunel_if",
        f"Brunel-like recurrent, N={N} {kind} ({pops['exc']} E: w={J}, {pops['inh']} I: w=-{g}*{J}), fan-out {K}, "
        f"delay 1; {n_ext} external sources (fan-out {K_ext}, w={J_ext}, {p_ext:.0%}), T={T}",
        T, bernoulli(p_ext, T, n_ext, seed + 1), beta,
        {"N": N, **pops, "fan_out": K, "J": J, "g": g, "n_ext": n_ext, "ext_fan_out": K_ext, "J_ext": J_ext,
         "input_rate": p_ext})


CASES: dict[str, Callable[[bool], Net]] = {
    "mlp_1pct": lambda q: mlp_case(0.01, q),
    "mlp_5pct": lambda q: mlp_case(0.05, q),
    "mlp_20pct": lambda q: mlp_case(0.20, q),
    "ff_k100": lambda q: ff_case(100, q),
    "ff_k1000": lambda q: ff_case(1000, q),
    "brunel": lambda q: brunel_case(q),
    "brunel_if": lambda q: brunel_case(q, beta=1.0, J_ext=1 / 16),
}
QUICK_CASES = ("mlp_5pct", "ff_k100", "brunel", "brunel_if")


# ---------------------------------------------------------------------------------------------
# spike rasters: per population the sorted codes step * n + neuron
# ---------------------------------------------------------------------------------------------


def codes(steps: np.ndarray, neurons: np.ndarray, n: int) -> np.ndarray:
    return np.sort(steps.astype(np.int64) * n + neurons.astype(np.int64))


def input_codes(net: Net) -> np.ndarray:
    t_idx, i_idx = np.nonzero(net.spikes)
    return codes(t_idx, i_idx, net.n_in)


def events_delivered(net: Net, rasters: dict[str, np.ndarray]) -> int:
    """Synaptic events delivered within the run: each spike of a step t < T - delay, times its
    source's out-degree in the projection."""
    total = 0
    for p in net.projs:
        n_src = net.size(p.src)
        outdeg = np.bincount(p.pre, minlength=n_src)
        c = input_codes(net) if p.src == "input" else rasters[p.src]
        c = c[c // n_src < net.T - p.delay]
        total += int(outdeg[c % n_src].sum())
    return total


class Timer:
    """Wall and CPU (``process_time``) seconds of a block."""

    def __enter__(self) -> "Timer":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


# ---------------------------------------------------------------------------------------------
# ours: the IR built node by node, run on the numba backend
# ---------------------------------------------------------------------------------------------


def population(n: int, beta: float) -> Population:
    return Population(shape=(n,), model="lif", beta=np.full(n, beta, np.float32),
                      threshold=np.full(n, THRESHOLD, np.float32), reset="zero", reset_delay=False, fire_ge=True)


def projection(net: Net, p: Proj) -> Dense | Sparse:
    n_src, n_dst = net.size(p.src), net.size(p.dst)
    if p.dense is not None:
        return Dense(shape=(n_dst,), in_shape=(n_src,), weight=p.dense, delay=p.delay)
    order = np.argsort(p.pre, kind="stable")
    indptr = np.zeros(n_src + 1, np.int64)
    np.cumsum(np.bincount(p.pre, minlength=n_src), out=indptr[1:])
    return Sparse(shape=(n_dst,), in_shape=(n_src,), indptr=indptr, indices=p.post[order].astype(np.int32),
                  data=p.weight[order].astype(np.float32), delay=p.delay)


def build_program(net: Net) -> Program:
    """Input -> projections -> populations in the order of ``net.pops``; a projection from a
    population not yet built (recurrent) is connected afterwards."""
    b = ProgramBuilder()
    b.add("input", Input(shape=(net.n_in,), signal="spike"))
    later: list[Proj] = []
    built = {"input"}
    for name, n in net.pops.items():
        srcs = []
        for p in (p for p in net.projs if p.dst == name):
            if p.src in built:
                srcs.append(b.add(p.name, projection(net, p), p.src))
            else:
                later.append(p)
        b.add(name, population(n, net.beta), srcs)
        built.add(name)
    for p in later:
        b.add(p.name, projection(net, p), p.src)
        b.connect(p.name, p.dst)
    last = list(net.pops)[-1]
    b.add("output", Output(shape=(net.pops[last],)), last)
    return b.build()


def best_of(fn: Callable[[], Any], repeats: int, budget_s: float, cap: int = 50) -> tuple[Timer, Any, int]:
    """The fastest (CPU time) of at least ``repeats`` calls of ``fn``, more while their CPU time
    adds up to less than ``budget_s`` (at most ``cap``): (its timer, its result, calls made)."""
    best_t, best, total, calls = None, None, 0.0, 0
    while calls < repeats or (total < budget_s and calls < cap):
        with Timer() as t:
            r = fn()
        total, calls = total + t.cpu, calls + 1
        if best_t is None or t.cpu < best_t.cpu:
            best_t, best = t, r
        r = None
    return best_t, best, calls


def run_ours(net: Net, repeats: int, budget_s: float, precision: str = "float32") -> dict[str, Any]:
    """Timed with spike lists out (``record="spikes"``, what NEST's and Brian2's recorders give),
    the program in ``precision`` (float32, or float64: ``passes.float_precision``);
    ``cpu_s_dense_probes`` (float32): the same run returning dense ``[T, B, n]`` spike arrays instead."""
    with Timer() as tb:
        program = float_precision(net.program if net.program is not None else build_program(net), precision)
        x = net.spikes.astype(np.float32)[:, None, :]
    record = {name: "spikes" for name in net.pops}
    record.update({name: "counts" for name, node in program.nodes() if isinstance(node, Output)})  # not dense
    with Timer() as tw:
        run(program, x, backend="numba", record=record)  # warm-up: kernel set-up, caches, page faults
    best_t, res, calls = best_of(lambda: run(program, x, backend="numba", record=record), repeats, budget_s)
    rasters = {}
    for name, n in net.pops.items():
        sl = res.spike_lists[name]
        rasters[name] = codes(sl.times, sl.neurons, n)
    out = {"cpu_s": best_t.cpu, "wall_s": best_t.wall, "engine_run_s": float(res.timing["run_s"]), "runs": calls,
           "build_s": tb.wall + net.build_s, "warmup_s": tw.wall,
           "syn_ops": float(res.ops.per_sample_total()["syn_ops"].sum()), "rasters": rasters}
    res = None
    if budget_s > 0 and precision == "float32":  # not in --quick
        probes = list(net.pops)
        run(program, x, backend="numba", probes=probes)
        dense_t, _, _ = best_of(lambda: run(program, x, backend="numba", probes=probes), repeats, budget_s)
        out["cpu_s_dense_probes"] = dense_t.cpu
    return out


def compile_ours() -> float:
    """Numba compile (or on-disk cache load) of every kernel the cases use, on a tiny program."""
    rng = np.random.default_rng(0)
    net = Net("tiny", "", 4, 8, {"a": 6, "b": 5}, [
        fanout_proj("s", "input", "a", 8, 6, 3, rng, lambda pre: np.full(pre.shape[0], 0.5, np.float32)),
        dense_proj("d", "a", "b", np.full((5, 6), 0.5, np.float32)),
        fanout_proj("r", "b", "b", 5, 5, 2, rng, lambda pre: np.full(pre.shape[0], 0.25, np.float32)),
    ], np.ones((4, 8), bool))
    with Timer() as t:
        run(build_program(net), net.spikes.astype(np.float32)[:, None, :], backend="numba",
            record={"a": "spikes", "b": "spikes"})
        run(ff_case(100, True).program, np.zeros((4, 1, 500), np.float32), backend="numba",
            record={"lif1": "spikes", "lif2": "spikes"})
    return t.wall


# ---------------------------------------------------------------------------------------------
# NEST
# ---------------------------------------------------------------------------------------------


def nest_tau_m(beta: float) -> float:
    """A ``tau_m`` (ms) with ``exp(-dt/tau_m) == beta`` exactly in float64 (NEST's P33)."""
    if beta == 1.0:
        return 1e300  # exp(-1e-300) == 1.0; then P30 = (1 - P33) tau_m / C_m = 0 as well
    tau = -DT_MS / math.log(beta)
    for _ in range(64):
        p = math.exp(-DT_MS / tau)
        if p == beta:
            return tau
        tau = math.nextafter(tau, math.inf if p < beta else -math.inf)
    raise ValueError(f"no tau_m gives exp(-{DT_MS}/tau_m) == {beta!r} exactly")


def nest_reset(nest: Any) -> None:
    nest.ResetKernel()
    nest.verbosity = nest.VerbosityLevel.ERROR
    nest.set(resolution=DT_MS, local_num_threads=1, print_time=False)


def nest_params(beta: float) -> dict[str, float]:
    return dict(E_L=0.0, V_m=0.0, V_reset=0.0, V_th=THRESHOLD, t_ref=0.0, tau_m=nest_tau_m(beta), C_m=1.0, I_e=0.0)


def nest_check_p33(nest: Any, beta: float) -> bool:
    """NEST's own decay factor is ``beta``: V_m = 0.5 decays to exactly 0.5 * beta in one step."""
    nest_reset(nest)
    n = nest.Create("iaf_psc_delta", 1, params={**nest_params(beta), "V_m": 0.5})
    nest.Simulate(DT_MS)
    ok = float(n.get("V_m")) == 0.5 * beta
    nest_reset(nest)
    return ok


def run_nest(net: Net, repeats: int, budget_s: float) -> dict[str, Any]:
    """Build, ``Prepare`` and ``Run`` (timed), again (rebuilt from scratch) while the runs add up to
    less than ``budget_s`` of CPU time, at most ``repeats`` times: the fastest run."""
    best, total, runs = None, 0.0, 0
    while runs < max(1, repeats):
        r = nest_once(net)
        total, runs = total + r["cpu_s"], runs + 1
        if best is None or r["cpu_s"] < best["cpu_s"]:
            best = r
        if total >= budget_s:
            break
    best["runs"] = runs
    return best


def nest_once(net: Net) -> dict[str, Any]:
    import nest

    nest_reset(nest)
    with Timer() as tb:
        first: dict[str, int] = {}
        gens = nest.Create("spike_generator", net.n_in)
        src, step = np.nonzero(net.spikes.T)  # sorted by source
        bounds = np.searchsorted(src, np.arange(net.n_in + 1))
        times = (step + 1) * DT_MS  # a spike of step t carries the time stamp (t+1) h in NEST
        gens.set([{"spike_times": times[bounds[i]:bounds[i + 1]].tolist()} for i in range(net.n_in)])
        first["input"] = gens[0].global_id
        recs = {}
        for name, n in net.pops.items():
            pop = nest.Create("iaf_psc_delta", n, params=nest_params(net.beta))
            first[name] = pop[0].global_id
            recs[name] = nest.Create("spike_recorder")
            nest.Connect(pop, recs[name])
        for p in net.projs:
            nest.Connect(p.pre.astype(np.uint64) + first[p.src], p.post.astype(np.uint64) + first[p.dst], "one_to_one",
                         syn_spec={"synapse_model": "static_synapse", "weight": p.weight.astype(np.float64),
                                   "delay": np.full(p.pre.shape[0], p.delay * DT_MS)})
    with Timer() as tp:
        nest.Prepare()
    with Timer() as t:
        nest.Run(net.T * DT_MS)
    nest.Cleanup()
    rasters = {}
    for name, n in net.pops.items():
        ev = recs[name].get("events")
        steps = np.rint(np.asarray(ev["times"]) / DT_MS).astype(np.int64) - 1
        rasters[name] = codes(steps, np.asarray(ev["senders"], np.int64) - first[name], n)
    n_conn = int(nest.GetKernelStatus("num_connections"))
    nest_reset(nest)  # frees the network
    return {"cpu_s": t.cpu, "wall_s": t.wall, "build_s": tb.wall, "prepare_s": tp.wall,
            "num_connections": n_conn, "rasters": rasters}


# ---------------------------------------------------------------------------------------------
# Brian2
# ---------------------------------------------------------------------------------------------


B2_FLAGS = ["-w", "-O3", "-ffast-math", "-fno-finite-math-only", "-march=native", "-std=c++11", "-ffp-contract=off"]


def brian2_objects(b2: Any, net: Net) -> tuple[list, dict]:
    t_idx, i_idx = np.nonzero(net.spikes)
    gen = b2.SpikeGeneratorGroup(net.n_in, i_idx.astype(np.int32), t_idx * DT_MS * b2.ms)
    groups: dict[str, Any] = {"input": gen}
    objs: list = [gen]
    mons = {}
    for name, n in net.pops.items():
        g = b2.NeuronGroup(n, "v : 1\nI : 1\nbeta : 1 (shared, constant)\nthr : 1 (shared, constant)",
                           threshold="v >= thr", reset="v = 0", method="euler")
        g.beta = net.beta
        g.thr = THRESHOLD
        g.run_regularly("v = beta*v + I\nI = 0", when="groups")
        groups[name] = g
        mons[name] = b2.SpikeMonitor(g)
        objs += [g, mons[name]]
    for p in net.projs:
        s = b2.Synapses(groups[p.src], groups[p.dst], "w : 1", on_pre="I_post += w")
        s.connect(i=p.pre, j=p.post)
        s.w = p.weight.astype(np.float64)
        s.delay = (p.delay - 1) * DT_MS * b2.ms  # the accumulator I already adds one step
        objs.append(s)
    return objs, mons


def brian2_rasters(b2: Any, net: Net, mons: dict) -> dict[str, np.ndarray]:
    out = {}
    for name, n in net.pops.items():
        steps = np.rint(np.asarray(mons[name].t / b2.ms) / DT_MS).astype(np.int64)
        out[name] = codes(steps, np.asarray(mons[name].i, np.int64), n)
    return out


def run_brian2_standalone(nets: list[Net], directory: Path, repeats: int) -> list[dict[str, Any]]:
    """One standalone project with one ``Network`` per net, compiled once (an unchanged project
    in ``directory`` is not recompiled); code inserted after each network's run appends its own run
    time (``Network::_last_run_time``, CPU seconds) to a file."""
    import brian2 as b2
    from brian2.devices.device import all_devices

    all_devices["cpp_standalone"].reinit()
    b2.set_device("cpp_standalone", directory=str(directory), build_on_run=False)
    b2.prefs.devices.cpp_standalone.openmp_threads = 0
    b2.prefs.devices.cpp_standalone.extra_make_args_unix = [f"-j{os.cpu_count() or 1}"]
    b2.prefs.codegen.cpp.extra_compile_args_gcc = B2_FLAGS
    b2.defaultclock.dt = DT_MS * b2.ms
    directory.mkdir(parents=True, exist_ok=True)
    times_file = (directory / "vs_simulators_run_times.txt").resolve()
    all_mons = []
    with Timer() as tc:
        for k, net in enumerate(nets):
            objs, mons = brian2_objects(b2, net)
            b2.Network(*objs).run(net.T * DT_MS * b2.ms, namespace={})
            b2.device.insert_code("main", f'{{ std::ofstream _f("{times_file}", std::ios::app); '
                                          f'_f << {k} << " " << Network::_last_run_time << std::endl; }}')
            all_mons.append(mons)
        b2.device.build(directory=str(directory), compile=True, run=False, with_output=False)
    best = [math.inf] * len(nets)
    walls = []
    for _ in range(repeats):
        times_file.unlink(missing_ok=True)
        with Timer() as tr:
            b2.device.run(directory=str(directory), with_output=False)
        walls.append(tr.wall)
        for line in times_file.read_text().splitlines():
            if line.strip():
                k, s = line.split()
                best[int(k)] = min(best[int(k)], float(s))
    out = [{"cpu_s": best[k], "compile_s": tc.wall, "process_wall_s": min(walls), "nets_in_binary": len(nets),
            "rasters": brian2_rasters(b2, net, all_mons[k])} for k, net in enumerate(nets)]
    all_devices["cpp_standalone"].reinit()
    b2.set_device("runtime")
    return out


def run_brian2_numpy(net: Net) -> dict[str, Any]:
    import brian2 as b2

    b2.set_device("runtime")
    b2.prefs.codegen.target = "numpy"
    b2.defaultclock.dt = DT_MS * b2.ms
    objs, mons = brian2_objects(b2, net)
    n = b2.Network(*objs)
    with Timer() as tb:
        n.run(0 * b2.ms, namespace={})  # code generation and initialisation
    with Timer() as t:
        n.run(net.T * DT_MS * b2.ms, namespace={})
    return {"cpu_s": t.cpu, "wall_s": t.wall, "build_s": tb.wall, "rasters": brian2_rasters(b2, net, mons)}


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


def compare(net: Net, ref: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, Any]:
    per_pop = {}
    for name, n in net.pops.items():
        a, b = ref[name], other[name]
        diff = np.setxor1d(a, b, assume_unique=True)
        per_pop[name] = {"spikes": [int(a.size), int(b.size)],
                         "neuron_counts_equal": bool(np.array_equal(np.bincount(a % n, minlength=n),
                                                                    np.bincount(b % n, minlength=n))),
                         "raster_mismatches": int(diff.size),
                         "first_mismatch_step": int(diff.min() // n) if diff.size else None}
    return {"spikes_equal": all(v["neuron_counts_equal"] for v in per_pop.values()),
            "rasters_equal": all(v["raster_mismatches"] == 0 for v in per_pop.values()),
            "per_population": per_pop}


def replay(net: Net, dtype: type, steps: int) -> dict[str, np.ndarray]:
    """The neuron update of the module docstring in numpy ``dtype`` for ``steps`` steps: the
    rasters (codes) of every population. The weight sums are exact in either precision; only
    ``beta * v`` rounds."""
    mats = [(p, scipy.sparse.csr_matrix((p.weight.astype(dtype), (p.post, p.pre)),
                                        shape=(net.size(p.dst), net.size(p.src)))) for p in net.projs]
    v = {name: np.zeros(n, dtype) for name, n in net.pops.items()}
    hist: dict[str, list[np.ndarray]] = {name: [] for name in net.pops}
    hist["input"] = [net.spikes[t].astype(dtype) for t in range(min(steps, net.T))]
    beta = dtype(net.beta)
    for t in range(steps):
        cur = {name: np.zeros(n, dtype) for name, n in net.pops.items()}
        for p, m in mats:
            if t - p.delay >= 0:
                cur[p.dst] += m @ hist[p.src][t - p.delay]
        for name in net.pops:
            x = beta * v[name] + cur[name]
            s = x >= dtype(THRESHOLD)
            v[name] = np.where(s, dtype(0), x)
            hist[name].append(s.astype(dtype))
    return {name: codes(*np.nonzero(np.array(hist[name])), n) for name, n in net.pops.items()}


def diagnose(net: Net, ours: dict[str, np.ndarray], nest_r: dict[str, np.ndarray] | None,
             first_step: int) -> dict[str, Any]:
    """Replays up to and including ``first_step`` (the first step where ours and a peer differ)
    in float32 and float64: whether ours equals the float32 replay and NEST the float64 one there."""
    steps = first_step + 1
    cut = {name: (lambda c, n=n: c[c // n < steps]) for name, n in net.pops.items()}
    r32, r64 = replay(net, np.float32, steps), replay(net, np.float64, steps)
    same = lambda a, b: all(np.array_equal(cut[k](a[k]), cut[k](b[k])) for k in net.pops)  # noqa: E731
    out = {"steps_replayed": steps, "ours_equals_float32_replay": same(ours, r32),
           "float32_differs_from_float64": not same(r32, r64)}
    if nest_r is not None:
        out["nest_equals_float64_replay"] = same(nest_r, r64)
    out["rounding_alone"] = bool(out["ours_equals_float32_replay"] and out["float32_differs_from_float64"]
                                 and out.get("nest_equals_float64_replay", True))
    return out


def all_equal(checks: dict[str, dict[str, Any]]) -> tuple[bool, bool]:
    """``(spikes_equal, rasters_equal)`` over every check of :func:`compare` (False without any)."""
    return (bool(checks) and all(c["spikes_equal"] for c in checks.values()),
            bool(checks) and all(c["rasters_equal"] for c in checks.values()))


def finalize(net: Net, r: dict[str, Any], diagnose_mismatch: bool) -> None:
    """Spike checks, events, rates and ratios of one case (drops the rasters); ours in float64
    (``ours_float64``) gets its own checks and ratios (``..._float64``)."""
    ours = r["ours"].pop("rasters")
    peers = {tool: r[tool].pop("rasters") for tool in ("nest", "brian2", "brian2_numpy") if tool in r}
    if "ours_float64" in r:
        ours64 = r["ours_float64"].pop("rasters")
        checks64 = {tool: compare(net, ours64, rast) for tool, rast in peers.items()}
        r["spike_check_float64"] = checks64
        r["spikes_equal_float64"], r["rasters_equal_float64"] = all_equal(checks64)
    r["events"] = events = events_delivered(net, ours)
    r["spike_counts"] = {name: int(c.size) for name, c in ours.items()}
    r["rates_per_step"] = {name: c.size / (net.pops[name] * net.T) for name, c in ours.items()}
    checks = {tool: compare(net, ours, rast) for tool, rast in peers.items()}
    if "nest" in peers and "brian2" in peers:
        checks["nest_vs_brian2"] = compare(net, peers["nest"], peers["brian2"])
    r["spike_check"] = checks
    r["spikes_equal"], r["rasters_equal"] = all_equal(checks)
    firsts = [v["first_mismatch_step"] for tool, c in checks.items() if tool != "nest_vs_brian2"
              for v in c["per_population"].values() if v["first_mismatch_step"] is not None]
    if firsts and diagnose_mismatch:
        r["mismatch_diagnosis"] = diagnose(net, ours, peers.get("nest"), min(firsts))
    for tool in ("ours", "ours_float64", "nest", "brian2", "brian2_numpy"):
        if tool in r:
            r[tool]["events_per_s"] = events / r[tool]["cpu_s"] if r[tool]["cpu_s"] > 0 else None
            if not tool.startswith("ours"):
                r[f"ratio_{tool}"] = r[tool]["cpu_s"] / r["ours"]["cpu_s"]
                if "ours_float64" in r:
                    r[f"ratio_{tool}_float64"] = r[tool]["cpu_s"] / r["ours_float64"]["cpu_s"]


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def cpu_info() -> dict[str, Any]:
    """Model name, family/model numbers and the vector extensions of the first CPU."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return info
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(cpu=fields.get("model name", info["cpu"]), cpu_family=fields.get("cpu family"),
                cpu_model_number=fields.get("model"), avx2="avx2" in flags, avx512f="avx512f" in flags,
                cache=fields.get("cache size"))
    return info


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    for key, pkg in (("nest", "nest-simulator"), ("brian2", "brian2"), ("spike", "spike-sim")):
        try:
            out[key] = _pkg_version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            out[key] = "missing"
    try:
        out["gxx"] = subprocess.run(["g++", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    except OSError:
        out["gxx"] = "missing"
    return out


def importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - a peer that is missing or broken is skipped
        return False


def print_case(name: str, r: dict[str, Any]) -> None:
    line = f"  {name}: ours {r['ours']['cpu_s']:.4f} s"
    for tool, label in (("nest", "NEST"), ("brian2", "Brian2"), ("brian2_numpy", "Brian2 numpy")):
        if tool in r:
            line += f" | {label} {r[tool]['cpu_s']:.4f} s ({r[f'ratio_{tool}']:.1f}x)"
    print(line + f" | spikes_equal {r['spikes_equal']}, rasters_equal {r['rasters_equal']}", flush=True)
    if "ours_float64" in r:
        line = f"  {name} float64: ours {r['ours_float64']['cpu_s']:.4f} s"
        for tool, label in (("nest", "NEST"), ("brian2", "Brian2")):
            if tool in r:
                line += f" | {label} {r[f'ratio_{tool}_float64']:.1f}x"
        print(line + f" | spikes_equal {r['spikes_equal_float64']}, rasters_equal {r['rasters_equal_float64']}",
              flush=True)


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\nsimulation CPU seconds, one thread each ({m['cpu']}, {m['cpu_count']} CPUs); ratio = peer / ours")
    print(f"{'case':<10} {'ours s':>9} {'NEST s':>9} {'ratio':>7} {'Brian2 s':>9} {'ratio':>7} "
          f"{'events':>9} {'ours ev/s':>9} {'equal':>6} {'load':>5}")
    for name, c in report["cases"].items():
        nest = f"{c['nest']['cpu_s']:9.3f} {c['ratio_nest']:6.1f}x" if "nest" in c else f"{'-':>9} {'-':>7}"
        b2 = f"{c['brian2']['cpu_s']:9.3f} {c['ratio_brian2']:6.1f}x" if "brian2" in c else f"{'-':>9} {'-':>7}"
        print(f"{name:<10} {c['ours']['cpu_s']:9.4f} {nest} {b2} {c['events']:9.3g} "
              f"{c['ours']['events_per_s']:9.3g} {str(c['spikes_equal']):>6} {c['load']['ours'][0]:5.2f}")
        if "brian2_numpy" in c:
            print(f"{'':<10} Brian2 numpy target {c['brian2_numpy']['cpu_s']:.3f} s ({c['ratio_brian2_numpy']:.1f}x)")
        for tool, chk in c["spike_check"].items():
            if not chk["rasters_equal"]:
                bad = {k: (v["raster_mismatches"], v["first_mismatch_step"]) for k, v in chk["per_population"].items()
                       if v["raster_mismatches"]}
                print(f"{'':<10} differ {tool}: (mismatching (neuron, step) spikes, first step) {bad}")
        if "mismatch_diagnosis" in c:
            print(f"{'':<10} diagnosis: {c['mismatch_diagnosis']}")
    print(f"float32: min_ratio_nest {report['min_ratio_nest']}, min_ratio_brian2 {report['min_ratio_brian2']}, "
          f"spikes_equal {report['spikes_equal_float32']} (rasters_equal {report['rasters_equal_float32']})")
    if report["min_ratio_nest_float64"] is not None or report["min_ratio_brian2_float64"] is not None:
        print(f"float64: min_ratio_nest {report['min_ratio_nest_float64']}, "
              f"min_ratio_brian2 {report['min_ratio_brian2_float64']}, spikes_equal {report['spikes_equal']} "
              f"(rasters_equal {report['rasters_equal']})")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=None,
                    help=f"cases to run (default: all; --quick: {' '.join(QUICK_CASES)})")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, every tool once (smoke test)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed runs, the fastest counts: ours at least N (more while under 1 s in all), NEST up "
                         "to N rebuilt runs (while under 3 s), the Brian2 binary N")
    ap.add_argument("--peers", nargs="*", choices=["nest", "brian2"], default=["nest", "brian2"],
                    help="peers to run (none: ours alone)")
    ap.add_argument("--no-numpy", action="store_true", help="skip Brian2's runtime numpy target")
    ap.add_argument("--brian2-dir", type=Path, default=ROOT / "build" / "vs_simulators",
                    help="Brian2 standalone projects, one folder per case (kept: an unchanged one is not recompiled)")
    ap.add_argument("--no-diagnose", action="store_true", help="no float32/float64 replay of a spike mismatch")
    ap.add_argument("--no-float64", action="store_true", help="ours in float32 only (no precision='float64' runs)")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    names = args.cases or list(QUICK_CASES if args.quick else CASES)
    repeats = 1 if args.quick else args.repeats

    # numba's OpenMP thread pool must start before NEST is imported (NEST brings its own libgomp;
    # the other order crashes in nest.ResetKernel)
    numba.set_num_threads(1)
    load_start = os.getloadavg()
    compile_s = compile_ours()
    peers = [p for p in args.peers if importable(p)]
    if set(args.peers) - set(peers):
        print(f"not installed: {sorted(set(args.peers) - set(peers))} (make bench-peers)", file=sys.stderr)
    nest_p33 = None
    if "nest" in peers:
        import nest

        nest_p33 = {b: nest_check_p33(nest, b) for b in sorted({LIF_BETA, 1.0})}

    cases: dict[str, dict[str, Any]] = {}
    nets: dict[str, Net] = {}
    for name in names:
        with Timer() as tg:
            net = CASES[name](args.quick)
        print(f"\n{name}: {net.desc}; {net.n_synapses:,} synapses, {int(net.spikes.sum()):,} input spikes "
              f"(generated in {tg.wall:.1f} s)", flush=True)
        r: dict[str, Any] = {"desc": net.desc, "T": net.T, "beta": net.beta, "populations": dict(net.pops),
                             "n_synapses": net.n_synapses, "input_spikes": int(net.spikes.sum()), "info": net.info,
                             "load": {"ours": os.getloadavg()}}
        r["ours"] = run_ours(net, repeats, OURS_BUDGET_S if not args.quick else 0.0)
        r["ours"]["compile_s"] = compile_s
        if not args.no_float64:
            r["ours_float64"] = run_ours(net, repeats, OURS_BUDGET_S if not args.quick else 0.0, "float64")
        if "nest" in peers:
            r["load"]["nest"] = os.getloadavg()
            r["nest"] = run_nest(net, repeats, NEST_BUDGET_S if not args.quick else 0.0)
        if not args.no_numpy and "brian2" in peers:
            r["load"]["brian2_numpy"] = os.getloadavg()
            r["brian2_numpy"] = run_brian2_numpy(net)
        cases[name], nets[name] = r, net
        if "brian2" in peers and not args.quick:  # quick: one binary for all cases, after the loop
            r["load"]["brian2"] = os.getloadavg()
            r["brian2"] = run_brian2_standalone([net], args.brian2_dir / name, repeats)[0]
        if "brian2" not in peers or not args.quick:
            finalize(net, r, not args.no_diagnose)
            print_case(name, r)
            del nets[name], net
            gc.collect()
    if nets:  # quick with Brian2
        load = os.getloadavg()
        res = run_brian2_standalone(list(nets.values()), args.brian2_dir / "quick", repeats)
        for (name, net), b in zip(nets.items(), res):
            cases[name]["brian2"] = b
            cases[name]["load"]["brian2"] = load
            finalize(net, cases[name], not args.no_diagnose)
            print_case(name, cases[name])

    def smallest(key: str) -> float | None:
        vals = [c[key] for c in cases.values() if key in c]
        return min(vals) if vals else None

    report = {
        "name": "vs_simulators",
        "cases": cases,
        "min_ratio_nest": smallest("ratio_nest"),
        "min_ratio_brian2": smallest("ratio_brian2"),
        "min_ratio_brian2_numpy": smallest("ratio_brian2_numpy"),
        "min_ratio_nest_float64": smallest("ratio_nest_float64"),
        "min_ratio_brian2_float64": smallest("ratio_brian2_float64"),
        # in the peers' precision: ours float64 (float32 with --no-float64)
        "spikes_equal": bool(peers) and all(c.get("spikes_equal_float64", c["spikes_equal"]) for c in cases.values()),
        "rasters_equal": bool(peers) and all(c.get("rasters_equal_float64", c["rasters_equal"])
                                             for c in cases.values()),
        "spikes_equal_float32": bool(peers) and all(c["spikes_equal"] for c in cases.values()),
        "rasters_equal_float32": bool(peers) and all(c["rasters_equal"] for c in cases.values()),
        "spikes_equal_per_case": {k: c["spikes_equal"] for k, c in cases.items()},
        "spikes_equal_float64_per_case": {k: c["spikes_equal_float64"] for k, c in cases.items()
                                          if "spikes_equal_float64" in c},
        "peers": peers,
        "neuron": {"update": "v = beta*v + I; spike if v >= 1; then v = 0", "threshold": THRESHOLD,
                   "dt_ms": DT_MS, "lif_beta": LIF_BETA, "nest_tau_m": nest_tau_m(LIF_BETA),
                   "nest_p33_exact": nest_p33, "weight_quantum": QUANT},
        "timing": "CPU seconds of the simulation alone: ours best of repeats (more within 1 s) after a warm-up "
                  "run; NEST Run after Prepare, best of repeats within 3 s; Brian2 standalone "
                  "Network::_last_run_time, best of repeats; Brian2 numpy Network.run, once",
        "machine": {**cpu_info(), "cpu_count": os.cpu_count(), "threads": 1,
                    "numba_threads": numba.get_num_threads(),
                    "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg())},
        "versions": versions(),
        "quick": bool(args.quick),
        "repeats": repeats,
    }
    print_table(report)
    if args.json:
        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["spikes_equal"] else 1)
