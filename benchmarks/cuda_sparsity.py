"""Event-driven cuda backend vs dense PyTorch on the same GPU, on LIF MLPs at low input rates.

Networks 784-2048-2048-10 and 784-4096-4096-10 (LIF, subtract reset with snnTorch's reset delay,
beta 0.9, threshold 1; dyadic weights, so both contenders compute the same spikes), input rates
0.1%, 1%, 5% (Bernoulli), batch 1 and 64, T=100 steps. Contenders, timed on the same GPU:

- ours: ``spike.backends.run(program, x, backend="cuda")`` from a host array to host outputs
  (input upload, every kernel, counters and outputs copied back); also its ``run_s`` (the engine's
  timing: kernels, synchronised by the counters' copy-back, without the output download);
- dense: ``torch.nn.Linear`` layers + the LIF update in a Python step loop on ``torch.cuda``
  (TF32 off), from the same host array to host outputs; also its device-only time.

Warm-up runs are excluded (Numba's kernel compilation is reported separately); each time is the
best of ``--repeats`` runs, synchronised (``numba.cuda.synchronize``, ``torch.cuda.synchronize``).
Synaptic events/s = ``syn_ops`` counted by the cuda backend (all samples) / time; the dense
baseline is credited with the same events (it does ``dense_ops`` work for them).

    python benchmarks/cuda_sparsity.py [--json out.json] [--rates 0.001 0.01 0.05] [--batches 1 64]

Needs a CUDA GPU (numba-cuda and a CUDA build of torch); with ``NUMBA_ENABLE_CUDASIM=1`` and
tiny ``--sizes`` it runs anywhere as a smoke test (torch then on the CPU).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from spike.backends import run
from spike.train.checkpoint import atomic_write_json

from mlp_sparsity import BETA, THRESHOLD, build_program, make_input, make_weights  # the numba benchmark's network

NETWORKS = {"2048": (784, 2048, 2048, 10), "4096": (784, 4096, 4096, 10)}


def dense_torch(weights: list[np.ndarray], device: Any) -> Callable[[Any], Any]:
    """``nn.Linear`` + LIF (subtract reset, reset delay, as design §3) stepped in Python."""
    import torch

    fcs = []
    for w in weights:
        fc = torch.nn.Linear(w.shape[1], w.shape[0], bias=False).to(device)
        fc.weight.data = torch.from_numpy(w.copy()).to(device)
        fcs.append(fc)
    beta = torch.tensor(BETA, dtype=torch.float32, device=device)
    thr = torch.tensor(THRESHOLD, dtype=torch.float32, device=device)

    def forward(x: Any) -> Any:
        with torch.no_grad():
            T, B = x.shape[:2]
            v = [torch.zeros(B, fc.out_features, device=device) for fc in fcs]
            s = [torch.zeros(B, fc.out_features, device=device) for fc in fcs]
            out = torch.empty(T, B, fcs[-1].out_features, device=device)
            for t in range(T):
                h = x[t]
                for i, fc in enumerate(fcs):
                    v[i] = (beta * v[i] + fc(h)) - thr * s[i]
                    s[i] = (v[i] > thr).to(torch.float32)
                    h = s[i]
                out[t] = h
            return out

    return forward


def best_time(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> tuple[float, Any]:
    best, res = float("inf"), None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        res = fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best, res


def _versions() -> dict[str, str]:
    import numba
    import torch

    info = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "torch": torch.__version__}
    try:
        from importlib.metadata import version

        info["numba_cuda"] = version("numba-cuda")
    except Exception:
        info["numba_cuda"] = "built-in" if "numba_cuda" not in sys.modules else "?"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), help="keys of NETWORKS (2048, 4096)")
    ap.add_argument("--sizes", type=int, nargs="+", help="one custom network instead, e.g. 64 32 32 10")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.001, 0.01, 0.05])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args(argv)

    import torch
    from numba import cuda

    from spike.backends.cuda import kernels as cuda_kernels

    simulating = cuda_kernels.SIMULATING
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def sync_all() -> None:
        if not simulating:
            cuda.synchronize()
        if device.type == "cuda":
            torch.cuda.synchronize()

    nets = {"custom": tuple(args.sizes)} if args.sizes else {k: NETWORKS[k] for k in args.networks}
    info = _versions()
    print(f"cuda_sparsity: {info}; simulator={simulating}; torch device {device}", flush=True)
    rows = []
    compile_s = None
    for net_name, sizes in nets.items():
        weights = make_weights(sizes=sizes)
        program = build_program(weights)
        forward = dense_torch(weights, device)
        if compile_s is None:
            t = time.perf_counter()  # Numba CUDA kernel compilation + first run
            run(program, make_input(0.05, 2, 1, n_in=sizes[0]), backend="cuda")
            sync_all()
            compile_s = time.perf_counter() - t
        for B in args.batches:
            for rate in args.rates:
                x = make_input(rate, args.steps, B, n_in=sizes[0])
                run(program, x, backend="cuda")  # warm-up (allocations land in the pool)
                ours_s, res = best_time(lambda: run(program, x, backend="cuda"), args.repeats, sync_all)
                run_s = min(run(program, x, backend="cuda").timing["run_s"] for _ in range(args.repeats))

                def dense_e2e() -> np.ndarray:
                    return forward(torch.from_numpy(x).to(device)).cpu().numpy()

                dense_e2e()  # warm-up
                dense_s, dense_out = best_time(dense_e2e, args.repeats, sync_all)
                xd = torch.from_numpy(x).to(device)
                dense_dev_s, _ = best_time(lambda: forward(xd), args.repeats, sync_all)

                per_sample = res.ops.per_sample_total()
                syn_ops = float(per_sample["syn_ops"].sum())  # all samples of the batch
                row = {
                    "network": net_name,
                    "sizes": list(sizes),
                    "batch": B,
                    "rate": rate,
                    "cuda_s": ours_s,
                    "cuda_run_s": run_s,
                    "dense_s": dense_s,
                    "dense_device_s": dense_dev_s,
                    "ratio_dense": dense_s / ours_s,
                    "ratio_dense_device": dense_dev_s / run_s,
                    "syn_ops": syn_ops,
                    "dense_ops": float(per_sample["dense_ops"].sum()),
                    "events_per_s": syn_ops / ours_s,
                    "events_per_s_run": syn_ops / run_s,
                    "dense_events_per_s": syn_ops / dense_s,
                    "spikes": float(per_sample["spikes"].sum()),
                    "output_equal": bool(np.array_equal(res.output, dense_out)),
                }
                rows.append(row)
                print(
                    f"{net_name:>6} B={B:<3d} rate={rate:<6g} cuda {ours_s * 1e3:8.2f} ms (run {run_s * 1e3:8.2f}) "
                    f"dense {dense_s * 1e3:8.2f} ms (device {dense_dev_s * 1e3:8.2f}) ratio {row['ratio_dense']:6.2f} "
                    f"events/s {row['events_per_s']:9.3g} (run {row['events_per_s_run']:9.3g}) "
                    f"equal={row['output_equal']}",
                    flush=True,
                )
    report = {
        "name": "cuda_sparsity",
        "versions": info,
        "simulator": simulating,
        "torch_device": str(device),
        "steps": args.steps,
        "repeats": args.repeats,
        "compile_and_first_run_s": compile_s,
        "rows": rows,
        "roof_events_per_s": 4e11,  # H100, 3.35 TB/s at 8 bytes per event (reference.md)
    }
    if args.json:
        atomic_write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
