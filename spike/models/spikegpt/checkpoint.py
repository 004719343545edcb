"""A trained SpikeGPT from a file: recognise it (:func:`is_lm_checkpoint`), load it (:func:`load_lm`:
a checkpoint of ``spike train spikegpt`` or a state dict saved by the reference code), score it on
a corpus split (:func:`eval_checkpoint`, ``spike eval``) and sample from it
(:func:`generate_text`, ``spike generate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from spike.models import build_model
from spike.models.spikegpt.model import evaluate_lm, generate, load_reference
from spike.models.spikegpt.text import (CharVocab, TokenizerVocab, builtin_text, eval_windows, load_corpus,
                                        load_reference_vocab, vocab_from_config)
from spike.train.checkpoint import CheckpointError, load_checkpoint, load_weights

__all__ = ["is_lm_checkpoint", "load_lm", "eval_checkpoint", "generate_text"]


def is_lm_checkpoint(path) -> bool:
    """True for a ``spike train spikegpt`` checkpoint or a reference state dict of SpikeGPT."""
    try:
        raw = load_weights(path)
    except (CheckpointError, FileNotFoundError):  # not ours to judge here; the normal loader reports it
        return False
    if isinstance(raw, dict) and "format_version" in raw:
        return raw.get("config", {}).get("model", {}).get("kind") == "spikegpt"
    return isinstance(raw, dict) and ("emb.weight" in raw or "module.emb.weight" in raw)


#: the context length of the released SpikeGPT models
REFERENCE_CTX_LEN = 1024


def load_lm(path, *, vocab=None, tokenizer=None, ctx_len: int | None = None, spiking: bool | None = None,
            data=None, recurrent_only: bool = False):
    """Load a language model: a checkpoint of ``spike train spikegpt`` or a state dict saved by
    the reference code (then the vocabulary comes from ``vocab`` (its ``vocab.json``),
    ``tokenizer`` (JSON) or is built from ``data``'s characters, as the reference does, and
    ``ctx_len`` is required unless ``recurrent_only``, where the model runs token by token and the
    context does not matter: a state dict does not record it; ``spiking`` None is True).
    A checkpoint of ours records ``ctx_len`` and ``spiking``: a different value given is a
    ValueError. Returns ``(model, vocab, config)``."""
    p = Path(path)
    raw = load_weights(p)
    if isinstance(raw, dict) and "format_version" in raw:
        ckpt = load_checkpoint(p)
        cfg = ckpt["config"]
        if cfg.get("model", {}).get("kind") != "spikegpt":
            raise ValueError(f"{p}: not a SpikeGPT checkpoint (model kind "
                             f"{cfg.get('model', {}).get('kind')!r})")
        kwargs = cfg["model"]["kwargs"]
        for name, given in (("ctx_len", ctx_len), ("spiking", spiking)):
            if given is not None and name in kwargs and given != kwargs[name]:
                raise ValueError(f"{p}: the checkpoint's {name} is {kwargs[name]}, not {given} (the option "
                                 "is for reference state dicts; leave it out)")
        model = build_model("spikegpt", **kwargs)
        model.load_state_dict(ckpt["model_state"])
        if tokenizer is not None:
            voc = TokenizerVocab.from_file(tokenizer)
        elif vocab is not None:
            voc = load_reference_vocab(vocab)
        else:
            voc = vocab_from_config(cfg["text"]["vocab"])
        model.eval()
        return model, voc, cfg
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: expected a checkpoint or a state dict, found {type(raw).__name__}")
    if ctx_len is None and recurrent_only:
        ctx_len = REFERENCE_CTX_LEN
    if ctx_len is None:
        raise ValueError(f"{p}: a reference state dict does not record its context length: give ctx_len "
                         f"(--ctx-len; {REFERENCE_CTX_LEN} for the released SpikeGPT models)")
    model = load_reference(raw, ctx_len=ctx_len, spiking=True if spiking is None else spiking)
    if tokenizer is not None:
        voc = TokenizerVocab.from_file(tokenizer)
    elif vocab is not None:
        voc = load_reference_vocab(vocab)
    else:
        if data is None:
            voc = CharVocab.from_text(builtin_text())
        else:
            c = load_corpus(data)
            voc = c.vocab
    if voc.size != model.vocab_size:
        raise ValueError(f"{p}: the model has {model.vocab_size} tokens but the vocabulary has "
                         f"{voc.size}; give the reference's vocab.json with --vocab")
    model.eval()
    return model, voc, {"text": {"data": None if data is None else str(data)}, "reference": True}


def eval_checkpoint(path, data=None, split: str = "test", max_tokens: Optional[int] = None,
                    batch_size: int = 8, **load_kw) -> dict[str, Any]:
    """Score a checkpoint on a corpus split: ``{"loss", "bits", "ppl", "tokens", "unit", ...}``.

    ``data`` None is the built-in corpus; a checkpoint trained on a file is scored on it only when
    the caller names that file (a checkpoint never chooses the files that are read).
    """
    model, voc, cfg = load_lm(path, data=data, **load_kw)
    trained_on = cfg.get("text", {}).get("data")
    if data is None and trained_on is not None:
        raise ValueError(f"{path}: trained on {trained_on}; name the text to score with --data "
                         "(a checkpoint does not choose the files that are read)")
    corpus = load_corpus(data, vocab=voc)
    res = evaluate_lm(model, eval_windows(corpus.split(split), model.ctx_len, batch_size, max_tokens))
    res.update(unit=voc.unit, kind=voc.kind, corpus=corpus.name, split=split)
    res["line"] = corpus.score_line(split, res)
    return res


def generate_text(path, prompt: str, tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                  seed: int = 0, **load_kw) -> str:
    """Continue ``prompt`` by ``tokens`` tokens sampled in RNN mode; returns the continuation."""
    model, voc, _ = load_lm(path, recurrent_only=True, **load_kw)
    ids = voc.encode(prompt if prompt else "\n").tolist()
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    gen = torch.Generator().manual_seed(int(seed))
    new = generate(model, ids, tokens, temperature=temperature, top_p=top_p, generator=gen)
    return voc.decode(new)
