"""Atomic writes and checkpoint save/load/validation (spike.train.checkpoint)."""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spike.train import checkpoint as ckpt_mod
from spike.train.checkpoint import (
    REQUIRED_KEYS,
    CheckpointError,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    get_rng_state,
    load_checkpoint,
    make_config,
    save_checkpoint,
    set_rng_state,
)


def _small_run() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def _save_valid(path: Path, **overrides) -> None:
    model, opt, sched = _small_run()
    kwargs = dict(epoch=3, step=30, rng_state=None, config=make_config("mlp", {"hidden": 3}),
                  metrics={"history": {"loss": [1.0, 0.5]}})
    kwargs.update(overrides)
    save_checkpoint(path, model, opt, sched, **kwargs)


def _failing_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half-written checkpoint bytes")
    raise OSError("disk full (simulated)")


def test_atomic_save_roundtrip_leaves_only_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.pt"
    atomic_save({"a": torch.arange(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(3))
    assert [p.name for p in target.parent.iterdir()] == ["x.pt"]


def test_failed_save_keeps_previous_file_and_removes_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "ckpt.pt"
    atomic_save({"v": torch.tensor([1.0, 2.0])}, target)
    before = target.read_bytes()
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"v": torch.tensor([9.0])}, target)
    with pytest.raises(OSError, match="disk full"):
        _save_valid(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert torch.equal(torch.load(target, weights_only=True)["v"], torch.tensor([1.0, 2.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_atomic_write_text_and_json(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "r.txt", "hello\n")
    assert (tmp_path / "r.txt").read_text() == "hello\n"
    atomic_write_json(tmp_path / "r.json", {"b": 1, "a": [1.5, "x"]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": [1.5, "x"], "b": 1}
    with pytest.raises(TypeError):  # unserialisable: the old report survives, no temp file
        atomic_write_json(tmp_path / "r.json", {"bad": object()})
    assert json.loads((tmp_path / "r.json").read_text())["b"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.txt"]


def test_checkpoint_roundtrip_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    model, opt, sched = _small_run()
    config = make_config("mlp", {"hidden": 3}, encoding={"kind": "rate", "gain": 1.0},
                         num_steps=25, dataset="toy")
    save_checkpoint(path, model, opt, sched, epoch=2, step=7, rng_state=None, config=config,
                    metrics={"history": {"loss": [0.5]}})
    raw = torch.load(path, weights_only=True)  # the contract: plain weights_only load works
    assert set(REQUIRED_KEYS) <= set(raw)
    ck = load_checkpoint(path)
    assert ck["format_version"] == ckpt_mod.FORMAT_VERSION
    assert ck["config"] == config and ck["config"]["model"] == {"kind": "mlp", "kwargs": {"hidden": 3}}
    assert (ck["epoch"], ck["step"]) == (2, 7)
    assert ck["metrics"] == {"history": {"loss": [0.5]}}

    model2 = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    model2.load_state_dict(ck["model_state"])
    opt2.load_state_dict(ck["optimizer_state"])
    sched2.load_state_dict(ck["scheduler_state"])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.05
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_rng_state_roundtrip_through_file(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    enc = torch.Generator().manual_seed(6)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    atomic_save(get_rng_state(gen, {"enc": enc}), tmp_path / "rng.pt")

    def draw():
        return (torch.rand(3).tolist(), np.random.normal(size=3).tolist(), random.random(),
                torch.randperm(6, generator=gen).tolist(), torch.rand(2, generator=enc).tolist())

    first = draw()
    state = torch.load(tmp_path / "rng.pt", weights_only=True)
    set_rng_state(state, gen, {"enc": enc})
    assert draw() == first
    with pytest.raises(KeyError, match="'other'"):
        set_rng_state(state, generators={"other": torch.Generator()})


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_raises_checkpoint_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bad.pt"
    _save_valid(path)
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x00not a checkpoint" * 10, "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    expected = {"garbage": "is not a PyTorch checkpoint", "truncated": "is corrupt or truncated",
                "empty": "is not a PyTorch checkpoint"}[damage]
    with pytest.raises(CheckpointError, match=rf"bad\.pt {expected} \("):
        load_checkpoint(path)
    assert issubclass(CheckpointError, RuntimeError)


def test_missing_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    _save_valid(path)
    ck = torch.load(path, weights_only=True)
    del ck["optimizer_state"]
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="'optimizer_state' is missing"):
        load_checkpoint(path)


def test_wrong_type_version_and_unsafe_pickle(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(path)
    _save_valid(path)
    ck = torch.load(path, weights_only=True)
    ck["format_version"] = 99
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_checkpoint(path)
    ck["format_version"] = 1
    ck["config"] = {"evil": io.BytesIO(b"x")}  # arbitrary objects must not be unpickled
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match=r"c\.pt holds Python objects beyond tensors .*_io.BytesIO.*could run code"):
        load_checkpoint(path)


def test_non_plain_config_rejected_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=r"config\['data_dir'\]"):
        _save_valid(path, config={"data_dir": tmp_path})
    assert not path.exists() and list(tmp_path.iterdir()) == []
