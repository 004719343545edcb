"""Silent rows (``spike.backends.engine`` docstring): on numba, a dense projection or a population
whose readers all read the flags leaves its all-zero output rows unwritten and flags them, and its
readers take flagged rows as zeros without reading them. Checked against the torch backend (which
writes every row) with the numba backend's recycled buffers poisoned, so that any read of an
unwritten row would show: outputs, probes, counts, spike counts and spike lists equal."""
from __future__ import annotations

import numpy as np
import pytest

from spike.backends import engine, run
from spike.backends.numba.backend import BACKEND
from spike.compiler.ir.nodes import Dense, Input, Output
from spike.compiler.ir.program import ProgramBuilder

from helpers.programs import DYADIC, pop

T, B = 60, 3


def _program():
    """in -> fc1 -> p1 -> fc2 (delay 2) -> p2 (+ rec, delay 1, a cycle) -> fc3 (bias) -> LI readout."""
    rng = np.random.default_rng(5)
    w = DYADIC.weights
    b = ProgramBuilder()
    b.add("in", Input(shape=(30,)))
    b.add("fc1", Dense(shape=(24,), in_shape=(30,), weight=w(rng, (24, 30), 2.0)), "in")
    b.add("p1", pop(rng, (24,), reset="zero", reset_delay=False), "fc1")
    b.add("fc2", Dense(shape=(16,), in_shape=(24,), weight=w(rng, (16, 24), 2.0), delay=2), "p1")
    b.add("p2", pop(rng, (16,)), "fc2")
    b.add("rec", Dense(shape=(16,), in_shape=(16,), weight=w(rng, (16, 16), 1.0), delay=1), "p2")
    b.connect("rec", "p2")
    b.add("fc3", Dense(shape=(5,), in_shape=(16,), weight=w(rng, (5, 16)), bias=w(rng, 5, 0.2)), "p2")
    b.add("p3", pop(rng, (5,), model="li"), "fc3")
    b.add("out", Output(shape=(5,)), "p3")
    x = (rng.random((T, B, 30)) < 0.3).astype(np.float32)
    x[12:40, 0] = 0  # long silences: the hidden layers fall quiet
    x[:, 1] = 0  # a sample silent throughout
    return b.build(), x


def _poison(shape, dtype):
    """A recycled buffer's worst case: NaN (or -7 for integers) everywhere."""
    return np.full(shape, np.nan if np.dtype(dtype).kind == "f" else -7, dtype)


@pytest.fixture
def contexts(monkeypatch):
    """The last run's node contexts (by name), the numba backend's recycled buffers poisoned."""
    seen = {}
    stage = engine._run_stage

    def capture(cyclic, calls, t0, t1):
        seen.update({ctx.name: ctx for _, ctx in calls})
        stage(cyclic, calls, t0, t1)

    monkeypatch.setattr(BACKEND, "empty", _poison)
    monkeypatch.setattr(engine, "_run_stage", capture)
    return seen


@pytest.mark.parametrize("probes", [[], ["p1", "p2.v"]], ids=["flags", "probed"])
def test_silent_rows_give_the_written_zeros(contexts, probes):
    program, x = _program()
    record = {"p1": "spikes", "p2": "counts"}
    ref = run(program, x, backend="torch", probes=probes, record=record)
    contexts.clear()
    ours = run(program, x, backend="numba", probes=probes, record=record)
    np.testing.assert_array_equal(ours.outputs["out"], ref.outputs["out"])
    for key, value in ref.probes.items():
        np.testing.assert_array_equal(ours.probes[key], value, err_msg=key)
    assert ours.ops.total() == ref.ops.total()
    np.testing.assert_array_equal(ours.spike_counts["p2"], ref.spike_counts["p2"])
    for field in ("times", "samples", "neurons"):
        np.testing.assert_array_equal(getattr(ours.spike_lists["p1"], field), getattr(ref.spike_lists["p1"], field))
    assert ours.ops.total()["spikes"] > 0 and not np.isnan(ours.outputs["out"]).any()

    flags = {name: ctx.silent for name, ctx in contexts.items()}
    assert flags["p3"] is None  # read by an Output: written whole
    marked = ["fc1", "fc2", "p2", "rec"] + ([] if "p1" in probes else ["p1"])
    for name in marked:  # zero rows left unwritten: sample 1's throughout
        assert flags[name] is not None and flags[name][:, 1].all() and not flags[name][:, 2].all(), name
    for name in ("fc1", "fc2"):  # and sample 0's projections in its silence (its populations decay first)
        assert flags[name][14:40, 0].all(), name
    assert "p1" not in probes or flags["p1"] is None  # a probed node's buffer is returned whole
    assert not flags["fc3"].any()  # a bias: no zero row
