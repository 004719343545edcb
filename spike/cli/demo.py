"""``spike demo`` (``make demo``): train -> compile -> run on built-in data (:func:`spike.demo.run_demo`)."""
from __future__ import annotations

import argparse

from spike.cli.options import non_negative_int, positive_int
from spike.demo import QUICK, run_demo


def add_arguments(d: argparse.ArgumentParser) -> None:
    d.add_argument("--out-dir", default="runs/demo", help="folder for checkpoints, programs, reports and plots")
    d.add_argument("--epochs", type=positive_int, default=None,
                   help=f"training epochs of each model (default: 15 for the MLP; {QUICK['baseline_epochs']} for the "
                        f"FTWT part's CNN, {QUICK['ftwt_epochs']} for its mask heads)")
    d.add_argument("--lava-samples", type=non_negative_int, default=8, help="test samples also run on Lava")
    d.add_argument("--no-ftwt", action="store_true", help="skip the FTWT CNN part")
    d.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    run_demo(args.out_dir, epochs=args.epochs, lava_samples=args.lava_samples, ftwt=not args.no_ftwt,
             progress=not args.quiet)
    return 0
