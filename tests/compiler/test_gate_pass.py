"""The FTWT gate pass (``compiler.passes.gates``: ``Program.gated``) and the kernel variants the
backends register for it (``registry.Backend.kernel(kind, "gated")``)."""
from __future__ import annotations

import numpy as np
import pytest

from spike.backends import run
from spike.backends.registry import GATED, PLAIN, Backend, BackendError, get_backend, node_variants
from spike.compiler.io.hdf5 import load_program, save_program
from spike.compiler.ir.nodes import Conv2d, Gate, Input, Output, Population
from spike.compiler.ir.program import Program, ProgramBuilder, rebuild_graph
from spike.compiler.pipeline import FLOAT_PIPELINE, run_passes
from spike.compiler.passes.gates import gate_record, gated_nodes, record_gates


def _gated_program() -> Program:
    """in -> conv -> p (gated by g, which reads in) -> out; a second, plain conv -> q."""
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input(shape=(2, 4, 4)))
    w = (rng.integers(-8, 9, (3, 2, 3, 3)) / 8).astype(np.float32)
    b.add("conv", Conv2d(shape=(3, 4, 4), in_shape=(2, 4, 4), weight=w, padding=(1, 1)), "in")
    b.add("g", Gate(shape=(3,), in_shape=(2, 4, 4), weight=np.ones((3, 2), np.float32),
                    bias=np.array([1, -1, 1], np.float32)), "in")
    b.add("p", Population(shape=(3, 4, 4), beta=0.5), ["conv", "g"])
    b.add("conv2", Conv2d(shape=(3, 4, 4), in_shape=(2, 4, 4), weight=w, padding=(1, 1)), "in")
    b.add("q", Population(shape=(3, 4, 4), beta=0.5), "conv2")
    b.add("out", Output(shape=(3, 4, 4)), "p")
    b.add("out2", Output(shape=(3, 4, 4)), "q")
    return b.build({"precision": "float32"})


def _spikes(T: int = 4, B: int = 2) -> np.ndarray:
    return (np.random.default_rng(1).random((T, B, 2, 4, 4)) < 0.4).astype(np.float32)


def test_the_pass_records_the_gated_population_and_its_projections() -> None:
    program = _gated_program()
    assert program.gated == {} and gate_record(program) == {"p": "g", "conv": "g"}  # derived when absent
    recorded = run_passes(program, FLOAT_PIPELINE)
    assert dict(recorded.gated) == {"p": "g", "conv": "g"}
    assert record_gates(recorded) is recorded  # idempotent
    assert node_variants(recorded) == {"in": PLAIN, "conv": GATED, "g": PLAIN, "p": GATED, "conv2": PLAIN,
                                       "q": PLAIN, "out": PLAIN, "out2": PLAIN}


def test_the_record_follows_the_program_through_files(tmp_path) -> None:
    program = run_passes(_gated_program(), FLOAT_PIPELINE)
    save_program(program, tmp_path / "p.h5")
    assert dict(load_program(tmp_path / "p.h5").gated) == dict(program.gated)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_recorded_and_hand_built_programs_run_alike(backend: str) -> None:
    x = _spikes()
    a = run(_gated_program(), x, backend=backend, probes=["q"])
    b = run(record_gates(_gated_program()), x, backend=backend, probes=["q"])
    np.testing.assert_array_equal(a.outputs["out"], b.outputs["out"])
    assert a.ops.total() == b.ops.total()
    mask = np.array([1, 0, 1], bool)  # bias [1, -1, 1], zero-sum weights: channel 1 masked for every sample
    assert not a.outputs["out"][:, :, ~mask].any() and a.outputs["out2"][:, :, ~mask].any()


def test_a_stale_record_is_refused() -> None:
    program = record_gates(_gated_program())
    stale = program.with_graph(rebuild_graph(program), gated={"p": "g"})
    assert gated_nodes(stale) != dict(stale.gated)
    with pytest.raises(BackendError, match="gate record"):
        run(stale, _spikes(), backend="numba")


def test_a_backend_without_gated_variants_names_the_nodes() -> None:
    numba = get_backend("numba")
    partial = Backend(name="partial", precisions=frozenset({"float32"}), zeros=numba.zeros, to_numpy=numba.to_numpy,
                      from_numpy=numba.from_numpy)
    for (kind, variant), fn in numba.kernels.items():
        if variant == PLAIN:
            partial.kernel(kind)(fn)
    with pytest.raises(BackendError, match=r"conv \(conv2d, gated\), p \(population, gated\)"):
        partial.check(record_gates(_gated_program()))
    partial.check(_spikes_only_program())


def _spikes_only_program() -> Program:
    b = ProgramBuilder()
    b.add("in", Input(shape=(4,)))
    b.add("p", Population(shape=(4,)), "in")
    b.add("out", Output(shape=(4,)), "p")
    return b.build()


def test_kernels_are_registered_once() -> None:
    be = Backend(name="once", precisions=frozenset({"float32"}))
    be.kernel("conv2d")(lambda ctx, t0, t1: None)
    be.kernel("conv2d", GATED)(lambda ctx, t0, t1: None)
    with pytest.raises(ValueError, match="already has a gated kernel"):
        be.kernel("conv2d", GATED)(lambda ctx, t0, t1: None)
    assert be.kinds == ["conv2d"] and set(be.kernels) == {("conv2d", PLAIN), ("conv2d", GATED)}
