"""The numba backend's Sparse projection (CSR over source neurons) on large random nets, before and
after the blocked layout (``spike.backends.layout.SparseBlocks``), and the fixed cost of a run.

Cases (N = 100k neurons, T = 1000 steps, batch 1, one thread; ``--quick``: N = 20k, T = 200):
- ``ff100`` / ``ff1000``: Poisson input (1% per step) -> Sparse (random targets, fan-out 100 or
  1000, delay 1) -> LIF (``v = 0.9 v + I``, spike on ``v >= 1``, reset to 0: the LIF of the
  Brian2/NEST comparisons, reference.md);
- ``brunel``: the same LIF, 80% excitatory / 20% inhibitory, recurrent Sparse (fan-out 100,
  delay 1, ``J_I = -5 J_E``) plus an external Poisson Sparse (fan-out 100): about 2% per step.
Weights (``--weights``): ``quantised`` (default), each synapse a random multiple of 2^-8 in
[-128, 127] 2^-8 (8-bit weights: the layout stores one-byte codes into a table of the distinct
values); ``float``, each synapse an arbitrary float32 (more distinct values than the layout codes:
float32 weights); ``both``.

"before" is the CSR loop this file keeps a copy of (:func:`old_sparse_forward`: one event at a time,
int64 indices, float32 weights), "after" the backend's kernel; both run in this process on the
same arrays, alternately (``--repeats`` times each, best kept), so their ratio holds whatever load
the machine carries (``os.getloadavg()`` is recorded). Each case reports the sparse node's kernel
time (the calling thread's CPU time; wall with ``--threads`` > 1), the whole ``spike.backends.run``
(wall and process CPU) with each kernel plugged in, synaptic events/s (``syn_ops`` / kernel time)
and whether outputs and counts are equal bit for bit. A run returns the LIF's spike list
(``record={"out": "spikes"}``, as Brian2's SpikeMonitor; ``--record dense``: ``[T, B, n]``).
``--threads N``: numba threads (the sparse kernel splits a sample's target blocks over them; the
peers' comparison is one thread each).

``fixed cost`` (part of every run whatever its activity): the 784-2048-2048-10 dense LIF MLP of
``mlp_sparsity.py``, T = 100, batch 1, all-zero input, best of ``--fixed-runs`` runs;
``--before-src DIR`` also times it with ``spike`` imported from DIR (e.g. ``git archive <rev> spike
| tar -x -C DIR``) in a subprocess, back to back.

    python benchmarks/sparse_projection.py [--quick] [--weights quantised|float|both]
        [--cases ff100 ff1000 brunel] [--threads N] [--before-src DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np
from numba import njit, prange

from spike.backends import run
from spike.backends.layout import csr_arrays
from spike.backends.numba.backend import BACKEND
from spike.compiler.ir.nodes import Input, Output, Population, Sparse
from spike.compiler.ir.program import Program, ProgramBuilder

HERE = Path(__file__).resolve().parent
RATE = 0.01  # input spikes per neuron per step (10 Hz at dt = 1 ms)
QUANT = 2.0 ** -8


# ----------------------------------------------------------------------------- the "before" loop


@njit(cache=True, parallel=True)
def old_sparse_forward(src, indptr, indices, data, row_nnz, bias, out, t0, t1, delay, start, acs, macs, check):
    """The float32 CSR loop of the numba backend before the blocked layout (kept here as the
    baseline): per event, its row's targets in CSR order, int64 indices, float32 weights."""
    B = out.shape[1]
    n_in = indptr.shape[0] - 1
    n_out = out.shape[2]
    has_bias = bias.shape[0] > 0
    for b in prange(B):
        nacs = 0
        nmacs = 0
        for t in range(t0, t1):
            o = out[t, b]
            if t < start:
                for j in range(n_out):
                    o[j] = 0
                continue
            if has_bias:
                for j in range(n_out):
                    o[j] = bias[j]
            else:
                for j in range(n_out):
                    o[j] = 0
            x = src[t - delay, b]
            real = False
            nops = 0
            for i in range(n_in):
                v = x[i]
                if v == 0:
                    continue
                nops += row_nnz[i]
                if v != 1 and v != -1:
                    real = True
                if v == 1:
                    for k in range(indptr[i], indptr[i + 1]):
                        o[indices[k]] += data[k]
                else:
                    for k in range(indptr[i], indptr[i + 1]):
                        o[indices[k]] += data[k] * v
            if check and real:
                nmacs += nops
            else:
                nacs += nops
        acs[b] += nacs
        macs[b] += nmacs


def old_kernel(ctx: Any, t0: int, t1: int) -> None:
    """The backend's ``sparse`` kernel as it was (float32 only), on :func:`old_sparse_forward`."""
    from spike.backends.layout import delivery

    node = ctx.node
    c = ctx.cache.setdefault("before", {})
    if "indptr" not in c:
        c["indptr"], c["indices"], c["row_nnz"] = csr_arrays(node, ctx.name)
        c["data"] = np.ascontiguousarray(node.data, np.float32)
        c["bias"] = np.zeros(0, np.float32) if node.bias is None else np.ascontiguousarray(node.bias, np.float32)
    _, delay, start = delivery(ctx)
    src = np.ascontiguousarray(ctx.sources[0], np.float32)
    old_sparse_forward(src, c["indptr"], c["indices"], c["data"], c["row_nnz"], c["bias"], ctx.out, t0, t1, delay,
                       start, ctx.counts["syn_ops"], ctx.counts["macs"], ctx.source_signals[0] != "spike")
    ctx.counts["dense_ops"] += node.in_size * node.size * (t1 - t0)


# ----------------------------------------------------------------------------- networks


def random_weights(rng: np.random.Generator, n: int, scale: float, kind: str) -> np.ndarray:
    """``n`` weights of mean ``scale`` and spread ``scale / 2``: multiples of 2^-8 (``quantised``)
    or arbitrary float32 (``float``)."""
    w = rng.normal(scale, scale / 2, n)
    if kind == "quantised":
        w = np.clip(np.round(w / QUANT), -128, 127) * QUANT
    return w.astype(np.float32)


def random_csr(rng: np.random.Generator, n_in: int, n_out: int, fan_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr, indices)``: ``fan_out`` uniformly random targets per source (repeats allowed)."""
    indptr = np.arange(n_in + 1, dtype=np.int64) * fan_out
    return indptr, rng.integers(0, n_out, size=n_in * fan_out, dtype=np.int64)


def lif(n: int) -> Population:
    return Population(shape=(n,), model="lif", beta=np.float32(0.9), threshold=np.float32(1.0), reset="zero",
                      reset_delay=False, fire_ge=True)


def feed_forward(n: int, fan_out: int, kind: str, seed: int = 0) -> Program:
    """Input -> Sparse (fan-out ``fan_out``, delay 1) -> LIF -> Output: about one input event per
    target and step at fan-out 100 (ten at 1000), weights scaled by 100 / fan-out."""
    rng = np.random.default_rng(seed)
    indptr, indices = random_csr(rng, n, n, fan_out)
    data = random_weights(rng, indices.shape[0], 0.1 * 100 / fan_out, kind)
    b = ProgramBuilder()
    b.add("in", Input(shape=(n,), signal="spike"))
    b.add("syn", Sparse(shape=(n,), in_shape=(n,), indptr=indptr, indices=indices, data=data, delay=1), "in")
    b.add("pop", lif(n), "syn")
    b.add("out", Output(shape=(n,)), "pop")
    return b.build()


def brunel(n: int, fan_out: int, kind: str, seed: int = 0, g: float = 5.0) -> Program:
    """80/20 E/I LIF network: external Poisson Sparse (fan-out ``fan_out``) and a recurrent Sparse
    (fan-out ``fan_out``, delay 1), excitatory weights about ``J``, inhibitory about ``-g J``."""
    rng = np.random.default_rng(seed)
    ne = int(0.8 * n)
    J = 0.05  # with external weights about 0.07: about 2% of the neurons fire per step, asynchronously
    ip, ix = random_csr(rng, n, n, fan_out)
    ext = random_weights(rng, ix.shape[0], 0.07 * 100 / fan_out, kind)
    rp, rx = random_csr(rng, n, n, fan_out)
    rec = random_weights(rng, rx.shape[0], J * 100 / fan_out, kind)
    rec[ne * fan_out:] *= -g
    b = ProgramBuilder()
    b.add("in", Input(shape=(n,), signal="spike"))
    b.add("ext", Sparse(shape=(n,), in_shape=(n,), indptr=ip, indices=ix, data=ext, delay=1), "in")
    b.add("pop", lif(n), "ext")
    b.add("rec", Sparse(shape=(n,), in_shape=(n,), indptr=rp, indices=rx, data=rec, delay=1), "pop")
    b.connect("rec", "pop")
    b.add("out", Output(shape=(n,)), "pop")
    return b.build()


def poisson(n: int, T: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((T, 1, n), dtype=np.float32) < RATE).astype(np.float32)


# ----------------------------------------------------------------------------- timing


class Timed:
    """Wraps a kernel: thread CPU time and wall time spent in it, summed over calls."""

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn, self.cpu, self.wall = fn, 0.0, 0.0

    def __call__(self, ctx: Any, t0: int, t1: int) -> None:
        c, w = time.thread_time(), time.perf_counter()
        self.fn(ctx, t0, t1)
        self.cpu += time.thread_time() - c
        self.wall += time.perf_counter() - w


def same_result(a: Any, b: Any) -> bool:
    """Whether two runs returned the same outputs bit for bit (dense arrays and spike lists)."""
    if a.outputs.keys() != b.outputs.keys() or any(
            not np.array_equal(a.outputs[k].view(np.uint32), b.outputs[k].view(np.uint32)) for k in a.outputs):
        return False
    lists_a, lists_b = getattr(a, "spike_lists", {}) or {}, getattr(b, "spike_lists", {}) or {}
    return lists_a.keys() == lists_b.keys() and all(
        np.array_equal(getattr(lists_a[k], f), getattr(lists_b[k], f))
        for k in lists_a for f in ("times", "samples", "neurons"))


def time_case(program: Program, x: np.ndarray, repeats: int, record: str) -> dict[str, Any]:
    """Before and after, alternately: best whole run (wall, CPU) and best sparse-kernel time.
    ``record``: "spikes" returns the output's spike list (as Brian2's SpikeMonitor), "dense" its
    ``[T, B, n]`` array."""
    kw = {"record": {"out": "spikes"}} if record == "spikes" else {}
    key = ("sparse", "plain")
    new_fn = BACKEND.kernels[key]
    best: dict[str, dict[str, float]] = {w: {"run_s": np.inf, "run_cpu_s": np.inf, "kernel_s": np.inf,
                                             "kernel_cpu_s": np.inf} for w in ("before", "after")}
    outs: dict[str, Any] = {}
    try:
        for which, fn in (("before", old_kernel), ("after", new_fn)):  # warm-up: compile, layouts
            BACKEND.kernels[key] = fn
            run(program, x[:3], **kw)
        for _ in range(repeats):
            for which, fn in (("before", old_kernel), ("after", new_fn)):
                timed = Timed(fn)
                BACKEND.kernels[key] = timed
                c, w = time.process_time(), time.perf_counter()
                res = run(program, x, **kw)
                wall, cpu = time.perf_counter() - w, time.process_time() - c
                b = best[which]
                b["run_s"], b["run_cpu_s"] = min(b["run_s"], wall), min(b["run_cpu_s"], cpu)
                b["kernel_s"], b["kernel_cpu_s"] = min(b["kernel_s"], timed.wall), min(b["kernel_cpu_s"], timed.cpu)
                outs[which] = res
                del res
    finally:
        BACKEND.kernels[key] = new_fn
    a, b = outs["after"], outs["before"]
    ops = a.ops.per_sample_total()
    ops_b = b.ops.per_sample_total()
    return {
        **{f"{k}_before": v for k, v in best["before"].items()},
        **{f"{k}_after": v for k, v in best["after"].items()},
        "syn_ops": float(ops["syn_ops"].sum()),
        "counts_equal": all(np.array_equal(ops[k], ops_b[k]) for k in ops),
        "outputs_equal": same_result(a, b),
        "rate": float(len(a.spike_lists["out"]) / x[:, :1].size if kw else a.outputs["out"].mean()),
    }


FIXED_COST_CODE = r"""
import json, sys, time
import numba, numpy as np
sys.path.insert(0, {bench!r})
numba.set_num_threads(1)
from mlp_sparsity import build_program, make_weights
from spike.backends import run
import spike
program = build_program(make_weights())
x = np.zeros((100, 1, 784), np.float32)
for _ in range(30):
    run(program, x)
best, best_cpu = float("inf"), float("inf")
for _ in range({n}):
    t, c = time.perf_counter(), time.thread_time()
    run(program, x)
    best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.thread_time() - c)
print(json.dumps({{"fixed_cost_s": best, "fixed_cost_cpu_s": best_cpu, "spike": spike.__file__}}))
"""


def fixed_cost(src: str | None, n: int) -> dict[str, Any]:
    """The all-zero MLP run (module docstring) in a subprocess importing ``spike`` from ``src``
    (None: this checkout)."""
    env = dict(os.environ)
    root = src if src is not None else str(HERE.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", FIXED_COST_CODE.format(bench=str(HERE), n=n)], env=env,
                         capture_output=True, text=True, check=True, cwd=root)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 20k, T = 200, 2 repeats")
    ap.add_argument("--neurons", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--cases", nargs="+", default=["ff100", "ff1000", "brunel"])
    ap.add_argument("--weights", choices=("quantised", "float", "both"), default="quantised")
    ap.add_argument("--threads", type=int, default=1,
                    help="numba threads (the peers' comparison is one thread each; more: the sparse kernel "
                         "splits each sample's target blocks over them, reported apart)")
    ap.add_argument("--record", choices=("spikes", "dense"), default="spikes",
                    help="what a run returns of the LIF output: its spike list (default) or dense [T, B, n]")
    ap.add_argument("--fixed-runs", type=int, default=300, help="runs of the fixed-cost row (best kept)")
    ap.add_argument("--before-src", metavar="DIR", help="also time the fixed cost with spike from DIR")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)
    N = args.neurons or (20_000 if args.quick else 100_000)
    T = args.steps or (200 if args.quick else 1000)
    repeats = args.repeats or (2 if args.quick else 3)
    numba.set_num_threads(args.threads)
    kinds = ["quantised", "float"] if args.weights == "both" else [args.weights]

    x = poisson(N, T)
    rows = []
    for kind in kinds:
        for case in args.cases:
            if case == "brunel":
                program = brunel(N, 100, kind)
            else:
                program = feed_forward(N, int(case[2:]), kind)
            load = os.getloadavg()
            r = {"case": case, "weights": kind, "neurons": N, "steps": T, "threads": args.threads,
                 "record": args.record, **time_case(program, x, repeats, args.record),
                 "loadavg_before": list(load), "loadavg_after": list(os.getloadavg())}
            kt = "kernel_cpu_s" if args.threads == 1 else "kernel_s"  # the calling thread's CPU time, or wall
            r["kernel_speedup"] = r[f"{kt}_before"] / r[f"{kt}_after"]
            r["run_speedup"] = r["run_s_before"] / r["run_s_after"]
            r["run_cpu_speedup"] = r["run_cpu_s_before"] / r["run_cpu_s_after"]
            r["events_per_s_before"] = r["syn_ops"] / r[f"{kt}_before"]
            r["events_per_s_after"] = r["syn_ops"] / r[f"{kt}_after"]
            rows.append(r)
            print(f"{case:>7} {kind:>9}: run {r['run_s_before']:.3f} -> {r['run_s_after']:.3f} s wall "
                  f"(x{r['run_speedup']:.2f}), {r['run_cpu_s_before']:.3f} -> {r['run_cpu_s_after']:.3f} s CPU "
                  f"(x{r['run_cpu_speedup']:.2f}); sparse kernel {'CPU' if args.threads == 1 else 'wall'} "
                  f"{r[f'{kt}_before']:.3f} -> {r[f'{kt}_after']:.3f} s (x{r['kernel_speedup']:.2f}), events/s "
                  f"{r['events_per_s_before']:.3g} -> {r['events_per_s_after']:.3g}; rate {r['rate']:.4f}; "
                  f"equal {r['outputs_equal'] and r['counts_equal']}; load {load[0]:.2f}", flush=True)

    fixed: dict[str, float] = {}
    for which, src in (("before", args.before_src), ("after", None)) if args.before_src else (("after", None),):
        f = fixed_cost(src, args.fixed_runs)
        fixed[which], fixed[f"{which}_cpu"] = f["fixed_cost_s"], f["fixed_cost_cpu_s"]
    line = (f"fixed cost (MLP 784-2048-2048-10, T=100, batch 1, zero input): after {1e3 * fixed['after']:.3f} ms "
            f"wall, {1e3 * fixed['after_cpu']:.3f} ms CPU")
    if "before" in fixed:
        line += (f"; before {1e3 * fixed['before']:.3f} ms wall, {1e3 * fixed['before_cpu']:.3f} ms CPU "
                 f"(x{fixed['before'] / fixed['after']:.2f} wall, x{fixed['before_cpu'] / fixed['after_cpu']:.2f} CPU)")
    print(line + f"; load {os.getloadavg()[0]:.2f}")
    report = {
        "name": "sparse_projection",
        "threads": args.threads,
        "cases": rows,
        "fixed_cost": fixed,
        "loadavg": list(os.getloadavg()),
        "cpu": os.cpu_count(),
    }
    if args.json:
        from spike.train.checkpoint import atomic_write_json

        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
