"""Frontend extras: ``compile`` takes a ``nir.NIRGraph`` object like a ``.nir`` path, and max
pooling of real-valued currents (snnTorch's Conv -> MaxPool -> Leaky) runs exactly as a host op."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from spike.backends import run
from spike.compiler import compile as compile_model
from spike.compiler.io.hdf5 import assert_programs_equal

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


# ---- max pooling of currents (snnTorch's Conv -> MaxPool -> Leaky) ---------------------------
import snntorch as snn  # noqa: E402
from torch import nn  # noqa: E402

from spike.compiler.frontends.torch_fx import LoweringError  # noqa: E402
from spike.compiler.ir.nodes import HostOp  # noqa: E402
from spike.layers import TimeDistributed as TD  # noqa: E402
from spike.neurons import LIF  # noqa: E402

from helpers.models import ConvMaxPoolLIF, dyadic_, run_snntorch, spikes_in  # noqa: E402

BACKENDS = ("numba", "torch")


def _dyadic_(model: nn.Module, seed: int, scale: int = 256, spread: int = 128) -> nn.Module:
    return dyadic_(model, seed, scale=scale, spread=spread)


def _maxpools(program) -> dict[str, HostOp]:
    return {n: node for n, node in program.nodes() if isinstance(node, HostOp) and node.op == "maxpool2d"}


def _check(program, x: torch.Tensor, expected: torch.Tensor, kernel: int) -> None:
    """Every backend equals the model; each maxpool host op counts kh*kw - 1 comparisons per output
    and step run, alike on every backend."""
    (name, node), = _maxpools(program).items()
    results = {}
    for backend in BACKENDS:
        res = run(program, x, backend=backend)
        np.testing.assert_array_equal(res.output, expected.numpy(), err_msg=backend)
        steps = x.shape[0] + program.total_latency
        want = np.full(x.shape[1], steps * node.size * (kernel * kernel - 1))
        np.testing.assert_array_equal(res.ops.per_node[name]["host_flops"], want, err_msg=backend)
        results[backend] = res
    for key in ("syn_ops", "macs", "dense_ops", "neuron_updates", "spikes", "host_flops"):
        np.testing.assert_array_equal(results["numba"].ops.per_sample_total()[key],
                                      results["torch"].ops.per_sample_total()[key], err_msg=key)


@pytest.mark.parametrize("target", ["generic", "loihi2"])
@pytest.mark.parametrize("padding,kernel,stride", [(0, 2, None), (1, 3, 2)])
def test_maxpool_of_currents_equals_the_model(target: str, padding: int, kernel: int, stride: int | None) -> None:
    model = _dyadic_(ConvMaxPoolLIF(padding, kernel, stride), 0).eval()
    x = spikes_in((10, 3, 2, 8, 8), 1)
    with torch.no_grad():
        expected = model(x)
    assert expected.sum() > 0
    program = compile_model(model, x, target=target)
    (node,) = _maxpools(program).values()
    assert node.kernel == (kernel, kernel) and node.padding == (padding, padding)
    _check(program, x, expected, kernel)
    if target == "loihi2":
        from spike.compiler.mapping.report import mapping_report

        assert program.total_latency > 0  # the host op starts late: max of zero currents is 0
        assert program.metadata["mapping"]["nodes"]["pool"] == "host"
        assert "on the host: " in mapping_report(program).render()
        assert "pool" in mapping_report(program).render().split("on the host: ")[1]


def test_maxpool_of_currents_generic_counts() -> None:
    model = _dyadic_(ConvMaxPoolLIF(), 2).eval()
    x = spikes_in((6, 2, 2, 8, 8), 3)
    with torch.no_grad():
        expected = model(x)
    program = compile_model(model, x)
    res = run(program, x, backend="numba")
    np.testing.assert_array_equal(res.output, expected.numpy())
    assert program.total_latency == 0
    np.testing.assert_array_equal(res.ops.per_node["pool"]["host_flops"], [6 * 4 * 4 * 4 * 3] * 2)


def snntorch_conv_maxpool() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(2), snn.Leaky(beta=0.875, init_hidden=True),
        nn.Conv2d(4, 6, 3, padding=1), nn.MaxPool2d(2), snn.Leaky(beta=0.75, init_hidden=True),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 5), snn.Leaky(beta=0.75, init_hidden=True, output=True),
    )


def _snntorch_program(net: nn.Module, target: str, stepwise: bool = True) -> tuple:
    """(program for ``target``, input, snnTorch's output) of ``net`` with dyadic weights on 12 steps of
    spikes: ``stepwise``, an ``init_hidden`` net stepped by ``run_snntorch``; else its own time loop."""
    net = _dyadic_(net, 4, spread=160)
    x = spikes_in((12, 3, 2, 8, 8), 5, p=0.4)
    if stepwise:
        expected = run_snntorch(net, x)
    else:
        with torch.no_grad():
            expected = net(x)
    assert expected.sum() > 0
    return compile_model(net, x[0] if stepwise else x, target=target), x, expected


@pytest.mark.parametrize("target", ["generic", "loihi2"])
def test_snntorch_conv_maxpool_leaky_equals_snntorch(target: str) -> None:
    program, x, expected = _snntorch_program(snntorch_conv_maxpool(), target)
    pools = _maxpools(program)
    assert sorted(pools) == ["maxpool2d_1", "maxpool2d_4"]
    for backend in BACKENDS:
        res = run(program, x, backend=backend)
        np.testing.assert_array_equal(res.output, expected.numpy(), err_msg=backend)
        steps = x.shape[0] + program.total_latency
        for name, node in pools.items():
            np.testing.assert_array_equal(res.ops.per_node[name]["host_flops"], [steps * node.size * 3] * 3)


def test_maxpool_on_spikes_stays_an_or_of_events() -> None:
    model = nn.Sequential(TD(nn.Conv2d(1, 2, 3)), LIF(beta=0.9), TD(nn.MaxPool2d(2)))
    program = compile_model(model, torch.zeros(3, 1, 1, 6, 6))
    assert not _maxpools(program)
    assert [node.mode for _, node in program.nodes() if node.KIND == "pool2d"] == ["max"]


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2, dilation=2)])
def test_maxpool_forms_that_cannot_be_lowered_are_named(pool: nn.Module) -> None:
    model = nn.Sequential(TD(nn.Conv2d(1, 2, 3)), TD(pool), LIF(beta=0.9))
    with pytest.raises(LoweringError, match="'1'.*MaxPool2d"):
        compile_model(model, torch.zeros(3, 1, 1, 7, 7))


def test_maxpool_of_currents_has_no_fixed_point_form() -> None:
    model = nn.Sequential(TD(nn.Conv2d(1, 2, 3)), TD(nn.MaxPool2d(2)), LIF(beta=0.9))
    with pytest.raises(Exception, match="maxpool2d"):
        compile_model(model, torch.zeros(3, 1, 1, 6, 6), target="loihi2", precision="fixed")


def test_maxpool_program_saves_and_loads(tmp_path) -> None:
    from spike.compiler.io.hdf5 import load_program, save_program

    model = _dyadic_(ConvMaxPoolLIF(1, 3, 2), 6).eval()
    x = spikes_in((5, 2, 2, 8, 8), 7)
    program = compile_model(model, x)
    save_program(program, tmp_path / "p.h5")
    loaded = load_program(tmp_path / "p.h5")
    assert_programs_equal(program, loaded)
    np.testing.assert_array_equal(run(loaded, x, backend="numba").output, run(program, x, backend="numba").output)


def test_maxpool_host_op_is_validated() -> None:
    from spike.compiler.ir.program import ProgramError
    from spike.compiler.ir.validate import check_node

    good = HostOp(shape=(2, 3, 3), op="maxpool2d", in_shape=(2, 6, 6), kernel=(2, 2), stride=(2, 2), padding=(0, 0))
    check_node("mp", good)
    with pytest.raises(ProgramError, match="'mp'.*shape"):
        check_node("mp", good.replace(shape=(2, 2, 2)))
    with pytest.raises(ProgramError, match="'mp'.*padding"):
        check_node("mp", good.replace(padding=(2, 2)))
    with pytest.raises(ProgramError, match="'mp'.*kernel"):
        check_node("mp", good.replace(kernel=(2,)))
    with pytest.raises(ProgramError, match="'relu'.*no pooling window"):
        check_node("h", HostOp(shape=(4,), op="relu", kernel=(2, 2)))


def _pool_lif_real_input() -> tuple[nn.Module, torch.Tensor]:
    model = _dyadic_(nn.Sequential(TD(nn.MaxPool2d(2)), LIF(beta=0.75, threshold=0.5), nn.Flatten(2),
                                   nn.Linear(32, 4), LIF(beta=0.5)), 0)
    g = torch.Generator().manual_seed(0)
    return model, torch.randint(-8, 9, (6, 2, 2, 8, 8), generator=g).float() / 16


def test_lava_refuses_conv_beside_a_maxpool_host_op_by_name() -> None:
    from spike.backends.lava.backend import lower

    model = _dyadic_(ConvMaxPoolLIF(), 0).eval()
    program = compile_model(model, spikes_in((4, 1, 2, 8, 8), 0))
    with pytest.raises(Exception, match=r"conv \(conv2d\).*pool \(maxpool2d\)"):
        lower(program)


@pytest.mark.lava
def test_maxpool_host_op_runs_on_lava() -> None:
    from spike.compat.lava import lava_available

    if lava_available() is not None:
        pytest.skip("lava-nc is not importable here")
    model, x = _pool_lif_real_input()
    with torch.no_grad():
        expected = model(x)
    assert expected.sum() > 0
    program = compile_model(model, x)
    res, ref = run(program, x, backend="lava"), run(program, x, backend="numba")
    np.testing.assert_array_equal(res.output, expected.numpy())
    np.testing.assert_array_equal(res.ops.per_node["maxpool2d_0"]["host_flops"],
                                  ref.ops.per_node["maxpool2d_0"]["host_flops"])


# ---- functional pooling (the snnTorch tutorials' F.max_pool2d) ------------------------------
import torch.nn.functional as F  # noqa: E402


class FunctionalPools(nn.Module):
    """init_hidden neurons, pooling written as functions: F.max_pool2d and torch.max_pool2d of
    currents (host ops), F.avg_pool2d of spikes (a Pool2d)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.875, init_hidden=True)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.lif2 = snn.Leaky(beta=0.75, init_hidden=True)
        self.fc = nn.Linear(6, 5)
        self.lif3 = snn.Leaky(beta=0.75, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.lif1(F.max_pool2d(self.conv1(x), 2))
        s = self.lif2(torch.max_pool2d(self.conv2(s), kernel_size=3, stride=2, padding=1))
        return self.lif3(self.fc(F.avg_pool2d(s, 2).flatten(1)))


class TutorialStyle(nn.Module):
    """snnTorch tutorial 7's CNN form: a time loop, the membranes passed by hand, F.max_pool2d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = snn.Leaky(beta=0.875)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.lif2 = snn.Leaky(beta=0.75)
        self.fc = nn.Linear(24, 5)
        self.lif3 = snn.Leaky(beta=0.75)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        rec = []
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(F.max_pool2d(self.conv1(x[t]), 2), mem1)
            spk2, mem2 = self.lif2(F.max_pool2d(self.conv2(spk1), 2), mem2)
            spk3, mem3 = self.lif3(self.fc(spk2.flatten(1)), mem3)
            rec.append(spk3)
        return torch.stack(rec)


@pytest.mark.parametrize("target", ["generic", "loihi2"])
def test_functional_max_pool_of_currents(target: str) -> None:
    program, x, expected = _snntorch_program(FunctionalPools(), target)
    pools = _maxpools(program)
    assert [(n.kernel, n.stride, n.padding) for n in pools.values()] == [((2, 2), (2, 2), (0, 0)),
                                                                         ((3, 3), (2, 2), (1, 1))]
    assert [node.mode for _, node in program.nodes() if node.KIND == "pool2d"] == ["avg"]
    for backend in BACKENDS:
        np.testing.assert_array_equal(run(program, x, backend=backend).output, expected.numpy(), err_msg=backend)


@pytest.mark.parametrize("target", ["generic", "loihi2"])
def test_tutorial_style_conv_maxpool_leaky(target: str) -> None:
    program, x, expected = _snntorch_program(TutorialStyle(), target, stepwise=False)
    assert len(_maxpools(program)) == 2
    for backend in BACKENDS:
        np.testing.assert_array_equal(run(program, x, backend=backend).output, expected.numpy(), err_msg=backend)


def test_functional_pooling_forms_that_cannot_be_lowered_are_named() -> None:
    class Ceil(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.lif = snn.Leaky(beta=0.5, init_hidden=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lif(F.max_pool2d(self.conv(x), 2, ceil_mode=True))

    with pytest.raises(LoweringError, match="'max_pool2d'.*floor mode"):
        compile_model(Ceil(), torch.zeros(1, 1, 7, 7))
