"""``spike generate CHECKPOINT --prompt TEXT --tokens N [--temperature T --top-p P]``: sample from a SpikeGPT."""
from __future__ import annotations

import argparse

from spike.cli.eval import add_reference_options, load_options
from spike.models.spikegpt.checkpoint import generate_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="from `spike train spikegpt`, or a reference .pth")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    add_reference_options(p)


def run(args: argparse.Namespace) -> int:
    text = generate_text(args.checkpoint, args.prompt, args.tokens, args.temperature, args.top_p,
                         args.seed, **load_options(args))
    print(args.prompt + text)
    return 0
