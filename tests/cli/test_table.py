"""``spike table``: several run reports (a sweep) as one table and CSV, each row read from its report."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from spike.cli import main
from spike.train.datasets import load_dataset
from spike.workflows import compile_checkpoint, evaluate_program, target_energy


def test_one_row_per_report_with_its_figures(programs: dict[str, Path], tmp_path: Path, capsys) -> None:
    reports = []
    for kind, target in (("float", "generic"), ("fixed", "loihi1")):
        path = tmp_path / f"{kind}.json"
        assert main(["run", str(programs[kind]), "--limit", "20", "--quiet", "--target", target,
                     "--json", str(path)]) == 0
        reports.append(path)
    capsys.readouterr()
    assert main(["table", *map(str, reports), "--csv", str(tmp_path / "sweep.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:3] == ["report", "model", "target"] and len(printed) == 4  # header, 2 rows, csv
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    for row, path in zip(rows, reports):
        report = json.loads(path.read_text())
        assert row["report"] == str(path) and row["precision"] == report["program"]["precision"]
        assert float(row["metric"]) == report["accuracy"]
        assert float(row["syn_ops"]) == report["ops"]["total"]["syn_ops"]
        energy = report["energy"]
        assert (row["energy_uj"] == "") == (energy is None)
        if energy is not None:
            assert float(row["energy_uj"]) == pytest.approx(1e6 * energy["total_j"], rel=1e-12)
    assert [r["target"] for r in rows] == ["generic", "loihi1"] and rows[1]["energy_uj"]


@pytest.mark.parametrize("content, message", [
    ("not json", "not a JSON report"),
    ('{"schema_version": 7}', "schema_version: expected 1 (a `spike run --json` report), found 7"),
    ('{"schema_version": 1, "program": {}, "backend": "numba", "data": {}, "steps": "4", "ops": {}}',
     "steps: expected an integer, found '4'"),
])
def test_a_file_that_is_not_a_report_is_named(content: str, message: str, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["table", str(bad)]) == 2
    assert capsys.readouterr().err.strip().startswith(f"spike table: error: {bad}: {message}")


def test_rates_and_kept_channels_count_the_latency_steps(tmp_path: Path) -> None:
    """A CNN trained without a target, compiled for loihi1 (balanced delays: steps of latency after
    the input's): firing rates and FTWT's kept channels divide by every step counted, so a kept
    fraction is at most 1."""
    assert main(["train", "cnn", "--out", str(tmp_path / "base.pt"), "--epochs", "1", "--quiet"]) == 0
    assert main(["train", "cnn", "--init", str(tmp_path / "base.pt"), "--ftwt", "0.9", "--out", str(tmp_path / "ftwt.pt"),
                 "--epochs", "1", "--quiet"]) == 0
    program = compile_checkpoint(str(tmp_path / "ftwt.pt"), target="loihi1")
    assert program.total_latency > 0
    data = load_dataset("digits")
    report = evaluate_program(program, data.x_test[:6], data.y_test[:6], progress=False)
    assert report.ops.steps == report.steps + program.total_latency
    kept = report.kept_channels()
    assert kept and all(0 < k <= 1 for k in kept.values())
    energy = {r["name"]: r for r in target_energy(report, program, "loihi1").per_node}
    for row in report.per_node_rows():
        if row["firing_rate"] is not None:
            assert row["firing_rate"] == row["spikes"] / (row["neurons"] * report.ops.steps)
            assert energy[row["name"]]["firing_rate"] == row["firing_rate"]
