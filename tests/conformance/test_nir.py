"""NIR round trips with Norse 1.1 and Sinabs 3.1 (design §3-§5): graphs the libraries export with
their own ``to_nir`` are imported by us and run on the numba and torch backends equal to the
library's own forward, and our exports run in the library's ``from_nir`` equal to our run, wherever
NIR and the library express the same update. Randomised small models, dyadic weights, 2-3 seeds.

Norse 1.1 (``norse.torch``; its cells integrate by forward Euler, as our import does):

- ``LIFBoxCell``: ``v <- v + dt*tau_mem_inv*((v_leak - v) + I)``, spike on ``v > v_th``, ``v <-
  v_reset`` in the same step; ``LIFCell`` adds a current ``i <- i + I`` that decays by
  ``dt*tau_syn_inv`` after the membrane has read it; ``LIBoxCell`` is the non-spiking ``LIFBoxCell``;
  ``IAFCell``: ``v <- v + I``. The states start at ``v_leak`` (``v_reset`` for ``IAFCell``).
- Ours (``beta = 1 - dt/tau``, ``gain = r*dt/tau``): ``v' = beta*v + gain*I``: the same real
  numbers, in another order of operations. **Exactness rule**: with ``dt*tau_mem_inv`` and
  ``dt*tau_syn_inv`` powers of two (``2^-k``), ``v_leak = 0``, dyadic weights and thresholds and
  runs short enough that every value stays exactly representable in float32 (here multiples of
  2^-4, ``k <= 2``, 8 steps; the test checks it: Norse's float32 run equals its float64 run), both
  orders compute the exact value, so spikes and membranes are equal bit for bit (the synaptic
  current even for any run length: ``i - 2^-k*i`` and ``(1 - 2^-k)*i`` round the same real once).
  Outside the rule both are forward Euler but round differently (a membrane within an ulp or two
  of the threshold can fire in one and not the other). Import with ``reset="zero"``,
  ``reset_delay=False`` (Norse resets in the same step; with ``reset_delay=True`` the spikes are
  the same but the stored membrane is the pre-reset one).
- What Norse 1.1's ``to_nir`` writes differs from what its cells compute, so the tests build the
  graph Norse means (:func:`norse_graph`): ``to_nir(model, sample, dt)`` writes ``tau = dt /
  tau_mem_inv``, the time constant in seconds only for ``dt = 1`` (so it is called with 1.0 and the
  import uses the cells' ``dt``); it writes ``IF.r = 1`` although ``IAFCell`` adds its input
  unscaled (NIR's ``dv/dt = r*I`` means ``r = 1/dt``) and ``CubaLIF.w_in = 1`` although
  ``LIFCell``'s current jumps by its input (NIR's ``tau_syn di/dt = -i + w_in*S`` means ``w_in =
  tau_syn/dt``). It fails with nir 1.0.8's "All parameters must have the same shape" whenever a
  cell's parameters differ in shape (e.g. per-neuron ``tau_mem_inv`` with the default scalar
  ``v_leak``: ``r = ones_like(v_leak)``): give every parameter the same shape. Its sample must be
  unbatched (nirtorch writes the sample's shape, batch included, as the Input's), and it exports
  no pooling and a ``Flatten`` as a ``None`` node.
- Differences that remain: Norse starts ``v`` at ``v_leak`` (we start at 0; NIR leaves the
  initial state open), and its ``v_reset`` is not exported (NIR's default 0 is what we reset to).
- Our export into Norse's ``from_nir`` (``dt`` a power of two, so that Norse's ``1/tau`` is
  exact): Norse reads LIF, IF, CubaLIF, Affine, Linear, Conv2d, SumPool2d and Flatten (no LI, I,
  Scale, Delay, AvgPool2d), ignores ``r`` of LIF and IF (so LIF needs ``gain = 1 - beta`` and IF
  ``gain = 1``), resets to 0 in the same step, fires on ``>``; its Flatten does not skip the
  batch dimension, so conv graphs run one unbatched sample at a time.

Sinabs 3.1 (``sinabs.layers``; ``pip install --no-deps sinabs`` runs without samna with nir 1.0.8):

- ``IAF``: ``v <- v + I``; ``LIF``: ``v <- alpha*v + (1 - alpha)*I`` (``norm_input``, default) with
  ``alpha = exp(-1/tau_mem)``: exact integration with ``tau`` in steps. ``SingleSpike`` fires on
  ``v >= thr``, ``MembraneSubtract`` / ``MembraneReset`` reset in the same step, ``SumPool2d``.
  Import with ``dt=1``, ``reset="subtract"`` (or ``"zero"``), ``reset_delay=False``,
  ``fire_ge=True`` and ``discretization="exp"`` (LIF ``beta = exp(-dt/tau)``, ``gain = r*(1-beta)``):
  equal bit for bit where our float64-rounded ``exp`` equals torch's float32 ``exp(-1/tau)`` (the
  test checks the decay) and the population's tau is uniform (a per-neuron gain is folded into the
  weights, which rounds differently).
- ``sinabs.to_nir`` writes IF(r=1, v_threshold) and LIF(tau, r=1, v_leak=0, v_threshold) and
  nothing else: ``spike_fn`` (MultiSpike, Sinabs's default, emits ``floor(v/thr)`` spikes),
  ``reset_fn``, ``min_v_mem``, ``norm_input`` and ``tau_syn`` leave no trace in the graph (the
  graphs are identical, checked below), so no importer can refuse them: such models run as
  SingleSpike / no floor / ``norm_input`` / no synapse. Per-neuron ``tau_mem`` with a scalar
  threshold fails NIR's shape check as in Norse.
- Our export into ``sinabs.from_nir``: Sinabs reads IF as ``IAFSqueeze(MultiSpike, subtract,
  min_v_mem = -thr)`` (``r`` ignored), LIF as exponential decay with ``norm_input=False``, and no
  NIR ``Linear``: equal to our IF programs with ``gain = 1``, ``fire_ge``, same-step subtract and
  biases, while the membrane stays in ``[-thr, thr)`` after each reset (checked); our Euler LIF has
  no Sinabs counterpart.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")
pytestmark = [
    pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning"),
]

from spike.backends import run  # noqa: E402
from spike.compiler import compile as compile_model  # noqa: E402
from spike.compiler.ir.nodes import Conv2d, Dense, Input, Output, Pool2d, Population  # noqa: E402
from spike.compiler.io.nir_export import to_nir  # noqa: E402
from spike.compiler.frontends import nir_import  # noqa: E402
from spike.compiler.pipeline import FLOAT_PIPELINE, run_passes  # noqa: E402
from spike.compiler.frontends.nir_read import NIRImportError  # noqa: E402
from spike.compiler.ir.program import ProgramBuilder  # noqa: E402


def from_nir(graph, **options):
    """A NIR graph imported and through the float passes (what ``compile`` runs before the target's)."""
    return run_passes(nir_import.from_nir(graph, **options), FLOAT_PIPELINE)

BACKENDS = ("numba", "torch")
T, B = 8, 3
Q = 2.0 ** -4  # weight grain


def _dyadic(shape: tuple[int, ...], g: torch.Generator, lo: int = -6, hi: int = 14) -> torch.Tensor:
    return torch.randint(lo, hi, shape, generator=g).float() * Q


def dyadic_(model: nn.Module, seed: int, lo: int = -6, hi: int = 14) -> nn.Module:
    """Every weight a random multiple of 2^-4 in [lo, hi)*2^-4 (float sums stay exact), biases small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight"):
                p.copy_(_dyadic(p.shape, g, lo, hi))
            elif name.endswith("bias"):
                p.copy_(_dyadic(p.shape, g, max(lo, -2), 3))
    return model


def spikes_in(shape: tuple[int, ...], seed: int, p: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return (torch.rand(shape, generator=g) < p).float()


def run_ours(program, x: np.ndarray, probes: tuple[str, ...] = ()) -> dict[str, tuple]:
    """``{backend: (output, probes)}`` of a run on each backend."""
    out = {}
    for backend in BACKENDS:
        res = run(program, x, backend=backend, probes=list(probes))
        out[backend] = (next(iter(res.outputs.values())), res.probes)
    return out


# ---- Norse -----------------------------------------------------------------------------------
def _norse():
    pytest.importorskip("nirtorch")
    return pytest.importorskip("norse.torch")


def norse_graph(norse, model: nn.Module, sample: torch.Tensor, dt: float):
    """The graph Norse's cells compute (module doc): Norse's ``to_nir`` with ``dt=1`` (its time
    constants are then ``1/tau_inv`` seconds), IF ``r = 1/dt``, CubaLIF ``w_in = tau_syn/dt``."""
    graph = norse.to_nir(model, sample, dt=1.0)
    for node in graph.nodes.values():
        if isinstance(node, nir.IF):
            node.r = np.full(tuple(node.r.shape), 1.0 / dt)
        elif isinstance(node, nir.CubaLIF):
            node.w_in = np.asarray(node.tau_syn, dtype=np.float64) / dt
    return graph


def norse_cell(norse, kind: str, shape: tuple[int, ...], dt: float, g: torch.Generator, per_neuron: bool = True):
    """A Norse cell under the exactness rule: ``dt*tau_inv`` in {1/2, 1/4}, dyadic thresholds; every
    parameter of one shape (per neuron, or all scalars) so that Norse's export passes NIR's check."""
    full = shape if per_neuron else ()

    def rate(lo=1, hi=3):  # tau_inv with dt*tau_inv = 2^-k
        return 2.0 ** -torch.randint(lo, hi, full, generator=g).float() / dt

    thr = torch.randint(4, 9, full, generator=g).float() * Q
    zero = torch.zeros(full)
    if kind == "lifbox":
        return norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=rate(), v_leak=zero, v_th=thr), dt=dt)
    if kind == "lif":
        return norse.LIFCell(norse.LIFParameters(tau_syn_inv=rate(1, 2), tau_mem_inv=rate(), v_leak=zero, v_th=thr),
                             dt=dt)
    if kind == "libox":
        return norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=rate(), v_leak=zero), dt=dt)
    if kind == "iaf":
        return norse.IAFCell(norse.IAFParameters(v_th=thr), dt=dt)
    raise ValueError(kind)


def norse_model(norse, kind: str, dt: float, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    if kind == "conv":  # scalar parameters: shape-() NIR nodes
        model = norse.SequentialState(
            nn.Conv2d(1, 2, 3, padding=1), norse_cell(norse, "lifbox", (), dt, g, per_neuron=False),
            nn.Conv2d(2, 2, 3, stride=2), norse_cell(norse, "iaf", (), dt, g, per_neuron=False),
        )
        return dyadic_(model, seed), (1, 6, 6)
    second = "lifbox" if kind == "libox" else kind
    model = norse.SequentialState(
        nn.Linear(6, 5), norse_cell(norse, second, (5,), dt, g), nn.Linear(5, 3), norse_cell(norse, kind, (3,), dt, g),
    )
    return dyadic_(model, seed), (6,)


def norse_run(model: nn.Module, x: torch.Tensor, state=None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Norse's output and every cell's membrane after each step (``SequentialState`` stepped by hand)."""
    out, mems = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state = model(x[t], state)
            out.append(y.numpy().copy())
            mems.append([s.v.numpy().copy() for s in state if s is not None])
    return np.stack(out), [np.stack([m[i] for m in mems]) for i in range(len(mems[0]))]


def check_exact_arithmetic(model: nn.Module, x: torch.Tensor, out: np.ndarray, mems: list[np.ndarray],
                           state=lambda dtype: None) -> None:
    """The rule's premise: Norse's float32 run equals its float64 run (no value was rounded);
    ``state(dtype)`` is the initial state both runs had."""
    out64, mems64 = norse_run(copy.deepcopy(model).double(), x.double(), state(torch.float64))
    np.testing.assert_array_equal(out, out64, err_msg="float32 arithmetic rounded: outside the exactness rule")
    for m, m64 in zip(mems, mems64):
        np.testing.assert_array_equal(m, m64, err_msg="float32 arithmetic rounded: outside the exactness rule")


NORSE_KINDS = ("lifbox", "lif", "libox", "iaf", "conv")


@pytest.mark.parametrize("kind", NORSE_KINDS)
@pytest.mark.parametrize("dt,seed", [(1.0, 0), (1e-3, 1), (1e-3, 2)])
def test_norse_export_runs_equal_here(kind: str, dt: float, seed: int) -> None:
    norse = _norse()
    model, in_shape = norse_model(norse, kind, dt, seed)
    x = spikes_in((T, B, *in_shape), seed)
    expected, mems = norse_run(model, x)
    check_exact_arithmetic(model, x, expected, mems)

    graph = norse_graph(norse, model, torch.zeros(in_shape), dt)
    program = compile_model(graph, nir_options={"dt": dt, "reset": "zero", "reset_delay": False})
    pops = program.populations()
    assert len(pops) == len(mems)
    for name, cell in zip(pops, [m for m in model if hasattr(m, "p")]):
        pop = program.node(name)
        if hasattr(cell.p, "tau_mem_inv"):  # beta is 1 - Norse's float32 dt*tau_mem_inv, exactly
            beta = (1 - dt * cell.p.tau_mem_inv).numpy()
            np.testing.assert_array_equal(pop.beta, np.broadcast_to(beta, pop.beta.shape))
    if kind != "libox":
        assert expected.sum() > 0 and mems[0].min() < mems[0].max()
    for backend, (out, probes) in run_ours(program, x.numpy(), tuple(f"{p}.v" for p in pops)).items():
        np.testing.assert_array_equal(out.reshape(expected.shape), expected, err_msg=f"{kind} {backend} output")
        for p, mem in zip(pops, mems):
            np.testing.assert_array_equal(probes[f"{p}.v"].reshape(T, B, -1), mem.reshape(T, B, -1),
                                          err_msg=f"{kind} {backend} membrane of {p}")


def test_norse_v_leak_starts_elsewhere() -> None:
    """With ``v_leak != 0`` our import equals Norse started from ``v = 0``: Norse's own start at
    ``v_leak`` is the one difference (NIR has no initial state)."""
    norse = _norse()
    g = torch.Generator().manual_seed(5)
    leak = torch.randint(-4, 5, (4,), generator=g).float() * Q
    p = norse.LIFBoxParameters(tau_mem_inv=torch.full((4,), 0.5), v_leak=leak, v_th=torch.full((4,), 0.5))
    model = dyadic_(norse.SequentialState(nn.Linear(5, 4), norse.LIFBoxCell(p, dt=1.0)), 5)
    x = spikes_in((T, B, 5), 5)
    program = compile_model(norse_graph(norse, model, torch.zeros(5), 1.0),
                            nir_options={"dt": 1.0, "reset": "zero", "reset_delay": False})
    (pop,) = program.populations()
    def zero(dtype):
        return [None, norse.LIFBoxFeedForwardState(v=torch.zeros(B, 4, dtype=dtype))]

    from_zero, mems = norse_run(model, x, zero(torch.float32))
    check_exact_arithmetic(model, x, from_zero, mems, zero)
    for backend, (out, probes) in run_ours(program, x.numpy(), (f"{pop}.v",)).items():
        np.testing.assert_array_equal(out, from_zero, err_msg=backend)
        np.testing.assert_array_equal(probes[f"{pop}.v"], mems[0], err_msg=backend)
    _, norse_default = norse_run(model, x)
    assert not np.array_equal(norse_default[0][0], mems[0][0])  # Norse starts at v_leak, we at 0


def test_norse_export_writes_other_units() -> None:
    """The facts behind :func:`norse_graph` (Norse 1.1 with nir 1.0.8)."""
    norse = _norse()
    inv = torch.full((3,), 125.0)
    cells = norse.SequentialState(nn.Linear(2, 3), norse.LIFCell(norse.LIFParameters(
        tau_syn_inv=inv * 2, tau_mem_inv=inv, v_leak=torch.zeros(3), v_th=torch.ones(3))), nn.Linear(3, 3),
        norse.IAFCell(norse.IAFParameters(v_th=torch.ones(3))))
    graph = norse.to_nir(cells, torch.zeros(2), dt=1e-3)
    cuba, iaf = graph.nodes["1"], graph.nodes["3"]
    np.testing.assert_allclose(np.asarray(cuba.tau_mem), 1e-3 / 125.0, rtol=1e-6)  # dt*tau, not tau = 8 ms
    assert (np.asarray(cuba.w_in) == 1).all() and (np.asarray(iaf.r) == 1).all()
    bad = norse.SequentialState(nn.Linear(2, 3), norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=inv)))
    with pytest.raises(AssertionError, match="same shape"):  # tau (3,) but r = ones_like(v_leak) is ()
        norse.to_nir(bad, torch.zeros(2))


def _ours_for_norse(seed: int, conv: bool) -> ProgramBuilder:
    """A program inside what Norse's ``from_nir`` reads: zero reset in the same step, fire on ``>``,
    LIF gain ``1 - beta`` (r = 1), IF gain 1, CubaLIF r = 1."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.integers(-8, 12, shape) * Q).astype(np.float32)

    def pop(shape, model, beta, gain, alpha=None):
        n = int(np.prod(shape))
        thr = (rng.integers(4, 9, n) * Q).astype(np.float32)
        return Population(shape=shape, model=model, beta=np.full(n, beta, np.float32), threshold=thr,
                          alpha=None if alpha is None else np.full(n, alpha, np.float32), gain=gain, reset="zero",
                          reset_delay=False)

    b = ProgramBuilder()
    if conv:
        b.add("x", Input(shape=(1, 6, 6)))
        b.add("conv", Conv2d(shape=(2, 6, 6), in_shape=(1, 6, 6), weight=w(2, 1, 3, 3), bias=w(2) / 4, padding=(1, 1)),
              "x")
        b.add("p1", pop((2, 6, 6), "lif", 0.5, 0.5), "conv")
        b.add("pool", Pool2d(shape=(2, 3, 3), in_shape=(2, 6, 6), mode="sum", kernel=(2, 2), stride=(2, 2)), "p1")
        b.add("fc", Dense(shape=(4,), in_shape=(18,), weight=w(4, 18) / 2, bias=w(4) / 4), "pool")
    else:
        b.add("x", Input(shape=(6,)))
        b.add("fc1", Dense(shape=(5,), in_shape=(6,), weight=w(5, 6), bias=w(5) / 4), "x")
        b.add("p1", pop((5,), "lif", 0.75, 0.25), "fc1")
        b.add("fc2", Dense(shape=(4,), in_shape=(5,), weight=w(4, 5)), "p1")
        b.add("p2", pop((4,), "cuba_lif", 0.5, 0.5, alpha=0.5), "fc2")
        b.add("fc", Dense(shape=(4,), in_shape=(4,), weight=w(4, 4)), "p2")
    b.add("p3", pop((4,), "if", 1.0, 1.0), "fc")
    b.add("out", Output(shape=(4,)), "p3")
    return b


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
@pytest.mark.parametrize("dt,seed", [(1.0, 0), (2.0 ** -10, 1)])
def test_our_export_runs_equal_in_norse(conv: bool, dt: float, seed: int) -> None:
    norse = _norse()
    program = _ours_for_norse(seed, conv).build({"dt": dt})
    module = norse.from_nir(to_nir(program), dt=dt, ignore_warnings=True)
    in_shape = (1, 6, 6) if conv else (6,)
    x = spikes_in((T, B, *in_shape), seed)

    def norse_out(module, x):
        with torch.no_grad():
            if conv:  # Norse's Flatten(0, -1) would flatten the batch too: one unbatched sample at a time
                return np.stack([_executor_run(module, x[:, b]) for b in range(B)], axis=1)
            return _executor_run(module, x)

    expected = norse_out(module, x)
    assert expected.sum() > 0
    np.testing.assert_array_equal(expected, norse_out(copy.deepcopy(module).double(), x.double()),
                                  err_msg="float32 arithmetic rounded: outside the exactness rule")
    for backend, (ours, _) in run_ours(program, x.numpy()).items():
        np.testing.assert_array_equal(ours, expected, err_msg=backend)


def _executor_run(module: nn.Module, x: torch.Tensor) -> np.ndarray:
    state, out = None, []
    for t in range(x.shape[0]):
        y, state = module(x[t], state)
        out.append(y.numpy().copy())
    return np.stack(out)


# ---- Sinabs ----------------------------------------------------------------------------------
def _sinabs():
    pytest.importorskip("nirtorch")
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers  # noqa: F401

    return sinabs


def sinabs_model(sinabs, kind: str, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    """Sinabs layers with SingleSpike and no membrane floor (the options NIR can carry)."""
    from sinabs.activation import MembraneReset, MembraneSubtract, SingleSpike

    sl = sinabs.layers
    reset = MembraneReset() if kind == "iaf_zero" else MembraneSubtract()
    kw = dict(spike_fn=SingleSpike, reset_fn=reset, record_states=True)
    sq = dict(kw, batch_size=B)
    if kind in ("iaf", "iaf_zero"):
        model = nn.Sequential(nn.Linear(6, 5), sl.IAFSqueeze(spike_threshold=0.5, **sq), nn.Linear(5, 3),
                              sl.IAFSqueeze(spike_threshold=torch.full((3,), 0.25), **sq))
        return dyadic_(model, seed), (6,)
    if kind == "iaf_unsqueezed":  # (B, T, ...) layers: the Input keeps a time dimension of 1
        model = nn.Sequential(nn.Linear(6, 5), sl.IAF(spike_threshold=0.5, **kw), nn.Linear(5, 3),
                              sl.IAF(spike_threshold=0.25, **kw))
        return dyadic_(model, seed), (6,)
    if kind == "conv":
        model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), sl.IAFSqueeze(spike_threshold=0.5, **sq), sl.SumPool2d(2),
                              nn.Flatten(), nn.Linear(18, 3), sl.IAFSqueeze(spike_threshold=0.5, **sq))
        return dyadic_(model, seed), (1, 6, 6)
    if kind == "lif":  # exact integration; per-neuron tau and threshold of one shape, uniform tau
        per_neuron = dict(tau_mem=torch.full((3,), 4.0), spike_threshold=torch.full((3,), 0.125))
        model = nn.Sequential(nn.Linear(6, 5), sl.LIFSqueeze(tau_mem=5.0, spike_threshold=0.25, **sq), nn.Linear(5, 3),
                              sl.LIFSqueeze(**per_neuron, **sq))
        return dyadic_(model, seed), (6,)
    raise ValueError(kind)


def sinabs_forward(sinabs, model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sinabs's output and membranes, time-first ``[T, B, ...]``, from ``x [T, B, ...]``."""
    sinabs.reset_states(model)
    squeezed = any(type(m).__name__.endswith("Squeeze") for m in model)
    xb = x.transpose(0, 1)
    with torch.no_grad():
        y = model(xb.reshape(-1, *xb.shape[2:]) if squeezed else xb)
    y = y.reshape(B, T, *y.shape[1 if squeezed else 2:]).transpose(0, 1)
    mems = [m.recordings["v_mem"].transpose(0, 1).numpy() for m in model if hasattr(m, "recordings")]
    return y.numpy(), mems


SINABS_OPTIONS = {"dt": 1.0, "reset_delay": False, "fire_ge": True, "discretization": "exp"}


@pytest.mark.parametrize("kind", ["iaf", "iaf_zero", "iaf_unsqueezed", "conv", "lif"])
@pytest.mark.parametrize("seed", [0, 1])
def test_sinabs_export_runs_equal_here(kind: str, seed: int) -> None:
    sinabs = _sinabs()
    model, in_shape = sinabs_model(sinabs, kind, seed)
    x = spikes_in((T, B, *in_shape), seed)
    sample = x[0] if kind != "iaf_unsqueezed" else x[:1].transpose(0, 1)
    graph = sinabs.to_nir(model, sample)
    expected, mems = sinabs_forward(sinabs, model, x)

    reset = "zero" if kind == "iaf_zero" else "subtract"
    program = compile_model(graph, nir_options=dict(SINABS_OPTIONS, reset=reset))
    pops = program.populations()
    layers = [m for m in model if hasattr(m, "recordings")]
    for name, layer in zip(pops, layers):
        pop = program.node(name)
        assert pop.fire_ge and pop.reset == reset and not pop.reset_delay
        if hasattr(layer, "tau_mem") and layer.tau_mem is not None:  # the decay is Sinabs's, bit for bit
            alpha = layer.alpha_mem_calculated.detach().numpy()
            np.testing.assert_array_equal(pop.beta, np.broadcast_to(alpha, pop.beta.shape))
            assert pop.gain == np.float32(1) - np.float32(alpha.flat[0])
    assert expected.sum() > 0
    xs = x.numpy().reshape(T, B, *program.node(program.inputs[0]).shape)
    for backend, (out, probes) in run_ours(program, xs, tuple(f"{p}.v" for p in pops)).items():
        np.testing.assert_array_equal(out.reshape(expected.shape), expected, err_msg=f"{kind} {backend} output")
        for p, mem in zip(pops, mems):
            np.testing.assert_array_equal(probes[f"{p}.v"].reshape(T, B, -1), mem.reshape(T, B, -1),
                                          err_msg=f"{kind} {backend} membrane of {p}")


def test_sinabs_options_leave_no_trace_in_nir() -> None:
    """MultiSpike, min_v_mem, MembraneReset, norm_input and tau_syn export the very graph of the
    plain layer: NIR has no field for them, so an importer cannot refuse them (module doc)."""
    sinabs = _sinabs()
    from sinabs.activation import MembraneReset, MultiSpike, SingleSpike

    sl = sinabs.layers

    def graph(layer):
        model = dyadic_(nn.Sequential(nn.Linear(4, 3), layer), 0)
        return sinabs.to_nir(model, torch.zeros(B, 4))

    def same(a, b) -> bool:
        if a.nodes.keys() != b.nodes.keys():
            return False
        for k in a.nodes:
            na, nb = a.nodes[k], b.nodes[k]
            if type(na) is not type(nb):
                return False
            for f in ("tau", "r", "v_leak", "v_threshold", "v_reset", "weight", "bias"):
                if hasattr(na, f) and not np.array_equal(np.asarray(getattr(na, f)), np.asarray(getattr(nb, f))):
                    return False
        return True

    plain_if = graph(sl.IAFSqueeze(batch_size=B, spike_fn=SingleSpike))
    for variant in (dict(spike_fn=MultiSpike), dict(spike_fn=SingleSpike, min_v_mem=-0.5),
                    dict(spike_fn=SingleSpike, reset_fn=MembraneReset()), dict(spike_fn=SingleSpike, tau_syn=4.0)):
        assert same(graph(sl.IAFSqueeze(batch_size=B, **variant)), plain_if), variant
    plain_lif = graph(sl.LIFSqueeze(tau_mem=4.0, batch_size=B, spike_fn=SingleSpike))
    assert same(graph(sl.LIFSqueeze(tau_mem=4.0, batch_size=B, spike_fn=SingleSpike, norm_input=False)), plain_lif)
    assert not same(graph(sl.LIFSqueeze(tau_mem=5.0, batch_size=B, spike_fn=SingleSpike)), plain_lif)


@pytest.mark.parametrize("seed", [0, 1])
def test_our_export_runs_equal_in_sinabs(seed: int) -> None:
    sinabs = _sinabs()
    rng = np.random.default_rng(seed)

    def pop(n, thr):
        return Population(shape=(n,), model="if", beta=np.ones(n, np.float32), threshold=np.full(n, thr, np.float32),
                          gain=1.0, reset="subtract", reset_delay=False, fire_ge=True)

    def w(*shape):  # non-negative and small: the membrane stays in [-thr, thr) after each reset
        return (rng.integers(0, 3, shape) * Q).astype(np.float32)

    b = ProgramBuilder()
    b.add("x", Input(shape=(6,)))
    b.add("fc1", Dense(shape=(5,), in_shape=(6,), weight=w(5, 6), bias=w(5)), "x")
    b.add("p1", pop(5, 1.0), "fc1")
    b.add("fc2", Dense(shape=(3,), in_shape=(5,), weight=w(3, 5), bias=w(3)), "p1")
    b.add("p2", pop(3, 0.5), "fc2")
    b.add("out", Output(shape=(3,)), "p2")
    program = b.build({"dt": 1.0})
    module = sinabs.from_nir(to_nir(program), batch_size=B)
    x = spikes_in((T, B, 6), seed)
    with torch.no_grad():
        y = module(x.transpose(0, 1).reshape(B * T, 6))
    y = y[0] if isinstance(y, tuple) else y  # nirtorch's executor returns (output, state)
    expected = y.reshape(B, T, 3).transpose(0, 1).numpy()
    assert expected.sum() > 0
    for backend, (ours, probes) in run_ours(program, x.numpy(), ("p1.v", "p2.v")).items():
        for p in ("p1", "p2"):  # Sinabs's MultiSpike and its floor at -thr never act
            thr = program.node(p).threshold[0]
            assert probes[f"{p}.v"].min() >= -thr and probes[f"{p}.v"].max() < thr
        np.testing.assert_array_equal(ours, expected, err_msg=backend)


def test_exp_discretization_refuses_cubalif_and_names_the_node() -> None:
    n3 = np.ones(3)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([3])),
               "syn": nir.CubaLIF(tau_syn=2 * n3, tau_mem=4 * n3, r=n3, v_leak=0 * n3, v_threshold=n3),
               "output": nir.Output(output_type=np.array([3]))},
        edges=[("input", "syn"), ("syn", "output")], type_check=False)
    with pytest.raises(NIRImportError, match="'syn' \\(CubaLIF\\): discretization 'exp'"):
        from_nir(graph, dt=1.0, discretization="exp")
    with pytest.raises(NIRImportError, match="discretization 'rk4'"):
        from_nir(graph, dt=1.0, discretization="rk4")
    graph.nodes["syn"].metadata = {"discretization": "euler"}  # node metadata wins (our exporter writes it)
    assert from_nir(graph, dt=1.0, discretization="exp").node("syn").model == "cuba_lif"


def test_exp_discretization_of_lif_and_li() -> None:
    n3 = np.ones(3)
    lif = nir.LIF(tau=4 * n3, r=2 * n3, v_leak=0.5 * n3, v_threshold=n3)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([3])), "fc": nir.Affine(weight=np.eye(3), bias=np.zeros(3)),
               "lif": lif, "li": nir.LI(tau=2 * n3, r=n3, v_leak=0 * n3),
               "output": nir.Output(output_type=np.array([3]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "li"), ("li", "output")], type_check=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = from_nir(graph, dt=1.0, discretization="exp")
    beta = np.float32(np.exp(-0.25))
    pop = program.node("lif")
    assert (pop.beta == beta).all() and pop.gain == np.float32(2) * (np.float32(1) - beta)
    # the drive (1 - beta)*v_leak, divided by the gain, becomes the Affine's bias
    np.testing.assert_allclose(program.node("fc").bias, 0.25, rtol=1e-6)
    assert (program.node("li").beta == np.float32(np.exp(-0.5))).all()
