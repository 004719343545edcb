"""``spike export CHECKPOINT|PROGRAM.h5 --nir FILE``: a checkpoint or a compiled program to NIR."""
from __future__ import annotations

import argparse

from spike.cli.options import positive_float, refuse_overwriting
from spike.compiler.io.hdf5 import load_program
from spike.compiler.io.nir_export import save_nir, to_nir
from spike.workflows import compile_checkpoint


def add_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("checkpoint", help="a checkpoint from `spike train` or a program .h5")
    e.add_argument("--nir", required=True, help="output .nir file")
    e.add_argument("--dt", type=positive_float, default=None, help="time step written to the graph (default 1e-4)")


def run(args: argparse.Namespace) -> int:
    refuse_overwriting([args.checkpoint], {"--nir": args.nir})
    if args.checkpoint.endswith(".h5"):
        program = load_program(args.checkpoint)
    else:
        program = compile_checkpoint(args.checkpoint)
    save_nir(to_nir(program, dt=args.dt), args.nir)
    print(f"NIR graph ({len(program.graph)} IR nodes) -> {args.nir}")
    return 0
