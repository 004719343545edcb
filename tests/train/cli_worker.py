"""Helper for tests/train/test_ddp_families.py: runs ``spike ARGS...`` (the real command line) in
this process, under torchrun or not, with test-only hooks taken from the environment:

``SPIKE_TEST_OUT=DIR``
    when the command ends every rank writes ``DIR/rank{r}.pt`` = ``{"state", "history", "step",
    "world", "writes", "grads"}``: its weights after ``Trainer.fit``, the names of the files it
    wrote atomically (checkpoints included) in order, and the gradients (by parameter name) that
    the optimizer applied in the first step.
``SPIKE_TEST_SUBSET=N,M``
    the digits dataset cut to its first N training and M test samples (seconds, not minutes).
``SPIKE_TEST_KILL_AT_STEP=S``
    each rank SIGKILLs itself when it is about to start step S + 1 (an unclean death mid-run).

Usage: [torchrun --nproc_per_node 2] tests/train/cli_worker.py train cnn --out X.pt ...
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Iterator

import numba
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import spike.models.cnn.train as cnn_train
import spike.train.checkpoint as checkpoint
import spike.workflows as workflows
from spike.cli import main
from spike.train.datasets import load_dataset
from spike.train.trainer import Trainer


def _subset(n_train: int, n_test: int):
    def load(name: str, root: str | None = None):
        d = load_dataset(name, root)
        return dataclasses.replace(d, x_train=d.x_train[:n_train], y_train=d.y_train[:n_train],
                                   x_test=d.x_test[:n_test], y_test=d.y_test[:n_test])
    return load


@contextlib.contextmanager
def patched(out: Path | None = None, subset: tuple[int, int] | None = None,
            kill_at_step: int | None = None) -> Iterator[None]:
    """The hooks of the module docstring, undone on exit (for one-process runs inside a test)."""
    saved = [(Trainer, "fit", Trainer.fit), (Trainer, "_forward", Trainer._forward),
             (checkpoint, "atomic_write_bytes", checkpoint.atomic_write_bytes),
             (cnn_train, "load_dataset", cnn_train.load_dataset),
             (workflows, "load_dataset", workflows.load_dataset)]
    writes: list[str] = []
    record: dict = {}
    fit, forward, write = Trainer.fit, Trainer._forward, checkpoint.atomic_write_bytes

    def recording_write(path, data):
        writes.append(Path(path).name)
        return write(path, data)

    def fit_and_record(self: Trainer):
        names = {id(p): n for n, p in self.model.named_parameters()}

        def first_grads(optimizer, args, kwargs):
            if "grads" not in record:
                record["grads"] = {names[id(p)]: p.grad.clone() for g in optimizer.param_groups
                                   for p in g["params"] if p.grad is not None}

        hook = register_optimizer_step_pre_hook(first_grads)
        try:
            return fit(self)
        finally:  # also when fit ends by an exception (SpikeGPT's budget)
            hook.remove()
            record.update(state={k: v.clone() for k, v in self.model.state_dict().items()}, step=self.step,
                          history={k: v for k, v in self.history.items() if k != "time_s"})

    def forward_or_die(self: Trainer, model, x):
        if kill_at_step is not None and self.step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return forward(self, model, x)

    Trainer.fit = fit_and_record
    Trainer._forward = forward_or_die
    checkpoint.atomic_write_bytes = recording_write
    if subset is not None:
        cnn_train.load_dataset = workflows.load_dataset = _subset(*subset)
    try:
        yield
        if out is not None:
            r = int(os.environ.get("RANK", 0))
            torch.save({**record, "writes": writes, "world": int(os.environ.get("WORLD_SIZE", 1))},
                       out / f"rank{r}.pt")
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def run_here(args: list[str], **hooks) -> int:
    """``spike ARGS`` in this process with :func:`patched` hooks, one torch and one numba thread
    (as each torchrun rank of the tests; tiny kernels only lose by threads)."""
    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        with patched(**hooks):
            return main(args)
    finally:
        torch.set_num_threads(threads)
        numba.set_num_threads(numba_threads)


def _from_env() -> dict:
    hooks: dict = {}
    if os.environ.get("SPIKE_TEST_OUT"):
        hooks["out"] = Path(os.environ["SPIKE_TEST_OUT"])
    if os.environ.get("SPIKE_TEST_SUBSET"):
        n, m = os.environ["SPIKE_TEST_SUBSET"].split(",")
        hooks["subset"] = (int(n), int(m))
    if os.environ.get("SPIKE_TEST_KILL_AT_STEP"):
        hooks["kill_at_step"] = int(os.environ["SPIKE_TEST_KILL_AT_STEP"])
    return hooks


if __name__ == "__main__":
    sys.exit(run_here(sys.argv[1:], **_from_env()))
