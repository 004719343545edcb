"""``spike compile CHECKPOINT --out PROGRAM.h5``: a checkpoint (SpikeGPT included) or a NIR graph to an IR program."""
from __future__ import annotations

import argparse

from spike.cli.options import add_target, positive_float, refuse_overwriting
from spike.compiler.io.hdf5 import save_program
from spike.compiler.mapping.report import mapping_report
from spike.models.spikegpt.checkpoint import is_lm_checkpoint
from spike.workflows import compile_checkpoint, compile_lm, compile_nir, delays_line


def add_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("checkpoint", help="a checkpoint from `spike train` (SpikeGPT included), or a .nir graph")
    c.add_argument("--dt", type=positive_float, default=None,
                   help="NIR import: time step in seconds (default: the graph's dt metadata, else 1e-4)")
    c.add_argument("--reset", default=None, choices=["subtract", "zero", "none"],
                   help="NIR import: reset mode when the graph's metadata has none (default zero)")
    c.add_argument("--reset-delay", default=None, choices=["yes", "no"],
                   help="NIR import: reset one step after the spike (yes, snnTorch's; the default) or in the "
                        "step it fires (no: NIR's, Norse's, Loihi's) for neurons whose metadata does not say")
    add_target(c, "generic", "the hardware the program is compiled for")
    c.add_argument("--precision", default="float32", choices=["float32", "float64", "fixed"],
                   help="float64: the same update in double (as NEST and Brian2; the numba backend runs it); "
                        "fixed: Loihi's fixed point (a target with cores)")
    c.add_argument("--target-delays", default="balanced", choices=["balanced", "raw"],
                   help="on a target whose synapses deliver late (Loihi): balanced keeps the trained "
                        "network, with outputs some steps late; raw uses the plain target delays (a different network)")
    c.add_argument("--data-root", default=None,
                   help="folder with the MNIST/CIFAR-10 files of a checkpoint trained on them (input shape, calibration)")
    c.add_argument("--out", required=True, help="program file to write (HDF5)")


def run(args: argparse.Namespace) -> int:
    refuse_overwriting([args.checkpoint], {"--out": args.out})
    if args.checkpoint.endswith(".nir"):
        reset_delay = None if args.reset_delay is None else args.reset_delay == "yes"
        program = compile_nir(args.checkpoint, args.target, args.precision, args.dt, args.reset, args.target_delays,
                              reset_delay)
    elif is_lm_checkpoint(args.checkpoint):
        program = compile_lm(args.checkpoint, args.target, args.precision)
    else:
        program = compile_checkpoint(args.checkpoint, args.target, args.precision, target_delays=args.target_delays,
                                     data_root=args.data_root)
    save_program(program, args.out)
    print(program.summary())
    if program.metadata.get("mapping"):
        print(mapping_report(program).render())
    line = delays_line(program)
    if line:
        print(line)
    print(f"-> {args.out}")
    return 0
