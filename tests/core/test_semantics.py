"""The neuron update written once (``spike.semantics``): the canonical rule the compiler picks computes
what the rule it replaces computes; numba and torch run every charge, reset rule and model alike;
fields that do not fit a population are refused by name, and so is every form Loihi, Lava and NIR
cannot express."""
from __future__ import annotations

import numpy as np
import pytest

from spike import semantics
from spike.backends import BackendError, run
from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.io.nir_export import NIRExportError, to_nir
from spike.compiler.passes import canonicalize_neurons
from spike.compiler.ir.program import ProgramBuilder, ProgramError
from spike.compiler.pipeline import FIXED_PIPELINE, run_passes
from spike.compiler.ir.validate import validate_program


def _program(pop: Population, n_in: int = 8, seed: int = 0, late: bool = False):
    rng = np.random.default_rng(seed)
    n = pop.size
    b = ProgramBuilder()
    b.add("in", Input(shape=(n_in,)))
    b.add("fc", Dense(shape=(n,), in_shape=(n_in,), weight=(rng.integers(-40, 80, (n, n_in)) / 64).astype(np.float32)),
          "in")
    b.add("pop", pop, "fc")
    if late:
        b.add("rec", Dense(shape=(n,), in_shape=(n,), weight=(rng.integers(-32, 32, (n, n)) / 64).astype(np.float32),
                           bias=np.full(n, 0.125, np.float32), delay=1), "pop")
        b.connect("rec", "pop")
    b.add("out", Output(shape=(n,)), "pop")
    return b.build()


def _numpy_run(pop: Population, program, x: np.ndarray) -> np.ndarray:
    """``pop`` (any rule) stepped by ``semantics.numpy_step`` on the inputs the dense layer gives."""
    w = program.node("fc").weight
    state = list(semantics.initial_state(pop, x.shape[1]))
    params = list(semantics.neuron_params(pop))
    out = []
    for t in range(x.shape[0]):
        cur = (x[t] @ w.T).astype(np.float32)
        o, *state = semantics.numpy_step(cur, cur, *state, *params, np.float32(pop.gain), np.float32(pop.v_reset),
                                         *semantics.neuron_flags(pop))
        out.append(o)
    return np.stack(out)


@pytest.mark.parametrize("reset,delay,thr", [("zero", False, 0.5), ("drop", False, 0.5), ("none", False, -0.25),
                                             ("subtract", True, 0.75), ("drop", True, 0.75), ("zero", True, 0.0)])
def test_canonical_rule_computes_the_same(reset: str, delay: bool, thr: float) -> None:
    """snnTorch's rule becomes the standard one (and a same-step drop a zero reset) only where both
    give the same spikes: checked against the snnTorch rule stepped as given."""
    pop = Population(shape=(12,), beta=np.float32(0.875), threshold=np.float32(thr), reset=reset, reset_delay=delay,
                     reset_rule="snntorch")
    program = _program(pop)
    canon = canonicalize_neurons(program).node("pop")
    assert canon.reset_rule == "standard" and canon.reset == ("zero" if reset == "drop" and not delay else reset)
    x = (np.random.default_rng(1).random((16, 3, 8)) < 0.5).astype(np.float32)
    expected = _numpy_run(canonicalize_neurons(program.with_graph(program.graph)).node("pop").replace(
        reset_rule="snntorch", reset=reset), program, x)
    assert expected.sum() > 0
    for backend in ("numba", "torch"):
        np.testing.assert_array_equal(run(program, x, backend=backend).output, expected, err_msg=backend)


def test_snntorch_rule_stays_where_it_differs() -> None:
    """Subtractive reset in the step that fires: snnTorch also subtracts for a membrane still above
    threshold after its reset (input 3, then 0.5: v 2 after the first reset fires again on 2.5 - 1
    = 1.5, then snnTorch's 0.5 stays silent where the standard rule's 1.5 fires)."""
    b = ProgramBuilder()
    b.add("in", Input(shape=(1,), signal="real"))
    b.add("fc", Dense(shape=(1,), in_shape=(1,), weight=np.ones((1, 1), np.float32)), "in")
    b.add("pop", Population(shape=(1,), beta=np.float32(1.0), threshold=np.float32(1.0), reset="subtract",
                            reset_delay=False, reset_rule="snntorch"), "fc")
    b.add("out", Output(shape=(1,)), "pop")
    program = b.build()
    assert canonicalize_neurons(program).node("pop").reset_rule == "snntorch"
    x = np.array([3.0, 0.5, 0, 0, 0], np.float32).reshape(5, 1, 1)
    standard = program.with_graph(program.graph.copy())
    standard.graph.nodes["pop"]["node"] = program.node("pop").replace(reset_rule="standard")
    for backend in ("numba", "torch"):
        np.testing.assert_array_equal(run(program, x, backend=backend).output.ravel(), [1, 1, 0, 0, 0], err_msg=backend)
        np.testing.assert_array_equal(run(standard, x, backend=backend).output.ravel(), [1, 1, 1, 0, 0], err_msg=backend)


FORMS = [
    dict(charge="tau_input", tau=np.float32(3.0), reset="zero", reset_delay=False, fire_ge=True, v_reset=-0.25),
    dict(charge="tau", tau=np.float32(1.5), reset="subtract", reset_delay=False, fire_ge=True),
    dict(charge="rate_input", rate=np.float32(0.3), reset="zero", reset_delay=False, fire_ge=True),
    dict(charge="rate", rate=np.float32(0.6), reset="none", reset_delay=False),
    dict(model="alpha", alpha=np.float32(0.875), tau=np.float32(1.75), reset="subtract"),
    dict(model="cuba_lif", alpha=np.float32(0.5), reset="drop", reset_rule="snntorch"),
]


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f"{f.get('model', 'lif')}-{f.get('charge', 'beta')}-{f['reset']}")
def test_numba_and_torch_step_every_form_alike(form: dict) -> None:
    beta = None if form.get("charge", "beta") != "beta" else np.float32(0.75)
    pop = Population(shape=(10,), beta=form.pop("beta", beta), threshold=np.float32(0.5), **form)
    program = _program(pop, late=False)
    x = (np.random.default_rng(2).random((12, 2, 8)) < 0.5).astype(np.float32)
    res = {be: run(program, x, backend=be, probes=["pop.v"]) for be in ("numba", "torch")}
    expected = _numpy_run(canonicalize_neurons(program).node("pop"), program, x)
    assert expected.sum() > 0
    for be, r in res.items():
        np.testing.assert_array_equal(r.output, expected, err_msg=be)
    np.testing.assert_array_equal(res["numba"].probes["pop.v"], res["torch"].probes["pop.v"])


def test_late_recurrent_bias_holds_from_the_first_step() -> None:
    """RLeaky's ``(beta*v + I) + (V s[t-1] + b)``: the recurrent bias is there at step 0."""
    pop = Population(shape=(6,), beta=np.float32(0.5), threshold=np.float32(0.25), reset="drop", late_recurrent=True,
                     reset_rule="snntorch")
    program = _program(pop, late=True)
    x = np.zeros((3, 1, 8), np.float32)
    for backend in ("numba", "torch"):
        v = run(program, x, backend=backend, probes=["pop.v"]).probes["pop.v"]
        assert v[0, 0, 0] == np.float32(0.125), backend  # b alone: no input, no spikes yet


@pytest.mark.parametrize("fields,field", [
    (dict(reset="subtract", v_reset=0.5, reset_delay=False), "v_reset"),
    (dict(charge="tau_input", tau=np.float32(0.0), reset_delay=False), "tau"),
    (dict(model="alpha", alpha=np.float32(0.5), tau=np.float32(1.0), reset_delay=False), "reset_delay"),
    (dict(rate=np.float32(0.5)), "rate"),
    (dict(charge="tau_input", tau=np.float32(2.0), reset="zero", reset_delay=True), "reset_delay"),
    (dict(model="lif", alpha=np.float32(0.5)), "alpha"),
])
def test_fields_that_do_not_fit_are_named(fields: dict, field: str) -> None:
    pop = Population(shape=(4,), beta=np.float32(0.5), **fields)
    with pytest.raises(ProgramError, match=f"field {field}"):
        validate_program(canonicalize_neurons(_program(pop)))


@pytest.mark.parametrize("form", [dict(charge="tau_input", tau=np.float32(2.0), beta=None),
                                  dict(reset="drop", reset_delay=True),
                                  dict(v_reset=-0.5, reset="zero", reset_delay=False)])
def test_forms_beyond_loihi_lif_are_refused_by_fixed_point_lava_and_nir(form: dict) -> None:
    kw = dict(beta=np.float32(0.5), threshold=np.float32(1.0), reset="zero", reset_delay=False)
    kw.update(form)
    program = canonicalize_neurons(_program(Population(shape=(4,), **kw)))
    field = next(iter(form)) if "v_reset" not in form else "v_reset"
    with pytest.raises(ProgramError, match=field if field != "beta" else "charge"):
        run_passes(program, FIXED_PIPELINE)
    with pytest.raises(NIRExportError, match="has no NIR form"):
        to_nir(program)
    with pytest.raises(BackendError, match="Lava's LIF computes"):
        run(program, np.zeros((2, 1, 8), np.float32), backend="lava")
