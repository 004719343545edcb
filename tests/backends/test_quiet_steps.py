"""Quiet steps of the numba population kernel: a sample whose whole state is zero and whose inputs
are all zero in a step writes zeros for it instead of updating, exactly what the update computes
(checked against the torch backend, which updates every step, for every neuron model), and only
where the update maps rest to rest (a neuron that fires at rest, or rests away from zero, never
skips)."""
from __future__ import annotations

import numpy as np
import pytest

from spike import semantics
from spike.backends import run
from spike.backends.numba import neurons as N

from helpers.programs import one_layer, pop

T, B, N_IN, N_OUT = 400, 3, 12, 10


def _bursts(rng: np.random.Generator) -> np.ndarray:
    """Sample 0: input in steps 0-29 and 360-399, silent between (long enough for a state to decay
    to exactly zero); sample 1: silent throughout; sample 2: input every step."""
    x = (rng.random((T, B, N_IN)) < 0.3).astype(np.float32)
    x[30:360, 0] = 0
    x[:, 1] = 0
    return x


MODELS = {
    "lif subtract": dict(),
    "lif zero, same step": dict(reset="zero", reset_delay=False),
    "cuba_lif": dict(model="cuba_lif"),
    "alpha": dict(model="alpha"),
    "if": dict(model="if"),
    "li readout": dict(model="li"),
    "tau charge, rest at -0.25": dict(charge="tau", v_reset=-0.25, reset="zero"),
    "fires at rest (threshold 0, >=)": dict(fire_ge=True, threshold=np.zeros(N_OUT, np.float32)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_quiet_steps_compute_what_the_update_does(name: str) -> None:
    rng = np.random.default_rng(len(name))
    forms = dict(MODELS[name])
    population = pop(rng, (N_OUT,), **{k: v for k, v in forms.items() if k != "threshold"})
    if "threshold" in forms:
        population = population.replace(threshold=forms["threshold"])
    if forms.get("model") != "if":  # decays fast enough to reach exactly zero within the silence
        population = population.replace(beta=rng.uniform(0.25, 0.5, N_OUT).astype(np.float32))
    program = one_layer(rng, population, N_IN)
    x = _bursts(rng)
    ours, torch_run = (run(program, x, backend=be, probes=["p", "p.v"]) for be in ("numba", "torch"))
    for key in ("p", "p.v"):
        np.testing.assert_array_equal(ours.probes[key], torch_run.probes[key], err_msg=key)
    for key, value in torch_run.ops.per_node["p"].items():
        np.testing.assert_array_equal(ours.ops.per_node["p"][key], value, err_msg=key)
    if forms.get("model") != "li":
        assert ours.probes["p"][:30, 0].any() and ours.probes["p"][360:, 0].any()  # real activity around the silence


def _lif_kernel():
    node = pop(np.random.default_rng(0), (4,), reset="zero")
    flags, params = semantics.neuron_flags(node), semantics.neuron_params(node)
    return N.population_kernel(flags, False, False), params


def _step(kernel, params, x, state, quiet, rest_is_fixed):
    n = params.shape[1]
    out = np.full((1, 1, n), 7.0, np.float32)
    no = np.zeros((1, 1), np.int64)
    kernel((x,), (x,), 0, 1, params, np.float32(1), np.float32(0), np.zeros(n, np.float32), 0, state, out,
           np.zeros((1, 1, 1), np.float32), False, no, np.zeros(1, np.int64), np.zeros(1, np.int64),
           np.zeros(1, np.int64), False, np.zeros((1, 1, 1), np.int32), no, quiet, rest_is_fixed,
           (np.zeros((1, 1), np.uint8),), (np.zeros((1, 1), np.uint8),), np.zeros((1, 1), np.uint8), False)
    return out


def test_a_quiet_sample_with_silent_input_is_not_updated() -> None:
    """The kernel itself: told a sample is quiet (here falsely: its v is not zero, so an update
    would show), a silent step writes zeros and leaves the state; any input bit (-0.0 too), or
    ``rest_is_fixed`` false, makes it update, and a step ending at zero state with silent input
    marks the sample quiet."""
    kernel, params = _lif_kernel()
    assert N.rest_is_fixed_point(kernel, params, np.float32(1), np.float32(0), semantics.N_STATES, 1, 1, np.float32)
    silent = np.zeros((1, 1, 4), np.float32)
    state = np.zeros((semantics.N_STATES, 1, 4), np.float32)
    state[semantics.S_V] = 0.125
    quiet = np.ones(1, np.bool_)
    out = _step(kernel, params, silent, state, quiet, True)
    assert not out.any() and (state[semantics.S_V] == 0.125).all() and quiet[0]  # skipped
    minus_zero = silent.copy()
    minus_zero[0, 0, 2] = -0.0
    for x, fixed in ((minus_zero, True), (silent, False)):
        before = state.copy()
        _step(kernel, params, x, state, quiet, fixed)
        assert (state[semantics.S_V] < before[semantics.S_V]).all() and not quiet[0]  # updated: v decayed
    state[:] = 0
    _step(kernel, params, silent, state, quiet, True)
    assert quiet[0]
