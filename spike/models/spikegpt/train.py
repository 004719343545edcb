"""Training SpikeGPT: :func:`train_spikegpt` is what ``spike train spikegpt`` runs.

Training follows the reference's settings: Adam betas (0.9, 0.99), eps 4e-9, no weight decay,
gradient clipping at 1.0, learning rate 6e-4 -> 1e-5 on a cosine over the run (over ``iters``
steps, or over the ``minutes`` budget), random windows of ``ctx_len + 1`` tokens. The run is
cut into mini-epochs of ``eval_every`` steps; after each one the validation loss is measured
and a checkpoint is written atomically (``resume`` continues from it). It uses
:class:`spike.train.trainer.Trainer`, so ``torchrun --nproc_per_node N -m spike.cli train spikegpt
...`` trains data-parallel (each rank gets a slice of every global batch).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numba
import torch

from spike.models import build_model
from spike.models.spikegpt.model import PRESETS, evaluate_lm, lm_loss
from spike.models.spikegpt.text import eval_windows, load_corpus, random_windows, unigram_entropy
from spike.train import distributed as du
from spike.train.checkpoint import load_checkpoint, make_config
from spike.train.trainer import Trainer, set_seed

__all__ = ["train_spikegpt", "clipped_adam", "CosineLR", "DEFAULT_BATCH", "DEFAULT_ITERS"]

#: Global batch (windows per step) of each preset when none is given.
DEFAULT_BATCH = {"tiny": 8, "46m": 12, "216m": 12}
DEFAULT_ITERS = 2000


class _Clock:
    """Elapsed training time, agreed over ranks (rank 0's clock), for the ``--minutes`` budget."""

    def __init__(self, minutes: Optional[float]):
        self.budget = None if minutes is None else float(minutes) * 60.0
        self.offset = 0.0  # seconds spent before a resume
        self.start = time.perf_counter()
        self.elapsed = 0.0

    def tick(self) -> float:
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
        for _ in range(self.per_epoch):
            if self.iters is not None and self.sched.n >= self.iters:
                return
            self.clock.tick()
            if self.clock.spent():
                return
            yield random_windows(self.data, self.ctx_len, self.batch_size, generator)


class _BudgetSpent(Exception):
    pass


def clipped_adam(params, lr):
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


def _model_kwargs(size: str, vocab_size: int, spiking: bool, dropout: float, ctx_len: Optional[int],
                  layers: Optional[int], embd: Optional[int]) -> dict[str, Any]:
    preset = dict(PRESETS[size])
    pv = preset.pop("vocab_size", None)
    if pv is not None and vocab_size > pv:
        raise ValueError(f"--size {size}: the data's vocabulary has {vocab_size} entries, more "
                         f"than the preset's {pv}")
    kw = dict(vocab_size=int(pv or vocab_size), n_layer=preset["n_layer"], n_embd=preset["n_embd"],
              ctx_len=preset["ctx_len"], spiking=spiking, dropout=float(dropout))
    for value, key in ((ctx_len, "ctx_len"), (layers, "n_layer"), (embd, "n_embd")):
        if value is not None:
            kw[key] = int(value)
    return kw


def train_spikegpt(
    *,
    out: str | Path,
    size: str = "tiny",
    data: str | Path | None = None,
    tokenizer: str | Path | None = None,
    spiking: bool = True,
    ctx_len: Optional[int] = None,
    layers: Optional[int] = None,
    embd: Optional[int] = None,
    batch_size: Optional[int] = None,
    iters: Optional[int] = None,
    minutes: Optional[float] = None,
    lr: Optional[float] = None,
    lr_final: float = 1e-5,
    dropout: float = 0.03,
    eval_every: int = 200,
    eval_tokens: int = 32768,
    threads: Optional[int] = None,
    device: str = "cpu",
    seed: int = 0,
    resume: bool = False,
    quiet: bool = False,
    accumulate: int = 1,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Train SpikeGPT (``spike train spikegpt``; the module docstring has the recipe); returns
    ``{"test": {...}, "unigram_bits", "history", "checkpoint", "steps", "unit", "vocab_kind",
    "model_kwargs"}``.

    ``size`` is a preset (:data:`spike.models.spikegpt.model.PRESETS`) whose context, layers and
    width ``ctx_len``, ``layers``, ``embd`` override; ``spiking=False`` trains the non-spiking RWKV
    of the same size. ``batch_size`` None is the preset's default (:data:`DEFAULT_BATCH`); ``iters``
    None is :data:`DEFAULT_ITERS` steps, or as many as ``minutes`` allow; ``lr`` None is 6e-4.
    ``data``: a UTF-8 text file (default: the built-in corpus), token level with ``tokenizer``.
    ``precision``: ``"fp32"`` or ``"bf16"`` (autocast; the WKV and LIF kernels keep float32 state).
    Under torchrun ``batch_size`` is the global batch (each rank takes a slice of every step's
    windows) and ``--device cuda`` puts each rank on ``cuda:LOCAL_RANK``.
    """
    if threads:
        torch.set_num_threads(int(threads))
        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    for name, v in (("iters", iters), ("eval_every", eval_every), ("batch_size", batch_size)):
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if minutes is not None and minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {minutes}")
    set_seed(seed)
    if lr is None:
        lr = 6e-4
    corpus = load_corpus(data, tokenizer=tokenizer)
    kwargs = _model_kwargs(size, corpus.vocab.size, spiking, dropout, ctx_len, layers, embd)
    batch = DEFAULT_BATCH[size] if batch_size is None else batch_size
    iters = iters if iters is not None else (None if minutes else DEFAULT_ITERS)
    out = Path(out)
    if resume and out.exists():
        old = load_checkpoint(out)["config"]
        if old.get("model", {}).get("kwargs") != kwargs:
            raise ValueError(f"{out}: --resume with a different model: checkpoint has "
                             f"{old.get('model', {}).get('kwargs')}, these options give {kwargs}")
    model = build_model("spikegpt", **kwargs).to(du.training_device(device))
    opt = clipped_adam(model.parameters(), lr)
    clock = _Clock(minutes)
    sched = CosineLR(opt, lr, lr_final, iters, clock)
    ctx = kwargs["ctx_len"]
    per_epoch = int(eval_every)
    if iters is not None:
        epochs = -(-iters // per_epoch)
    else:  # time budget only: estimate generously how many mini-epochs fit
        epochs = _estimate_epochs(model, corpus.train, ctx, batch, per_epoch, minutes)
        set_seed(seed)
    windows = _TrainWindows(corpus.train, ctx, batch, per_epoch, iters, clock, sched)
    unit = corpus.vocab.unit
    metric = "bpc" if corpus.vocab.kind != "tokenizer" else "bits_per_token"
    eval_tokens = eval_tokens or None

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
        "spikegpt", kwargs, dataset=str(data) if data else "builtin",
        text={"vocab": corpus.vocab.to_config(), "data": None if data is None else str(data),
              "corpus": corpus.name},
        train={"size": size, "batch_size": batch, "iters": iters, "minutes": minutes,
               "lr": lr, "lr_final": lr_final, "eval_every": per_epoch, "seed": seed},
    )
    if du.is_main_process() and not quiet:
        print(corpus.summary())
        print(f"SpikeGPT {size}{' (no spikes)' if not spiking else ''}: "
              f"{kwargs['n_layer']} x {kwargs['n_embd']}, ctx {ctx}, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters; batch {batch}, "
              f"{'%d steps' % iters if iters else ''}{' / ' if iters and minutes else ''}"
              f"{'%g min' % minutes if minutes else ''}")
    trainer = Trainer(
        model, opt, loss_fn, windows, epochs=epochs, batch_size=batch, seed=seed,
        eval_data=eval_data, checkpoint_path=out, scheduler=sched, scheduler_interval="step",
        metric_fn=metric_fn, metric_name=metric, progress=not quiet, resume=resume,
        config=config, may_extend=("train.iters", "train.minutes"), on_epoch_end=on_epoch_end,
        accumulate=accumulate, precision=precision,
    )
    if trainer.resumed_from is not None and not quiet and du.is_main_process():
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
        print(corpus.score_line("test", test) + f"; unigram entropy {base:.3f} bits/{unit} "
              f"-> {out}")
    return {"test": test, "unigram_bits": base, "history": trainer.history, "checkpoint": str(out),
            "steps": trainer.step, "unit": unit, "vocab_kind": corpus.vocab.kind,
            "model_kwargs": kwargs}


def _estimate_epochs(model, data, ctx, batch, per_epoch, minutes) -> int:
    g = torch.Generator().manual_seed(0)
    x, y = random_windows(data, ctx, batch, g)
    lm_loss(model(x), y).backward()  # warm-up (kernel compilation)
    t0 = time.perf_counter()
    lm_loss(model(x), y).backward()
    dt = max(time.perf_counter() - t0, 1e-3)
    model.zero_grad(set_to_none=True)
    steps = minutes * 60.0 / dt
    return max(1, int(math.ceil(3 * steps / per_epoch)) + 1)
