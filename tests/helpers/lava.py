"""The lava backend against the numba backend: programs made for Loihi (quantised, the target's
delays) and the one comparison, bit for bit, of everything a run gives."""
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from spike.backends import run
from spike.compat.lava import lava_available
from spike.compiler.passes.delays import target_delays
from spike.compiler.pipeline import FIXED_PIPELINE, run_passes

needs_lava = pytest.mark.skipif(lava_available() is not None, reason="lava-nc is not importable here")


def loihi(program, mode="balanced"):
    """Fixed point for Loihi: quantised, then the target's delays (balanced: latency compensated)."""
    return target_delays(run_passes(program, FIXED_PIPELINE), 1, mode=mode)


def assert_same(program, x, probes) -> dict:
    """Runs ``program`` on numba and lava: equal outputs (and dtypes), ``probes`` and every operation
    count, some synaptic work, and no Lava process left running; the two results by backend."""
    res = {be: run(program, x, backend=be, probes=probes) for be in ("numba", "lava")}
    nb, lv = res["numba"], res["lava"]
    assert lv.backend == "lava" and set(lv.outputs) == set(nb.outputs) and set(lv.probes) == set(nb.probes)
    for name in nb.outputs:
        assert lv.outputs[name].dtype == nb.outputs[name].dtype, name
        np.testing.assert_array_equal(lv.outputs[name], nb.outputs[name], err_msg=name)
    for key in probes:
        np.testing.assert_array_equal(lv.probes[key], nb.probes[key], err_msg=key)
    assert list(lv.ops.per_node) == list(nb.ops.per_node) and lv.ops.kinds == nb.ops.kinds
    for name, counts in nb.ops.per_node.items():
        assert set(lv.ops.per_node[name]) == set(counts), name
        for key, value in counts.items():
            np.testing.assert_array_equal(lv.ops.per_node[name][key], value, err_msg=f"{name} {key}")
    assert lv.ops.total()["syn_ops"] > 0
    assert multiprocessing.active_children() == []  # every Lava process was stopped
    return res
