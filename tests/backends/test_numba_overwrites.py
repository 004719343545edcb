"""The numba backend's ``overwrites`` contract (``registry.Backend``): the kernels of those kinds
write every element of every step they are given, so the engine hands their outputs out without
zero-filling (``Backend.empty``). Checked by filling those outputs with garbage (NaN, -7) first:
every output, probe and count equals the run on zero-filled arrays."""
from __future__ import annotations

import numpy as np
import pytest

from spike.backends import run
from spike.backends.numba import backend as NB
from spike.compiler.pipeline import FIXED_PIPELINE, run_passes

from helpers import programs as P


def garbage(shape, dtype):
    dt = np.dtype(dtype)
    return np.full(shape, np.nan if dt.kind == "f" else -7, dtype=dt)


def programs():
    rng = np.random.default_rng(0)
    yield "mlp", *P.mlp(rng)
    yield "sparse", *P.sparse(rng)
    yield "recurrent", *P.recurrent(rng)
    yield "residual", *P.residual(rng)
    yield "late recurrent", *P.neurons(rng, late=True)
    yield "conv max", *P.conv_pool(rng, "max", (2, 2), (1, 1), 1, (3, 3))
    yield "conv avg", *P.conv_pool(rng, "avg", (1, 1), (0, 0), 2, (2, 2))
    for make, seed in ((P.loihi_cnn, 0), (P.loihi_recurrent, 1)):
        program, in_shape, _ = make(seed)
        x = (np.random.default_rng(seed).random((9, 2, *in_shape)) < 0.3).astype(np.float32)
        yield f"fixed {make.__name__}", run_passes(program, FIXED_PIPELINE), x


@pytest.mark.parametrize("name,program,x", list(programs()), ids=lambda v: v if isinstance(v, str) else "")
def test_overwritten_outputs_need_no_zero_fill(name, program, x, monkeypatch):
    assert NB.BACKEND.empty is not None and "sparse" in NB.BACKEND.overwrites
    probes = [n for n, node in program.nodes() if node.KIND not in ("input", "output")]
    monkeypatch.setattr(NB.BACKEND, "empty", NB.BACKEND.zeros)
    want = run(program, x, backend="numba", probes=probes)
    monkeypatch.setattr(NB.BACKEND, "empty", garbage)
    got = run(program, x, backend="numba", probes=probes)
    for k in want.outputs:
        np.testing.assert_array_equal(got.outputs[k], want.outputs[k], err_msg=f"{name}: {k}")
    for k in probes:
        np.testing.assert_array_equal(got.probes[k], want.probes[k], err_msg=f"{name}: {k}")
    a, b = got.ops.per_sample_total(), want.ops.per_sample_total()
    for k in b:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: {k}")
