"""The ``spike`` command line: train, eval, generate, compile, export, run, table, demo.

Argument parsing only: each command is a module of this package (:data:`COMMANDS`) with
``add_arguments(parser)`` and ``run(args) -> exit code``; it calls :mod:`spike.workflows` (or a
model family's module) and prints. A command's module is imported only when that command runs, so
``spike --help`` loads none of them. ``python -m spike.cli ...`` (and ``torchrun ... -m spike.cli
train spikegpt ...``) runs :func:`main` too.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence, TextIO

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
    "table": "the reports of several runs (a sweep) as one table",
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
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        s = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if name == command:
            module = importlib.import_module(f"spike.cli.{name}")
            module.add_arguments(s)
            s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="show the traceback of an error")
            s.set_defaults(fn=module.run)
    return p


class _PipeSafeStream:
    """A text stream whose reader may go away (``spike run ... | head``): the first
    ``BrokenPipeError`` switches it to discarding, so the command still finishes its files."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self.closed_by_reader = stream, False

    def write(self, text: str) -> int:
        if not self.closed_by_reader:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._discard()
        return len(text)

    def flush(self) -> None:
        if not self.closed_by_reader:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._discard()

    def _discard(self) -> None:
        self.closed_by_reader = True
        try:  # the interpreter's final flush of the real stream goes nowhere instead of failing
            fd = self._stream.fileno()
        except (OSError, ValueError):
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def error_message(exc: BaseException) -> str:
    """One line for an expected failure: an ``OSError`` as ``PATH: what happened``."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, MemoryError):
        return f"out of memory{': ' + str(exc) if str(exc) else ''} (use a smaller batch, model or input)"
    lines = [line.strip() for line in (str(exc) or type(exc).__name__).splitlines()]
    return "; ".join(line for line in lines if line)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Expected failures (bad input, missing or unwritable files, a full disk, no
    memory) print one line ``spike CMD: error: ...`` and return 2; ``--debug`` shows the traceback.
    Output to a closed pipe is dropped while the command finishes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(_command_of(argv)).parse_args(argv)
    stdout = sys.stdout
    sys.stdout = _PipeSafeStream(stdout)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, OSError, RuntimeError, MemoryError) as exc:
        if args.debug:
            raise
        print(f"spike {args.command}: error: {error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"spike {args.command}: interrupted (files are written whole or not at all)", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout
