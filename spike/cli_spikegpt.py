"""Command-line pieces for SpikeGPT: ``spike train spikegpt``, ``spike eval``, ``spike generate``.

``spike.cli`` wires them in: :func:`add_train_arguments` fills the parser of ``train spikegpt``
and :func:`train_spikegpt` runs it; :func:`add_eval_parser` / :func:`add_generate_parser` add the
``eval`` / ``generate`` commands (with ``fn=``) to the top-level subparsers.

Training follows the reference's settings: Adam betas (0.9, 0.99), eps 4e-9, no weight decay,
gradient clipping at 1.0, learning rate 6e-4 -> 1e-5 on a cosine over the run (over ``--iters``
steps, or over the ``--minutes`` budget), random windows of ``ctx_len + 1`` tokens. The run is
cut into mini-epochs of ``--eval-every`` steps; after each one the validation loss is measured
and a checkpoint is written atomically (``--resume`` continues from it). It uses
:class:`spike.train.trainer.Trainer`, so ``torchrun --nproc_per_node N -m spike.cli train spikegpt
...`` trains data-parallel (each rank gets a slice of every global batch).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any, Optional

import torch

__all__ = ["add_train_arguments", "train_spikegpt", "add_eval_parser", "add_generate_parser",
           "load_lm", "eval_checkpoint", "generate_text", "DEFAULT_BATCH"]

DEFAULT_BATCH = {"tiny": 8, "46m": 12, "216m": 12}
DEFAULT_ITERS = 2000


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``spike train spikegpt``.

    Best given the command's own parser (``train`` with a sub-parser per model). On a ``train``
    parser shared with other models, options it already has (``--out``, ``--seed``, ``--resume``,
    ``--quiet``, ``--lr``, ``--batch-size``, ...) are kept as they are; a shared ``--batch-size``
    left at that parser's default then means this preset's default batch, and ``--lr`` None means
    6e-4."""
    from spike.models.spikegpt.model import PRESETS

    have = p._option_string_actions  # noqa: SLF001 - argparse has no public query

    def add(*names, **kw):
        if any(n in have for n in names):
            return
        p.add_argument(*names, **kw)

    shared_batch = have["--batch-size"].default if "--batch-size" in have else None
    p.set_defaults(gpt_shared_batch_default=shared_batch)
    add("--size", default="tiny", choices=sorted(PRESETS),
        help="spikegpt preset: tiny (4 x 64, ctx 128), 46m (12 x 512, ctx 1024), "
             "216m (18 x 768, ctx 1024, vocab 50277)")
    add("--data", default=None,
        help="spikegpt: UTF-8 text file (enwik8: its standard 90M/5M/5M byte split); "
             "default: the built-in corpus (Python's documentation topics)")
    add("--tokenizer", default=None,
        help="spikegpt: tokenizers JSON file (e.g. GPT-NeoX 20B_tokenizer.json): token level "
             "instead of characters")
    add("--out", required=True, help="checkpoint path (written atomically)")
    add("--no-spikes", action="store_true",
        help="spikegpt: non-spiking RWKV of the same size (no LIF, no binary embedding)")
    add("--ctx-len", type=int, default=None, help="spikegpt: override the preset's context")
    add("--layers", type=int, default=None, help="spikegpt: override the preset's layers")
    add("--embd", type=int, default=None, help="spikegpt: override the preset's width")
    add("--batch-size", type=int, default=None,
        help="global batch (windows per step); spikegpt default 8 (tiny) or 12")
    add("--iters", type=int, default=None,
        help=f"spikegpt: optimizer steps (default {DEFAULT_ITERS}, or unlimited with --minutes)")
    add("--minutes", type=float, default=None,
        help="spikegpt: wall-clock budget: stop after it; the cosine follows the budget")
    add("--lr", type=float, default=None, help="spikegpt: peak learning rate (default 6e-4)")
    add("--lr-final", type=float, default=1e-5)
    add("--dropout", type=float, default=0.03)
    add("--eval-every", type=int, default=200,
        help="spikegpt: steps per mini-epoch (validation + checkpoint after each)")
    add("--eval-tokens", type=int, default=32768,
        help="spikegpt: validation tokens per check (0: the whole validation split)")
    add("--threads", type=int, default=None, help="torch/numba threads per process")
    add("--device", default="cpu",
        help="cpu or cuda (under torchrun: each rank takes cuda:LOCAL_RANK)")
    add("--seed", type=int, default=0)
    add("--resume", action="store_true", help="continue from --out if it exists")
    add("--quiet", action="store_true")


class _Clock:
    """Elapsed training time, agreed over ranks (rank 0's clock), for the ``--minutes`` budget."""

    def __init__(self, minutes: Optional[float]):
        self.budget = None if minutes is None else float(minutes) * 60.0
        self.offset = 0.0  # seconds spent before a resume
        self.start = time.perf_counter()
        self.elapsed = 0.0

    def tick(self) -> float:
        from spike.train import distributed as du

        own = self.offset + time.perf_counter() - self.start
        self.elapsed = du.all_reduce_sum([own if du.rank() == 0 else 0.0])[0]
        return self.elapsed

    def spent(self) -> bool:
        return self.budget is not None and self.elapsed >= self.budget


class CosineLR:
    """lr = lr_final + (lr - lr_final) (1 + cos(pi * progress)) / 2, progress = the larger of
    ``step / iters`` and ``elapsed / budget`` (the reference's cosine, over steps or time)."""

    def __init__(self, optimizer, lr: float, lr_final: float, iters: Optional[int], clock: _Clock):
        self.optimizer = optimizer
        self.lr = float(lr)
        self.lr_final = float(lr_final)
        self.iters = iters
        self.clock = clock
        self.n = 0
        self._set(0.0)

    def progress(self) -> float:
        p = 0.0
        if self.iters:
            p = max(p, self.n / self.iters)
        if self.clock.budget:
            p = max(p, self.clock.elapsed / self.clock.budget)
        return min(1.0, p)

    def _set(self, progress: float) -> None:
        lr = self.lr_final + (self.lr - self.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        self.n += 1
        self._set(self.progress())

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "elapsed": float(self.clock.elapsed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.n = int(state["n"])
        self.clock.offset = float(state["elapsed"])
        self.clock.elapsed = float(state["elapsed"])
        self._set(self.progress())


class _TrainWindows:
    """Trainer data source: mini-epoch ``e`` = up to ``per_epoch`` batches of random windows, drawn
    from the Trainer's generator; stops at ``iters`` steps or when the clock's budget is spent."""

    def __init__(self, data, ctx_len, batch_size, per_epoch, iters, clock, sched):
        self.data, self.ctx_len, self.batch_size = data, ctx_len, batch_size
        self.per_epoch, self.iters, self.clock, self.sched = per_epoch, iters, clock, sched

    def __len__(self) -> int:
        return self.per_epoch

    def __call__(self, epoch, generator):
        from spike.models.spikegpt.text import random_windows

        for _ in range(self.per_epoch):
            if self.iters is not None and self.sched.n >= self.iters:
                return
            self.clock.tick()
            if self.clock.spent():
                return
            yield random_windows(self.data, self.ctx_len, self.batch_size, generator)


class _BudgetSpent(Exception):
    pass


def _clip_adam(params, lr):
    """Adam with the reference's settings and gradient-norm clipping at 1.0 inside ``step``."""

    class ClippedAdam(torch.optim.Adam):
        def step(self, closure=None):  # type: ignore[override]
            torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], 1.0)
            return super().step(closure)

    kw = dict(lr=lr, betas=(0.9, 0.99), eps=4e-9, weight_decay=0.0)
    params = list(params)
    try:
        return ClippedAdam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # no fused Adam for these tensors/this torch
        return ClippedAdam(params, **kw)


def _model_kwargs(args, vocab_size: int) -> dict[str, Any]:
    from spike.models.spikegpt.model import PRESETS

    preset = dict(PRESETS[args.size])
    pv = preset.pop("vocab_size", None)
    if pv is not None and vocab_size > pv:
        raise ValueError(f"--size {args.size}: the data's vocabulary has {vocab_size} entries, more "
                         f"than the preset's {pv}")
    kw = dict(vocab_size=int(pv or vocab_size), n_layer=preset["n_layer"], n_embd=preset["n_embd"],
              ctx_len=preset["ctx_len"], spiking=not args.no_spikes, dropout=float(args.dropout))
    for opt, key in (("ctx_len", "ctx_len"), ("layers", "n_layer"), ("embd", "n_embd")):
        if getattr(args, opt, None) is not None:
            kw[key] = int(getattr(args, opt))
    return kw


def train_spikegpt(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``spike train spikegpt``; returns ``{"test": {...}, "history", "checkpoint", ...}``."""
    from spike.train import distributed as du
    from spike.train.checkpoint import load_checkpoint, make_config
    from spike.models import build_model
    from spike.models.spikegpt.model import evaluate_lm, lm_loss
    from spike.models.spikegpt.text import eval_windows, load_corpus, unigram_entropy
    from spike.train.trainer import Trainer, set_seed

    if args.threads:
        torch.set_num_threads(int(args.threads))
        import numba

        numba.set_num_threads(min(int(args.threads), numba.config.NUMBA_NUM_THREADS))
    for name in ("iters", "eval_every", "batch_size"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if args.minutes is not None and args.minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    set_seed(args.seed)
    if args.lr is None:
        args.lr = 6e-4
    corpus = load_corpus(args.data, tokenizer=args.tokenizer)
    kwargs = _model_kwargs(args, corpus.vocab.size)
    batch = args.batch_size
    if batch is None or batch == getattr(args, "gpt_shared_batch_default", None):
        batch = DEFAULT_BATCH[args.size]
    iters = args.iters if args.iters is not None else (None if args.minutes else DEFAULT_ITERS)
    out = Path(args.out)
    if args.resume and out.exists():
        old = load_checkpoint(out)["config"]
        if old.get("model", {}).get("kwargs") != kwargs:
            raise ValueError(f"{out}: --resume with a different model: checkpoint has "
                             f"{old.get('model', {}).get('kwargs')}, these options give {kwargs}")
    model = build_model("spikegpt", **kwargs).to(_device(getattr(args, "device", "cpu")))
    opt = _clip_adam(model.parameters(), args.lr)
    clock = _Clock(args.minutes)
    sched = CosineLR(opt, args.lr, args.lr_final, iters, clock)
    ctx = kwargs["ctx_len"]
    per_epoch = int(args.eval_every)
    if iters is not None:
        epochs = -(-iters // per_epoch)
    else:  # time budget only: estimate generously how many mini-epochs fit
        epochs = _estimate_epochs(model, corpus.train, ctx, batch, per_epoch, args.minutes)
        set_seed(args.seed)
    data = _TrainWindows(corpus.train, ctx, batch, per_epoch, iters, clock, sched)
    unit = corpus.vocab.unit
    metric = "bpc" if corpus.vocab.kind != "tokenizer" else "bits_per_token"
    eval_tokens = args.eval_tokens or None

    def eval_data(epoch, generator):
        return eval_windows(corpus.valid, ctx, batch, max_tokens=eval_tokens, drop_last=True)

    cache: dict[str, Any] = {}

    def loss_fn(out, y):
        loss = lm_loss(out, y)
        cache["key"], cache["ce"] = id(out), float(loss.detach())
        return loss

    def metric_fn(out, y):
        if cache.get("key") != id(out):
            loss_fn(out, y)
        return cache["ce"] / math.log(2)

    def on_epoch_end(epoch, stats):
        if clock.spent() or (iters is not None and sched.n >= iters):
            raise _BudgetSpent

    config = make_config(
        "spikegpt", kwargs, dataset=args.data or "builtin",
        text={"vocab": corpus.vocab.to_config(), "data": None if args.data is None else str(args.data),
              "corpus": corpus.name},
        train={"size": args.size, "batch_size": batch, "iters": iters, "minutes": args.minutes,
               "lr": args.lr, "lr_final": args.lr_final, "eval_every": per_epoch, "seed": args.seed},
    )
    if du.is_main_process() and not args.quiet:
        print(corpus.summary())
        print(f"SpikeGPT {args.size}{' (no spikes)' if args.no_spikes else ''}: "
              f"{kwargs['n_layer']} x {kwargs['n_embd']}, ctx {ctx}, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters; batch {batch}, "
              f"{'%d steps' % iters if iters else ''}{' / ' if iters and args.minutes else ''}"
              f"{'%g min' % args.minutes if args.minutes else ''}")
    trainer = Trainer(
        model, opt, loss_fn, data, epochs=epochs, batch_size=batch, seed=args.seed,
        eval_data=eval_data, checkpoint_path=out, scheduler=sched, scheduler_interval="step",
        metric_fn=metric_fn, metric_name=metric, progress=not args.quiet, resume=args.resume,
        config=config, on_epoch_end=on_epoch_end,
    )
    if trainer.resumed_from is not None and not args.quiet and du.is_main_process():
        print(f"resumed from {out} after {trainer.step} steps")
    clock.start = time.perf_counter()
    try:
        trainer.fit()
    except _BudgetSpent:
        du.cleanup_distributed()
    if not out.exists():  # no mini-epoch finished (e.g. zero steps): write what there is
        trainer.save(trainer.start_epoch)
    test = evaluate_lm(model, eval_windows(corpus.test, ctx, batch))
    base = unigram_entropy(corpus.train, corpus.vocab.size)
    if du.is_main_process():
        print(_score_line("test", test, corpus, unit) + f"; unigram entropy {base:.3f} bits/{unit} "
              f"-> {out}")
    return {"test": test, "unigram_bits": base, "history": trainer.history, "checkpoint": str(out),
            "steps": trainer.step, "unit": unit, "vocab_kind": corpus.vocab.kind,
            "model_kwargs": kwargs}


def _device(name: str) -> torch.device:
    from spike.train import distributed as du

    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device here")
        if dev.index is None:
            dev = torch.device("cuda", du.local_rank())
    return dev


def _estimate_epochs(model, data, ctx, batch, per_epoch, minutes) -> int:
    from spike.models.spikegpt.model import lm_loss
    from spike.models.spikegpt.text import random_windows

    g = torch.Generator().manual_seed(0)
    x, y = random_windows(data, ctx, batch, g)
    lm_loss(model(x), y).backward()  # warm-up (kernel compilation)
    t0 = time.perf_counter()
    lm_loss(model(x), y).backward()
    dt = max(time.perf_counter() - t0, 1e-3)
    model.zero_grad(set_to_none=True)
    steps = minutes * 60.0 / dt
    return max(1, int(math.ceil(3 * steps / per_epoch)) + 1)


def _score_line(split: str, res: dict, corpus, unit: str) -> str:
    if corpus.vocab.kind == "tokenizer":
        return (f"{split} perplexity {res['ppl']:.3f} ({res['bits']:.4f} bits/token, "
                f"{res['tokens']:,} tokens of {corpus.name})")
    return f"{split} BPC {res['bits']:.4f} ({res['tokens']:,} {unit}s of {corpus.name})"


# ---------------------------------------------------------------------------------------------
# eval / generate
# ---------------------------------------------------------------------------------------------


def load_lm(path, *, vocab=None, tokenizer=None, ctx_len: int = 1024, spiking: bool = True,
            data=None):
    """Load a language model: a checkpoint of ``spike train spikegpt`` or a state dict saved by
    the reference code (then the vocabulary comes from ``vocab`` (its ``vocab.json``),
    ``tokenizer`` (JSON) or is built from ``data``'s characters, as the reference does).
    Returns ``(model, vocab, config)``."""
    from spike.train.checkpoint import load_checkpoint
    from spike.models import build_model
    from spike.models.spikegpt.model import load_reference
    from spike.models.spikegpt.text import (CharVocab, TokenizerVocab, builtin_text, load_corpus,
                            load_reference_vocab, vocab_from_config)

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {p}")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{p}: not a loadable checkpoint: {type(exc).__name__}: {exc}") from exc
    if isinstance(raw, dict) and "format_version" in raw:
        ckpt = load_checkpoint(p)
        cfg = ckpt["config"]
        if cfg.get("model", {}).get("kind") != "spikegpt":
            raise ValueError(f"{p}: not a SpikeGPT checkpoint (model kind "
                             f"{cfg.get('model', {}).get('kind')!r})")
        model = build_model("spikegpt", **cfg["model"]["kwargs"])
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
    model = load_reference(raw, ctx_len=ctx_len, spiking=spiking)
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
    """Score a checkpoint on a corpus split: ``{"loss", "bits", "ppl", "tokens", "unit", ...}``."""
    from spike.models.spikegpt.model import evaluate_lm
    from spike.models.spikegpt.text import eval_windows, load_corpus

    model, voc, cfg = load_lm(path, data=data, **load_kw)
    src = data if data is not None else cfg.get("text", {}).get("data")
    corpus = load_corpus(src, vocab=voc)
    res = evaluate_lm(model, eval_windows(corpus.split(split), model.ctx_len, batch_size, max_tokens))
    res.update(unit=voc.unit, kind=voc.kind, corpus=corpus.name, split=split)
    res["line"] = _score_line(split, res, corpus, voc.unit)
    return res


def generate_text(path, prompt: str, tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                  seed: int = 0, **load_kw) -> str:
    """Continue ``prompt`` by ``tokens`` tokens sampled in RNN mode; returns the continuation."""
    from spike.models.spikegpt.model import generate

    model, voc, _ = load_lm(path, **load_kw)
    ids = voc.encode(prompt if prompt else "\n").tolist()
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    gen = torch.Generator().manual_seed(int(seed))
    new = generate(model, ids, tokens, temperature=temperature, top_p=top_p, generator=gen)
    return voc.decode(new)


def _add_ref_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", default=None, help="tokenizers JSON (token-level models)")
    p.add_argument("--vocab", default=None,
                   help="reference checkpoints: the vocab.json its trainer wrote")
    p.add_argument("--ctx-len", type=int, default=1024,
                   help="reference checkpoints: the context it was trained with")
    p.add_argument("--no-spikes", action="store_true",
                   help="reference checkpoints: load as the non-spiking RWKV")


def _load_kw(args) -> dict[str, Any]:
    return dict(vocab=args.vocab, tokenizer=args.tokenizer, ctx_len=args.ctx_len,
                spiking=not args.no_spikes)


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    res = eval_checkpoint(args.checkpoint, data=args.data, split=args.split,
                          max_tokens=args.max_tokens, batch_size=args.batch_size, **_load_kw(args))
    print(res["line"])
    if args.json:
        from spike.train.checkpoint import atomic_write_json

        atomic_write_json(args.json, {k: v for k, v in res.items() if k != "line"})
    return 0


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """``spike eval CHECKPOINT [--data FILE]``: test BPC (characters) or perplexity (tokens)."""
    p = subparsers.add_parser("eval", help="score a SpikeGPT checkpoint: BPC or perplexity")
    p.add_argument("checkpoint", help="from `spike train spikegpt`, or a reference .pth")
    p.add_argument("--data", default=None, help="text file (default: the data it was trained on)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--max-tokens", type=int, default=None, help="only the first N tokens")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write the result here")
    _add_ref_options(p)
    p.set_defaults(fn=_cmd_eval)
    return p


def _cmd_generate(args: argparse.Namespace) -> int:
    text = generate_text(args.checkpoint, args.prompt, args.tokens, args.temperature, args.top_p,
                         args.seed, **_load_kw(args))
    print(args.prompt + text)
    return 0


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    """``spike generate CHECKPOINT --prompt TEXT --tokens N [--temperature T --top-p P]``."""
    p = subparsers.add_parser("generate", help="sample text from a SpikeGPT checkpoint (RNN mode)")
    p.add_argument("checkpoint", help="from `spike train spikegpt`, or a reference .pth")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    _add_ref_options(p)
    p.set_defaults(fn=_cmd_generate)
    return p


def main(argv=None) -> int:  # pragma: no cover - convenience for running without spike.cli
    """``python -m spike.cli_spikegpt {train,eval,generate} ...`` (same options as ``spike``)."""
    import sys

    ap = argparse.ArgumentParser(prog="spike-gpt")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    add_train_arguments(t)
    t.set_defaults(fn=lambda a: (train_spikegpt(a), 0)[1])
    add_eval_parser(sub)
    add_generate_parser(sub)
    args = ap.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"spike {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


# ---------------------------------------------------------------------------------------------
# compile / run a compiled program
# ---------------------------------------------------------------------------------------------

#: Vocabularies up to this size (JSON characters) travel in the program's metadata; a larger one
#: (a tokenizer) is named by its hash and given again at run time (``--tokenizer``).
_VOCAB_IN_METADATA = 32_000


def is_lm_checkpoint(path) -> bool:
    """True for a ``spike train spikegpt`` checkpoint or a reference state dict of SpikeGPT."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not ours to judge here; the normal loader reports it
        return False
    if isinstance(raw, dict) and "format_version" in raw:
        return raw.get("config", {}).get("model", {}).get("kind") == "spikegpt"
    return isinstance(raw, dict) and ("emb.weight" in raw or "module.emb.weight" in raw)


def compile_lm(path, target: str = "generic", precision: str = "float32", **load_kw):
    """Compile a SpikeGPT checkpoint to a Program; its vocabulary goes into the metadata."""
    import json

    from spike.compiler import compile as compile_model

    model, voc, _ = load_lm(path, **load_kw)
    vcfg = voc.to_config()
    if len(json.dumps(vcfg)) > _VOCAB_IN_METADATA:
        vcfg = {"kind": vcfg["kind"], "sha256": vcfg.get("sha256"), "stored": False}
    return compile_model(model, target=target, precision=precision,
                         metadata={"vocab": vcfg, "source": str(path)})


def _program_vocab(program, tokenizer=None):
    from spike.models.spikegpt.text import TokenizerVocab, vocab_from_config

    vcfg = program.metadata.get("vocab")
    if tokenizer is not None:
        voc = TokenizerVocab.from_file(tokenizer)
        want = (vcfg or {}).get("sha256")
        if want and voc.to_config().get("sha256") != want:
            raise ValueError(f"--tokenizer {tokenizer}: not the tokenizer the program was compiled with "
                             f"(sha256 {want[:12]}...)")
        return voc
    if not vcfg or vcfg.get("stored") is False:
        raise ValueError("the program does not carry its vocabulary; give --tokenizer FILE")
    return vocab_from_config(vcfg)


def run_lm_program(program, backend: str = "numba", data=None, tokens: int = 512, tokenizer=None,
                   target: str = "cmos45nm_fp32", progress: bool = False):
    """Run a compiled SpikeGPT token by token on the first ``tokens`` tokens of a corpus's test
    split (the built-in corpus by default) and return its :class:`SpikeGPTReport`."""
    import numpy as np

    from spike.backends import run
    from spike.models.spikegpt.report import spikegpt_report
    from spike.models.spikegpt.text import load_corpus

    voc = _program_vocab(program, tokenizer)
    V = int(program.metadata["spikegpt"]["vocab_size"])
    if voc.size != V:
        raise ValueError(f"vocabulary has {voc.size} tokens, the program {V}")
    corpus = load_corpus(data, vocab=voc)
    ids = np.asarray(corpus.split("test")[: int(tokens)], np.int64)
    if len(ids) < 2:
        raise ValueError(f"the test split of {corpus.name} has {len(ids)} tokens; need at least 2")
    x = np.zeros((len(ids), 1, V), np.float32)
    x[np.arange(len(ids)), 0, ids] = 1.0  # one spike per token on its input line
    result = run(program, x, backend=backend, progress=progress)
    report = spikegpt_report(program, result, target=target, token_ids=ids[:, None])
    return report, result
