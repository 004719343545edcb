"""Data-parallel training under torchrun (spike.train.distributed + Trainer)."""
from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from spike.train import distributed as D
from spike.train.checkpoint import load_checkpoint

from helpers import ROOT

WORKER = Path(__file__).with_name("ddp_worker.py")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("n,parts", [(7, 2), (8, 2), (10, 3), (2, 2), (1, 3), (0, 2)])
def test_shard_bounds_cover_exactly_once(n: int, parts: int) -> None:
    bounds = [D.shard_bounds(n, r, parts) for r in range(parts)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError):
        D.shard_bounds(n, parts, parts)


def test_batch_norm_uses_the_global_batch_statistics(tmp_path: Path) -> None:
    """Two gloo ranks (slices of 4 and 3 samples) under ``global_batch_norm``: outputs, input
    gradients, summed parameter gradients and running statistics (two steps) are one process's on
    the whole batch; eval mode uses the running statistics; the layer gets its own forward back."""
    import torch.multiprocessing as mp

    ddp_worker = _load_worker()
    sys.path.insert(0, str(WORKER.parent))  # the spawned ranks import ddp_worker by name
    import ddp_worker as named_worker

    mp.spawn(named_worker.batch_norm_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in (0, 1)]
    x, w, bn = ddp_worker.batch_norm_data()
    xr = x.clone().requires_grad_()
    y = bn(xr)
    (y * w).sum().backward()
    bn(x * 0.5)
    bn.eval()
    y_eval = bn(x)
    assert [r["switched"] for r in ranks] == [1, 1] and all(r["forward_restored"] for r in ranks)
    close = dict(rtol=1e-5, atol=1e-6)  # float32 sums over 112 values per channel, in another order
    torch.testing.assert_close(torch.cat([r["y"] for r in ranks]), y.detach(), **close)
    torch.testing.assert_close(torch.cat([r["dx"] for r in ranks]), xr.grad, **close)
    torch.testing.assert_close(ranks[0]["dweight"] + ranks[1]["dweight"], bn.weight.grad, **close)
    torch.testing.assert_close(ranks[0]["dbias"] + ranks[1]["dbias"], bn.bias.grad, **close)
    torch.testing.assert_close(torch.cat([r["y_eval"] for r in ranks]), y_eval.detach(), **close)
    for r in ranks:
        for key, value in bn.state_dict().items():
            torch.testing.assert_close(r["state"][key], value, **close, msg=key)
    with D.global_batch_norm(bn) as switched:  # no process group: nothing changes
        assert switched == 0


def test_single_process_helpers(monkeypatch) -> None:
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not D.launched_by_torchrun() and not D.is_distributed()
    assert (D.rank(), D.local_rank(), D.world_size(), D.is_main_process()) == (0, 0, 1, True)
    assert D.init_distributed() is False
    assert D.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    model = nn.Linear(2, 2)
    assert D.wrap_model(model) is model
    D.barrier()
    D.cleanup_distributed()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (D.rank(), D.world_size(), D.is_main_process()) == (3, 4, False)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_torchrun_two_ranks_match_single_process(accumulate: int, tmp_path: Path) -> None:
    """Two ranks (with ``accumulate`` 2: uneven micro-batches of the uneven slices, DDP synced on
    the last) train to the one-process weights, which take whole batches."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(WORKER), str(tmp_path), str(accumulate)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.perf_counter() - t0 < 60

    ddp_worker = _load_worker()
    torch.set_num_threads(1)
    reference = ddp_worker.build(None)  # same model, data and global batch, one process
    ref_history = reference.fit()
    ref = reference.model.state_dict()

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    for key, value in ref.items():
        # Every rank applies the same all-reduced gradient: replicas stay bit-identical.
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
        # Against one process only float rounding differs: DDP sums per-rank gradients (each from
        # a loss rescaled by its slice's share) and divides by the world size, a different order
        # of float32 operations than one backward over the whole batch. Hence atol, not equality.
        torch.testing.assert_close(ranks[0]["state"][key], value, rtol=0, atol=1e-6)
    # Epoch losses are all-reduced over ranks, so every rank logs the global-batch figures.
    for r in ranks:
        torch.testing.assert_close(torch.tensor(r["history"]["loss"]), torch.tensor(ref_history["loss"]),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.tensor(r["history"]["eval_loss"]),
                                   torch.tensor(ref_history["eval_loss"]), rtol=0, atol=1e-6)
    # Only rank 0 wrote the checkpoint; it holds the bare model (no "module." prefix).
    ck = load_checkpoint(tmp_path / "ckpt.pt")
    assert ck["epoch"] == ddp_worker.EPOCHS and ck["model_state"].keys() == ref.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "rank0.pt", "rank1.pt"]
