"""Counts and energy as a table, as rows and as columns; the steps they were counted over travel
with them, so the energy needs no ``steps=`` and refuses a contradicting one; the workflows take
the steps from the program or refuse without them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spike.backends import OpCounts, run
from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder
from spike.compiler.passes.delays import target_delays
from spike.energy import CATEGORIES, energy_report, run_steps
from spike.workflows import evaluate_program, probe_populations, target_energy

from helpers.energy import counts, small_program


def _chain(meta: dict | None = None):
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,), signal="spike"))
    b.add("fc", Dense(shape=(3,), in_shape=(4,), weight=np.full((3, 4), 0.5, np.float32)), "in")
    b.add("lif", Population(shape=(3,), beta=np.full(3, 0.5, np.float32), threshold=np.ones(3, np.float32)), "fc")
    b.add("out", Output(shape=(3,)), "lif")
    return b.build(meta or {})


def test_records_and_columns_hold_the_per_node_means() -> None:
    ops = counts()
    rows = ops.to_records()
    assert [r["node"] for r in rows] == ["fc", "h", "add"]
    assert [r["kind"] for r in rows] == ["dense", "population", "hostop"]
    for r in rows:
        assert {k: r[k] for k in ops.keys()} == ops.node_mean(r["node"])
    columns = ops.to_dict()
    assert list(columns) == ["node", "kind", *ops.keys()]
    assert all(len(v) == len(rows) for v in columns.values())
    assert columns["syn_ops"] == [40.0, 0.0, 0.0] and columns["spikes"] == [0.0, 15.0, 0.0]


def test_table_lists_every_node_and_the_total() -> None:
    ops = counts(routing=False)
    ops.steps = 10
    lines = ops.table().splitlines()
    assert "10 steps" in lines[0] and "2 sample(s)" in lines[0]
    head = lines[1].split()
    assert head[:2] == ["node", "kind"] and "pool_ops" not in head  # no node pooled
    assert {"syn_ops", "macs", "dense_ops", "neuron_updates", "spikes", "host_flops"} <= set(head)
    body = {line.split()[0]: line.split() for line in lines[3:] if not line.startswith("-")}
    assert set(body) == {"fc", "h", "add", "total"}
    total = ops.total()
    assert [float(v) for v in body["total"][1:]] == [total[k] for k in head[2:]]


def test_a_run_records_its_steps_latency_included() -> None:
    x = np.ones((5, 2, 4), np.float32)
    plain = run(_chain(), x)
    assert plain.ops.steps == 5
    delayed = target_delays(_chain(), 1)
    assert delayed.total_latency == 1
    res = run(delayed, x)
    assert res.output.shape[0] == 5 and res.ops.steps == 6
    assert run_steps(res.ops, delayed) == 5
    assert OpCounts.concat([res.ops, res.ops]).steps == 6
    with pytest.raises(ValueError, match="different numbers of steps"):
        OpCounts.concat([plain.ops, res.ops])


def test_energy_takes_the_steps_from_the_counts_and_refuses_others() -> None:
    program = target_delays(_chain(), 1)
    res = run(program, np.ones((5, 1, 4), np.float32))
    report = energy_report(res.ops, program, "loihi1")
    assert report.steps == 5
    assert report.to_json() == energy_report(res.ops, program, "loihi1", steps=5).to_json()
    with pytest.raises(ValueError, match=r"steps=6 contradicts the counts: they were summed over 6 steps, 5 input"):
        energy_report(res.ops, program, "loihi1", steps=6)
    with pytest.raises(ValueError, match="pass the program"):
        energy_report(res.ops, None, "loihi1", steps=5)
    with pytest.raises(ValueError, match=r"do not record their steps .* give steps="):
        energy_report(counts(), small_program(), "loihi1")


def test_energy_rows_and_columns() -> None:
    report = energy_report(counts(), small_program(), "loihi1", steps=10)
    rows = report.to_records()
    charged = [c for c in CATEGORIES if c in report.breakdown]
    assert [r["node"] for r in rows] == ["fc", "h", "add", "static"]
    for r, node in zip(rows, report.per_node):
        assert r["energy_j"] == node["energy_j"] and r["kind"] == node["kind"]
        assert sum(r[c] for c in charged) == pytest.approx(r["energy_j"])
    assert rows[-1]["energy_j"] == report.static_j and rows[-1]["kind"] == "chip"
    assert sum(r["energy_j"] for r in rows) == pytest.approx(report.total_j)
    assert rows[1]["firing_rate"] == pytest.approx(15 / (6 * 10))
    columns = report.to_dict()
    assert list(columns) == list(rows[0]) and columns["node"] == [r["node"] for r in rows]


def test_workflows_take_the_steps_from_the_program_or_refuse() -> None:
    x, y = torch.ones(3, 4), torch.zeros(3, dtype=torch.long)
    bare = _chain()
    with pytest.raises(ValueError, match="records no input encoding .* give the number of steps"):
        probe_populations(bare, x)
    spikes, _ = probe_populations(bare, x, steps=4)
    assert spikes["lif"].shape == (4, 3, 3)
    encoded = target_delays(_chain({"encoding": {"kind": "direct", "num_steps": 7, "params": {}}}), 1)
    report = evaluate_program(encoded, x, y, progress=False)
    assert report.steps == 7 and report.ops.steps == 7 + encoded.total_latency
    assert target_energy(report, encoded, "loihi1").steps == 7
    assert evaluate_program(encoded, x, y, steps=3, progress=False).steps == 3  # an explicit count wins
