"""Issue 17, sizes: a small input that declares something huge (a dataset, a population, a delay, a
chip) is refused with one line naming the file, node or field, before anything of that size is
allocated."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from spike.cli import main
from spike.compiler.io.hdf5 import IRFormatError, load_program, save_program
from spike.compiler.ir.nodes import Dense, Input, Output, Pool2d, Population, Sparse
from spike.compiler.ir.program import MAX_NODE_SIZE, MAX_STEPS_DELAY, Program, ProgramBuilder, ProgramError
from spike.compiler.ir.validate import validate_program
from spike.compiler.mapping.partition import map_program
from spike.hardware import HardwareConfigError, load_target
from helpers.programs import edited

HUGE = 10**12


def _pop(n: int) -> Population:
    return Population(shape=(n,), beta=np.array(0.9, np.float32), threshold=np.array(1.0, np.float32))


def small_program() -> Program:
    """in (2) -> dense fc (3) -> pop (3) -> out."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(2,)))
    b.add("fc", Dense(shape=(3,), in_shape=(2,), weight=np.full((3, 2), 0.5, np.float32)), "in")
    b.add("pop", _pop(3), "fc")
    b.add("out", Output(shape=(3,)), "pop")
    return b.build()


def sparse_program(n_out: int, delay: int = 0) -> Program:
    """in (1) -> sparse syn (one synapse onto neuron n_out - 1) -> pop (n_out) -> out."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(1,)))
    b.add("syn", Sparse(shape=(n_out,), in_shape=(1,), delay=delay, indptr=np.array([0, 1]),
                        indices=np.array([n_out - 1]), data=np.array([1.0], np.float32)), "in")
    b.add("pop", _pop(n_out), "syn")
    b.add("out", Output(shape=(n_out,)), "pop")
    return b.build()


def saved(tmp_path: Path, edit=None, program: Program | None = None) -> Path:
    """A program file from ``save_program``, then changed with h5py by ``edit(file)``."""
    path = tmp_path / "net.h5"
    save_program(program or small_program(), path)
    if edit is not None:
        with edited(path) as f:
            edit(f)
    return path


def huge_weight(f: h5py.File) -> None:
    del f["nodes/fc/weight"]
    f["nodes/fc"].create_dataset("weight", shape=(HUGE,), dtype="f4", chunks=(1024,))


def refused(path: Path, load=load_program, error: type[Exception] = IRFormatError) -> str:
    """The one-line message with which ``load`` refuses ``path``, checked to start with the path."""
    with pytest.raises(error) as exc:
        load(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
    return msg


# ---- 1a: program files ------------------------------------------------------------------
def test_program_file_declaring_huge_dataset_refused_before_reading(tmp_path):
    path = saved(tmp_path, huge_weight)
    assert path.stat().st_size < 100_000
    start = time.perf_counter()
    msg = refused(path)
    assert time.perf_counter() - start < 5
    assert "node 'fc' (dense), field weight: declares shape (1000000000000,) of float32" in msg, msg
    assert "stores 0 bytes" in msg and "sha256" not in msg  # the size check fires before the digest check


def test_huge_dataset_refused_in_a_small_address_space(tmp_path):
    """Under a 2 GiB address-space limit a 4 GB dataset that the file does not hold is refused as
    a format error, not attempted (which would be a MemoryError)."""
    def edit(f: h5py.File) -> None:
        del f["nodes/fc/weight"]
        f["nodes/fc"].create_dataset("weight", shape=(10**9,), dtype="f4", chunks=(1 << 16,))

    path = saved(tmp_path, edit)
    script = textwrap.dedent(f"""
        import resource, sys
        from spike.compiler.io.hdf5 import IRFormatError, load_program
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        try:
            load_program({str(path)!r})
        except IRFormatError as e:
            print("refused:", e)
            sys.exit(0)
        sys.exit(1)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "node 'fc' (dense), field weight: declares shape (1000000000,)" in out.stdout


def test_cli_refuses_huge_dataset_with_one_line(tmp_path, capsys):
    path = saved(tmp_path, huge_weight)
    assert main(["run", str(path), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"spike run: error: {path}: node 'fc' (dense), field weight: declares shape"), err
    assert "\n" not in err


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda f: (f["nodes/fc"].__delitem__("weight"),
                    f["nodes/fc"].create_dataset("weight", shape=(3, 2), dtype="f4")),
         "node 'fc' (dense), field weight: declares shape (3, 2) of float32 = 24 bytes, but the file"),
        (lambda f: (f.__delitem__("edges"),
                    f.create_dataset("edges", shape=(HUGE, 2), dtype=h5py.string_dtype(), chunks=(16, 2))),
         "/edges declares shape (1000000000000, 2)"),
        (lambda f: (f["nodes/fc"].__delitem__("weight"),
                    f["nodes/fc"].__setitem__("weight", h5py.SoftLink("/nodes/pop/beta"))),
         "node 'fc' (dense), field weight: is a soft link"),
        (lambda f: (f["nodes/fc"].__delitem__("weight"),
                    f["nodes/fc"].__setitem__("weight", h5py.ExternalLink("other.h5", "/w"))),
         "node 'fc' (dense), field weight: is an external link"),
    ],
    ids=["fill-value-only", "huge-edges", "soft-link", "external-link"],
)
def test_datasets_not_held_by_the_file_refused(tmp_path, edit, expect):
    assert expect in refused(saved(tmp_path, edit))


def test_external_raw_storage_refused(tmp_path):
    raw = tmp_path / "raw.bin"
    np.full(6, 0.5, np.float32).tofile(raw)

    def edit(f: h5py.File) -> None:
        del f["nodes/fc/weight"]
        f["nodes/fc"].create_dataset("weight", shape=(3, 2), dtype="f4", external=[(str(raw), 0, 24)])

    assert "node 'fc' (dense), field weight: keeps its data in other files" in refused(saved(tmp_path, edit))


def test_files_we_write_and_compressed_copies_load(tmp_path):
    """save_program's files (empty arrays included) pass the storage check; so does a dataset
    rewritten with gzip (same content, so the digest still matches)."""
    empty = ProgramBuilder()
    empty.add("in", Input(shape=(2,)))
    empty.add("syn", Sparse(shape=(3,), in_shape=(2,), indptr=np.zeros(3, np.int64), indices=np.zeros(0, np.int64),
                            data=np.zeros(0, np.float32)), "in")
    empty.add("pop", _pop(3), "syn")
    empty.add("out", Output(shape=(3,)), "pop")
    load_program(saved(tmp_path, program=empty.build()))

    def gzip(f: h5py.File) -> None:
        w = f["nodes/fc/weight"][()]
        del f["nodes/fc/weight"]
        f["nodes/fc"].create_dataset("weight", data=w, compression="gzip")

    load_program(saved(tmp_path, gzip))


# ---- 1b: sizes and delays in programs -----------------------------------------------------
def test_sparse_fan_out_to_huge_population_refused():
    with pytest.raises(ProgramError) as exc:
        validate_program(sparse_program(HUGE))
    msg = str(exc.value)
    assert msg.startswith("node 'syn' (sparse), field shape: (1000000000000,) holds 1000000000000 elements"), msg
    assert f"limit of {MAX_NODE_SIZE}" in msg
    validate_program(sparse_program(1000))  # a sane size passes


def test_huge_population_in_a_file_refused(tmp_path):
    def edit(f: h5py.File) -> None:
        for name in ("syn", "pop", "out"):
            f[f"nodes/{name}"].attrs["shape"] = np.array([HUGE], np.int64)
        f["nodes/syn/indices"][0] = HUGE - 1

    msg = refused(saved(tmp_path, edit, sparse_program(4)))
    assert "node 'syn' (sparse), field shape: (1000000000000,) holds 1000000000000 elements" in msg, msg


def test_huge_delay_refused(tmp_path):
    with pytest.raises(ProgramError, match=rf"^node 'syn' \(sparse\), field delay: .*0\.\.{MAX_STEPS_DELAY}, got {HUGE}$"):
        validate_program(sparse_program(4, delay=HUGE))

    def edit(f: h5py.File) -> None:
        f["nodes/syn"].attrs["delay"] = np.int64(HUGE)

    assert "node 'syn' (sparse), field delay:" in refused(saved(tmp_path, edit, sparse_program(4)))


def test_huge_pooling_window_refused():
    k, p = 10**6, 5 * 10**5  # a 10^6 x 10^6 window over a 1 x 1 input padded to fit it
    b = ProgramBuilder()
    b.add("in", Input(shape=(1, 1, 1)))
    b.add("pool", Pool2d(shape=(1, 2, 2), in_shape=(1, 1, 1), mode="sum", kernel=(k, k), stride=(1, 1),
                         padding=(p, p)), "in")
    b.add("pop", _pop(4).replace(shape=(1, 2, 2)), "pool")
    b.add("out", Output(shape=(1, 2, 2)), "pop")
    with pytest.raises(ProgramError, match=r"^node 'pool' \(pool2d\), field kernel: .* window \(input, output\) pairs"):
        validate_program(b.build())


# ---- 1c and 2: hardware configs -----------------------------------------------------------
def fig(value, unit: str) -> dict:
    return {"value": value, "unit": unit, "source": "test target", "kind": "estimated"}


def target_data(cores_per_chip: int, rows: int, cols: int, per_tile: int, neurons: int = 8) -> dict:
    return {
        "schema_version": 1, "name": "big",
        "core": {"neurons": fig(neurons, "neurons"), "syn_mem_bits": fig(10**6, "bits"),
                 "fan_in_axons": fig(10**4, "axons"), "fan_out_axons": fig(10**4, "axons"),
                 "weight_bits": fig(8, "bits")},
        "chip": {"cores_per_chip": fig(cores_per_chip, "cores"), "mesh_rows": fig(rows, "tiles"),
                 "mesh_cols": fig(cols, "tiles"), "cores_per_tile": fig(per_tile, "cores")},
    }


def write_target(tmp_path: Path, data: dict, name: str = "big.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def hw_refused(path: Path) -> str:
    return refused(path, load_target, HardwareConfigError)


def test_absurd_core_count_refused(tmp_path):
    msg = hw_refused(write_target(tmp_path, target_data(HUGE, 10**6, 10**6, 1)))
    assert msg == f"{tmp_path / 'big.yaml'}: chip.cores_per_chip.value: expected a positive integer at most {2**20}, got {HUGE}"
    data = target_data(128, 4, 8, 4)
    data["core"]["max_delay"] = fig(HUGE, "steps")
    assert "core.max_delay.value: expected a positive integer at most 65535" in hw_refused(write_target(tmp_path, data))


def test_placement_memory_follows_cores_not_chip(tmp_path):
    """A 128 x 128-tile chip (16384 cores) and a 138-neuron net: placed in well under a second
    and a few MB, not a 16384 x 16384 distance matrix (2 GiB)."""
    target = write_target(tmp_path, target_data(128 * 128, 128, 128, 1))
    b = ProgramBuilder()
    b.add("in", Input(shape=(40,)))
    b.add("fc1", Dense(shape=(90,), in_shape=(40,), weight=np.full((90, 40), 0.25, np.float32)), "in")
    b.add("h", _pop(90), "fc1")
    b.add("fc2", Dense(shape=(48,), in_shape=(90,), weight=np.full((48, 90), 0.25, np.float32)), "h")
    b.add("o", _pop(48), "fc2")
    b.add("out", Output(shape=(48,)), "o")
    tracemalloc.start()
    try:
        mapping = map_program(b.build(), target).metadata["mapping"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak
    slots = [c["slot"] for c in mapping["cores"]]
    assert len(slots) == 18 and len(set(slots)) == 18 and max(slots) < 128 * 128
    assert mapping["placement"]["cost"] <= mapping["placement"]["sequential_cost"]


def test_non_utf8_config_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(target_data(128, 4, 8, 4)).encode() + b"description: caf\xe9\n")
    assert "not UTF-8 text: byte 0xe9 at offset" in hw_refused(path)


@pytest.mark.parametrize(
    "text, expect",
    [
        ("a: [1, 2\n", "not valid YAML: line "),
        ("[" * 100_000, "not valid YAML"),
        ("x" * ((1 << 20) + 1), "larger than 1048576 bytes"),
    ],
    ids=["bad-yaml", "deep-nesting", "too-large"],
)
def test_unreadable_configs_one_line_naming_the_file(tmp_path, text, expect):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert expect in hw_refused(path)


@pytest.mark.parametrize(
    "section, key, value, expect",
    [
        ("energy", "syn_op", 10**400, "energy.syn_op.value: expected a non-negative number"),
        ("core", "neurons", 10**400, "core.neurons.value: expected a positive integer at most 2147483647"),
        ("core", "weight_bits", 65, "core.weight_bits.value: expected a positive integer at most 64, got 65"),
        ("chip", "mesh_rows", float("inf"), "chip.mesh_rows.value: expected a positive integer, got inf"),
    ],
    ids=["energy-1e400", "neurons-1e400", "weight-bits-65", "mesh-rows-inf"],
)
def test_figure_errors_name_file_and_field(tmp_path, section, key, value, expect):
    data = target_data(128, 4, 8, 4)
    data.setdefault(section, {})[key] = fig(value, {"energy": "pJ", "core": "neurons", "chip": "tiles"}[section]
                                            if key != "weight_bits" else "bits")
    assert expect in hw_refused(write_target(tmp_path, data))
