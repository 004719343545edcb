"""Argument types and shared options of the ``spike`` commands: numbers checked before any work
starts, ``--target`` and ``--backend`` with their choices listed."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from spike.backends.registry import backend_names
from spike.hardware import target_names


def _number(kind: Callable, low: float, inclusive: bool, what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (value >= low if inclusive else value > low) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _number(int, 0, False, "an integer > 0")
non_negative_int = _number(int, 0, True, "an integer >= 0")
positive_float = _number(float, 0.0, False, "a finite number > 0")
non_negative_float = _number(float, 0.0, True, "a finite number >= 0")


def probability(text: str) -> float:
    """A number in (0, 1]."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def target(text: str) -> str:
    """A built-in target's name or the path of a target YAML file."""
    if text in target_names() or Path(text).is_file():
        return text
    raise argparse.ArgumentTypeError(
        f"expected one of {', '.join(target_names())} or a target YAML file, got {text!r}")


def add_target(p: argparse.ArgumentParser, default: str | None, help_text: str) -> None:
    p.add_argument("--target", type=target, default=default, metavar="{" + ",".join(target_names()) + "}|FILE.yaml",
                   help=help_text)


def add_backend(p: argparse.ArgumentParser, default: str = "numba") -> None:
    p.add_argument("--backend", default=default, choices=backend_names(), help="backend that runs the program")


def _same_file(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def _writable_file_path(option: str, path: str) -> None:
    """A ValueError when ``path`` cannot become a file: an existing folder, or a parent that is a
    file or a folder this process may not write in."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file path")
    parent = next((p for p in target.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot write in {parent} (permission denied)")


def refuse_overwriting(inputs: Sequence[str | None], outputs: Mapping[str, str | None]) -> None:
    """A ValueError, before any work, when an output option names an input file (writing it would
    destroy the input), the file of another output option, a folder, or a place that cannot be
    written."""
    given = [(opt, path) for opt, path in outputs.items() if path is not None]
    for i, (opt, path) in enumerate(given):
        _writable_file_path(opt, path)
        for source in (p for p in inputs if p is not None):
            if _same_file(path, source):
                raise ValueError(f"{opt} {path}: that is the input file; writing it would destroy the input "
                                 "(choose another path)")
        for other, other_path in given[:i]:
            if _same_file(path, other_path):
                raise ValueError(f"{opt} {path}: {other} writes the same file (choose another path)")
