"""``docs/report.schema.json`` accepts what :func:`spike.workflows.run_report` writes and refuses
reports missing a part or mixing task metrics (the `spike run` tests validate real reports)."""
from __future__ import annotations

import jsonschema
import numpy as np
import pytest

from helpers.reports import validated
from spike.backends import run
from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder
from spike.energy import energy_report
from spike.workflows import run_report


def _report(**kw):
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,), signal="spike"))
    b.add("fc", Dense(shape=(3,), in_shape=(4,), weight=np.full((3, 4), 0.5, np.float32)), "in")
    b.add("lif", Population(shape=(3,), model="lif", beta=np.full(3, 0.5, np.float32),
                            threshold=np.ones(3, np.float32)), "fc")
    b.add("out", Output(shape=(3,)), "lif")
    program = b.build({"target": "loihi1"})
    result = run(program, np.ones((5, 1, 4), np.float32), backend="numba")
    ops = {"counts_are": "per sample, summed over steps", **result.ops.to_json()}
    energy = energy_report(result.ops, program, "loihi1", steps=5)
    args = dict(program_path="p.h5", backend="numba", data={"dataset": "digits", "samples": 1}, steps=5,
                ops=ops, timing=result.timing, energy=energy, accuracy=1.0)
    args.update(kw)
    return run_report(program, **args)


def test_a_report_validates_and_names_its_program() -> None:
    rep = validated(_report())
    assert rep["schema_version"] == 1 and rep["tool"]["name"] == "spike"
    assert rep["program"] == {"path": "p.h5", "model": None, "target": "loihi1", "precision": "float32",
                              "target_delays": None}
    assert rep["ops"]["total"]["syn_ops"] > 0 and rep["energy"]["total_j"] > 0


@pytest.mark.parametrize("breaks", [
    lambda r: r.pop("ops"),
    lambda r: r.pop("accuracy"),  # no task metric
    lambda r: r.update(bits_per_token=1.0),  # two task metrics
    lambda r: r.update(backend="gpu"),
    lambda r: r["ops"]["total"].pop("syn_ops"),
    lambda r: r.update(data={"dataset": "digits", "samples": 0}),
    lambda r: r.update(extra=1),
])
def test_incomplete_or_mixed_reports_are_refused(breaks) -> None:
    rep = _report()
    breaks(rep)
    with pytest.raises(jsonschema.ValidationError):
        validated(rep)
