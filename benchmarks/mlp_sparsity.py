"""Event-driven numba backend vs dense snnTorch inference on a 784-2048-2048-10 LIF MLP.

Same weights (dyadic, so every backend computes the same spikes bit for bit) and the same Bernoulli
input for every contender, at input rates 1%, 5% and 20%; T=100 steps, batch 8, one thread each.
Contenders: (a) our numba backend through ``spike.backends.run``, (b) snnTorch (``nn.Linear`` +
``snntorch.Leaky(beta=0.9)`` stepped in a Python loop under ``torch.no_grad``), (c) our torch
backend (dense reference). A warm-up run of each is excluded (numba compile time is reported
separately); each time is the best of ``--repeats`` runs.

    python benchmarks/mlp_sparsity.py [--rates 0.01 0.05 0.2] [--json out.json]

Synaptic events/s = ``syn_ops`` counted by the numba backend (all samples) / numba run time.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable

import numba
import numpy as np
import torch

from spike.backends import run
from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.ir.program import Program, ProgramBuilder
from spike.train.checkpoint import atomic_write_json

SIZES = (784, 2048, 2048, 10)
BETA, THRESHOLD = 0.9, 1.0
# weight std per layer, times 1/sqrt(fan-in): hidden layers fire at a few percent at 5% input
WEIGHT_GAIN = (1.5, 2.0, 3.0)
QUANT = 2.0 ** -8  # dyadic weights: exact float sums, identical spikes in every backend


def make_weights(seed: int = 0, sizes: tuple[int, ...] = SIZES) -> list[np.ndarray]:
    """Dyadic weights of a ``sizes`` MLP, std ``WEIGHT_GAIN / sqrt(fan-in)`` per layer."""
    rng = np.random.default_rng(seed)
    ws = []
    for n_in, n_out, g in zip(sizes[:-1], sizes[1:], WEIGHT_GAIN):
        w = rng.normal(0.0, g / np.sqrt(n_in), size=(n_out, n_in))
        ws.append((np.round(w / QUANT) * QUANT).astype(np.float32))
    return ws


def make_input(rate: float, T: int, B: int, seed: int = 1, n_in: int = SIZES[0]) -> np.ndarray:
    """Bernoulli input spikes ``[T, B, n_in]`` at ``rate``."""
    rng = np.random.default_rng(seed)
    return (rng.random((T, B, n_in)) < rate).astype(np.float32)


def build_program(weights: list[np.ndarray]) -> Program:
    """Input spikes -> (Dense -> LIF) per weight matrix -> Output."""
    b = ProgramBuilder()
    prev = b.add("input", Input(shape=(weights[0].shape[1],), signal="spike"))
    for i, w in enumerate(weights):
        n_out, n_in = w.shape
        fc = b.add(f"fc{i + 1}", Dense(shape=(n_out,), in_shape=(n_in,), weight=w), prev)
        prev = b.add(
            f"lif{i + 1}",
            Population(
                shape=(n_out,),
                model="lif",
                beta=np.full(n_out, BETA, np.float32),
                threshold=np.full(n_out, THRESHOLD, np.float32),
                reset="subtract",
                reset_delay=True,
            ),
            fc,
        )
    b.add("output", Output(shape=(weights[-1].shape[0],)), prev)
    return b.build()


def snntorch_net(weights: list[np.ndarray]) -> Callable[[torch.Tensor], tuple[torch.Tensor, list[torch.Tensor]]]:
    import snntorch as snn

    fcs, lifs = [], []
    for w in weights:
        fc = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        fc.weight.data = torch.from_numpy(w.copy())
        fcs.append(fc)
        lifs.append(snn.Leaky(beta=BETA, threshold=THRESHOLD))

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.no_grad():
            mems = [lif.reset_mem() for lif in lifs]
            recs: list[list[torch.Tensor]] = [[] for _ in lifs]
            for t in range(x.shape[0]):
                h = x[t]
                for i, (fc, lif) in enumerate(zip(fcs, lifs)):
                    h, mems[i] = lif(fc(h), mems[i])
                    recs[i].append(h)
            hidden = [torch.stack(r) for r in recs]
            return hidden[-1], hidden

    return forward


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, res = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
    return best, res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-torch-backend", action="store_true", help="skip our torch backend")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    weights = make_weights()
    program = build_program(weights)
    probes = ["lif1", "lif2"]
    snn_forward = snntorch_net(weights)

    t = time.perf_counter()  # numba compile (or cache load) + first run
    run(program, make_input(0.05, 2, 1), backend="numba")
    compile_s = time.perf_counter() - t

    torch_backend_ok = not args.no_torch_backend
    if torch_backend_ok:
        try:
            run(program, make_input(0.05, 2, 1), backend="torch")
        except Exception as e:  # the torch backend may not exist yet
            print(f"torch backend unavailable: {e}", file=sys.stderr)
            torch_backend_ok = False

    rows = []
    for rate in args.rates:
        x = make_input(rate, args.steps, args.batch)
        xt = torch.from_numpy(x)
        run(program, x, backend="numba", probes=probes)  # warm-up
        nb_s, res = best_time(lambda: run(program, x, backend="numba", probes=probes), args.repeats)
        snn_forward(xt)  # warm-up
        sn_s, (sn_out, sn_hidden) = best_time(lambda: snn_forward(xt), args.repeats)

        ours = [res.probes["lif1"], res.probes["lif2"], res.output]
        mismatches = sum(int(np.count_nonzero(a != b.numpy())) for a, b in zip(ours, sn_hidden))
        if mismatches:
            print(f"WARNING: rate {rate}: {mismatches} spikes differ between numba and snnTorch", file=sys.stderr)

        per_sample = res.ops.per_sample_total()
        syn_ops = float(per_sample["syn_ops"].sum())  # all samples of the batch
        row = {
            "rate": rate,
            "numba_s": nb_s,
            "snntorch_s": sn_s,
            "ratio_snntorch": sn_s / nb_s,
            "syn_ops": syn_ops,
            "events_per_s": syn_ops / nb_s,
            "dense_ops": float(per_sample["dense_ops"].sum()),
            "hidden_rates": [float(a.mean()) for a in ours],
            "spike_mismatches": mismatches,
        }
        if torch_backend_ok:
            run(program, x, backend="torch")  # warm-up
            tb_s, tres = best_time(lambda: run(program, x, backend="torch"), args.repeats)
            row["torch_backend_s"] = tb_s
            row["ratio_torch_backend"] = tb_s / nb_s
            row["torch_backend_equal"] = bool(np.array_equal(tres.output, res.output))
        rows.append(row)

    print(f"784-2048-2048-10 LIF MLP, T={args.steps}, batch {args.batch}, one thread; "
          f"numba compile/cache load + first run {compile_s:.2f} s")
    head = f"{'rate':>6} {'rates l1/l2/out':>18} {'numba s':>9} {'snnTorch s':>10} {'ratio':>7} " \
           f"{'torch-be s':>10} {'ratio':>7} {'events/s':>10} {'mismatch':>8}"
    print(head)
    for r in rows:
        hr = "/".join(f"{h:.3f}" for h in r["hidden_rates"])
        tb = f"{r['torch_backend_s']:10.3f} {r['ratio_torch_backend']:7.1f}" if "torch_backend_s" in r else f"{'-':>10} {'-':>7}"
        print(f"{r['rate']:6.2f} {hr:>18} {r['numba_s']:9.4f} {r['snntorch_s']:10.3f} "
              f"{r['ratio_snntorch']:7.1f} {tb} {r['events_per_s']:10.3g} {r['spike_mismatches']:8d}")

    def at(rate: float) -> dict[str, Any] | None:
        return next((r for r in rows if abs(r["rate"] - rate) < 1e-12), None)

    ref = at(0.05) or rows[0]
    report = {
        "name": "mlp_sparsity",
        "ratio": ref["ratio_snntorch"],
        "events_per_s": ref["events_per_s"],
        "network": list(SIZES),
        "steps": args.steps,
        "batch": args.batch,
        "threads": 1,
        "compile_s": compile_s,
        "torch_backend": torch_backend_ok,
        "per_rate": rows,
        "goals": {"ratio_at_5pct": 6.0, "ratio_at_1pct": 20.0, "events_per_s": 3e9},
    }
    if args.json:
        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
