"""Helper for tests/train/test_training.py: train a tiny dropout MLP, optionally SIGKILL mid-run.

Usage: python tests/train/train_worker.py --out OUT.pt [--ckpt CKPT.pt] [--resume] [--kill-at-step N]
Writes {"state": final state_dict, "history": history, "step": steps} to OUT.pt.
"""
from __future__ import annotations

import argparse
import os
import random
import signal
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spike.train.trainer import Trainer, accuracy, set_seed

EPOCHS = 4
BATCH = 16
N = 80  # 5 steps per epoch


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(N, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def build(ckpt: Path | None = None, resume: bool = False, kill_at_step: int | None = None) -> Trainer:
    """Everything random (init, dropout, noise from numpy, python `random` and a private
    generator, like an encoder's) is seeded here."""
    set_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    holder: dict[str, Trainer] = {}
    enc_gen = torch.Generator().manual_seed(5)

    def forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if kill_at_step is not None and holder["t"].step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # a real, unclean death mid-epoch
        # Draw from numpy and python RNGs too, so their checkpointed states matter.
        noise = torch.from_numpy(np.random.normal(0.0, 0.05, size=tuple(x.shape))).float()
        jitter = torch.rand(x.shape, generator=enc_gen) * 0.05
        return m(x + noise * random.random() + jitter)

    x, y = make_data()
    trainer = Trainer(
        model, opt, nn.functional.cross_entropy, (x, y),
        epochs=EPOCHS, batch_size=BATCH, seed=7, eval_data=(x[:32], y[:32]),
        checkpoint_path=ckpt, checkpoint_every=1, scheduler=sched, forward_fn=forward,
        metric_fn=accuracy, progress=False, resume=resume, generators={"encoder": enc_gen},
        config={"model": {"kind": "mlp", "kwargs": {"hidden": 16}}, "dataset": "toy"},
    )
    holder["t"] = trainer
    return trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kill-at-step", type=int)
    args = ap.parse_args()
    torch.set_num_threads(1)
    trainer = build(args.ckpt, args.resume, args.kill_at_step)
    history = trainer.fit()
    history = {k: v for k, v in history.items() if k != "time_s"}
    torch.save({"state": trainer.model.state_dict(), "history": history, "step": trainer.step}, args.out)


if __name__ == "__main__":
    main()
