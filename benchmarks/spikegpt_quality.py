"""SpikeGPT quality check: the tiny preset vs the same-size non-spiking RWKV, equal time budgets.

Trains ``spike train spikegpt --size tiny`` twice on the built-in corpus (Python's documentation
topics), once with spikes and once with ``--no-spikes``, each for ``--minutes`` of wall-clock time
(cosine learning rate over the budget), then scores both on the test split. The issue's goal, with
the full budget (10 minutes each on 2 CPU cores): the spiking model's test BPC within 15% of the
baseline's, and well below the corpus's unigram entropy (printed).

    python benchmarks/spikegpt_quality.py [--minutes 10] [--threads 2] [--out-dir runs/gpt_quality]

By default the two runs are sequential, each with ``--threads``. On a machine shared with other
work, the load can change between them (one run then gets far more steps than the other: the
steps are printed); ``--concurrent`` runs both at once with half the threads each, so that both
see the same machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spike.cli import parser
from spike.cli.train import spikegpt_options
from spike.models.spikegpt.train import train_spikegpt
from spike.train.checkpoint import atomic_write_json


def _train(argv_t):
    """``spike train spikegpt`` with the options ``argv_t``; returns the figures the benchmark compares."""
    r = train_spikegpt(**spikegpt_options(parser("train").parse_args(["train", "spikegpt", *argv_t])))
    return {"test_bpc": r["test"]["bits"], "steps": r["steps"], "unigram_bits": r["unigram_bits"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="budget per model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--data", default=None, help="text file (default: built-in corpus)")
    ap.add_argument("--out-dir", default="runs/gpt_quality")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--concurrent", action="store_true",
                    help="train both at once, each with half of --threads")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = max(1, args.threads // 2) if args.concurrent else args.threads
    jobs = {}
    for name, flags in (("spiking", []), ("no_spikes", ["--no-spikes"])):
        argv_t = ["--size", args.size, "--out", str(out / f"{name}.pt"), "--minutes", str(args.minutes),
                  "--threads", str(threads), "--seed", str(args.seed), *flags]
        if args.batch_size:
            argv_t += ["--batch-size", str(args.batch_size)]
        if args.data:
            argv_t += ["--data", args.data]
        if args.quiet or args.concurrent:
            argv_t += ["--quiet"]
        print(f"== {name}: spike train spikegpt {' '.join(argv_t)}", flush=True)
        jobs[name] = argv_t
    if args.concurrent:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(2) as pool:
            res = pool.map(_train, list(jobs.values()))
        results = dict(zip(jobs, res))
    else:
        results = {name: _train(argv_t) for name, argv_t in jobs.items()}
    s, b = results["spiking"]["test_bpc"], results["no_spikes"]["test_bpc"]
    uni = results["spiking"]["unigram_bits"]
    ratio = s / b
    summary = {"name": "spikegpt_quality", "minutes": args.minutes, "spiking_bpc": s,
               "no_spikes_bpc": b, "ratio": ratio, "unigram_bits": uni,
               "spiking_steps": results["spiking"]["steps"],
               "no_spikes_steps": results["no_spikes"]["steps"],
               "within_15pct": ratio <= 1.15, "below_unigram": s < uni}
    print(f"test BPC: spiking {s:.4f} ({summary['spiking_steps']} steps), no spikes {b:.4f} "
          f"({summary['no_spikes_steps']} steps): ratio {ratio:.3f} (goal <= 1.15); "
          f"unigram entropy {uni:.3f} bits/char")
    if args.json:
        atomic_write_json(args.json, summary)
    return summary


if __name__ == "__main__":
    main()
