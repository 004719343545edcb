"""The IR fields of issue "A builder for large sparse networks": a population's own ``bias`` and
``v_init``, and the ``Bernoulli`` source node: validation (shapes, finite values, ranges, fixed
point), HDF5 round trips, files written before the fields existed, quantisation to Loihi's
``bias_mant``/``bias_exp`` and integer ``v``, and the NIR exporter's refusal."""
from __future__ import annotations

import numpy as np
import pytest

from spike.backends import run
from spike.compiler.io.hdf5 import IRFormatError, assert_programs_equal, load_program, save_program
from spike.compiler.io.nir_export import NIRExportError, to_nir
from spike.compiler.ir.nodes import Bernoulli, Dense, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder, ProgramError
from spike.compiler.ir.validate import validate_program
from spike.compiler.pipeline import FIXED_PIPELINE, run_passes

from helpers.programs import edited


def _program(pop_kw: dict | None = None, src_kw: dict | None = None):
    b = ProgramBuilder()
    b.add("src", Bernoulli(shape=(6,), **({"p": np.full(6, 0.25), "seed": 2**50 + 3} | (src_kw or {}))))
    b.add("in", Input(shape=(3,)))
    b.add("fc", Dense(shape=(4,), in_shape=(6,), weight=np.full((4, 6), 0.25, np.float32), delay=1), "src")
    b.add("fc_in", Dense(shape=(4,), in_shape=(3,), weight=np.full((4, 3), 0.5, np.float32), delay=1), "in")
    kw = {"beta": np.full(4, 0.5, np.float32), "threshold": np.ones(4, np.float32), "reset": "zero",
          "reset_delay": False, "bias": np.array([0.25, -0.5, 0.0, 0.125], np.float32),
          "v_init": np.array([0.5], np.float32)} | (pop_kw or {})
    b.add("p", Population(shape=(4,), **kw), ["fc", "fc_in"])
    b.add("out", Output(shape=(4,)), "p")
    return b.build()


def test_valid_fields():
    validate_program(_program())
    validate_program(_program({"bias": np.array(0.5, np.float32), "v_init": None}, {"p": np.array(1.0)}))
    validate_program(_program({"bias": None, "v_init": np.zeros(4, np.float64)}, {"p": np.array([0.3]), "seed": 0}))


@pytest.mark.parametrize("pop_kw, src_kw, words", [
    ({"bias": np.zeros(3, np.float32)}, None, ["'p'", "bias", "shape (3,)"]),
    ({"v_init": np.zeros((2, 2), np.float32)}, None, ["'p'", "v_init", "shape (2, 2)"]),
    ({"bias": np.array([0, np.nan, 0, 0], np.float32)}, None, ["'p'", "bias", "NaN/inf"]),
    ({"v_init": np.array([np.inf], np.float32)}, None, ["'p'", "v_init", "NaN/inf"]),
    ({"v_init": np.zeros(4, np.int32)}, None, ["'p'", "v_init", "integer initial membrane", "fixed-point"]),
    ({"bias": [0.1] * 4}, None, ["'p'", "bias", "numpy array"]),
    (None, {"p": np.array([0.5, 1.5, 0, 0, 0, 0])}, ["'src'", "field p", "[0, 1]"]),
    (None, {"p": np.full(5, 0.5)}, ["'src'", "field p", "shape (5,)"]),
    (None, {"p": np.array([np.nan])}, ["'src'", "field p", "NaN/inf"]),
    (None, {"seed": -1}, ["'src'", "seed", "2^63"]),
    (None, {"seed": 2**63}, ["'src'", "seed", "2^63"]),
    (None, {"seed": 1.5}, ["'src'", "seed", "an int"]),
])
def test_bad_fields_name_the_node_and_field(pop_kw, src_kw, words):
    with pytest.raises(ProgramError) as e:
        validate_program(_program(pop_kw, src_kw))
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_alpha_neurons_and_sources_with_inputs_are_refused():
    b = ProgramBuilder()
    b.add("a", Population(shape=(2,), model="alpha", alpha=np.full(2, 0.5, np.float32), beta=np.full(2, 0.25, np.float32),
                          tau=np.full(2, 2.0, np.float32), bias=np.ones(2, np.float32)))
    with pytest.raises(ProgramError, match="'a'.*bias.*alpha"):
        validate_program(b.build())
    b = ProgramBuilder()
    b.add("in", Input(shape=(2,)))
    b.add("src", Bernoulli(shape=(2,), p=np.array(0.5)))
    b.connect("in", "src")
    with pytest.raises(ProgramError, match="'src'.*no sources"):
        validate_program(b.build())


def test_round_trip(tmp_path):
    prog = _program()
    path = tmp_path / "p.h5"
    save_program(prog, path)
    back = load_program(path)
    assert_programs_equal(prog, back)
    assert back.node("src").seed == 2**50 + 3 and back.node("src").p.dtype == np.float64
    assert back.node("p").bias.dtype == np.float32 and back.node("p").v_init.shape == (1,)
    x = np.ones((5, 2, 3), np.float32)
    np.testing.assert_array_equal(run(back, x).output, run(prog, x).output)


def test_files_without_the_fields_still_load(tmp_path):
    """A file written before ``bias``/``v_init`` existed has no such datasets: they load as None
    (the membrane starts at v_reset, no constant input), and the program runs as it did."""
    prog = _program()
    path = tmp_path / "old.h5"
    save_program(prog, path)
    with edited(path) as f:
        for field in ("bias", "v_init"):
            del f["nodes/p"][field]
    back = load_program(path)
    assert back.node("p").bias is None and back.node("p").v_init is None
    plain = _program({"bias": None, "v_init": None})
    assert_programs_equal(plain, back)
    x = np.ones((5, 2, 3), np.float32)
    np.testing.assert_array_equal(run(back, x).output, run(plain, x).output)
    with edited(path) as f:  # a field of the wrong kind is still refused, naming it
        f["nodes/p"].attrs["v_init"] = 1.0
    with pytest.raises(IRFormatError, match="'p'.*v_init"):
        load_program(path)


def test_quantize_maps_bias_and_v_init():
    prog = _program()
    q = run_passes(prog, FIXED_PIPELINE)
    p = q.node("p")
    assert p.precision == "fixed" and p.bias is None and p.v_init.dtype == np.int32
    v_scale = q.metadata["quantization"]["p"]["v_scale"]  # 64 * S
    bias = p.bias_mant.astype(np.int64) << p.bias_exp.astype(np.int64)
    np.testing.assert_allclose(bias / v_scale, prog.node("p").bias, atol=2.0**p.bias_exp.max() / v_scale)
    np.testing.assert_array_equal(p.v_init, np.full(4, np.rint(0.5 * v_scale), np.int32))
    assert q.metadata["quantization"]["p"]["own_bias_error"] <= 2.0**p.bias_exp.max() / v_scale
    validate_program(q)
    bad = q.with_graph(q.graph.copy())
    bad.graph.nodes["p"]["node"] = p.replace(bias=np.zeros(4, np.float32))
    with pytest.raises(ProgramError, match="'p'.*bias.*bias_mant"):
        validate_program(bad)
    bad.graph.nodes["p"]["node"] = p.replace(v_init=np.full(4, 1 << 23, np.int32))
    with pytest.raises(ProgramError, match="'p'.*v_init.*24-bit"):
        validate_program(bad)
    bad.graph.nodes["p"]["node"] = p.replace(v_init=np.full(4, 0.5, np.float32))
    with pytest.raises(ProgramError, match="'p'.*v_init.*integer"):
        validate_program(bad)


def test_nir_export_refuses_what_it_cannot_write():
    for field in ("bias", "v_init"):
        b = ProgramBuilder()
        b.add("in", Input(shape=(3,)))
        b.add("fc", Dense(shape=(2,), in_shape=(3,), weight=np.ones((2, 3), np.float32)), "in")
        b.add("p", Population(shape=(2,), beta=np.full(2, 0.5, np.float32), threshold=np.ones(2, np.float32),
                              **{field: np.full(2, 0.25, np.float32)}), "fc")
        b.add("out", Output(shape=(2,)), "p")
        with pytest.raises(NIRExportError, match=f"'p'.*{field}"):
            to_nir(b.build())
    b = ProgramBuilder()
    b.add("src", Bernoulli(shape=(2,), p=np.array(0.5)))
    b.add("out", Output(shape=(2,)), "src")
    with pytest.raises(NIRExportError, match="'src'.*no NIR equivalent"):
        to_nir(b.build())
