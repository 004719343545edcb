"""NIR import/export: snnTorch exports run spike for spike like snnTorch, our exports re-import to
an equal Program, every supported NIR node lowers and runs with the documented discretisation,
and errors name the node."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")
pytestmark = pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated:DeprecationWarning")

from spike.backends import run  # noqa: E402
from spike.compiler.ir.nodes import (  # noqa: E402
    Conv2d, Dense, HostOp, Identity, Input, Output, Pool2d, Population, Sparse,
)
from spike.compiler.io.nir_export import NIRExportError, save_nir, to_nir  # noqa: E402
from spike.compiler.frontends import nir_import  # noqa: E402
from spike.compiler.frontends.nir_read import NIRImportError  # noqa: E402
from spike.compiler.pipeline import FLOAT_PIPELINE, run_passes  # noqa: E402
from spike.compiler.ir.program import ProgramBuilder  # noqa: E402
from spike.compiler.io.hdf5 import assert_programs_equal  # noqa: E402


def from_nir(graph, **options):
    """A NIR graph imported and through the float passes (what ``compile`` runs before the target's)."""
    return run_passes(nir_import.from_nir(graph, **options), FLOAT_PIPELINE)

DT = 1e-4


def dyadic(rng, shape, k=64):
    """Multiples of 2^-8: float sums are exact in any order."""
    return (rng.integers(-k, k + 1, size=shape) / 256.0).astype(np.float32)


def spikes(rng, shape, p=0.4):
    return (rng.random(shape) < p).astype(np.float32)


def dyadic_(model: nn.Module, seed: int, k: int = 64) -> nn.Module:
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() >= 1 and p.shape != ():
                p.copy_(torch.from_numpy(dyadic(rng, tuple(p.shape), k)))
    return model


# ---- snnTorch exports ------------------------------------------------------------------------
def _snn():
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")  # snntorch.export_nir needs it
    from snntorch.export_nir import export_to_nir

    return snn, export_to_nir


def leaky(snn, shape, beta, thr=0.5, **kw):
    """snnTorch Leaky with per-neuron parameters (scalar ones export as shape-() LIF nodes that
    fail NIR's type check)."""
    b = torch.as_tensor(np.broadcast_to(np.asarray(beta, np.float32), shape).copy())
    return snn.Leaky(beta=b, threshold=torch.full(shape, thr), init_hidden=True, **kw)


def snn_steps(net: nn.Module, x: torch.Tensor, probes: tuple[nn.Module, ...] = ()) -> tuple[np.ndarray, list]:
    """Step an snnTorch net (init_hidden) over x[T, B, ...]: output spikes and probed spikes."""
    for m in net.modules():
        if hasattr(m, "reset_mem") and getattr(m, "init_hidden", False):
            m.reset_mem()
    outs, probed = [], [[] for _ in probes]

    def hook(i):
        def record(_m, _inp, y):
            probed[i].append((y[0] if isinstance(y, tuple) else y).numpy().copy())
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(probes)]
    try:
        with torch.no_grad():
            for t in range(x.shape[0]):
                y = net(x[t])
                outs.append((y[0] if isinstance(y, tuple) else y).numpy().copy())
    finally:
        for h in handles:
            h.remove()
    return np.stack(outs), [np.stack(p) for p in probed]


def _check_snn_params(program, net_leakies):
    pops = [program.node(n) for n in program.populations()]
    for pop in pops:
        assert pop.gain == 1.0 and pop.reset == "subtract" and pop.reset_delay and not pop.fire_ge
    return pops


def test_snntorch_mlp_spikes_match():
    snn, export_to_nir = _snn()
    torch.manual_seed(0)
    l1 = leaky(snn, (6,), [0.9, 0.875, 0.95, 0.75, 0.5, 0.99])
    l2 = leaky(snn, (4,), 0.8, thr=0.25, output=True)
    net = dyadic_(nn.Sequential(nn.Linear(8, 6), l1, nn.Linear(6, 4), l2), seed=1, k=96)
    graph = export_to_nir(net, torch.zeros(1, 8), ignore_dims=[0])
    program = from_nir(graph, reset="subtract")
    pops = _check_snn_params(program, (l1, l2))
    np.testing.assert_array_equal(pops[0].beta, l1.beta.numpy())  # bit for bit, no 1 - dt/tau drift
    np.testing.assert_array_equal(pops[1].beta, l2.beta.numpy())

    x = torch.from_numpy(spikes(np.random.default_rng(2), (16, 3, 8)))
    expected, (hidden,) = snn_steps(net, x, probes=(l1,))
    res = run(program, x.numpy(), backend="numba", probes=[program.populations()[0]])
    assert expected.sum() > 0 and 0 < hidden.sum() < hidden.size
    np.testing.assert_array_equal(res.outputs["output"], expected)
    np.testing.assert_array_equal(res.probes[program.populations()[0]], hidden)


def test_snntorch_conv_spikes_match():
    snn, export_to_nir = _snn()
    torch.manual_seed(0)
    net = dyadic_(nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), leaky(snn, (2, 6, 6), 0.875),
        nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(18, 4), leaky(snn, (4,), 0.9, thr=0.25, output=True),
    ), seed=3, k=128)
    graph = export_to_nir(net, torch.zeros(1, 1, 6, 6), ignore_dims=[0])
    program = from_nir(graph, reset="subtract")
    _check_snn_params(program, ())
    kinds = [node.KIND for _, node in program.nodes()]
    assert kinds.count("conv2d") == 1 and kinds.count("pool2d") == 1 and kinds.count("dense") == 1

    x = torch.from_numpy(spikes(np.random.default_rng(4), (12, 2, 1, 6, 6), p=0.5))
    expected, _ = snn_steps(net, x)
    res = run(program, x.numpy(), backend="numba")
    assert expected.sum() > 0
    np.testing.assert_array_equal(res.outputs["output"], expected)


class _RNet(nn.Module):
    def __init__(self, snn):
        super().__init__()
        self.l1 = nn.Linear(6, 5)
        self.r = snn.RLeaky(beta=0.5, threshold=0.5, all_to_all=True, linear_features=5, init_hidden=True)
        self.l2 = nn.Linear(5, 3)
        self.o = leaky(snn, (3,), 0.5, thr=0.25, output=True)

    def forward(self, x):
        return self.o(self.l2(self.r(self.l1(x))))


@pytest.mark.parametrize("form", ["flat", "nested"])
def test_snntorch_rleaky_spikes_match(form):
    snn, export_to_nir = _snn()
    from snntorch.export_nir import _extract_snntorch_module

    torch.manual_seed(0)
    net = dyadic_(_RNet(snn), seed=5, k=96)
    if form == "flat":  # what export_to_nir writes (nirtorch flattens the RLeaky subgraph)
        graph = export_to_nir(net, torch.zeros(1, 6), ignore_dims=[0])
    else:  # snnTorch's RLeaky subgraph, nested as a NIRGraph node
        ex = _extract_snntorch_module
        graph = nir.NIRGraph(
            nodes={"input": nir.Input(input_type=np.array([6])), "l1": ex(net.l1), "r": ex(net.r),
                   "l2": ex(net.l2), "o": ex(net.o), "output": nir.Output(output_type=np.array([3]))},
            edges=[("input", "l1"), ("l1", "r"), ("r", "l2"), ("l2", "o"), ("o", "output")],
        )
    program = from_nir(graph, reset="subtract")
    _check_snn_params(program, ())
    rec = [n for n, node in program.nodes() if isinstance(node, Dense) and node.delay == 1]
    assert len(rec) == 1 and rec[0] in program.consumers("r_lif") and "r_lif" in program.consumers(rec[0])

    x = torch.from_numpy(spikes(np.random.default_rng(6), (14, 3, 6), p=0.5))
    expected, (hidden,) = snn_steps(net, x, probes=(net.r,))
    res = run(program, x.numpy(), backend="numba", probes=["r_lif"])
    assert 0 < hidden.sum() < hidden.size
    np.testing.assert_array_equal(res.probes["r_lif"], hidden)
    np.testing.assert_array_equal(res.outputs["output"], expected)


def test_snntorch_synaptic_spikes_match():
    snn, export_to_nir = _snn()
    n = 4
    syn = snn.Synaptic(alpha=torch.full((n,), 0.75), beta=torch.full((n,), 0.875), threshold=torch.full((n,), 0.5),
                       init_hidden=True, output=True)
    net = dyadic_(nn.Sequential(nn.Linear(5, n), syn), seed=8)
    program = from_nir(export_to_nir(net, torch.zeros(1, 5), ignore_dims=[0]), reset="subtract")
    (pop,) = _check_snn_params(program, ())
    assert pop.model == "cuba_lif" and (pop.alpha == np.float32(0.75)).all() and (pop.beta == np.float32(0.875)).all()
    x = torch.from_numpy(spikes(np.random.default_rng(9), (15, 2, 5), p=0.5))
    expected, _ = snn_steps(net, x)
    assert expected.sum() > 0
    np.testing.assert_array_equal(run(program, x.numpy(), backend="numba").outputs["output"], expected)


def test_snntorch_reset_option_matters():
    """NIR drops snnTorch's reset mode; without reset="subtract" the import resets to zero."""
    snn, export_to_nir = _snn()
    net = dyadic_(nn.Sequential(nn.Linear(4, 3), leaky(snn, (3,), 0.9, output=True)), seed=7)
    graph = export_to_nir(net, torch.zeros(1, 4), ignore_dims=[0])
    assert program_reset(from_nir(graph)) == "zero"
    assert program_reset(from_nir(graph, reset="subtract")) == "subtract"


def program_reset(program):
    return program.node(program.populations()[0]).reset


# ---- our export re-imports to an equal program -----------------------------------------------
def _kitchen_sink():
    """A program with every exportable node kind, delays, a recurrence, and odd parameters."""
    rng = np.random.default_rng(10)
    b = ProgramBuilder()

    def pop(shape, model="lif", **kw):
        n = int(np.prod(shape))
        beta = np.ones(n, np.float32) if model == "if" else rng.uniform(0.05, 0.99, n).astype(np.float32)
        alpha = rng.uniform(0.2, 0.9, n).astype(np.float32) if model == "cuba_lif" else None
        thr = rng.uniform(0.2, 0.8, n).astype(np.float32)
        return Population(shape=shape, model=model, beta=beta, threshold=thr, alpha=alpha, **kw)

    b.add("x", Input(shape=(2, 6, 6)))
    b.add("conv", Conv2d(shape=(3, 3, 3), in_shape=(2, 6, 6), weight=dyadic(rng, (3, 2, 3, 3)), bias=None,
                         stride=(2, 2), padding=(1, 1)), "x")
    b.add("p1", pop((3, 3, 3), reset="zero", reset_delay=False, gain=1 / 3), "conv")
    b.add("pool", Pool2d(shape=(3, 1, 1), in_shape=(3, 3, 3), mode="sum", kernel=(2, 2), stride=(2, 2)), "p1")
    b.add("avg", Pool2d(shape=(3, 2, 2), in_shape=(3, 3, 3), mode="avg", kernel=(2, 2), stride=(1, 1)), "p1")
    b.add("fc", Dense(shape=(5,), in_shape=(12,), weight=dyadic(rng, (5, 12)), bias=dyadic(rng, (5,)), delay=2), "avg")
    b.add("p2", pop((5,), fire_ge=True, reset="none"), "fc")
    b.add("rec", Dense(shape=(5,), in_shape=(5,), weight=dyadic(rng, (5, 5)), delay=1), "p2")
    b.connect("rec", "p2")
    b.add("skip", Dense(shape=(5,), in_shape=(3,), weight=dyadic(rng, (5, 3))), "pool")
    b.connect("skip", "p2")
    b.add("id", Identity(shape=(5,), in_shape=(5,), scale=0.75, delay=3), "p2")
    b.add("diag", Sparse(shape=(5,), in_shape=(5,), indptr=np.arange(6), indices=np.arange(5),
                         data=dyadic(rng, (5,))), "p2")
    b.add("sum", HostOp(shape=(5,), op="add"), ["id", "diag"])
    b.add("sum_id", Identity(shape=(5,), in_shape=(5,)), "sum")
    b.add("p3", pop((5,), model="cuba_lif", gain=0.5), "sum_id")
    b.add("sp", Sparse(shape=(4,), in_shape=(5,), indptr=np.array([0, 1, 1, 3, 3, 4]), indices=np.array([2, 0, 3, 1]),
                       data=dyadic(rng, (4,)), bias=dyadic(rng, (4,))), "p3")
    b.add("p4", pop((4,), model="if", gain=0.1), "sp")
    b.add("ro", Dense(shape=(2,), in_shape=(4,), weight=dyadic(rng, (2, 4))), "p4")
    b.add("li", Population(shape=(2,), model="li", beta=np.float32([0.5, 0.25]), gain=2.0), "ro")
    b.add("ro2", Dense(shape=(2,), in_shape=(4,), weight=dyadic(rng, (2, 4))), "p4")
    b.add("int", Population(shape=(2,), model="li", beta=np.ones(2, np.float32)), "ro2")
    b.add("ro3", Dense(shape=(2,), in_shape=(4,), weight=dyadic(rng, (2, 4))), "p4")
    b.add("leakless", Population(shape=(2,), model="lif", beta=np.ones(2, np.float32)), "ro3")
    b.add("out", Output(shape=(2,)), "li")
    b.add("out_int", Output(shape=(2,)), "int")
    b.add("out_s", Output(shape=(2,)), "leakless")
    return run_passes(b.build({"target": "generic", "note": "kitchen sink", "seq": [1, 2]}), FLOAT_PIPELINE)


def test_export_reimports_equal_program(tmp_path):
    program = _kitchen_sink()
    graph = to_nir(program)
    types = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Input", "Output", "Conv2d", "LIF", "SumPool2d", "AvgPool2d", "Flatten", "Affine", "Linear",
            "Delay", "Scale", "CubaLIF", "IF", "LI", "I"} <= types
    assert graph.nodes["fc.delay"].delay.flat[0] == pytest.approx(2 * DT)  # delay 2 -> Delay node
    assert "rec.delay" not in graph.nodes  # the cycle's own step is NIR's implicit one
    assert graph.nodes["p2"].metadata["fire_ge"] is True
    assert_programs_equal(from_nir(graph), program)

    path = tmp_path / "sink.nir"
    save_nir(graph, path)
    assert os.listdir(tmp_path) == ["sink.nir"]
    again = from_nir(str(path))
    assert_programs_equal(again, program)
    x = spikes(np.random.default_rng(11), (10, 2, 2, 6, 6))
    a, b = run(program, x, backend="numba"), run(again, x, backend="numba")
    for k in program.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k])


def test_export_other_dt_and_metadata_dt():
    program = _kitchen_sink()
    graph = to_nir(program, dt=1e-3)
    assert graph.nodes["p1"].metadata["dt"] == 1e-3
    assert_programs_equal(from_nir(graph), program)  # without a dt, the metadata's
    with pytest.raises(NIRImportError, match="'p1'.*shorter than the time step dt = 0.5"):
        from_nir(graph, dt=0.5)  # a given dt is honoured over the metadata (NIR is continuous-time)


def test_export_torch_model_compiles_first():
    snn = pytest.importorskip("snntorch")
    from spike.compiler import compile as compile_model

    net = dyadic_(nn.Sequential(
        nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.875, init_hidden=True), nn.Flatten(),
        nn.Linear(8, 3), snn.Leaky(beta=0.9, init_hidden=True),
    ), seed=12)
    x = torch.from_numpy(spikes(np.random.default_rng(13), (2, 1, 4, 4)))
    graph = to_nir(net, x)
    program = compile_model(net, x)
    assert_programs_equal(from_nir(graph), program)


def test_save_nir_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "g.nir"
    save_nir(to_nir(_kitchen_sink()), path)
    before = path.read_bytes()
    with pytest.raises(Exception):
        save_nir(object(), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["g.nir"]


# ---- every node type, with the documented discretisation ---------------------------------
def graph_of(nodes: dict, edges: list, **kw):
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False, **kw)


def chain(*pairs, shape_in):
    nodes = {"input": nir.Input(input_type=np.array(shape_in))}
    names = ["input"]
    for name, node in pairs:
        nodes[name] = node
        names.append(name)
    nodes["output"] = nir.Output(output_type=np.array([1]))  # shape taken from the source
    names.append("output")
    return graph_of(nodes, list(zip(names, names[1:])))


def integrate(n):  # nir.I with unit gain: the output is the running sum of its input
    return nir.I(r=np.full(n, 1 / DT))


def out(program, x):
    return run(program, x, backend="numba").outputs["output"]


def test_affine_linear_scale_delay_integrator():
    rng = np.random.default_rng(20)
    w, b, s = dyadic(rng, (3, 4)), dyadic(rng, (3,)), dyadic(rng, (3,))
    x = spikes(rng, (9, 2, 4))
    g = chain(("aff", nir.Affine(weight=w, bias=b)), ("delay", nir.Delay(delay=np.full(3, 2 * DT))),
              ("scale", nir.Scale(scale=s)), ("int", integrate(3)), shape_in=[4])
    p = from_nir(g)
    assert p.node("aff").delay == 2 and isinstance(p.node("scale"), Sparse)
    cur = np.einsum("tbi,oi->tbo", x, w) + b
    delayed = np.concatenate([np.zeros((2, 2, 3)), cur[:-2]])  # the bias travels with the delay
    np.testing.assert_array_equal(out(p, x), np.cumsum(delayed * s, axis=0))

    g = chain(("lin", nir.Linear(weight=w)), ("scale", nir.Scale(scale=np.full(3, 0.5))),
              ("int", integrate(3)), shape_in=[4])
    p = from_nir(g)
    assert isinstance(p.node("scale"), Identity) and p.node("scale").scale == 0.5
    np.testing.assert_array_equal(out(p, x), np.cumsum(0.5 * np.einsum("tbi,oi->tbo", x, w), axis=0))


def test_delay_must_be_whole_steps_and_uniform():
    g = chain(("d", nir.Delay(delay=np.full(3, 1.5 * DT))), ("int", integrate(3)), shape_in=[3])
    with pytest.raises(NIRImportError, match="'d'.*whole"):
        from_nir(g)
    g = chain(("d", nir.Delay(delay=np.array([DT, 2 * DT, DT]))), ("int", integrate(3)), shape_in=[3])
    with pytest.raises(NIRImportError, match="'d'.*differ"):
        from_nir(g)
    g = chain(("d", nir.Delay(delay=np.full(3, 2 * DT))), ("int", integrate(3)), shape_in=[3])
    p = from_nir(g)  # a delay straight into neurons becomes an Identity projection
    assert isinstance(p.node("d"), Identity) and p.node("d").delay == 2


def lif_ref(cur, beta, thr, reset="zero", alpha=None, gain=1.0, const=0.0, spiking=True):
    """Design §3 with reset_delay=True, float32, order as the backends compute it."""
    f = np.float32
    v = np.zeros(cur.shape[1:], f)
    s = np.zeros_like(v)
    i = np.zeros_like(v)
    outs = []
    for t in range(cur.shape[0]):
        x = cur[t].astype(f)
        if alpha is not None:
            i = f(alpha) * i + x
            x = i
        x = x + f(const)
        if reset == "subtract":
            v = (f(beta) * v + f(gain) * x) - f(thr) * s
        elif reset == "zero":
            v = f(beta) * ((f(1) - s) * v) + f(gain) * x
        else:
            v = f(beta) * v + f(gain) * x
        if not spiking:
            outs.append(v.copy())
            continue
        s = (v > f(thr)).astype(f)
        outs.append(s)
    return np.stack(outs)


def test_neuron_nodes_discretisation():
    rng = np.random.default_rng(21)
    w = dyadic(rng, (3, 4), k=128)
    x = spikes(rng, (20, 2, 4), p=0.6)
    cur = np.einsum("tbi,oi->tbo", x, w).astype(np.float32)
    n3 = np.ones(3)
    cases = {
        # tau = 8 dt -> beta 0.875; r = tau/dt -> gain 1
        "lif": (nir.LIF(tau=8 * DT * n3, r=8 * n3, v_leak=0 * n3, v_threshold=0.25 * n3),
                dict(beta=0.875, thr=0.25)),
        # v_leak: constant drive (1-beta)*v_leak, here 0.125 * 0.5
        "lif_leak": (nir.LIF(tau=8 * DT * n3, r=8 * n3, v_leak=0.5 * n3, v_threshold=0.25 * n3),
                     dict(beta=0.875, thr=0.25, const=0.0625)),
        # IF: gain r*dt
        "if": (nir.IF(r=0.5 / DT * n3, v_threshold=0.5 * n3), dict(beta=1.0, thr=0.5, gain=0.5)),
        "li": (nir.LI(tau=4 * DT * n3, r=2 * n3, v_leak=0 * n3), dict(beta=0.75, thr=0, gain=0.5, spiking=False)),
        "cuba": (nir.CubaLIF(tau_syn=2 * DT * n3, tau_mem=4 * DT * n3, r=4 * n3, v_leak=0 * n3,
                             v_threshold=0.5 * n3, w_in=2 * n3), dict(beta=0.75, alpha=0.5, thr=0.5)),
        "thr": (nir.Threshold(threshold=0.125 * n3), dict(beta=0.0, thr=0.125, reset="none")),
    }
    for name, (node, ref) in cases.items():
        p = from_nir(chain(("lin", nir.Linear(weight=w)), (name, node), shape_in=[4]))
        pop = p.node(name)
        assert pop.beta[0] == np.float32(ref["beta"]), name
        np.testing.assert_array_equal(out(p, x), lif_ref(cur, **ref), err_msg=name)


def test_reset_and_metadata_options():
    n3 = np.ones(3)
    lif = nir.LIF(tau=8 * DT * n3, r=8 * n3, v_leak=0 * n3, v_threshold=n3)
    g = chain(("lif", lif), shape_in=[3])
    pop = from_nir(g).node("lif")
    assert (pop.reset, pop.reset_delay, pop.fire_ge) == ("zero", True, False)
    pop = from_nir(g, reset="subtract", reset_delay=False).node("lif")
    assert (pop.reset, pop.reset_delay) == ("subtract", False)
    lif.metadata = {"reset": "none", "fire_ge": True, "dt": 2e-4}
    pop = from_nir(g, reset="subtract").node("lif")
    assert (pop.reset, pop.fire_ge, pop.beta[0], pop.gain) == ("none", True, np.float32(0.75), 2.0)
    p = from_nir(chain(("s", nir.Scale(scale=n3)), shape_in=[3]))
    assert p.node("input").signal == "spike"
    assert from_nir(chain(("s", nir.Scale(scale=n3)), shape_in=[3]), input_signal="real").node("input").signal == "real"


def test_conv_pool_flatten_nodes():
    rng = np.random.default_rng(22)
    w2, b2 = dyadic(rng, (2, 1, 3, 3)), dyadic(rng, (2,))
    x = spikes(rng, (5, 2, 1, 6, 6))
    conv = nir.Conv2d(input_shape=None, weight=w2, stride=1, padding="same", dilation=1, groups=1, bias=b2)
    g = chain(("conv", conv), ("sum", nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                                     padding=np.array([0, 0]))),
              ("avg", nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([1, 1]), padding=np.array([1, 1]))),
              ("flat", nir.Flatten(input_type=None, start_dim=0, end_dim=-1)),
              ("int", integrate(18)), shape_in=[1, 6, 6])
    p = from_nir(g)
    assert p.node("conv").padding == (1, 1) and "flat" not in p.graph
    xt = torch.from_numpy(x.reshape(10, 1, 6, 6))
    y = torch.nn.functional.conv2d(xt, torch.from_numpy(w2), torch.from_numpy(b2), padding=1)
    y = torch.nn.functional.avg_pool2d(torch.nn.functional.avg_pool2d(y, 2) * 4, 3, 1, 1)
    expected = np.cumsum(y.numpy().reshape(5, 2, 18), axis=0)
    np.testing.assert_allclose(out(p, x), expected, rtol=0, atol=1e-6)

    w1, b1 = dyadic(rng, (2, 3, 3)), dyadic(rng, (2,))
    x1 = spikes(rng, (4, 2, 3, 7))
    conv1 = nir.Conv1d(input_shape=7, weight=w1, stride=2, padding=1, dilation=1, groups=1, bias=b1)
    p = from_nir(chain(("c1", conv1), ("int", integrate(8)), shape_in=[3, 7]))
    assert isinstance(p.node("c1"), Conv2d) and p.node("c1").shape == (2, 1, 4)
    y = torch.nn.functional.conv1d(torch.from_numpy(x1.reshape(8, 3, 7)), torch.from_numpy(w1), torch.from_numpy(b1),
                                   stride=2, padding=1)
    np.testing.assert_array_equal(out(p, x1).reshape(4, 2, 8), np.cumsum(y.numpy().reshape(4, 2, 8), axis=0))


def test_sums_subgraph_ports_and_recurrence():
    """Two edges into one node sum; edges may name a subgraph's port; a cycle gets delay 1."""
    rng = np.random.default_rng(23)
    wa, wb, wr = dyadic(rng, (3, 4)), dyadic(rng, (3, 4)), dyadic(rng, (3, 3))
    n3 = np.ones(3)
    inner = graph_of(
        {"in": nir.Input(input_type=np.array([3])), "lif": nir.IF(r=n3 / DT, v_threshold=0.25 * n3),
         "w": nir.Linear(weight=wr), "out": nir.Output(output_type=np.array([3]))},
        [("in", "lif"), ("lif", "w"), ("w", "lif"), ("lif", "out")],
    )
    g = graph_of(
        {"input": nir.Input(input_type=np.array([4])), "a": nir.Linear(weight=wa), "b": nir.Linear(weight=wb),
         "sub": inner, "output": nir.Output(output_type=np.array([3]))},
        [("input", "a"), ("input", "b"), ("a", "sub.in"), ("b", "sub"), ("sub.out", "output")],
    )
    p = from_nir(g)
    assert p.node("sub_w").delay == 1
    x = spikes(rng, (12, 2, 4))
    v = np.zeros((2, 3), np.float32)
    s = np.zeros((2, 3), np.float32)
    ref = []
    for t in range(12):
        cur = (s @ wr.T) + (x[t] @ wa.T) + (x[t] @ wb.T)
        v = ((1 - s) * v) + cur
        s = (v > 0.25).astype(np.float32)
        ref.append(s)
    np.testing.assert_array_equal(out(p, x), np.stack(ref))


# ---- errors name the node --------------------------------------------------------------------
def test_import_errors_name_the_node(tmp_path):
    n3 = np.ones(3)
    cases = [
        (chain(("cli", nir.CubaLI(tau_syn=n3, tau_mem=n3, r=n3, v_leak=0 * n3)), shape_in=[3]), "'cli'.*not supported"),
        (chain(("fc", nir.Linear(weight=np.ones((2, 5), np.float32))), shape_in=[3]), "'fc'.*expects 5 inputs"),
        (chain(("c", nir.Conv2d(input_shape=None, weight=np.ones((1, 1, 3, 3)), stride=1, padding=0, dilation=2,
                                groups=1, bias=np.zeros(1))), shape_in=[1, 8, 8]), "'c'.*dilation"),
        (chain(("c", nir.Conv2d(input_shape=None, weight=np.ones((1, 2, 3, 3)), stride=1, padding=0, dilation=1,
                                groups=1, bias=np.zeros(1))), shape_in=[1, 8, 8]), "'c'.*groups"),
        (chain(("lif", nir.LIF(tau=n3 * DT * 4, r=n3 * 4, v_leak=0 * n3, v_threshold=n3, v_reset=n3)), shape_in=[3]),
         "'lif'.*v_reset"),
        (chain(("lif", nir.LIF(tau=n3 * DT / 2, r=n3, v_leak=0 * n3, v_threshold=n3)), shape_in=[3]), "'lif'.*shorter"),
        (chain(("lif", nir.LIF(tau=np.ones(4) * DT * 4, r=np.ones(4), v_leak=np.zeros(4), v_threshold=np.ones(4))),
               shape_in=[3]), "'lif'.*4 values.*3 neurons"),
        (chain(("pool", nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))),
               shape_in=[4]), "'pool'.*\\(C, H, W\\)"),
        (graph_of({"input": nir.Input(input_type=np.array([3])), "fc": nir.Linear(weight=np.eye(3)),
                   "lif": nir.LIF(tau=n3 * DT * 4, r=n3, v_leak=n3, v_threshold=n3),
                   "o1": nir.Output(output_type=np.array([3])), "o2": nir.Output(output_type=np.array([3]))},
                  [("input", "fc"), ("fc", "lif"), ("fc", "o1"), ("lif", "o2")]), "'lif'.*v_leak"),
        (chain(("s", nir.Scale(scale=np.ones(4))), shape_in=[3]), "'s'.*4 values"),
    ]
    for graph, pattern in cases:
        with pytest.raises(NIRImportError, match=pattern):
            from_nir(graph)
    with pytest.raises(NIRImportError, match="missing.nir"):
        from_nir(str(tmp_path / "missing.nir"))
    bad = tmp_path / "bad.nir"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(NIRImportError, match="bad.nir"):
        from_nir(str(bad))


def test_export_errors_name_the_node():
    b = ProgramBuilder()
    b.add("x", Input(shape=(1, 4, 4)))
    b.add("mp", Pool2d(shape=(1, 2, 2), in_shape=(1, 4, 4), mode="max"), "x")
    b.add("o", Output(shape=(1, 2, 2)), "mp")
    with pytest.raises(NIRExportError, match="'mp'.*max pooling"):
        to_nir(b.build())
    b = ProgramBuilder()
    b.add("x", Input(shape=(3,)))
    b.add("ln", HostOp(shape=(3,), op="layernorm", weight=np.ones(3, np.float32), bias=np.zeros(3, np.float32)), "x")
    b.add("o", Output(shape=(3,)), "ln")
    with pytest.raises(NIRExportError, match="'ln'.*layernorm"):
        to_nir(b.build())
