"""Bad NIR input (issue: nothing runs, nothing is lost, every error is clear): every malformed
``.nir`` file or option is refused before any work with one line, a ``ValueError``
(``NIRImportError``), that names the file, the node or field and what was expected; ``spike
compile`` prints it as ``spike compile: error: ...``, exits 2 and writes nothing.

The files are written with ``nir.write`` and, where nir would not write the fault, edited with h5py.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable

import h5py
import nir
import numpy as np
import pytest

from spike.cli import main
from spike.compiler.frontends import nir_read
from spike.compiler.frontends.nir_import import from_nir
from spike.compiler.frontends.nir_read import NIRImportError
from spike.compiler.io.hdf5 import load_program
from spike.compiler.ir.nodes import Population
from spike.workflows import compile_nir

N = 3
TAU = 4e-3


def _lif(**fields) -> nir.LIF:
    params = dict(tau=np.full(N, TAU), r=np.ones(N), v_leak=np.zeros(N), v_threshold=np.ones(N))
    params.update(fields)
    return nir.LIF(**params)


def _nodes(**replace) -> dict:
    """Input[2] -> Affine -> LIF[3] -> Output[3], with some nodes replaced."""
    nodes = {"in": nir.Input(input_type=np.array([2])),
             "fc": nir.Affine(weight=np.full((N, 2), 0.5), bias=np.zeros(N)),
             "lif": _lif(), "out": nir.Output(output_type=np.array([N]))}
    nodes.update(replace)
    return nodes


EDGES = [("in", "fc"), ("fc", "lif"), ("lif", "out")]


def _write(path: Path, nodes: dict | None = None, edges: list | None = None, metadata: dict | None = None) -> Path:
    """A .nir file of the graph as given (no nodes added by nir's type inference)."""
    graph = nir.NIRGraph(nodes=_nodes() if nodes is None else nodes, edges=EDGES if edges is None else edges,
                         metadata=metadata or {}, type_check=False)
    nir.write(path, graph)
    return path


def _edit(path: Path, edit: Callable[[h5py.Group], None]) -> Path:
    with h5py.File(path, "r+") as f:
        edit(f["node"])
    return path


def _replace(group: h5py.Group, key: str, value) -> None:
    del group[key]
    group.create_dataset(key, data=value)


def _refused(path: Path, pattern: str, **options) -> str:
    with pytest.raises(NIRImportError, match=pattern) as info:
        from_nir(path, **options)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg, msg
    return msg


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses an option value
        code = exc.code
    return code, capsys.readouterr().err


def _betas(program) -> np.ndarray:
    return next(np.asarray(node.beta) for _, node in program.nodes() if isinstance(node, Population))


# ---- 1. --dt -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", ["0", "nan", "inf", "-1", "-inf", "1e-3x"])
def test_cli_refuses_a_dt_that_is_not_a_positive_finite_number(dt: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    graph, out = _write(tmp_path / "g.nir"), tmp_path / "p.h5"
    code, err = _cli(["compile", str(graph), "--out", str(out), f"--dt={dt}"], capsys)
    line = err.strip().splitlines()[-1]  # argparse prints the usage above its error line
    assert code == 2 and line.startswith("spike compile: error: "), err
    assert f"argument --dt: expected a finite number > 0, got '{dt}'" in line, err
    assert not out.exists()


@pytest.mark.parametrize("dt", [0.0, -1e-4, float("nan"), float("inf"), True, "fast"])
def test_import_refuses_a_dt_that_is_not_a_positive_finite_number(dt, tmp_path: Path) -> None:
    _refused(_write(tmp_path / "g.nir"), "dt must be a", dt=dt)


def test_a_given_dt_is_honoured_over_the_files_dt(tmp_path: Path) -> None:
    """NIR is continuous-time: a given dt discretises every node, graph and node dt metadata
    notwithstanding; without one the metadata's dt is used."""
    path = _write(tmp_path / "g.nir", metadata={"dt": 1e-3})
    assert np.all(_betas(from_nir(path)) == np.float32(1 - 1e-3 / TAU))
    given = from_nir(path, dt=5e-4)
    assert np.all(_betas(given) == np.float32(1 - 5e-4 / TAU)) and given.metadata["dt"] == 5e-4
    assert np.all(_betas(compile_nir(str(path), "generic", "float32", None, None)) == np.float32(0.75))
    assert np.all(_betas(compile_nir(str(path), "generic", "float32", 2e-3, None)) == np.float32(0.5))
    for argv, beta in (([], 0.75), (["--dt", "2e-3"], 0.5)):  # the command line: --dt only when given
        assert main(["compile", str(path), "--out", str(tmp_path / "p.h5"), *argv]) == 0
        assert np.all(_betas(load_program(tmp_path / "p.h5")) == np.float32(beta))

    nodes = _nodes(lif=_lif())
    nodes["lif"].metadata = {"dt": 1e-3}
    per_node = _write(tmp_path / "node_dt.nir", nodes)
    assert np.all(_betas(from_nir(per_node)) == np.float32(0.75))
    assert np.all(_betas(from_nir(per_node, dt=2e-3)) == np.float32(0.5))
    _refused(per_node, "'lif'.*shorter than the time step dt = 0.01", dt=1e-2)


@pytest.mark.parametrize("value", [-1.0, 0.0, np.inf, b"soon"])
def test_bad_dt_metadata_is_refused(value, tmp_path: Path) -> None:
    path = _write(tmp_path / "g.nir", metadata={"dt": 1e-3})
    _edit(path, lambda g: _replace(g["metadata"], "dt", value))
    _refused(path, "graph metadata dt must be a")
    nodes = _nodes(lif=_lif())
    nodes["lif"].metadata = {"dt": 1e-3}
    path = _edit(_write(tmp_path / "n.nir", nodes), lambda g: _replace(g["nodes/lif/metadata"], "dt", value))
    _refused(path, "node 'lif' \\(LIF\\): metadata dt must be a")


# ---- 2. a graph without an Output (or Input) ---------------------------------------------------
def test_a_graph_without_an_output_is_refused_at_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = _nodes()
    del nodes["out"]
    path = _write(tmp_path / "no_out.nir", nodes, EDGES[:-1])
    _refused(path, "no Output node")
    out = tmp_path / "p.h5"
    code, err = _cli(["compile", str(path), "--out", str(out)], capsys)
    assert code == 2 and str(path) in err and "no Output node" in err and not out.exists()

    nodes = _nodes()
    del nodes["in"]
    _refused(_write(tmp_path / "no_in.nir", nodes, EDGES[1:]), "no Input node")
    _refused(_write(tmp_path / "empty.nir", {}, []), "no nodes")


# ---- 3. unknown node types -----------------------------------------------------------------------
def test_an_unknown_node_type_names_the_file_node_type_and_the_supported_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _edit(_write(tmp_path / "g.nir"), lambda g: _replace(g["nodes/lif"], "type", "Izhikevich"))
    msg = _refused(path, "node 'lif': unknown NIR node type 'Izhikevich' \\(supported: ")
    assert "LIF" in msg and "Affine" in msg
    code, err = _cli(["compile", str(path), "--out", str(tmp_path / "p.h5")], capsys)
    assert code == 2 and "Izhikevich" in err and "AssertionError" not in err

    cubali = _nodes(lif=nir.CubaLI(tau_syn=np.full(N, TAU), tau_mem=np.full(N, TAU), r=np.ones(N),
                                   v_leak=np.zeros(N)))
    _refused(_write(tmp_path / "cubali.nir", cubali), "'lif'.*CubaLI is not supported \\(supported: ")


# ---- 4. NaN and inf in parameters -------------------------------------------------------------
PARAMETERS = [("lif", f) for f in ("tau", "r", "v_leak", "v_threshold", "v_reset")] + [("fc", "weight"),
                                                                                         ("fc", "bias")]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("node,field", PARAMETERS)
def test_nan_or_inf_in_a_parameter_names_the_node_and_field(node: str, field: str, bad: float,
                                                            tmp_path: Path) -> None:
    def poison(g: h5py.Group) -> None:
        values = np.array(g[f"nodes/{node}/{field}"][()], dtype=np.float64)
        values.flat[1] = bad
        _replace(g[f"nodes/{node}"], field, values)

    path = _edit(_write(tmp_path / "g.nir"), poison)
    what = "NaN" if np.isnan(bad) else "inf"
    _refused(path, f"node '{node}' \\(\\w+\\): field {field} contains {what} at index")


@pytest.mark.parametrize("node,field", [("th", "threshold"), ("sc", "scale"), ("d", "delay")])
def test_nan_in_other_node_types_is_named(node: str, field: str, tmp_path: Path) -> None:
    values = np.array([1e-4, np.nan, 1e-4])
    extra = {"th": nir.Threshold(threshold=values), "sc": nir.Scale(scale=values), "d": nir.Delay(delay=values)}
    nodes = {**_nodes(), node: extra[node]}
    edges = [("in", "fc"), ("fc", node), (node, "lif"), ("lif", "out")]
    if node == "th":  # a Threshold emits spikes into a projection
        nodes["w"] = nir.Linear(weight=np.eye(N))
        edges = [("in", "fc"), ("fc", "th"), ("th", "w"), ("w", "lif"), ("lif", "out")]
    _refused(_write(tmp_path / "g.nir", nodes, edges), f"'{node}'.*field {field} contains NaN at index 1")


# ---- 5. fixed point -------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["generic", "loihi2"])
def test_a_nir_graph_compiles_to_fixed_point(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Loihi's fixed point resets in the step a neuron fires: the NIR import's default (a reset one
    step late, snnTorch's) is refused naming the option, and --reset-delay no compiles."""
    path = _write(tmp_path / "g.nir")
    with pytest.raises(ValueError, match="field reset_delay: .*--reset zero --reset-delay no") as info:
        compile_nir(str(path), target, "fixed", None, None)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    program = compile_nir(str(path), target, "fixed", None, None, reset_delay=False)
    assert program.metadata["precision"] == "fixed"
    out = tmp_path / "p.h5"
    code, err = _cli(["compile", str(path), "--out", str(out), "--precision", "fixed", "--target", target,
                      "--reset-delay", "no"], capsys)
    assert code == 0 and out.exists(), err


def test_fixed_point_refuses_a_reset_loihi_lacks_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "g.nir")
    with pytest.raises(ValueError, match="field reset: 'subtract'.*--reset zero --reset-delay no") as info:
        compile_nir(str(path), "loihi2", "fixed", None, "subtract", reset_delay=False)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


# ---- 6. a corpus of malformed graphs ---------------------------------------------------------------
def _graph(**replace) -> Callable[[Path], Path]:
    return lambda p: _write(p, _nodes(**replace))


def _edges(edges: list) -> Callable[[Path], Path]:
    return lambda p: _write(p, _nodes(), edges)


def _edited(edit: Callable[[h5py.Group], None]) -> Callable[[Path], Path]:
    return lambda p: _edit(_write(p), edit)


def _lif_metadata(**md) -> Callable[[Path], Path]:
    def make(p: Path) -> Path:
        nodes = _nodes(lif=_lif())
        nodes["lif"].metadata = md
        return _write(p, nodes)
    return make


def _one_node(make_node: Callable[[], object], in_shape: list[int], out_shape: list[int],
              **fields) -> Callable[[Path], Path]:
    """Input -> one node ``c`` -> Output, ``c``'s fields (as stored) then replaced."""
    def make(p: Path) -> Path:
        nodes = {"in": nir.Input(input_type=np.array(in_shape)), "c": make_node(),
                 "out": nir.Output(output_type=np.array(out_shape))}
        _write(p, nodes, [("in", "c"), ("c", "out")])
        return _edit(p, lambda g: [_replace(g["nodes/c"], k, v) for k, v in fields.items()])
    return make


def _conv(**fields) -> Callable[[Path], Path]:
    return _one_node(lambda: nir.Conv2d(input_shape=np.array([5, 5]), weight=np.ones((1, 1, 3, 3)), stride=1,
                                        padding=0, dilation=1, groups=1, bias=np.zeros(1)), [1, 5, 5], [1, 3, 3],
                     **fields)


def _pool(**fields) -> Callable[[Path], Path]:
    return _one_node(lambda: nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                           padding=np.array([0, 0])), [1, 4, 4], [1, 2, 2], **fields)


CORPUS: list[tuple[str, Callable[[Path], Path], str]] = [
    # shapes between connected nodes
    ("affine-inputs", _graph(fc=nir.Affine(weight=np.ones((N, 5)), bias=np.zeros(N))), "'fc'.*expects 5 inputs"),
    ("lif-size", _graph(lif=_lif(**{k: np.ones(4) for k in ("tau", "r", "v_leak", "v_threshold")})),
     "'lif'.*4 values.*3 neurons"),
    ("bias-size", _graph(fc=nir.Affine(weight=np.ones((N, 2)), bias=np.zeros(2))), "'fc'.*bias has 2 values"),
    ("weight-1d", _edited(lambda g: _replace(g["nodes/fc"], "weight", np.ones(2))),
     "'fc' \\(Affine\\): its fields do not make a Affine node: Weight must be at least 2D"),
    ("weight-3d", _graph(fc=nir.Affine(weight=np.ones((1, N, 2)), bias=np.zeros(N))), "'fc'.*2-D \\[out, in\\]"),
    ("weight-empty", _graph(fc=nir.Affine(weight=np.ones((0, 2)), bias=np.zeros(0))), "'fc'.*shape \\(0, 2\\)"),
    ("lif-fields-differ", _edited(lambda g: _replace(g["nodes/lif"], "r", np.ones(2))),
     "'lif' \\(LIF\\): its fields do not make a LIF node: All parameters must have the same shape.*r \\(2,\\)"),
    ("summed-sizes", lambda p: _write(p, {**_nodes(), "fc2": nir.Linear(weight=np.ones((2, 2)))},
                                      EDGES + [("in", "fc2"), ("fc2", "lif")]), "'lif'.*different sizes"),
    ("input-shape-zero", _graph(**{"in": nir.Input(input_type=np.array([0]))}), "'in'.*positive integers"),
    ("conv-groups", _conv(groups=2.5), "'c' \\(Conv2d\\): field groups must be integers >= 1, got 2.5"),
    ("conv-channels", _conv(weight=np.ones((1, 2, 3, 3))), "'c'.*expects input \\(2, 5, 5\\), its input has shape"),
    ("conv-stride", _conv(stride=0), "'c' \\(Conv2d\\): field stride must be integers >= 1, got 0"),
    ("conv-kernel-larger", _conv(weight=np.ones((1, 1, 7, 7))), "'c'.*smaller than the kernel"),
    ("pool-kernel", _pool(kernel_size=np.array([0, 2])),
     "'c' \\(SumPool2d\\): field kernel_size must be integers >= 1"),
    ("pool-on-vector", lambda p: _write(p, {**_nodes(), "pool": nir.SumPool2d(
        kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))},
        [("in", "fc"), ("fc", "pool"), ("pool", "lif"), ("lif", "out")]), "'pool'.*expected \\(C, H, W\\)"),
    # missing, unknown and non-numeric fields
    ("missing-tau", _edited(lambda g: g["nodes/lif"].__delitem__("tau")), "'lif' \\(LIF\\): field tau is missing"),
    ("missing-weight", _edited(lambda g: g["nodes/fc"].__delitem__("weight")),
     "'fc' \\(Affine\\): field weight is missing"),
    ("missing-type", _edited(lambda g: g["nodes/fc"].__delitem__("type")), "'fc': has no 'type' field"),
    ("unknown-field", _edited(lambda g: g["nodes/lif"].create_dataset("tau_ref", data=np.ones(N))),
     "'lif' \\(LIF\\): unknown field 'tau_ref'"),
    ("string-weight", _edited(lambda g: _replace(g["nodes/fc"], "weight", np.array([[b"a", b"b"]] * N))),
     "'fc' \\(Affine\\): field weight must be numeric"),
    ("string-tau", _edited(lambda g: _replace(g["nodes/lif"], "tau", np.array([b"x"] * N))),
     "'lif' \\(LIF\\): field tau must be numeric"),
    ("negative-tau", _graph(lif=_lif(tau=np.array([TAU, -TAU, TAU]))), "'lif'.*field tau must be > 0.*neuron 1"),
    ("huge-weight", _graph(fc=nir.Affine(weight=np.full((N, 2), 1e39), bias=np.zeros(N))),
     "'fc'.*weight holds 1e\\+39, beyond float32"),
    ("node-is-dataset", _edited(lambda g: (g["nodes"].__delitem__("fc"), g["nodes"].create_dataset("fc", data=1))),
     "'fc': expected an HDF5 group"),
    # metadata
    ("reset-array", _lif_metadata(reset=np.array([1, 2])), "'lif' \\(LIF\\): metadata reset must be a string"),
    ("reset-unknown", _lif_metadata(reset="soft"), "'lif' \\(LIF\\): reset 'soft' is not one of"),
    ("reset-delay-string", _lif_metadata(reset_delay="no"), "metadata reset_delay must be true or false"),
    ("gain-nan", _lif_metadata(gain=np.nan), "metadata gain must be a number"),
    # edges and structure
    ("edge-to-missing-node", _edges(EDGES + [("lif", "ghost")]), "edge \\('lif', 'ghost'\\).*no node named 'ghost'"),
    ("edge-from-missing-node", _edges([("in", "fc"), ("fc", "lif"), ("lif", "out"), ("nowhere", "fc")]),
     "no node named 'nowhere'"),
    ("edges-three-columns", _edited(lambda g: _replace(g, "edges", np.array([[b"in", b"fc", b"lif"]]))),
     "edges must be an \\[n, 2\\] array of node names"),
    ("edges-numbers", _edited(lambda g: _replace(g, "edges", np.ones((3, 2)))), "edges must be an \\[n, 2\\] array"),
    ("duplicate-edge", _edges(EDGES + [("in", "fc")]), "edge \\('in', 'fc'\\) appears twice"),
    ("edge-out-of-output", _edges(EDGES + [("out", "fc")]), "'out' \\(Output\\): has an output edge"),
    ("edge-into-input", _edges(EDGES + [("lif", "in")]), "'in' \\(Input\\): has input edges"),
    ("no-input-edge", _edges([("fc", "lif"), ("lif", "out")]), "'fc' \\(Affine\\): has no input edge"),
    ("no-node-group", _edited(lambda g: g.__delitem__("nodes")), "needs a 'nodes' group and an 'edges' dataset"),
    ("root-not-graph", _edited(lambda g: _replace(g, "type", "LIF")), "the root node is a 'LIF', not a NIRGraph"),
]


@pytest.mark.parametrize("make,pattern", [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_a_malformed_graph_is_refused_naming_the_file_and_node(make, pattern: str, tmp_path: Path) -> None:
    _refused(make(tmp_path / "g.nir"), pattern)


def test_corpus_through_the_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, make, _ in CORPUS:
        path, out = make(tmp_path / f"{name}.nir"), tmp_path / f"{name}.h5"
        code, err = _cli(["compile", str(path), "--out", str(out)], capsys)
        assert code == 2 and err.startswith(f"spike compile: error: {path}: "), (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err and not out.exists(), (name, err)


def test_not_a_nir_file(tmp_path: Path) -> None:
    text = tmp_path / "text.nir"
    text.write_text("hello")
    _refused(text, "not a NIR file \\(not HDF5\\)")
    other = tmp_path / "other.nir"
    with h5py.File(other, "w") as f:
        f.create_dataset("weights", data=np.ones(3))
    _refused(other, "not a NIR file \\(no 'node' group")
    _refused(tmp_path / "missing.nir", "no such NIR file")


def test_a_cycle_without_a_delay_gets_the_euler_step(tmp_path: Path) -> None:
    """Supported, not an error: the projection that closes the cycle reads the previous step."""
    nodes = {**_nodes(), "rec": nir.Linear(weight=np.eye(N))}
    program = from_nir(_write(tmp_path / "g.nir", nodes, EDGES + [("lif", "rec"), ("rec", "lif")]))
    assert program.node("rec").delay == 1


IN_MEMORY = [
    ("groups", lambda: ({"in": nir.Input(input_type=np.array([1, 4, 4])),
                         "c": nir.Conv2d(input_shape=None, weight=np.ones((1, 1, 3, 3)), stride=1, padding=0,
                                         dilation=1, groups=2.5, bias=np.zeros(1)),
                         "out": nir.Output(output_type=np.array([1, 2, 2]))}, [("in", "c"), ("c", "out")]),
     "'c' \\(Conv2d\\): field groups must be one integer, got 2.5"),
    ("flatten-dim", lambda: ({**_nodes(), "fl": nir.Flatten(input_type=None, start_dim="a", end_dim=-1)},
                             [("in", "fl"), ("fl", "fc"), ("fc", "lif"), ("lif", "out")]),
     "'fl' \\(Flatten\\): field start_dim must be one integer"),
    ("threshold-nan", lambda: (_nodes(lif=nir.Threshold(threshold=np.array([1.0, np.nan, 1.0]))), EDGES),
     "'lif' \\(Threshold\\): field threshold contains NaN at index 1"),
    ("edge-not-a-pair", lambda: (_nodes(), EDGES + [("lif",)]), "edge \\('lif',\\) is not a \\(source, destination\\)"),
    ("node-not-nir", lambda: (_nodes(lif="LIF"), EDGES), "node 'lif': not a NIR node \\(str\\)"),
    ("huge-r", lambda: (_nodes(lif=_lif(r=np.full(N, 1e308))), EDGES), "'lif'.*field r gives an input gain beyond"),
]


@pytest.mark.parametrize("make,pattern", [c[1:] for c in IN_MEMORY], ids=[c[0] for c in IN_MEMORY])
def test_an_in_memory_graph_is_checked_as_a_file_is(make, pattern: str) -> None:
    nodes, edges = make()
    with pytest.raises(NIRImportError, match=pattern):
        from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


# ---- 7. HDF5 parses a foreign file in a child process -----------------------------------------------
def _stuck(path: str) -> dict:
    time.sleep(60)
    return {}


def _crashing(path: str) -> dict:
    os.kill(os.getpid(), signal.SIGSEGV)
    return {}


@pytest.mark.parametrize("reader, message", [(_stuck, "HDF5 did not finish reading it in 1 s"),
                                             (_crashing, f"HDF5 stopped with exit code -{int(signal.SIGSEGV)}")])
def test_a_file_that_hangs_or_crashes_hdf5_costs_only_the_child(reader, message, tmp_path: Path, monkeypatch) -> None:
    """A damaged file can make the HDF5 library loop forever or crash (the fuzzing run found one
    that loops): the child reading it is stopped, and the import says so naming the file."""
    path = _write(tmp_path / "g.nir")
    monkeypatch.setattr(nir_read, "_read_root", reader)
    monkeypatch.setattr(nir_read, "READ_TIMEOUT_S", 1.0)
    started = time.monotonic()
    _refused(path, f"not a readable NIR file \\({message}")
    assert time.monotonic() - started < 10
