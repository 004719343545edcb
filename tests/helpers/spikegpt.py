"""A tiny compiled SpikeGPT and its corpus on disk, for the ``spike run`` tests: two blocks of 16
channels with random weights scaled so that its LIF layers fire, its character vocabulary in the
program's metadata (as ``spike compile`` of a checkpoint stores it)."""
from __future__ import annotations

from pathlib import Path

import torch

from spike.compiler import compile as compile_model
from spike.compiler.io.hdf5 import save_program
from spike.models.spikegpt.model import build_spikegpt
from spike.models.spikegpt.text import CharVocab

TEXT = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs! " * 30


def tiny_spikegpt(folder: Path) -> tuple[Path, Path]:
    """``(program.h5, text.txt)`` in ``folder``; the text's test split holds 129 characters."""
    text = folder / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    vocab = CharVocab.from_text(TEXT)
    torch.manual_seed(0)
    model = build_spikegpt("tiny", vocab_size=vocab.size, n_layer=2, n_embd=16).eval()
    with torch.no_grad():  # random weights rarely reach the threshold: scale the LIF inputs up
        for blk in model.blocks:
            blk.att.output.weight.mul_(20)
            blk.ffn.value.weight.mul_(40)
    program = compile_model(model, target="cmos45nm_fp32",
                            metadata={"vocab": vocab.to_config(), "source": "tests/helpers/spikegpt.py"})
    path = folder / "gpt.h5"
    save_program(program, path)
    return path, text
