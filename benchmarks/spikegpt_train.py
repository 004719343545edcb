"""SpikeGPT training throughput: fused WKV + fused LIF vs per-token Python loops, in one process.

For each preset, the same model (same weights, same batch, same threads) runs full training steps
(forward, L2Wrap loss, backward, gradient clipping, Adam step) twice:

* fused: the Numba WKV forward/backward (:mod:`spike.kernels.wkv`) and the fused multi-step LIF kernels;
* naive: WKV as a per-token loop of torch ops (autograd through it) and the LIF as a per-step
  loop of :func:`spike.neurons.lif_step` (what a straightforward PyTorch port does on CPU).

Reports training tokens per second and the ratio naive time / fused time (best step of each arm;
the two arms alternate step by step so that both see the same machine load). The 46m preset runs a
few steps at a short context (``--ctx-46m``) so that it finishes on a laptop CPU.

    python benchmarks/spikegpt_train.py [--threads 2] [--steps 5] [--json out.json]

``--json`` writes ``{"name": "spikegpt_train", "ratio": <tiny naive/fused>, ...}``.
"""

from __future__ import annotations

import argparse
import time

import torch

from spike.train.checkpoint import atomic_write_json


def _step(model, opt, x, y) -> float:
    from spike.models.spikegpt.model import lm_loss

    t0 = time.perf_counter()
    loss = lm_loss(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def bench(size: str, ctx: int, batch: int, steps: int, warmup: int, vocab: int = 205) -> dict:
    """Fused and naive steps alternate (same model, same batch), so that both see the same load
    on a shared machine; each arm's best step time counts (the median is reported too)."""
    from spike.models.spikegpt.train import clipped_adam
    from spike.models.spikegpt.model import build_spikegpt

    torch.manual_seed(0)
    model = build_spikegpt(size, vocab_size=vocab, ctx_len=ctx)
    opt = clipped_adam(model.parameters(), 1e-7)  # the training optimizer (Adam + clipping)
    idx = torch.randint(0, vocab, (batch, ctx + 1), generator=torch.Generator().manual_seed(1))
    x, y = idx[:, :-1], idx[:, 1:]
    times: dict[str, list[float]] = {"fused": [], "loop": []}
    for i in range(warmup + steps):
        for arm in ("fused", "loop"):
            model.set_kernels(wkv=arm, lif=arm)
            dt = _step(model, opt, x, y)
            if i >= warmup:
                times[arm].append(dt)
    t_fused, t_naive = min(times["fused"]), min(times["loop"])
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    tokens = batch * ctx
    return {"size": size, "ctx_len": ctx, "batch": batch, "params": model.num_params(),
            "fused_s_per_step": t_fused, "naive_s_per_step": t_naive,
            "fused_tok_per_s": tokens / t_fused, "naive_tok_per_s": tokens / t_naive,
            "fused_median_s": med["fused"], "naive_median_s": med["loop"],
            "ratio": t_naive / t_fused, "ratio_median": med["loop"] / med["fused"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch and numba threads")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (tiny)")
    ap.add_argument("--batch", type=int, default=8, help="tiny batch (its training default)")
    ap.add_argument("--ctx", type=int, default=128, help="tiny context")
    ap.add_argument("--ctx-46m", type=int, default=64)
    ap.add_argument("--batch-46m", type=int, default=2)
    ap.add_argument("--steps-46m", type=int, default=2)
    ap.add_argument("--skip-46m", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        import numba

        torch.set_num_threads(args.threads)
        numba.set_num_threads(args.threads)
    import numba

    print(f"threads: torch {torch.get_num_threads()}, numba {numba.get_num_threads()}")
    results = {"name": "spikegpt_train"}
    runs = [("tiny", args.ctx, args.batch, args.steps, 2)]
    if not args.skip_46m:
        runs.append(("46m", args.ctx_46m, args.batch_46m, args.steps_46m, 1))
    for size, ctx, batch, steps, warm in runs:
        r = bench(size, ctx, batch, steps, warm)
        results[size] = r
        print(f"{size:>5} ({r['params'] / 1e6:.1f}M params, batch {batch} x ctx {ctx}): "
              f"fused {r['fused_tok_per_s']:8.0f} tok/s ({r['fused_s_per_step'] * 1e3:.0f} ms/step), "
              f"naive {r['naive_tok_per_s']:8.0f} tok/s ({r['naive_s_per_step'] * 1e3:.0f} ms/step), "
              f"naive/fused {r['ratio']:.2f}x (medians: {r['ratio_median']:.2f}x)")
    results["ratio"] = results["tiny"]["ratio"]
    if "46m" in results:
        results["ratio_46m"] = results["46m"]["ratio"]
    if args.json:
        atomic_write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
