"""Training loop: determinism, checkpoints, resume after a real SIGKILL (spike.train.trainer)."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from spike.train.checkpoint import CheckpointError, load_checkpoint
from spike.train.trainer import Trainer, accuracy, set_seed

from helpers import ROOT

WORKER = Path(__file__).with_name("train_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("train_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "ckpt.pt"
    steps_per_epoch = worker.N // worker.BATCH
    kill_at = 2 * steps_per_epoch + 2  # mid-epoch 3, after the epoch-2 checkpoint was written
    # The uninterrupted and the doomed run are independent processes: run them side by side.
    full = _spawn("--out", str(tmp_path / "full.pt"))
    doomed = _spawn("--out", str(tmp_path / "never.pt"), "--ckpt", str(ckpt),
                    "--kill-at-step", str(kill_at))
    rc, out = _finish(doomed)
    assert rc == -signal.SIGKILL, out
    assert not (tmp_path / "never.pt").exists()
    partial = load_checkpoint(ckpt)
    assert (partial["epoch"], partial["step"]) == (2, 2 * steps_per_epoch)
    assert partial["config"]["model"]["kind"] == "mlp"
    assert [p.name for p in ckpt.parent.iterdir()] == ["ckpt.pt"]  # no temp files left behind

    rc, out = _finish(_spawn("--out", str(tmp_path / "resumed.pt"), "--ckpt", str(ckpt), "--resume"))
    assert rc == 0, out
    rc, out = _finish(full)
    assert rc == 0, out

    a = torch.load(tmp_path / "full.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    _assert_same_weights(a["state"], b["state"])
    assert a["history"] == b["history"]  # losses, accuracies and lr of all 4 epochs, bit for bit
    assert a["step"] == b["step"] == worker.EPOCHS * steps_per_epoch
    assert load_checkpoint(ckpt)["epoch"] == worker.EPOCHS


def test_in_process_resume_and_completed_checkpoint(tmp_path: Path) -> None:
    full = worker.build()
    full.fit()
    ckpt = tmp_path / "c.pt"

    class Stop(Exception):
        pass

    def stop_after_first(epoch: int, stats: dict) -> None:
        raise Stop

    first = worker.build(ckpt)
    first.on_epoch_end = stop_after_first
    with pytest.raises(Stop):
        first.fit()
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed = worker.build(ckpt, resume=True)
    assert resumed.start_epoch == 1 and resumed.resumed_from == ckpt
    history = resumed.fit()
    _assert_same_weights(full.model.state_dict(), resumed.model.state_dict())
    assert history["loss"] == full.history["loss"] and len(history["epoch"]) == worker.EPOCHS

    done = worker.build(ckpt, resume=True)  # nothing left to do
    assert done.start_epoch == worker.EPOCHS
    assert done.fit()["loss"] == history["loss"] and done.step == resumed.step
    _assert_same_weights(done.model.state_dict(), resumed.model.state_dict())


def _toy(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return x, (x.sum(1) > 0).long()


def _toy_trainer(data, **kw) -> Trainer:
    set_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.2), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    kw.setdefault("progress", False)
    return Trainer(model, opt, nn.functional.cross_entropy, data, epochs=kw.pop("epochs", 2),
                   batch_size=kw.pop("batch_size", 8), seed=4, **kw)


def test_history_metrics_eval_and_progress_lines(capsys) -> None:
    x, y = _toy()
    t = _toy_trainer((x, y), eval_data=(x, y), metric_fn=accuracy, progress=True, epochs=3)
    history = t.fit()
    assert history["epoch"] == [1, 2, 3]
    for key in ("loss", "acc", "eval_loss", "eval_acc", "lr", "time_s"):
        assert len(history[key]) == 3, key
    assert all(0.0 <= a <= 1.0 for a in history["acc"] + history["eval_acc"])
    assert t.step == 3 * 5
    err = capsys.readouterr().err  # not a terminal: one plain line per epoch
    assert err.splitlines()[-1].startswith("epoch 3/3 loss ") and " acc " in err and " eval_acc " in err
    # evaluate() reports unprefixed keys, restores train mode and is repeatable
    result = t.evaluate((x, y))
    assert set(result) == {"loss", "acc"} and result["loss"] == history["eval_loss"][-1]
    assert t.evaluate((x, y)) == result and t.model.training


def test_dataset_and_callable_sources_match_tensor_source() -> None:
    x, y = _toy(36)  # 36 = 4 full batches + one of 4

    def loader(epoch: int, gen: torch.Generator | None):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 8):
            idx = order[i:i + 8]
            yield x[idx], y[idx]

    results = []
    for data in ((x, y), TensorDataset(x, y), loader):
        t = _toy_trainer(data)
        t.fit()
        results.append(t.model.state_dict())
    _assert_same_weights(results[0], results[1])
    _assert_same_weights(results[0], results[2])
    t = _toy_trainer((x, y), drop_last=True)
    t.fit()
    assert t.step == 2 * 4


def test_checkpoint_interval_and_scheduler(tmp_path: Path) -> None:
    x, y = _toy()
    seen: list[tuple[int, int]] = []
    path = tmp_path / "c.pt"

    def record(epoch: int, stats: dict) -> None:
        seen.append((epoch, load_checkpoint(path)["epoch"] if path.exists() else -1))

    t = _toy_trainer((x, y), epochs=5, checkpoint_path=path, checkpoint_every=2, on_epoch_end=record)
    t.scheduler = torch.optim.lr_scheduler.StepLR(t.optimizer, step_size=1, gamma=0.5)
    t.fit()
    assert seen == [(0, -1), (1, 2), (2, 2), (3, 4), (4, 5)]  # every 2 epochs and the last one
    assert t.history["lr"] == [0.1, 0.05, 0.025, 0.0125, 0.00625]
    assert load_checkpoint(path)["scheduler_state"]["last_epoch"] == 5


def test_failed_checkpoint_write_keeps_previous_one(tmp_path: Path, monkeypatch) -> None:
    x, y = _toy()
    path = tmp_path / "c.pt"
    real_save = torch.save

    def flaky_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2:
            f.write(b"partial bytes")
            raise OSError("simulated crash while writing")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="simulated crash"):
        _toy_trainer((x, y), epochs=3, checkpoint_path=path).fit()
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    resumed = _toy_trainer((x, y), epochs=3, checkpoint_path=path, resume=True)
    assert resumed.start_epoch == 1


def test_resume_without_checkpoint_starts_fresh_and_errors(tmp_path: Path) -> None:
    x, y = _toy()
    t = _toy_trainer((x, y), checkpoint_path=tmp_path / "absent.pt", resume=True)
    assert t.start_epoch == 0 and t.resumed_from is None
    with pytest.raises(ValueError, match="checkpoint_path"):
        _toy_trainer((x, y), resume=True)
    with pytest.raises(TypeError, match="train_data"):
        _toy_trainer(x)
    with pytest.raises(ValueError, match="different first dimensions"):
        _toy_trainer((x, y[:3]))
    # a checkpoint from a different model is refused with the file named
    t = _toy_trainer((x, y), epochs=1, checkpoint_path=tmp_path / "c.pt")
    t.fit()
    with pytest.raises(CheckpointError, match="no generator named 'enc'"):
        _toy_trainer((x, y), checkpoint_path=tmp_path / "c.pt", resume=True,
                     generators={"enc": torch.Generator()})
    other = nn.Linear(5, 2)
    with pytest.raises(CheckpointError, match="c.pt"):
        Trainer(other, torch.optim.SGD(other.parameters(), lr=0.1), nn.functional.cross_entropy,
                (x, y), epochs=2, batch_size=8, checkpoint_path=tmp_path / "c.pt", resume=True)


def test_set_seed_is_reproducible() -> None:
    import random

    import numpy as np

    set_seed(11)
    a = (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random())
    set_seed(11)
    assert a == (torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random())


@pytest.mark.parametrize("accumulate", [2, 3, 5])
def test_accumulated_micro_batches_give_the_whole_batch_step(accumulate: int) -> None:
    """``accumulate`` micro-batches (5 of a 12-sample batch: sizes 3, 3, 2, 2, 2) step as one batch
    does: the weights agree to float rounding, the logged loss too."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(36, 6, generator=g), torch.randn(36, 2, generator=g)

    def train(k: int) -> tuple[dict[str, torch.Tensor], list[float]]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.functional.mse_loss, (x, y),
                          epochs=2, batch_size=12, seed=1, progress=False, accumulate=k)
        history = trainer.fit()
        return model.state_dict(), history["loss"]

    (whole, loss_whole), (micro, loss_micro) = train(1), train(accumulate)
    for key in whole:
        torch.testing.assert_close(micro[key], whole[key], rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(loss_micro), torch.tensor(loss_whole), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="accumulate must be >= 1"):
        Trainer(nn.Linear(6, 2), torch.optim.SGD(nn.Linear(6, 2).parameters(), lr=0.1), nn.functional.mse_loss,
                (x, y), epochs=1, batch_size=12, accumulate=0)
