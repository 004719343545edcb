"""The numba backend's population kernels split the samples over numba's threads (``prange``) when a
run has more than one thread to give them and the step has ``PARALLEL_MIN_UPDATES`` neuron updates
or more, and run a serial compilation of the same loop otherwise (``population_kernel(...,
parallel=False)``: half the compile time). Both give the same spikes, membranes and counts."""
from __future__ import annotations

import numba
import numpy as np
import pytest

from spike import semantics
from spike.backends import run
from spike.backends.numba import neurons as N
from spike.backends.numba.backend import PARALLEL_MIN_UPDATES

from helpers.programs import one_layer, pop

T, B, N_IN = 20, 4, 12
N_OUT = PARALLEL_MIN_UPDATES // B  # the smallest threaded population at this batch
FORMS = {"lif": dict(), "cuba_lif zero reset": dict(model="cuba_lif", reset="zero"), "alpha": dict(model="alpha")}


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread on this machine")
@pytest.mark.parametrize("name", list(FORMS))
def test_threaded_and_serial_kernels_agree(name: str) -> None:
    rng = np.random.default_rng(len(name))
    population = pop(rng, (N_OUT,), **FORMS[name])
    program = one_layer(rng, population, N_IN)
    x = (rng.random((T, B, N_IN)) < 0.3).astype(np.float32)
    before = numba.get_num_threads()
    results = {}
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results[threads] = run(program, x, backend="numba", probes=["p", "p.v"])
    finally:
        numba.set_num_threads(before)
    one, two = results[1], results[2]
    assert one.probes["p"].any()
    for key in ("p", "p.v"):
        np.testing.assert_array_equal(one.probes[key], two.probes[key], err_msg=key)
    for key, value in one.ops.per_node["p"].items():
        np.testing.assert_array_equal(two.ops.per_node["p"][key], value, err_msg=key)
    flags = semantics.neuron_flags(population)
    for parallel in (False, True):  # each run took its own compilation
        assert N.population_kernel(flags, False, False, parallel).signatures, parallel
