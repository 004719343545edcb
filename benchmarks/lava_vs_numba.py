"""Lava (lava-nc 0.10, Loihi2SimCfg fixed_pt) vs our numba backend on one fixed-point program.

A 784-2048-2048-10 LIF MLP (li readout) is quantised to Loihi fixed point and given Loihi's
one-step synaptic delays (``compile`` for a Loihi target does both), then run on the same Bernoulli
input spikes, batch 1, by both backends through ``spike.backends.run``. Both must produce the same
spikes bit for bit (checked). Times are per simulated step of the run itself: numba after a warm-up
run (compile time reported separately), best of ``--repeats``; Lava from ``RunResult.timing``, best of
``--lava-repeats`` (``run_s``: the ``run`` calls, excluding building, compiling and starting
Lava's processes, which is reported as ``build_s``).

    python benchmarks/lava_vs_numba.py [--steps 100] [--rate 0.05] [--sizes 784 2048 2048 10] [--json out.json]

``--json PATH`` writes ``{"name": "lava_vs_numba", "ratio": <lava ms/step / numba ms/step>, ...}``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from spike.backends import run
from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.passes.delays import target_delays
from spike.compiler.ir.program import Program, ProgramBuilder
from spike.compiler.pipeline import FIXED_PIPELINE, run_passes
from spike.train.checkpoint import atomic_write_json

WEIGHT_GAIN = 2.0  # weight std times 1/sqrt(fan-in): hidden layers fire at a few percent at 5% input


def build_program(sizes: list[int], seed: int = 0) -> Program:
    rng = np.random.default_rng(seed)
    b = ProgramBuilder()
    prev = b.add("input", Input(shape=(sizes[0],), signal="spike"))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0.0, WEIGHT_GAIN / np.sqrt(n_in), size=(n_out, n_in)).astype(np.float32)
        prev = b.add(f"fc{i + 1}", Dense(shape=(n_out,), in_shape=(n_in,), weight=w), prev)
        last = i == len(sizes) - 2
        pop = (Population(shape=(n_out,), model="li", beta=np.float32(0.9)) if last else
               Population(shape=(n_out,), model="lif", beta=np.float32(0.9), threshold=np.float32(1.0),
                          reset="zero", reset_delay=False))
        prev = b.add(f"lif{i + 1}" if not last else "readout", pop, prev)
    b.add("output", Output(shape=(sizes[-1],)), prev)
    return target_delays(run_passes(b.build({"precision": "float32", "target": "loihi2"}), FIXED_PIPELINE), 1)  # latency 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[784, 2048, 2048, 10])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--rate", type=float, default=0.05, help="input spike probability per step")
    p.add_argument("--repeats", type=int, default=5, help="numba: best of this many runs")
    p.add_argument("--lava-repeats", type=int, default=3,
                   help="Lava: best of this many runs (each builds and starts its processes anew)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    program = build_program(args.sizes)
    x = (np.random.default_rng(1).random((args.steps, 1, args.sizes[0])) < args.rate).astype(np.float32)
    hidden = [n for n, node in program.nodes() if isinstance(node, Population) and node.model != "li"]

    t0 = time.perf_counter()
    warm = run(program, x[:2], backend="numba")
    numba_compile_s = time.perf_counter() - t0 - warm.timing["run_s"]
    numba_res = min((run(program, x, backend="numba", probes=hidden) for _ in range(args.repeats)),
                    key=lambda r: r.timing["run_s"])
    lava_res = min((run(program, x, backend="lava", probes=hidden) for _ in range(args.lava_repeats)),
                   key=lambda r: r.timing["run_s"])

    for name in hidden:
        np.testing.assert_array_equal(lava_res.probes[name], numba_res.probes[name], err_msg=name)
    np.testing.assert_array_equal(lava_res.output, numba_res.output)
    assert lava_res.ops.total() == numba_res.ops.total()

    nb_ms, lv_ms = numba_res.timing["ms_per_step"], lava_res.timing["ms_per_step"]
    rates = {n: float(numba_res.probes[n].mean()) for n in hidden}
    ratio = lv_ms / nb_ms
    print(f"network {'-'.join(map(str, args.sizes))} fixed point (Loihi), batch 1, {args.steps} steps, "
          f"input rate {args.rate:g}; hidden firing rates " + ", ".join(f"{n} {r:.3f}" for n, r in rates.items()))
    print(f"spikes, readout and op counts identical on both backends (syn_ops {numba_res.ops.total()['syn_ops']:.0f})")
    print(f"numba : {nb_ms:9.4f} ms/step   (first call incl. compile {numba_compile_s:.1f} s, excluded; best of {args.repeats})")
    print(f"lava  : {lv_ms:9.4f} ms/step   (building/starting {lava_res.timing['build_s']:.2f} s, not included; "
          f"best of {args.lava_repeats})")
    print(f"ratio lava/numba: {ratio:.1f}x   (cpus: {os.cpu_count()})")
    if args.json:
        result = {"name": "lava_vs_numba", "ratio": ratio, "lava_ms_per_step": lv_ms, "numba_ms_per_step": nb_ms,
                  "lava_build_s": lava_res.timing["build_s"], "sizes": args.sizes, "steps": args.steps,
                  "rate": args.rate, "batch": 1}
        atomic_write_json(args.json, result)
        print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
