"""Property: a mutated program, NIR or hardware YAML file either loads (as a valid object) or is
refused with the project's own error; nothing else escapes (no traceback of another kind).

The suite's profile tries 150 mutants per format; ``pytest tests/robustness/test_fuzz_loaders.py
--hypothesis-profile=fuzz`` tries 3000 (with a 10 s limit per file, so a hang fails too); both are
registered in ``tests/conftest.py``. A NIR file is parsed by HDF5 in a child process that is
stopped after ``READ_TIMEOUT_S`` (5 s here): the first such run found a file HDF5 never finishes.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import nir
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spike.compiler.frontends import nir_read
from spike.compiler.frontends.nir_import import from_nir
from spike.compiler.frontends.nir_read import NIRImportError
from spike.compiler.io.hdf5 import IRFormatError, load_program, save_program
from spike.compiler.ir.validate import validate_program
from spike.hardware import HardwareConfigError, load_target
from helpers import ROOT
from helpers.programs import mlp

#: (offset as a fraction of the file, new byte) pairs, and where to cut the file (1.0: not cut)
MUTATIONS = st.tuples(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=48),
                      st.one_of(st.just(1.0), st.floats(0, 1)))


def _mutant(raw: bytes, mutation: tuple[list[tuple[float, int]], float]) -> bytes:
    flips, cut = mutation
    data = bytearray(raw)
    for where, value in flips:
        data[int(where * len(data))] = value
    return bytes(data[: max(1, int(cut * len(data)))])


_counter = itertools.count()


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("valid")
    program, _ = mlp(np.random.default_rng(0))
    save_program(program, folder / "p.h5")
    graph = nir.NIRGraph.from_list(
        nir.Input(input_type=np.array([4])),
        nir.Affine(weight=np.full((3, 4), 0.5, np.float32), bias=np.zeros(3, np.float32)),
        nir.LIF(tau=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3)),
        nir.Output(output_type=np.array([3])),
    )
    nir.write(folder / "g.nir", graph)
    return {"program": (folder / "p.h5").read_bytes(), "nir": (folder / "g.nir").read_bytes(),
            "yaml": (ROOT / "spike" / "hw_configs" / "loihi2.yaml").read_bytes()}


def _load_nir(path: Path) -> None:
    validate_program(from_nir(path))


LOADERS: dict[str, tuple[str, Callable[[Path], object], type[Exception]]] = {
    "program": (".h5", load_program, IRFormatError),
    "nir": (".nir", _load_nir, NIRImportError),
    "yaml": (".yaml", load_target, HardwareConfigError),
}


@pytest.mark.parametrize("kind", list(LOADERS))
def test_a_mutated_file_loads_or_is_refused_clearly(kind: str, valid_files, tmp_path_factory, monkeypatch) -> None:
    suffix, load, error = LOADERS[kind]
    monkeypatch.setattr(nir_read, "READ_TIMEOUT_S", 5.0)  # a NIR file HDF5 cannot finish is refused sooner
    folder = tmp_path_factory.mktemp(f"fuzz_{kind}")

    outcomes: list[str] = []

    @given(mutation=MUTATIONS)
    def check(mutation) -> None:
        path = folder / f"m{next(_counter)}{suffix}"
        path.write_bytes(_mutant(valid_files[kind], mutation))
        try:
            load(path)
            outcomes.append("loaded")
        except error as exc:
            assert str(path) in str(exc), f"the message does not name the file: {exc}"
            outcomes.append("refused")
        finally:
            path.unlink()

    check()
    print(f"{kind}: {len(outcomes)} mutants, {outcomes.count('loaded')} loaded, {outcomes.count('refused')} refused")
    assert len(outcomes) >= settings.default.max_examples // 2
