"""Saving and loading programs as HDF5 files: round trips and validation on load."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from spike.compiler.io import hdf5 as serialize
from spike.compiler.ir.nodes import (
    BatchNorm, Conv2d, Dense, HostOp, Identity, Input, Output, Pool2d, Population, Sparse,
)
from spike.compiler.ir.program import ProgramBuilder, ProgramError, rebuild_graph
from spike.compiler.io.hdf5 import (
    SCHEMA_VERSION, IRFormatError, assert_programs_equal, load_program, program_differences, programs_equal,
    save_program,
)
from spike.compiler.ir.validate import validate_program
from helpers.programs import edited


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def all_kinds_program():
    """Every node kind, every population model, mixed dtypes and per-population parameters."""
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("in", Input((2, 6, 6), signal="spike"))
    b.add("conv", Conv2d((4, 6, 6), in_shape=(2, 6, 6), weight=f32(rng, 4, 2, 3, 3), bias=f32(rng, 4),
                         stride=(1, 1), padding=(1, 1)), "in")
    b.add("bn", BatchNorm((4, 6, 6), weight=f32(rng, 4), bias=f32(rng, 4), running_mean=f32(rng, 4),
                          running_var=rng.uniform(0.5, 2, 4).astype(np.float32), eps=1e-3), "conv")
    b.add("lif", Population((4, 6, 6), model="lif", beta=rng.uniform(0, 1, 144).astype(np.float32),
                            threshold=np.array([0.75]), gain=0.5, reset="zero", fire_ge=True), "bn")
    b.add("pool", Pool2d((4, 3, 3), in_shape=(4, 6, 6), mode="max"), "lif")
    b.add("if", Population((36,), model="if"), "pool")
    b.add("fc", Dense((10,), in_shape=(36,), weight=f32(rng, 10, 36).astype(np.float64), delay=2), "if")
    b.add("cuba", Population((10,), model="cuba_lif", beta=np.full(10, 0.9, np.float32),
                             threshold=np.ones(10, np.float32), alpha=np.array(0.5, np.float32),
                             reset="none", reset_delay=False), "fc")
    indptr = np.array([0, 2, 2, 3, 5, 5, 6, 6, 7, 8, 8], dtype=np.int32)
    indices = np.array([0, 4, 1, 2, 3, 0, 4, 1], dtype=np.int64)
    b.add("sp", Sparse((5,), in_shape=(10,), indptr=indptr, indices=indices, data=f32(rng, 8),
                       bias=np.zeros(5, np.float32)), "cuba")
    b.add("li", Population((5,), model="li", beta=np.array(0.8, np.float32)), "sp")
    b.add("res", Identity((5,), in_shape=(5,), scale=0.5), "li")
    # sources out of node order: the source order must survive the round trip
    b.add("add", HostOp((5,), op="add"), ["res", "li"])
    b.add("out", Output((5,)), "add")
    b.add("out_spikes", Output(()), "lif")  # shape not inferred yet
    return b.build({"target": "loihi2", "model": "test", "layers": [1, 2, 3], "nested": {"a": 1.5}})


def recurrent_program(delay=1):
    rng = np.random.default_rng(1)
    b = ProgramBuilder()
    b.add("in", Input((3,), signal="real"))
    b.add("fc_in", Dense((4,), in_shape=(3,), weight=f32(rng, 4, 3)), "in")
    b.add("pop", Population((4,), model="lif", beta=np.full(4, 0.9, np.float32)), "fc_in")
    b.add("rec", Dense((4,), in_shape=(4,), weight=f32(rng, 4, 4), delay=delay), "pop")
    b.connect("rec", "pop")
    b.add("out", Output((4,)), "pop")
    return b.build()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "prog.h5"
    save_program(all_kinds_program(), path)
    return path


def _expect(path, *words):
    with pytest.raises(IRFormatError) as exc:
        load_program(path)
    msg = str(exc.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# ---- round trips ------------------------------------------------------------------------
def test_round_trip_every_kind(tmp_path):
    prog = all_kinds_program()
    validate_program(prog)
    path = tmp_path / "p.h5"
    save_program(prog, path)
    back = load_program(path)
    assert_programs_equal(prog, back)
    assert programs_equal(prog, back)
    assert {type(n) for _, n in back.nodes()} == {
        Input, Output, Population, Dense, Sparse, Conv2d, Pool2d, Identity, BatchNorm, HostOp}
    assert {n.model for _, n in back.nodes() if isinstance(n, Population)} == {"lif", "if", "cuba_lif", "li"}
    assert back.node("fc").weight.dtype == np.float64
    assert back.node("sp").indptr.dtype == np.int32
    assert back.node("li").beta.shape == ()
    assert back.sources("add") == ["res", "li"]
    assert back.node("fc").delay == 2 and back.node("lif").fire_ge is True
    assert isinstance(back.node("lif").gain, float)
    with h5py.File(path, "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert f.attrs["producer"].startswith("spike-sim ")
        assert f.attrs["target"] == "loihi2"
        assert f.attrs["precision"] == "float32"
        assert f["nodes/conv"].attrs["kind"] == "conv2d"
        assert f["edges"].shape == (len(prog.graph.edges), 2)


def test_round_trip_recurrent(tmp_path):
    prog = recurrent_program()
    path = tmp_path / "rec.h5"
    save_program(prog, path)
    back = load_program(path)
    assert_programs_equal(prog, back)
    assert back.sources("pop") == ["fc_in", "rec"]
    assert [s.cyclic for s in back.schedule()] == [s.cyclic for s in prog.schedule()]


def test_differences_are_reported():
    a, b = all_kinds_program(), all_kinds_program()
    assert programs_equal(a, b)
    g = rebuild_graph(b, nodes={"fc": b.node("fc").replace(weight=b.node("fc").weight.astype(np.float32))})
    diffs = program_differences(a, b.with_graph(g))
    assert any("fc" in d and "dtype" in d for d in diffs)
    with pytest.raises(AssertionError, match="fc"):
        assert_programs_equal(a, b.with_graph(g))


def test_save_overwrites_atomically(tmp_path, monkeypatch):
    path = tmp_path / "p.h5"
    save_program(recurrent_program(), path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialize, "_write_node", boom)
    with pytest.raises(KeyboardInterrupt):
        save_program(all_kinds_program(), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["p.h5"]


def test_save_rejects_bad_metadata_and_names(tmp_path):
    prog = recurrent_program()
    bad = prog.with_graph(prog.graph, metadata={"ok": 1, "calib": object()})
    with pytest.raises(ProgramError, match="calib"):
        save_program(bad, tmp_path / "x.h5")
    b = ProgramBuilder()
    b.add("a/b", Input((2,)))
    with pytest.raises(ProgramError, match="a/b"):
        save_program(b.build(), tmp_path / "y.h5")
    assert not os.listdir(tmp_path)


# ---- failures on load -------------------------------------------------------------------
def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    _expect(saved)


def test_not_a_program_file(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"this is not an HDF5 file\n" * 50)
    _expect(path, "not an IR program file")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.attrs["schema_version"] = 2
    _expect(tmp_path / "plain.h5", "an HDF5 file without a spike-sim program header")


@pytest.mark.parametrize("where", [0, 17, 40, 511, 512, 2000, -1])
def test_a_changed_byte_anywhere_is_refused_before_hdf5_reads(saved, where):
    raw = bytearray(saved.read_bytes())
    raw[where] ^= 0x01
    saved.write_bytes(bytes(raw))
    _expect(saved, "header" if where < 512 else "do not match the sha256 in the file's header")


def test_a_truncated_file_is_refused(saved):
    saved.write_bytes(saved.read_bytes()[:-100])
    _expect(saved, "do not match the sha256")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load_program(tmp_path / "nope.h5")


def test_integer_weights(saved):
    with edited(saved) as f:
        w = f["nodes/fc/weight"][()]
        del f["nodes/fc/weight"]
        f["nodes/fc"].create_dataset("weight", data=np.round(w).astype(np.int64))
    _expect(saved, "'fc'", "weight", "int64")


def test_string_weights(saved):
    with edited(saved) as f:
        del f["nodes/conv/weight"]
        f["nodes/conv"].create_dataset("weight", data=np.full((4, 2, 3, 3), "x", dtype=object),
                                       dtype=h5py.string_dtype())
    _expect(saved, "'conv'", "weight", "dtype")


def test_float_csr_indices(saved):
    with edited(saved) as f:
        idx = f["nodes/sp/indices"][()]
        del f["nodes/sp/indices"]
        f["nodes/sp"].create_dataset("indices", data=idx.astype(np.float32))
    _expect(saved, "'sp'", "indices", "integer")


def test_missing_dataset(saved):
    with edited(saved) as f:
        del f["nodes/fc/weight"]
    _expect(saved, "'fc'", "weight", "missing")


@pytest.mark.parametrize("node, attr, value, words", [
    ("fc", "delay", None, ("'fc'", "delay", "missing")),
    ("fc", "delay", "one", ("'fc'", "delay", "int")),
    ("res", "kind", "teleporter", ("'res'", "teleporter")),
    ("lif", "model", "izhikevich", ("'lif'", "model", "izhikevich")),
    ("fc", "delay", np.int64(-1), ("'fc'", "delay", "0..65535, got -1")),
], ids=["missing_attribute", "wrong_attribute_type", "unknown_node_kind", "bad_enum_value", "negative_delay"])
def test_bad_node_attribute(saved, node, attr, value, words):
    """A node attribute deleted (``value`` None) or set to ``value``: the error names node and field."""
    with edited(saved) as f:
        if value is None:
            del f[f"nodes/{node}"].attrs[attr]
        else:
            f[f"nodes/{node}"].attrs[attr] = value
    _expect(saved, *words)


def test_dangling_edge(saved):
    with edited(saved) as f:
        edges = f["edges"].asstr()[()].tolist() + [["li", "ghost"]]
        del f["edges"]
        f.create_dataset("edges", data=np.array(edges, dtype=object), dtype=h5py.string_dtype())
    _expect(saved, "dangling", "ghost")


def test_output_names_missing_node(saved):
    with edited(saved) as f:
        f.attrs["outputs"] = np.array(["out", "nowhere"], dtype=h5py.string_dtype())
    _expect(saved, "outputs", "nowhere")


def test_cycle_without_delay(tmp_path):
    path = tmp_path / "rec.h5"
    save_program(recurrent_program(), path)
    with edited(path) as f:
        f["nodes/rec"].attrs["delay"] = np.int64(0)
    _expect(path, "cycle without delay", "pop", "rec")


@pytest.mark.parametrize("version, words", [(SCHEMA_VERSION + 1, ("newer",)), (0, ("not supported",))])
def test_schema_version(saved, version, words):
    with edited(saved) as f:
        f.attrs["schema_version"] = np.int64(version)
    _expect(saved, "schema_version", str(version), *words)


def test_missing_schema_version(saved):
    with edited(saved) as f:
        del f.attrs["schema_version"]
    _expect(saved, "schema_version")


def test_nan_weights(saved):
    with edited(saved) as f:
        f["nodes/conv/weight"][0, 0, 1, 1] = np.nan
    _expect(saved, "'conv'", "weight", "NaN")


def test_inf_population_parameter(saved):
    with edited(saved) as f:
        f["nodes/lif/threshold"][0] = np.inf
    _expect(saved, "'lif'", "threshold", "NaN/inf")


def test_inconsistent_dense_weight_shape(saved):
    with edited(saved) as f:
        del f["nodes/fc/weight"]
        f["nodes/fc"].create_dataset("weight", data=np.zeros((10, 35)))
    _expect(saved, "'fc'", "weight", "(10, 35)", "[10, 36]")


def test_inconsistent_conv_weight_shape(saved):
    with edited(saved) as f:
        del f["nodes/conv/weight"]
        f["nodes/conv"].create_dataset("weight", data=np.zeros((4, 3, 3, 3), np.float32))
    _expect(saved, "'conv'", "weight", "(4, 3, 3, 3)")


def test_population_array_length(saved):
    with edited(saved) as f:
        del f["nodes/lif/beta"]
        f["nodes/lif"].create_dataset("beta", data=np.full(143, 0.5, np.float32))
    _expect(saved, "'lif'", "beta", "144")


def test_csr_out_of_range(saved):
    with edited(saved) as f:
        f["nodes/sp/indices"][0] = 7
    _expect(saved, "'sp'", "indices")


def test_csr_not_monotone(saved):
    with edited(saved) as f:
        f["nodes/sp/indptr"][2] = 0
    _expect(saved, "'sp'", "indptr")


def test_source_size_mismatch(saved):
    with edited(saved) as f:
        f["nodes/out"].attrs["shape"] = np.array([6], dtype=np.int64)
    _expect(saved, "'out'", "shape", "6", "5")


def test_unknown_field(saved):
    with edited(saved) as f:
        f["nodes/fc"].attrs["dilation"] = np.int64(2)
    _expect(saved, "'fc'", "dilation")
