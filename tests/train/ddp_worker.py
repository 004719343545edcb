"""Helper for tests/train/test_distributed.py, run under torchrun: deterministic data-parallel SGD.

Usage: torchrun --nproc_per_node=2 tests/train/ddp_worker.py OUT_DIR [ACCUMULATE]
Each rank writes OUT_DIR/rank{r}.pt = {"state": state_dict, "world": W, "history": history};
rank 0 also writes the checkpoint OUT_DIR/ckpt.pt.

:func:`batch_norm_rank` is one rank of the global-BatchNorm check (``torch.multiprocessing.spawn``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
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


def batch_norm_data() -> tuple[torch.Tensor, torch.Tensor, nn.BatchNorm2d]:
    """A 7-sample batch ``x``, loss weights ``w`` (loss ``sum(BN(x) * w)``) and the layer."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 3, 4, 4, generator=g) * 2 + 1
    w = torch.randn(7, 3, 4, 4, generator=g)
    bn = nn.BatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5, generator=g)
        bn.bias.uniform_(-0.5, 0.5, generator=g)
    return x, w, bn


def batch_norm_rank(rank: int, world: int, init_file: str, out: str) -> None:
    """Rank ``rank``: its slice of the batch through the layer under ``global_batch_norm``, twice
    (train), then once in eval mode; saves the outputs, ``dL/dx`` of its slice, its share of the
    parameter gradients and the running statistics to ``out/bn{rank}.pt``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, w, bn = batch_norm_data()
        a, b = D.shard_bounds(len(x), rank, world)
        xs = x[a:b].clone().requires_grad_()
        with D.global_batch_norm(bn) as switched:
            y = bn(xs)
            (y * w[a:b]).sum().backward()
            bn(x[a:b] * 0.5)  # a second step of the running statistics
            bn.eval()
            y_eval = bn(x[a:b])
        torch.save({"switched": switched, "y": y.detach(), "y_eval": y_eval, "dx": xs.grad,
                    "dweight": bn.weight.grad, "dbias": bn.bias.grad, "state": bn.state_dict(),
                    "forward_restored": "forward" not in vars(bn)}, Path(out) / f"bn{rank}.pt")
    finally:
        dist.destroy_process_group()


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
