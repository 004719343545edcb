"""``spike train mlp | cnn | spikegpt --device``: cpu, cuda or cuda:N, refused clearly where it cannot
run; on a GPU (``gpu`` marker) the input spikes are the CPU's and one epoch matches the CPU run."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from spike.cli import main
from spike.encoders import Encoder
from spike.train.checkpoint import load_checkpoint
from spike.train.distributed import training_device
from spike.train.evaluation import encode_on_cpu

sys.path.insert(0, str(Path(__file__).parent))
import cli_worker  # noqa: E402  (tests/train is not a package on sys.path)

NO_CUDA = not torch.cuda.is_available()


def test_cpu_is_the_cpu() -> None:
    assert training_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu0", "meta", "cuda:x", ""])
def test_unknown_devices_are_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError, match=r"--device .*expected cpu, cuda or cuda:N"):
        training_device(name)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("family", ["mlp", "cnn", "spikegpt"])
def test_cuda_without_cuda_is_one_line_exit_2_and_no_file(family: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.pt"
    assert main(["train", family, "--out", str(out), "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device cuda: this PyTorch sees no CUDA device" in err[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_rate_spikes_drawn_on_the_cpu_are_the_plain_encoders() -> None:
    x = torch.rand(5, 12)
    spikes = encode_on_cpu(Encoder("rate", 7), x, torch.Generator().manual_seed(3))
    assert torch.equal(spikes, Encoder("rate", 7)(x, generator=torch.Generator().manual_seed(3)))
    assert spikes.shape == (7, 5, 12) and 0 < spikes.mean() < 1


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
def test_cuda_encoding_moves_the_cpu_spikes() -> None:
    x = torch.rand(5, 12, device="cuda")
    spikes = encode_on_cpu(Encoder("rate", 7), x, torch.Generator().manual_seed(3))
    assert spikes.is_cuda
    assert torch.equal(spikes.cpu(), Encoder("rate", 7)(x.cpu(), generator=torch.Generator().manual_seed(3)))


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_one_epoch_on_cuda_follows_the_cpu_run(family: str, tmp_path: Path, monkeypatch) -> None:
    """Same seed and rate-coded spikes: the first step's loss agrees to float rounding, the
    checkpoint loads on the CPU, and the test accuracy is within a few samples of the CPU's.
    cuDNN's convolutions run in float32 here: with TF32 (torch's default for them) the CNN's first
    gradients differed from the CPU's by more than rtol 1e-3 on an H100 (2026-12-06)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    args = ["train", family, "--epochs", "1", "--steps", "4", "--encoding", "rate", "--batch-size", "48", "--quiet"]
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device / "m.pt"
        out.parent.mkdir()
        assert cli_worker.run_here([*args, "--out", str(out), "--device", device], out=out.parent,
                                   subset=(192, 96)) == 0
        runs[device] = torch.load(out.parent / "rank0.pt", weights_only=True)
        ck = load_checkpoint(out)
        assert all(v.device.type == "cpu" for v in ck["model_state"].values())
        runs[device]["accuracy"] = ck["test_accuracy"]
    for key, grad in runs["cpu"]["grads"].items():
        torch.testing.assert_close(runs["cuda"]["grads"][key].cpu(), grad, rtol=1e-3, atol=1e-5, msg=key)
    assert abs(runs["cuda"]["accuracy"] - runs["cpu"]["accuracy"]) <= 0.05
