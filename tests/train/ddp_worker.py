"""Helper for tests/train/test_distributed.py, run under torchrun: deterministic data-parallel SGD.

Usage: torchrun --nproc_per_node=2 tests/train/ddp_worker.py OUT_DIR [ACCUMULATE]
Each rank writes OUT_DIR/rank{r}.pt = {"state": state_dict, "world": W, "history": history};
rank 0 also writes the checkpoint OUT_DIR/ckpt.pt.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

from spike.train import distributed as D
from spike.train.trainer import Trainer, set_seed

EPOCHS = 2
BATCH = 7  # 32 samples -> global batches 7,7,7,7,4; 2 ranks get uneven 4/3 slices


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    return torch.randn(32, 6, generator=g), torch.randn(32, 2, generator=g)


def build(ckpt: Path | None = None, accumulate: int = 1) -> Trainer:
    set_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_data()
    return Trainer(model, opt, nn.functional.mse_loss, (x, y), epochs=EPOCHS, batch_size=BATCH,
                   seed=3, eval_data=(x, y), checkpoint_path=ckpt, progress=False, accumulate=accumulate)


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    trainer = build(out / "ckpt.pt", accumulate=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    history = trainer.fit()
    assert not D.is_distributed(), "fit() must destroy the process group it created"
    r = int(os.environ["RANK"])
    torch.save({"state": trainer.model.state_dict(), "world": int(os.environ["WORLD_SIZE"]),
                "history": {k: v for k, v in history.items() if k != "time_s"}}, out / f"rank{r}.pt")


if __name__ == "__main__":
    main()
