"""``--precision bf16``: forward and loss under bfloat16 autocast; weights, optimizer state and the
fused LIF/WKV kernels' state stay float32; the checkpoint records the precision and ``--resume``
refuses another one."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from spike.encoders import Encoder
from spike.kernels import lif as lif_kernel
from spike.kernels import wkv as wkv_kernel
from spike.losses import rate_cross_entropy
from spike.models import build_model
from spike.models.spikegpt.text import builtin_text
from spike.neurons import LIF
from spike.train.checkpoint import CheckpointError, load_checkpoint
from spike.train.trainer import Trainer, set_seed

sys.path.insert(0, str(Path(__file__).parent))
import cli_worker  # noqa: E402


def _toy(n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 12, generator=g)
    return x, (x[:, :6].sum(1) > x[:, 6:].sum(1)).long()


def _spy_kernels(monkeypatch) -> dict[str, list[torch.dtype]]:
    """Record the dtypes the fused LIF kernel and the WKV kernel compute in."""
    seen: dict[str, list[torch.dtype]] = {"lif": [], "lif_out": [], "wkv": []}
    lif_apply, wkv_apply = lif_kernel.LIFFunction.apply, wkv_kernel.WKVFunction.apply

    def lif(x, *args):
        seen["lif"].append(x.dtype)
        spk, mem = lif_apply(x, *args)
        seen["lif_out"] += [spk.dtype, mem.dtype]
        return spk, mem

    def wkv(decay, first, k, v):
        seen["wkv"] += [k.dtype, v.dtype]
        return wkv_apply(decay, first, k, v)

    monkeypatch.setattr(lif_kernel.LIFFunction, "apply", lif)
    monkeypatch.setattr(wkv_kernel.WKVFunction, "apply", wkv)
    return seen


def _mlp_trainer(precision: str, ckpt: Path | None = None, resume: bool = False, epochs: int = 6,
                 device: str = "cpu") -> Trainer:
    set_seed(0)
    model = build_model("mlp", in_features=12, num_classes=2, hidden=[32], beta=0.9).to(device)
    encoder = Encoder("direct", 6)
    x, y = _toy()
    return Trainer(model, torch.optim.Adam(model.parameters(), lr=2e-2), rate_cross_entropy, (x, y),
                   epochs=epochs, batch_size=32, forward_fn=lambda m, xb: m(encoder(xb)), progress=False,
                   checkpoint_path=ckpt, resume=resume, precision=precision, device=device)


def test_bf16_trains_with_float32_weights_and_neuron_state(tmp_path: Path, monkeypatch) -> None:
    seen = _spy_kernels(monkeypatch)
    linear_out: list[torch.dtype] = []
    trainer = _mlp_trainer("bf16", tmp_path / "m.pt")
    trainer.model.fc1.register_forward_hook(lambda m, a, out: linear_out.append(out.dtype))
    history = trainer.fit()
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]  # it learns
    assert set(linear_out) == {torch.bfloat16}  # autocast was on: the matmul ran in bfloat16
    assert seen["lif"] and set(seen["lif"]) == {torch.float32}  # the neurons integrate in float32
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(v.dtype == torch.float32 for s in trainer.optimizer.state.values() for v in s.values()
               if v.is_floating_point() and v.dim())
    assert load_checkpoint(tmp_path / "m.pt")["config"]["trainer"]["precision"] == "bf16"
    # Under autocast a LIF layer is a float32 op: its membrane comes back in float32 too.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spikes, mem = LIF(beta=0.9, return_mem=True)(nn.functional.linear(torch.rand(4, 2, 12), torch.rand(3, 12)))
    assert spikes.dtype == mem.dtype == torch.float32
    # Resuming with another precision is refused, naming it.
    with pytest.raises(CheckpointError, match=r"trainer.precision='fp32'.*trainer.precision='bf16'"):
        _mlp_trainer("fp32", tmp_path / "m.pt", resume=True, epochs=8)
    with pytest.raises(ValueError, match=r"precision \(--precision\) must be one of fp32, bf16, got 'fp16'"):
        _mlp_trainer("fp16")


def test_bf16_matches_fp32_training_to_bfloat16_rounding() -> None:
    """bf16 trains the same model: the epoch losses agree with float32's within bfloat16's few
    significant digits, and differ (autocast really changes the arithmetic)."""
    fp32, bf16 = (_mlp_trainer(p, epochs=3).fit()["loss"] for p in ("fp32", "bf16"))
    torch.testing.assert_close(torch.tensor(bf16), torch.tensor(fp32), rtol=0, atol=3e-2)
    assert bf16 != fp32


def test_cli_bf16_cnn_and_spikegpt_record_precision_and_refuse_another(tmp_path: Path, monkeypatch, capsys) -> None:
    seen = _spy_kernels(monkeypatch)
    out = tmp_path / "c.pt"
    cnn = ["train", "cnn", "--out", str(out), "--steps", "2", "--batch-size", "48", "--quiet"]
    assert cli_worker.run_here([*cnn, "--epochs", "1", "--precision", "bf16"], subset=(96, 48)) == 0
    ck = load_checkpoint(out)
    assert ck["config"]["trainer"]["precision"] == "bf16" and ck["epoch"] == 1
    assert all(v.dtype in (torch.float32, torch.int64) for v in ck["model_state"].values())
    assert set(seen["lif"]) == {torch.float32} and set(seen["lif_out"]) == {torch.float32}
    capsys.readouterr()
    assert cli_worker.run_here([*cnn, "--epochs", "2", "--resume"], subset=(96, 48)) == 2  # fp32 by default: refused
    assert "trainer.precision='fp32'" in capsys.readouterr().err
    assert load_checkpoint(out)["epoch"] == 1

    text = tmp_path / "corpus.txt"
    text.write_text(builtin_text()[:40000], encoding="utf-8")  # a 2,000-character test split
    gpt = ["train", "spikegpt", "--out", str(tmp_path / "g.pt"), "--data", str(text), "--layers", "2", "--embd",
           "16", "--ctx-len", "16", "--batch-size", "4", "--iters", "2", "--eval-every", "2", "--eval-tokens",
           "256", "--quiet", "--precision", "bf16"]
    assert cli_worker.run_here(gpt) == 0
    assert load_checkpoint(tmp_path / "g.pt")["config"]["trainer"]["precision"] == "bf16"
    assert seen["wkv"] and set(seen["wkv"]) == {torch.float32}  # the WKV state in float32, fused kernel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_cuda_trains_with_float32_state(monkeypatch) -> None:
    seen = _spy_kernels(monkeypatch)
    trainer = _mlp_trainer("bf16", device="cuda")
    history = trainer.fit()
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
    assert set(seen["lif"]) == {torch.float32}
    assert all(p.dtype == torch.float32 and p.is_cuda for p in trainer.model.parameters())
