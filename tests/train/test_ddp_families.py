"""``spike train cnn | spikegpt | mlp`` under ``torchrun --nproc_per_node 2`` (CPU, gloo): each family
trains data-parallel as one process on the same global batch, rank 0 alone writes, and a run killed
mid-way resumes to the uninterrupted run's weights bit for bit.

Each run is the real command line (``tests/train/cli_worker.py``), with the digits cut to a few
hundred samples. Why first-step gradients and not final weights are compared with one process to
1e-6: Adam divides each gradient by its own running magnitude, so a weight whose gradient is about
Adam's eps (1e-8) moves by up to ``lr`` on float-rounding differences alone (2 ranks sum the
gradients in another order than one backward does); a few steps later the spiking networks differ
by 1e-4..1e-2. The first step's gradient, all-reduced over the ranks, is the whole computation
(slices, loss weighting, BatchNorm over the global batch, DDP's average) before any such
amplification. With SGD the final weights do agree to 1e-6 (``test_distributed.py``).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spike.models.spikegpt.text import builtin_text
from spike.train.checkpoint import load_checkpoint

from helpers import ROOT

WORKER = Path(__file__).with_name("cli_worker.py")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SUBSET = (144, 48)  # digits: training and test samples

sys.path.insert(0, str(WORKER.parent))
import cli_worker  # noqa: E402  (tests/train is not a package on sys.path)


def torchrun(args: list[str], out: Path, *, subset: tuple[int, int] | None = SUBSET,
             kill_at_step: int | None = None) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 cli_worker.py ARGS`` (each rank records into ``out``)."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", SPIKE_TEST_OUT=str(out),
               SPIKE_TEST_SUBSET=",".join(map(str, subset)) if subset else "",
               SPIKE_TEST_KILL_AT_STEP="" if kill_at_step is None else str(kill_at_step))
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)


def ranks(out: Path) -> tuple[dict, dict]:
    return tuple(torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))  # type: ignore[return-value]


def small_corpus(tmp_path: Path) -> str:
    """40,000 characters of the built-in corpus: a 2,000-character test split (a quick final score)."""
    path = tmp_path / "corpus.txt"
    path.write_text(builtin_text()[:40000], encoding="utf-8")
    return str(path)


def spikegpt_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--data", small_corpus(tmp_path), "--layers", "2", "--embd", "16", "--ctx-len", "16",
            "--batch-size", "5", "--eval-every", "2", "--eval-tokens", "256", "--quiet", *extra]


def one_process(args: list[str], out: Path, subset: tuple[int, int] | None = SUBSET) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    assert cli_worker.run_here(args, out=out, subset=subset) == 0
    return torch.load(out / "rank0.pt", weights_only=True)


def assert_one_process_step(r0: dict, r1: dict, ref: dict, ckpt: Path, epochs: int) -> None:
    """Both ranks end bit-identical; the first step's gradient is one process's (1e-6); rank 0
    alone wrote: a checkpoint per epoch, and the test accuracy into it (cnn, mlp)."""
    assert (r0["world"], r1["world"], ref["world"]) == (2, 2, 1)
    assert r0["state"].keys() == ref["state"].keys()
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
        assert value.dtype == ref["state"][key].dtype
    assert r0["grads"].keys() == ref["grads"].keys()
    for key, grad in ref["grads"].items():
        torch.testing.assert_close(r0["grads"][key], grad, rtol=0, atol=1e-6, msg=key)
    assert max(g.abs().max() for g in ref["grads"].values()) > 1e-2  # real gradients, not zeros agreeing
    assert r1["writes"] == []
    assert r0["writes"] == ref["writes"] and r0["writes"][:epochs] == [ckpt.name] * epochs
    ck = load_checkpoint(ckpt)
    assert ck["epoch"] == epochs and ck["config"]["trainer"]["precision"] == "fp32"
    for key, value in ck["model_state"].items():
        assert torch.equal(value, r0["state"][key]), key
    assert len(ck["rng_state"]["ranks"]) == 2
    assert sorted(p.name for p in ckpt.parent.iterdir()) == sorted({ckpt.name, "rank0.pt", "rank1.pt"})


@pytest.mark.slow
def test_cnn_baseline_trains_data_parallel_as_one_process(tmp_path: Path) -> None:
    """The unmasked baseline: BatchNorm over the global batch (each rank's own statistics give
    first-step gradients 0.06 off)."""
    args = ["--epochs", "2", "--steps", "2", "--batch-size", "48", "--quiet"]
    proc = torchrun(["train", "cnn", "--out", str(tmp_path / "ddp" / "base.pt"), *args], tmp_path / "ddp")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("test accuracy") == 1  # rank 0 speaks
    ref = one_process(["train", "cnn", "--out", str(tmp_path / "one" / "base.pt"), *args], tmp_path / "one")
    assert_one_process_step(*ranks(tmp_path / "ddp"), ref, tmp_path / "ddp" / "base.pt", 2)
    assert "test_accuracy" in load_checkpoint(tmp_path / "ddp" / "base.pt")


def test_cnn_ftwt_from_a_baseline_trains_data_parallel_as_one_process(tmp_path: Path) -> None:
    """``--init BASELINE.pt --ftwt 0.9``: BatchNorm over the global batch, and mask heads trained
    by a loss read beside the output in epoch 1 and unused in epoch 2 (weight 0), which DDP alone
    cannot follow."""
    init = tmp_path / "base" / "base.pt"
    one_process(["train", "cnn", "--out", str(init), "--epochs", "1", "--steps", "2", "--batch-size", "48",
                 "--quiet"], init.parent)
    args = ["--init", str(init), "--ftwt", "0.9", "--epochs", "2", "--batch-size", "48", "--quiet"]
    proc = torchrun(["train", "cnn", "--out", str(tmp_path / "ddp" / "f.pt"), *args], tmp_path / "ddp")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("test accuracy") == 1  # rank 0 speaks
    ref = one_process(["train", "cnn", "--out", str(tmp_path / "one" / "f.pt"), *args], tmp_path / "one")
    r0, r1 = ranks(tmp_path / "ddp")
    assert_one_process_step(r0, r1, ref, tmp_path / "ddp" / "f.pt", 2)
    assert any(".gate." in k for k in ref["grads"])  # the heads learned in the first step
    assert "test_accuracy" in load_checkpoint(tmp_path / "ddp" / "f.pt")


def test_spikegpt_trains_data_parallel_as_one_process(tmp_path: Path) -> None:
    """5 windows per step: slices of 3 and 2; no dropout (each rank draws its own masks)."""
    args = spikegpt_args(tmp_path, "--iters", "4", "--dropout", "0")
    proc = torchrun(["train", "spikegpt", "--out", str(tmp_path / "ddp" / "g.pt"), *args], tmp_path / "ddp",
                    subset=None)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("test BPC") == 1
    ref = one_process(["train", "spikegpt", "--out", str(tmp_path / "one" / "g.pt"), *args], tmp_path / "one",
                      subset=None)
    r0, r1 = ranks(tmp_path / "ddp")
    assert_one_process_step(r0, r1, ref, tmp_path / "ddp" / "g.pt", 2)
    assert r0["step"] == ref["step"] == 4
    for key, value in ref["state"].items():  # lr 6e-4, 4 steps: no room for Adam's amplification
        torch.testing.assert_close(r0["state"][key], value, rtol=0, atol=1e-6, msg=key)


def _kill_and_resume(tmp_path: Path, args: list[str], kill_at_step: int, done_before: tuple[int, int],
                     subset: tuple[int, int] | None) -> tuple[dict, dict, dict]:
    """(uninterrupted rank 0, resumed rank 0, resumed rank 1) of 2-rank runs of ``spike ARGS --out X``."""
    full = torchrun([*args, "--out", str(tmp_path / "full" / "m.pt")], tmp_path / "full", subset=subset)
    assert full.returncode == 0, full.stdout[-2000:] + full.stderr[-3000:]
    ckpt = tmp_path / "cut" / "m.pt"
    killed = torchrun([*args, "--out", str(ckpt)], tmp_path / "cut", subset=subset, kill_at_step=kill_at_step)
    assert killed.returncode != 0 and f"Signal {int(signal.SIGKILL)}" in killed.stderr + killed.stdout, \
        killed.stderr[-3000:]
    assert not (tmp_path / "cut" / "rank0.pt").exists()
    partial = load_checkpoint(ckpt)
    assert (partial["epoch"], partial["step"]) == done_before
    resumed = torchrun([*args, "--out", str(ckpt), "--resume"], tmp_path / "cut", subset=subset)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    return ranks(tmp_path / "full")[0], *ranks(tmp_path / "cut")  # type: ignore[return-value]


def _assert_bitwise(full: dict, res0: dict, res1: dict) -> None:
    assert full["step"] == res0["step"]
    for key, value in full["state"].items():
        assert torch.equal(res0["state"][key], value), key
        assert torch.equal(res1["state"][key], value), key
    assert res0["history"] == full["history"]  # losses, metrics and lr of every epoch, bit for bit


def test_mlp_killed_under_torchrun_resumes_bit_for_bit(tmp_path: Path) -> None:
    """Rate-coded input (each rank's encoder draws for its own slice: 23 and 22 samples, so the
    ranks' generators part ways) killed mid-epoch 2: every rank resumes its own RNG states, the
    data order, Adam and the cosine schedule, and ends bit-identical to the uninterrupted run
    (same ranks, same operations in the same order: nothing but the file sits between them)."""
    args = ["train", "mlp", "--epochs", "3", "--steps", "4", "--hidden", "16", "--encoding", "rate",
            "--batch-size", "45", "--quiet"]
    full, res0, res1 = _kill_and_resume(tmp_path, args, kill_at_step=5, done_before=(1, 4), subset=(180, 45))
    _assert_bitwise(full, res0, res1)
    assert res0["writes"] == ["m.pt"] * 3  # epochs 2 and 3, and the test accuracy
    assert load_checkpoint(tmp_path / "cut" / "m.pt")["epoch"] == 3


@pytest.mark.slow
def test_spikegpt_killed_under_torchrun_resumes_bit_for_bit(tmp_path: Path) -> None:
    """Dropout on (the ranks' global RNGs part ways), killed in mini-epoch 2 (step 3 of 6)."""
    args = ["train", "spikegpt", *spikegpt_args(tmp_path, "--iters", "6", "--dropout", "0.1")]
    full, res0, res1 = _kill_and_resume(tmp_path, args, kill_at_step=3, done_before=(1, 2), subset=None)
    _assert_bitwise(full, res0, res1)


def test_cnn_ftwt_killed_under_torchrun_resumes_bit_for_bit(tmp_path: Path) -> None:
    """FTWT fine-tuning killed in epoch 2 of 3 (step 4 of 9): the mask heads (averaged outside DDP),
    the mask loss's epoch-dependent weight, BatchNorm's running statistics over the global batch
    and the rate encoder's per-rank generators all resume to the uninterrupted run's bits."""
    init = tmp_path / "base" / "base.pt"
    one_process(["train", "cnn", "--out", str(init), "--epochs", "1", "--steps", "2", "--encoding", "rate",
                 "--batch-size", "48", "--quiet"], init.parent)
    args = ["train", "cnn", "--init", str(init), "--ftwt", "0.9", "--epochs", "3", "--batch-size", "48", "--quiet"]
    full, res0, res1 = _kill_and_resume(tmp_path, args, kill_at_step=4, done_before=(1, 3), subset=SUBSET)
    _assert_bitwise(full, res0, res1)
    assert any(".gate." in k for k in full["state"]) and any("running_mean" in k for k in full["state"])
