"""The ``spike`` command line: train, eval, generate, compile, export, run, demo.

Argument parsing only: each command is a module of this package (:data:`COMMANDS`) with
``add_arguments(parser)`` and ``run(args) -> exit code``; it calls :mod:`spike.workflows` (or a
model family's module) and prints. A command's module is imported only when that command runs, so
``spike --help`` loads none of them. ``python -m spike.cli ...`` (and ``torchrun ... -m spike.cli
train spikegpt ...``) runs :func:`main` too.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from spike import __version__

__all__ = ["COMMANDS", "HelpFormatter", "main", "parser"]

#: command -> its one-line help; the command's module is ``spike.cli.<command>``.
COMMANDS = {
    "train": "train a model",
    "eval": "score a SpikeGPT checkpoint: BPC or perplexity",
    "generate": "sample text from a SpikeGPT checkpoint (RNN mode)",
    "compile": "compile a checkpoint or a NIR graph to an IR program (HDF5)",
    "export": "export a checkpoint or a compiled program to NIR",
    "run": "run a compiled program on a dataset's (or a SpikeGPT's corpus's) test split",
    "demo": "train -> compile -> run on built-in data",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` for options that have a real default (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first positional argument), if it is one of :data:`COMMANDS`."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; the subparser of ``command`` gets its module's arguments."""
    p = argparse.ArgumentParser(prog="spike", description="Spiking-network simulator and compiler.")
    p.add_argument("--version", action="version", version=f"spike {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        s = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if name == command:
            module = importlib.import_module(f"spike.cli.{name}")
            module.add_arguments(s)
            s.set_defaults(fn=module.run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(_command_of(argv)).parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"spike {args.command}: error: {exc}", file=sys.stderr)
        return 2
