"""``spike run PROGRAM.h5``: run a compiled program on a dataset's test split (or a SpikeGPT on a
corpus's), print accuracy, operation counts and energy; ``--json`` (docs/report.schema.json),
``--plot`` (energy and firing rate), ``--raster`` and ``--membranes`` (the first test sample).

Under ``torchrun --nproc_per_node N spike run ...`` each rank reads and runs a shard of the test
samples (:func:`spike.workflows.evaluate_program`), or of a SpikeGPT's ``--segments``
(:func:`spike.workflows.run_lm_program`), and rank 0 prints and writes the report, which equals
the one-process report but for ``timing`` and its ``distributed`` section."""
from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from spike.cli.options import add_backend, add_target, positive_int, refuse_overwriting
from spike.compiler.io.hdf5 import load_program
from spike.plots import membrane_figure, plot_report, raster_figure, save_figure, spikegpt_figure
from spike.train.checkpoint import atomic_write_json
from spike.train import distributed as dist_utils
from spike.train.datasets import DATASETS, open_test_split
from spike.workflows import (delays_line, evaluate_program, lm_run_report, probe_populations, run_lm_program,
                             target_energy)


def add_arguments(r: argparse.ArgumentParser) -> None:
    r.add_argument("program", help="a program file from `spike compile`")
    add_backend(r)
    r.add_argument("--dataset", default=None, choices=DATASETS,
                   help="dataset whose test split is run (default: the program's)")
    r.add_argument("--data-root", default=None, help="folder with the MNIST/CIFAR-10 files")
    r.add_argument("--steps", type=positive_int, default=None, help="time steps per sample (default: as trained)")
    r.add_argument("--limit", type=positive_int, default=None, help="only the first N test samples")
    r.add_argument("--batch-size", type=positive_int, default=64, help="samples per run")
    r.add_argument("--json", default=None, help="write the report here")
    add_target(r, None, "energy figures from this target (default: the program's; cmos45nm_fp32 for SpikeGPT)")
    r.add_argument("--plot", default=None, help="PNG with firing rate and energy per layer")
    r.add_argument("--raster", default=None, metavar="PNG", help="spike raster of every population, first test sample")
    r.add_argument("--membranes", default=None, metavar="PNG",
                   help="membrane traces of the first neurons of every population, first test sample")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--data", default=None, help="SpikeGPT: text file whose test split is run (default: built-in corpus)")
    r.add_argument("--tokens", type=positive_int, default=512, help="SpikeGPT: tokens to run")
    r.add_argument("--tokenizer", default=None, help="SpikeGPT: tokenizer JSON when the program does not carry it")
    r.add_argument("--segments", type=positive_int, default=1,
                   help="SpikeGPT: cut the tokens into this many contiguous segments, each run from a fresh state "
                        "(under torchrun, segments are shared among the processes; at least one each)")


def run(args: argparse.Namespace) -> int:
    refuse_overwriting([args.program, args.data, args.tokenizer],
                       {"--json": args.json, "--plot": args.plot, "--raster": args.raster, "--membranes": args.membranes})
    program = load_program(args.program)
    sharded = dist_utils.init_distributed("gloo")
    try:
        if program.metadata.get("model") == "spikegpt":
            return _run_lm(program, args)
        if args.segments != 1:
            raise ValueError("--segments: for SpikeGPT programs only (a classifier's test samples are sharded "
                             "as they are)")
        return _run_classifier(program, args)
    finally:
        if sharded:
            dist_utils.cleanup_distributed()


def _run_classifier(program: Any, args: argparse.Namespace) -> int:
    """The accuracy, counts and energy of a classifier's program; files written by rank 0 only."""
    if not program.inputs:
        raise ValueError(f"{args.program}: the program has no Input node (its spikes come from generated sources "
                         "and biases), so there is no test split to run; run it from Python: "
                         "spike.models.random_net.simulate(program, steps=T) or spike.backends.run(program, steps=T, "
                         "batch=B, record=...)")
    dataset = args.dataset or program.metadata.get("dataset")
    if not dataset:
        raise ValueError(f"{args.program}: --dataset is needed (the program does not name one)")
    split = open_test_split(dataset, args.data_root, limit=args.limit)  # each rank reads its own samples only
    report = evaluate_program(program, split, backend=args.backend, steps=args.steps,
                              batch_size=args.batch_size, progress=not args.quiet and dist_utils.is_main_process())
    if not dist_utils.is_main_process():
        return 0
    shards = "" if report.distributed is None else f", {report.distributed['world_size']} processes"
    print(f"accuracy {100 * report.accuracy:.2f}% on {report.num_samples} {dataset} test samples, "
          f"{report.steps} steps, backend {args.backend} ({report.timing['ms_per_sample']:.2f} ms/sample{shards})")
    line = delays_line(program)
    if line:
        print(line)
    print(report.table())
    target = args.target or program.metadata.get("target", "generic")
    energy = target_energy(report, program, target)
    if energy is not None:
        print(energy.table())
    result = report.to_run_report(dataset, energy, program_path=args.program)
    if args.json:
        atomic_write_json(args.json, result)
        print(f"report -> {args.json}")
    if args.plot:
        if energy is None:
            raise ValueError(f"--plot needs a target with energy figures; {target!r} has none")
        plot_report(result, args.plot)
        print(f"plot -> {args.plot}")
    if args.raster or args.membranes:
        spikes, membranes = probe_populations(program, split.read(0, 1)[0], backend=args.backend, steps=args.steps)
        if args.raster:
            print(f"raster -> {save_figure(raster_figure(spikes), args.raster)}")
        if args.membranes:
            thresholds = {p: float(np.mean(program.node(p).threshold)) for p in membranes
                          if program.node(p).threshold is not None}
            print(f"membranes -> {save_figure(membrane_figure(membranes, thresholds), args.membranes)}")
    return 0


def _run_lm(program: Any, args: argparse.Namespace) -> int:
    """``spike run`` of a compiled SpikeGPT: firing rates, counts and energy three ways; files
    written by rank 0 only."""
    if args.raster or args.membranes:
        raise ValueError("--raster/--membranes: not for SpikeGPT programs (their firing rates per block are in "
                         "the table and the --json report)")
    target = args.target or "cmos45nm_fp32"
    lm = run_lm_program(program, backend=args.backend, data=args.data, tokens=args.tokens, tokenizer=args.tokenizer,
                        target=target, progress=not args.quiet and dist_utils.is_main_process(),
                        segments=args.segments)
    if not dist_utils.is_main_process():
        return 0
    report = lm.report
    how = "" if len(lm.segments) == 1 else f", {len(lm.segments)} segments"
    how += "" if lm.distributed is None else f", {lm.distributed['world_size']} processes"
    print(f"backend {args.backend}: {lm.result.timing['ms_per_step']:.2f} ms per token{how}")
    print(report.table())
    if args.json:
        atomic_write_json(args.json, lm_run_report(program, lm, program_path=args.program,
                                                   source=args.data or "built-in corpus"))
        print(f"report -> {args.json}")
    if args.plot:  # firing rate, counts and energy per block, per token as in the table
        print(f"plot -> {save_figure(spikegpt_figure(report), args.plot)}")
    return 0
