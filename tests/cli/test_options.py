"""The command line's options: one parser per model family, explicit options honoured or refused,
help that loads no model, plain logs off a terminal (bad options and paths: tests/robustness)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from spike.cli import main, parser
from spike.cli.train import spikegpt_options
from spike.train.trainer import Trainer, epoch_line


def test_help_imports_no_torch() -> None:
    """``spike --help`` builds the parser without importing torch (or any command's module)."""
    code = ("import sys; from spike.cli import parser; parser(None).format_help(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('spike.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_each_family_shows_its_own_defaults(capsys) -> None:
    for family, shown, absent in [("mlp", ["(default: 16)", "(default: 0.9)", "(default: 0.005)"], "--ftwt"),
                                  ("cnn", ["(default 4; with --init: the baseline's)", "--ftwt R"], "--size"),
                                  ("spikegpt", ["(default: tiny)", "(default: 0.0006)"], "--epochs")]:
        with pytest.raises(SystemExit):
            main(["train", family, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert all(s in out for s in shown), (family, out)
        assert absent not in out


def test_an_explicit_spikegpt_batch_is_honoured() -> None:
    p = parser("train")
    a = p.parse_args(["train", "spikegpt", "--out", "x.pt", "--size", "46m", "--minutes", "1"])
    kw = spikegpt_options(a)
    assert kw["batch_size"] is None and kw["size"] == "46m" and kw["minutes"] == 1 and kw["spiking"]
    assert kw["lr"] == 6e-4
    a = p.parse_args(["train", "spikegpt", "--out", "x.pt", "--batch-size", "64", "--no-spikes"])
    assert spikegpt_options(a)["batch_size"] == 64 and not spikegpt_options(a)["spiking"]


def test_plain_epoch_lines_off_a_terminal(capsys) -> None:
    """Off a terminal, training logs one line per epoch (no progress-bar redraws)."""
    torch.manual_seed(0)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    history = Trainer(model, opt, torch.nn.functional.cross_entropy, (x, y), epochs=3, batch_size=8,
                      eval_data=(x, y), progress=True).fit()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        assert line.startswith(f"epoch {i + 1}/3 loss {history['loss'][i]:.4g} ")
        assert f"eval_loss {history['eval_loss'][i]:.4g}" in line


def test_epoch_line() -> None:
    line = epoch_line({"epoch": 2, "loss": 0.123456, "acc": 0.5, "lr": 0.001, "time_s": 2.04}, 15)
    assert line == "epoch 2/15 loss 0.1235 acc 0.5 lr 0.001 time 2.0 s"


def test_cnn_fine_tuning_refuses_what_the_baseline_fixes(tmp_path, capsys) -> None:
    """With ``--init`` the architecture, dataset and steps are the baseline's: a different explicit
    value is refused, never replaced."""
    from spike.models.cnn.train import _same_as_baseline

    assert main(["train", "cnn", "--out", str(tmp_path / "f.pt"), "--init", "base.pt", "--preset", "mnist"]) == 2
    assert "--preset mnist: the architecture is the --init baseline's" in capsys.readouterr().err
    assert _same_as_baseline("base.pt", "steps", None, 4) == 4
    assert _same_as_baseline("base.pt", "steps", 4, 4) == 4
    with pytest.raises(ValueError, match="--steps 6: the --init baseline base.pt was trained with steps 4"):
        _same_as_baseline("base.pt", "steps", 6, 4)


def test_a_program_without_its_encoding_needs_steps() -> None:
    """``evaluate_program`` of a program compiled from a user's model (no encoding recorded) refuses
    to guess the number of steps, and runs the steps it is given."""
    import numpy as np

    from spike.compiler.ir.nodes import Dense, Input, Output, Population
    from spike.compiler.ir.program import ProgramBuilder
    from spike.workflows import evaluate_program

    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("fc", Dense(shape=(2,), in_shape=(4,), weight=np.full((2, 4), 0.5, np.float32)), "in")
    b.add("lif", Population(shape=(2,), beta=np.full(2, 0.5, np.float32), threshold=np.ones(2, np.float32)), "fc")
    b.add("out", Output(shape=(2,)), "lif")
    program = b.build()
    x, y = torch.ones(3, 4), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="records no input encoding .* give the number of steps"):
        evaluate_program(program, x, y, progress=False)
    report = evaluate_program(program, x, y, steps=5, progress=False)
    assert report.steps == 5 and report.ops.total()["neuron_updates"] == 2 * 5


def test_accumulated_micro_batches_train_the_same_model(tmp_path) -> None:
    """``--accumulate 3``: three micro-batches per batch, one step: the weights of one epoch agree with
    whole batches' to float rounding (direct input is deterministic)."""
    for k in (1, 3):
        assert main(["train", "mlp", "--out", str(tmp_path / f"a{k}.pt"), "--epochs", "1", "--hidden", "16",
                     "--quiet", "--accumulate", str(k)]) == 0
    whole, micro = (torch.load(tmp_path / f"a{k}.pt", weights_only=True)["model_state"] for k in (1, 3))
    for key in whole:
        torch.testing.assert_close(micro[key], whole[key], rtol=0, atol=1e-6)
