"""``spike generate CHECKPOINT --prompt TEXT --tokens N [--temperature T --top-p P]``: sample from a SpikeGPT."""
from __future__ import annotations

import argparse

from spike.cli.eval import add_reference_options, load_options
from spike.cli.options import non_negative_float, positive_int, probability
from spike.models.spikegpt.checkpoint import generate_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="from `spike train spikegpt`, or a reference .pth")
    p.add_argument("--prompt", default="\n", help="text the model continues")
    p.add_argument("--tokens", type=positive_int, default=200, help="tokens to sample")
    p.add_argument("--temperature", type=non_negative_float, default=1.0, help="0: greedy")
    p.add_argument("--top-p", type=probability, default=0.9, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_reference_options(p)


def run(args: argparse.Namespace) -> int:
    text = generate_text(args.checkpoint, args.prompt, args.tokens, args.temperature, args.top_p,
                         args.seed, **load_options(args))
    print(args.prompt + text)
    return 0
