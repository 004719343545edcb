"""The command line end to end: train -> compile -> run, on the built-in digits."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spike.cli import main
from spike.compiler.io.hdf5 import save_program
from spike.compiler.ir.nodes import Dense, Input, Output
from spike.compiler.ir.program import ProgramBuilder
from spike.models.random_net import Network, fixed_fan_out
from spike.workflows import compile_checkpoint, load_model
from helpers.reports import validated


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "compile", "run", "demo"):
        assert cmd in out


def test_console_script_runs() -> None:
    exe = Path(sys.executable).parent / "spike"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: spike" in out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "mlp.pt"
    assert main(["train", "mlp", "--dataset", "digits", "--out", str(out), "--epochs", "2",
                 "--hidden", "32", "--steps", "8", "--quiet"]) == 0
    return out


def test_train_compile_run(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tmp = trained.parent
    capsys.readouterr()
    assert main(["compile", str(trained), "--out", str(tmp / "net.h5")]) == 0
    summary = capsys.readouterr().out
    assert "neurons" in summary and "synapses" in summary and "42 neurons" in summary  # 32 + 10
    report = tmp / "report.json"
    assert main(["run", str(tmp / "net.h5"), "--backend", "numba", "--dataset", "digits", "--limit", "40",
                 "--json", str(report), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "syn_ops" in printed
    data = validated(report)
    assert data["data"] == {"dataset": "digits", "samples": 40} and data["steps"] == 8
    assert data["program"]["model"] == "mlp" and data["program"]["precision"] == "float32"
    assert set(data["ops"]["total"]) >= {"syn_ops", "macs", "dense_ops", "neuron_updates", "spikes", "host_flops"}
    names = [r["name"] for r in data["ops"]["per_node"]]
    assert len(names) == len(set(names)) and all("name" in r for r in data["ops"]["per_node"])
    # digits pixels are real-valued: the first layer does MACs, the second synaptic ops
    assert data["ops"]["total"]["macs"] > 0 and data["ops"]["total"]["neuron_updates"] == 42 * 8


def test_compiled_predictions_match_model(trained: Path) -> None:
    from spike.backends import run
    from spike.train.datasets import load_digits
    from spike.encoders import Encoder
    from spike.train.evaluation import predictions

    model, cfg = load_model(str(trained))
    program = compile_checkpoint(str(trained))
    x = Encoder.from_dict(cfg["encoding"])(load_digits().x_test[:64])
    with torch.no_grad():
        expected = model(x).numpy()
    got = run(program, x, backend="numba").output
    # trained weights are not dyadic: event-order float sums may flip a rare spike
    assert np.mean(got == expected) > 0.995
    assert np.mean(predictions(got) == predictions(expected)) >= 0.95


def test_run_missing_program_is_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nope.h5"), "--dataset", "digits"]) == 2
    assert "nope.h5" in capsys.readouterr().err


def test_run_refuses_programs_it_cannot_score_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A program without Input nodes (generated sources: a random_net) has no test split; one with
    inputs but no dataset in its metadata needs --dataset: exit 2, one line naming the file."""
    net = Network(seed=1)
    net.poisson("ext", 20, p=0.1)
    net.population("exc", 10, beta=0.9, threshold=1.0)
    net.connect("ext", "exc", fixed_fan_out(3), weight=0.5, delay=1)
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("fc", Dense(shape=(2,), in_shape=(4,), weight=np.ones((2, 4), np.float32)), "in")
    b.add("out", Output(shape=(2,)), "fc")
    for program, what in ((net.build(), "no Input node"), (b.build(), "--dataset is needed")):
        path = tmp_path / "p.h5"
        save_program(program, path)
        capsys.readouterr()
        assert main(["run", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and what in err[0], err


@pytest.mark.slow
def test_train_reaches_90_percent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "mlp", "--dataset", "digits", "--out", str(tmp_path / "m.pt"), "--quiet"]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("test accuracy")][-1]
    assert float(line.split()[2].rstrip("%")) >= 90.0


def test_export_nir_then_compile_it(trained: Path, tmp_path: Path) -> None:
    from spike.backends import run
    from spike.compiler.io.hdf5 import load_program
    from spike.train.datasets import load_digits
    from spike.encoders import Encoder

    nir_path, h5 = tmp_path / "mlp.nir", tmp_path / "from_nir.h5"
    assert main(["export", str(trained), "--nir", str(nir_path)]) == 0
    assert main(["compile", str(nir_path), "--out", str(h5)]) == 0
    original = compile_checkpoint(str(trained))
    x = Encoder.from_dict(original.metadata["encoding"])(load_digits().x_test[:16])
    np.testing.assert_array_equal(run(load_program(h5), x).output, run(original, x).output)


def test_run_with_target_prints_energy_and_plots(trained: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    h5, report, png = tmp_path / "loihi.h5", tmp_path / "r.json", tmp_path / "r.png"
    assert main(["compile", str(trained), "--target", "loihi1", "--out", str(h5)]) == 0
    assert "core" in capsys.readouterr().out
    assert main(["run", str(h5), "--limit", "16", "--json", str(report), "--plot", str(png), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "estimate" in out
    data = validated(report)
    assert data["energy"]["total_j"] > 0 and data["energy"]["per_node"] and data["program"]["target"] == "loihi1"
    assert "spikes_routed_hops" in data["ops"]["total"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_draws_raster_and_membranes(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--raster`` and ``--membranes`` write PNGs of the first test sample's spikes and membranes."""
    h5 = tmp_path / "net.h5"
    assert main(["compile", str(trained), "--out", str(h5)]) == 0
    raster, membranes = tmp_path / "raster.png", tmp_path / "v.png"
    assert main(["run", str(h5), "--limit", "4", "--quiet", "--raster", str(raster),
                 "--membranes", str(membranes)]) == 0
    out = capsys.readouterr().out
    assert f"raster -> {raster}" in out and f"membranes -> {membranes}" in out
    assert raster.read_bytes()[:4] == membranes.read_bytes()[:4] == b"\x89PNG"
