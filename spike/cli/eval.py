"""``spike eval CHECKPOINT [--data FILE]``: test BPC (characters) or perplexity (tokens) of a SpikeGPT."""
from __future__ import annotations

import argparse
from typing import Any

import torch

from spike.cli.options import positive_int
from spike.models.spikegpt.checkpoint import eval_checkpoint
from spike.train.checkpoint import atomic_write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="from `spike train spikegpt`, or a reference .pth")
    p.add_argument("--data", default=None, help="text file (default: the data it was trained on)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split scored")
    p.add_argument("--max-tokens", type=positive_int, default=None, help="only the first N tokens")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads")
    p.add_argument("--json", default=None, help="write the result here")
    add_reference_options(p)


def add_reference_options(p: argparse.ArgumentParser) -> None:
    """How to load a reference checkpoint (``spike eval`` and ``spike generate``)."""
    p.add_argument("--tokenizer", default=None, help="tokenizers JSON (token-level models)")
    p.add_argument("--vocab", default=None,
                   help="reference checkpoints: the vocab.json its trainer wrote")
    p.add_argument("--ctx-len", type=positive_int, default=None,
                   help="reference checkpoints: the context it was trained with (1024 for the released "
                        "SpikeGPT models); spike eval needs it")
    p.add_argument("--no-spikes", action="store_true",
                   help="reference checkpoints: load as the non-spiking RWKV")


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`spike.models.spikegpt.checkpoint.load_lm` from the options of
    :func:`add_reference_options`."""
    return dict(vocab=args.vocab, tokenizer=args.tokenizer, ctx_len=args.ctx_len,
                spiking=False if args.no_spikes else None)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    res = eval_checkpoint(args.checkpoint, data=args.data, split=args.split,
                          max_tokens=args.max_tokens, batch_size=args.batch_size, **load_options(args))
    print(res["line"])
    if args.json:
        atomic_write_json(args.json, {k: v for k, v in res.items() if k != "line"})
    return 0
