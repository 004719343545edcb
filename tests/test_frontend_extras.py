"""Frontend extras: ``compile`` takes a ``nir.NIRGraph`` object like a ``.nir`` path, and max
pooling of real-valued currents (snnTorch's Conv -> MaxPool -> Leaky) runs exactly as a host op."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.serialize import assert_programs_equal

nir = pytest.importorskip("nir")


def _dyadic(rng: np.random.Generator, shape: tuple[int, ...], k: int = 64) -> np.ndarray:
    return (rng.integers(-k, k + 1, size=shape) / 64.0).astype(np.float32)


def _nir_graph(dt: float = 1e-4) -> object:
    """A small NIR graph, its nodes and edges in name order (``nir.write`` stores them so), its
    neurons' input gains 1/2 and 1 at time step ``dt``."""
    rng = np.random.default_rng(0)
    nodes = {
        "input": nir.Input(np.array([6])),
        "fc1": nir.Affine(_dyadic(rng, (5, 6)), _dyadic(rng, (5,), 8)),
        "lif1": nir.LIF(tau=np.full(5, 8 * dt), r=np.full(5, 4.0), v_leak=np.zeros(5), v_threshold=np.full(5, 0.5)),
        "fc2": nir.Linear(_dyadic(rng, (3, 5))),
        "lif2": nir.IF(r=np.full(3, 1 / dt), v_threshold=np.full(3, 0.75)),
        "output": nir.Output(np.array([3])),
    }
    edges = [("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")]
    return nir.NIRGraph(nodes=dict(sorted(nodes.items())), edges=sorted(edges))


@pytest.mark.parametrize("options", [None, {"dt": 1e-3, "reset": "subtract", "reset_delay": False}])
def test_compile_takes_a_nir_graph_like_its_file(tmp_path, options) -> None:
    graph = _nir_graph((options or {}).get("dt", 1e-4))
    path = tmp_path / "net.nir"
    nir.write(str(path), graph)
    from_object = compile_model(graph, nir_options=options)
    from_file = compile_model(path, nir_options=options)
    assert_programs_equal(from_object, from_file)
    x = (np.random.default_rng(1).random((16, 2, 6)) < 0.5).astype(np.float32)
    a, b = run(from_object, x, backend="numba"), run(from_file, x, backend="numba")
    assert a.output.sum() > 0
    np.testing.assert_array_equal(a.output, b.output)


def test_compile_nir_graph_real_input_option() -> None:
    graph = _nir_graph()
    program = compile_model(graph, nir_options={"input_signal": "real"})
    x = np.random.default_rng(2).integers(0, 9, (8, 2, 6)).astype(np.float32) / 8
    res = run(program, x, backend="numba")
    assert res.ops.per_sample_total()["macs"].sum() > 0
