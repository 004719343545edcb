"""``spike train --target`` (issue 13, item 3) and one accuracy for one model (item 5).

Training for a target picks what it needs (spike input, reset to zero in the step that fires, the
target's synaptic delay in every synaptic layer) and refuses an explicit option that conflicts; the
checkpoint records the target and the accuracy training printed, which the compiled float program
reproduces exactly on the same seeded encoding of the test split. Tiny models, two epochs: these
check the plumbing, not the accuracy.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from spike.train.checkpoint import load_checkpoint
from spike.compiler.io.hdf5 import load_program
from spike.cli import main
from spike.train.datasets import load_digits
from spike.encoders import Encoder
from spike.train.evaluation import encode_samples, encoded_batches, evaluate_model
from spike.workflows import compile_checkpoint, evaluate_program
from spike.layers import Delayed
from spike.train.trainer import fit_to_target, target_needs

TINY_CNN = {"layers": [8, "M", 8, "M"]}


@pytest.fixture(scope="module")
def digits():
    return load_digits()


# ------------------------------------------------------------------ choosing for a target


def test_target_needs_and_choices() -> None:
    loihi = target_needs("loihi1")
    assert (loihi.name, loihi.synaptic_delay, loihi.spike_input, loihi.reset, loihi.reset_delay) == \
        ("loihi1", 1, True, "zero", False)
    assert target_needs("loihi2").synaptic_delay == 1
    chosen = fit_to_target(loihi, encoding=None, reset=None, reset_delay=None)
    assert chosen == {"encoding": "rate", "reset": "zero", "reset_delay": False, "synaptic_delay": 1}
    # a spiking encoding the user picks is kept; so are choices equal to the target's
    assert fit_to_target(loihi, encoding="latency", reset="zero", reset_delay=False)["encoding"] == "latency"
    # without a target: today's defaults
    assert fit_to_target(None, encoding=None, reset=None, reset_delay=None) == \
        {"encoding": "direct", "reset": "subtract", "reset_delay": True, "synaptic_delay": 0}
    generic = target_needs("generic")
    assert generic.synaptic_delay == 0 and not generic.spike_input
    assert fit_to_target(generic, encoding=None, reset=None, reset_delay=None)["encoding"] == "direct"


@pytest.mark.parametrize("option, value, needs", [
    ("encoding", "direct", "--encoding rate"),
    ("reset", "subtract", "--reset zero"),
    ("reset", "none", "--reset zero"),
])
def test_conflicts_are_refused(option: str, value: str, needs: str) -> None:
    given = {"encoding": None, "reset": None, "reset_delay": None, option: value}
    with pytest.raises(ValueError, match=f"--{option} {value} conflicts with --target loihi1.*{needs}"):
        fit_to_target(target_needs("loihi1"), **given)
    with pytest.raises(ValueError, match="reset_delay=True conflicts with --target loihi1"):
        fit_to_target(target_needs("loihi1"), encoding=None, reset=None, reset_delay=True)


@pytest.mark.parametrize("model, extra, names", [
    ("mlp", ["--encoding", "direct"], "--encoding direct"),
    ("mlp", ["--reset", "subtract"], "--reset subtract"),
    ("cnn", ["--encoding", "direct"], "--encoding direct"),
    ("cnn", ["--reset", "subtract"], "--reset subtract"),
])
def test_cli_refuses_conflicts(tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, extra: list[str],
                               names: str) -> None:
    out = tmp_path / "x.pt"
    rc = main(["train", model, "--target", "loihi1", "--out", str(out), "--epochs", "1", "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    (line,) = err.strip().splitlines()  # one line: the option and what the target needs
    assert names in line and "loihi1" in line and ("rate" in line or "zero" in line)


def test_cli_refuses_target_for_spikegpt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:  # spikegpt trains for host targets only: no --target option
        main(["train", "spikegpt", "--target", "loihi1", "--out", str(tmp_path / "g.pt"), "--quiet"])
    assert exc.value.code == 2 and "unrecognized arguments: --target loihi1" in capsys.readouterr().err


def test_mlp_synaptic_delay_wraps_every_linear() -> None:
    from spike.models.mlp import SpikingMLP

    plain = SpikingMLP(64, 10, hidden=[16, 12])
    delayed = SpikingMLP(64, 10, hidden=[16, 12], synaptic_delay=1)
    assert plain.latency == 0 and delayed.latency == 3
    assert not any(isinstance(m, Delayed) for m in plain.modules())
    wrapped = [m for m in delayed.modules() if isinstance(m, Delayed)]
    assert len(wrapped) == 3 and all(isinstance(m.module, torch.nn.Linear) and m.steps == 1 for m in wrapped)
    # the output trails the input by the latency: nothing reaches it before step 3
    x = torch.ones(6, 2, 64)
    for m in delayed.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.constant_(m.weight, 1.0)
            torch.nn.init.zeros_(m.bias)
    assert delayed(x)[:3].sum() == 0 and delayed(x)[3:].sum() > 0


def test_cnn_latency_matches_compiled_program() -> None:
    from spike.demo import program_latency
    from spike.models.cnn.model import SpikingCNN

    for model in (SpikingCNN("digits", layers=[4, "M", 4, "M"], synaptic_delay=1),
                  SpikingCNN("digits_resnet", widths=[4, 4, 4], synaptic_delay=1)):
        model.eval()
        from spike.compiler import compile as compile_model

        program = compile_model(model, torch.zeros(model.latency + 2, 1, 1, 8, 8))
        assert program_latency(program) == model.latency


# ------------------------------------------------------------------ one encoding of a split


def test_encoding_is_independent_of_the_batch_size() -> None:
    x = torch.rand(50, 1, 8, 8)
    enc = Encoder("rate", 6)
    whole = encode_samples(enc, x)
    assert whole.shape == (6, 50, 1, 8, 8)
    for batch in (1, 7, 64):
        got = torch.cat([s for _, _, s in encoded_batches(enc, x, batch)], dim=1)
        assert torch.equal(got, whole)
    assert torch.equal(encode_samples(enc, x[13:29], first=13), whole[:, 13:29])  # --limit, any slice
    assert not torch.equal(encode_samples(enc, x, seed=1), whole)  # the seed matters
    assert not torch.equal(whole[:, 0], encode_samples(enc, x[:1].expand(2, 1, 8, 8).contiguous())[:, 1])
    direct = Encoder("direct", 3)
    assert torch.equal(encode_samples(direct, x), direct(x))


# ------------------------------------------------------------------ train -> compile -> run


@pytest.fixture(scope="module")
def mlp_loihi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mlp") / "mlp.pt"
    assert main(["train", "mlp", "--target", "loihi1", "--out", str(out), "--epochs", "2", "--hidden", "32",
                 "--steps", "8", "--quiet"]) == 0
    return out


def test_mlp_for_loihi1_records_target_and_accuracy(mlp_loihi: Path, digits, capsys) -> None:
    ckpt = load_checkpoint(mlp_loihi)
    cfg = ckpt["config"]
    assert cfg["target"] == {"name": "loihi1", "synaptic_delay": 1, "spike_input": True, "reset": "zero",
                             "reset_delay": False}
    kw = cfg["model"]["kwargs"]
    assert (kw["reset"], kw["reset_delay"], kw["synaptic_delay"]) == ("zero", False, 1)
    assert cfg["encoding"]["kind"] == "rate" and cfg["num_steps"] == 8 + 2  # two synaptic layers
    ev = cfg["evaluation"]
    assert ckpt["test_accuracy"] == ev["accuracy"] == ev["correct"] / ev["num_samples"]
    assert ev["num_samples"] == digits.num_test and ev["seed"] == 0
    # the compiled float program gets exactly the same test samples right
    report = evaluate_program(compile_checkpoint(str(mlp_loihi)), digits.x_test, digits.y_test, progress=False)
    assert report.accuracy == ckpt["test_accuracy"]


def test_mlp_for_loihi1_compiles_fixed_and_runs(mlp_loihi: Path, capsys) -> None:
    h5 = mlp_loihi.with_name("net.h5")
    assert main(["compile", str(mlp_loihi), "--target", "loihi1", "--precision", "fixed", "--out", str(h5)]) == 0
    assert main(["run", str(h5), "--limit", "40", "--quiet"]) == 0
    assert "accuracy" in capsys.readouterr().out
    digits = load_digits()
    fixed = evaluate_program(load_program(h5), digits.x_test, digits.y_test, progress=False).accuracy
    assert abs(fixed - load_checkpoint(mlp_loihi)["test_accuracy"]) <= 0.01  # fixed point within 1 point of float


def test_trained_accuracy_equals_compiled_plain_mlp(tmp_path: Path, digits, capsys) -> None:
    out = tmp_path / "m.pt"
    assert main(["train", "mlp", "--out", str(out), "--epochs", "2", "--hidden", "32", "--encoding", "rate",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert "target" not in ckpt["config"] and ckpt["config"]["model"]["kwargs"]["reset"] == "subtract"
    assert f"test accuracy {100 * ckpt['test_accuracy']:.2f}%" in printed
    report = evaluate_program(compile_checkpoint(str(out)), digits.x_test, digits.y_test, batch_size=50,
                              progress=False)
    assert report.accuracy == ckpt["test_accuracy"]


def test_trained_accuracy_equals_compiled_cnn(tmp_path: Path, digits) -> None:
    from spike.models.cnn.train import train_cnn

    for target in (None, "loihi1"):
        out = tmp_path / f"cnn_{target}.pt"
        res = train_cnn(out=out, model_kwargs=TINY_CNN, epochs=2, data=digits, progress=False, target=target)
        ckpt = load_checkpoint(out)
        assert ckpt["test_accuracy"] == res["accuracy"] == res["evaluation"]["accuracy"]
        if target:
            assert ckpt["config"]["target"]["synaptic_delay"] == 1 and ckpt["config"]["num_steps"] == 4 + 5
            assert ckpt["config"]["encoding"]["kind"] == "rate"
        report = evaluate_program(compile_checkpoint(str(out)), digits.x_test, digits.y_test, progress=False)
        assert report.accuracy == res["accuracy"]
    fixed = compile_checkpoint(str(out), target="loihi1", precision="fixed")  # the loihi1 one
    assert evaluate_program(fixed, digits.x_test[:20], digits.y_test[:20], progress=False).num_samples == 20


def test_cnn_target_conflicts(tmp_path: Path, digits) -> None:
    from spike.models.cnn.train import train_cnn

    with pytest.raises(ValueError, match="--reset subtract conflicts with --target loihi1"):
        train_cnn(out=tmp_path / "a.pt", model_kwargs={**TINY_CNN, "reset": "subtract"}, target="loihi1",
                  data=digits, epochs=1, progress=False)
    with pytest.raises(ValueError, match="synaptic_delay=0 conflicts with --target loihi1"):
        train_cnn(out=tmp_path / "a.pt", model_kwargs={**TINY_CNN, "synaptic_delay": 0}, target="loihi1",
                  data=digits, epochs=1, progress=False)
    base = tmp_path / "plain.pt"
    train_cnn(out=base, model_kwargs=TINY_CNN, epochs=1, data=digits, progress=False)
    with pytest.raises(ValueError, match=re.escape(f"--init {base} was not trained for --target loihi1")):
        train_cnn(out=tmp_path / "b.pt", init=base, ftwt={"ratio": 0.9}, target="loihi1", data=digits,
                  epochs=1, progress=False)


def test_evaluate_model_matches_the_program_encoding(digits) -> None:
    """evaluate_model and evaluate_program see the same spikes: an identity-like model's counts."""
    enc = Encoder("rate", 5)
    x = digits.x_test[:30]
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, s):
            seen.append(s)
            return s.flatten(2)[..., :10]

    evaluate_model(Probe(), enc, x, digits.y_test[:30], batch_size=8)
    assert torch.equal(torch.cat(seen, dim=1), encode_samples(enc, x))
