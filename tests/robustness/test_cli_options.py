"""Options and paths through the command line: numbers, choices and output paths are checked by
the parser before any work (exit code 2, one line naming the option); an input is never
overwritten."""
from __future__ import annotations

import pytest

from spike.cli import main


@pytest.mark.parametrize("argv, message", [
    (["train", "spikegpt", "--out", "x.pt", "--steps", "5"], "unrecognized arguments: --steps 5"),
    (["train", "spikegpt", "--out", "x.pt", "--epochs", "1"], "unrecognized arguments: --epochs 1"),
    (["train", "mlp", "--out", "x.pt", "--size", "tiny"], "unrecognized arguments: --size tiny"),
    (["train", "mlp", "--out", "x.pt", "--batch-size", "-4"], "--batch-size: expected an integer > 0, got '-4'"),
    (["train", "cnn", "--out", "x.pt", "--epochs", "0"], "--epochs: expected an integer > 0, got '0'"),
    (["train", "mlp", "--out", "x.pt", "--hidden", "0"], "--hidden: expected an integer > 0, got '0'"),
    (["train", "mlp", "--out", "x.pt", "--target", "nope"], "--target: expected one of cmos45nm_fp32"),
    (["run", "p.h5", "--backend", "gpu"], "--backend: invalid choice: 'gpu' (choose from"),
    (["run", "p.h5", "--limit", "-5"], "--limit: expected an integer > 0, got '-5'"),
    (["run", "p.h5", "--batch-size", "0"], "--batch-size: expected an integer > 0, got '0'"),
    (["compile", "c.pt", "--out", "p.h5", "--dt", "nan"], "--dt: expected a finite number > 0, got 'nan'"),
    (["generate", "c.pt", "--tokens", "-3"], "--tokens: expected an integer > 0, got '-3'"),
    (["generate", "c.pt", "--top-p", "1.5"], "--top-p: expected a number in (0, 1], got '1.5'"),
    (["eval", "c.pt", "--max-tokens", "-5"], "--max-tokens: expected an integer > 0, got '-5'"),
    (["run", "p.h5", "--tokens", "-5"], "--tokens: expected an integer > 0, got '-5'"),
    (["run", "p.h5", "--limit", "0"], "--limit: expected an integer > 0, got '0'"),
    (["run", "p.h5", "--steps", "0"], "--steps: expected an integer > 0, got '0'"),
    (["run", "p.h5", "--target", "nope"], "--target: expected one of cmos45nm_fp32"),
    (["train", "mlp", "--out", "x.pt", "--epochs", "0"], "--epochs: expected an integer > 0, got '0'"),
    (["train", "mlp", "--out", "x.pt", "--lr", "inf"], "--lr: expected a finite number > 0, got 'inf'"),
])
def test_bad_options_are_refused_before_any_work(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err



@pytest.mark.parametrize("argv, message", [
    (["compile", "{d}/x.pt", "--out", "{d}/./x.pt"], "--out {d}/./x.pt: that is the input file"),
    (["run", "{d}/x.pt", "--json", "{d}/x.pt"], "--json {d}/x.pt: that is the input file"),
    (["run", "{d}/x.pt", "--plot", "{d}/link.pt"], "--plot {d}/link.pt: that is the input file"),
    (["run", "{d}/x.pt", "--json", "{d}/r.json", "--raster", "{d}/r.json"], "--raster {d}/r.json: --json writes"),
    (["export", "{d}/x.pt", "--nir", "{d}/x.pt"], "--nir {d}/x.pt: that is the input file"),
    (["train", "cnn", "--init", "{d}/x.pt", "--out", "{d}/x.pt"], "--out {d}/x.pt: that is the input file"),
])
def test_an_output_never_overwrites_an_input(argv, message, tmp_path, capsys) -> None:
    """An output path naming an input (or another output) is refused before any work; the input
    is left as it was."""
    src = tmp_path / "x.pt"
    src.write_bytes(b"precious")
    (tmp_path / "link.pt").symlink_to(src)
    assert main([a.format(d=tmp_path) for a in argv]) == 2
    assert message.format(d=tmp_path) in capsys.readouterr().err
    assert src.read_bytes() == b"precious"
