"""The lava-nc import shim (spike.compat.lava): it rewrites the one broken module in memory, is inert
where the module needs no fix, and a missing lava is a clear error that leaves the rest working."""
from __future__ import annotations

import importlib
import importlib.machinery
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from spike.compat import lava as shim

BROKEN = textwrap.dedent('''\
    from __future__ import annotations
    from dataclasses import dataclass


    @dataclass
    class ByteEncoder:
        base: int = 0


    @dataclass
    class CoreEncoder:
        """Two fields defaulting to an instance: Python 3.11 rejects them."""
        x: ByteEncoder = ByteEncoder()
        y: ByteEncoder = ByteEncoder()  # a comment stays

    LINE = 15
    ''')
FIXED = BROKEN.replace("= ByteEncoder()", '= __import__("dataclasses").field(default_factory=ByteEncoder)')


def test_patch_source_rewrites_instance_defaults_line_for_line() -> None:
    patched = shim.patch_source(BROKEN)
    assert patched is not None and patched.count("default_factory=ByteEncoder") == 2
    assert "# a comment stays" in patched
    assert patched.count("\n") == BROKEN.count("\n")  # tracebacks keep their line numbers
    assert shim.patch_source(FIXED) is None  # nothing to do in an already fixed module
    assert shim.patch_source("x = ByteEncoder()\n") is None  # module-level assignments are not fields


def _fake_package(tmp_path: Path, name: str, source: str) -> str:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "var_model.py").write_text(source)
    return f"{name}.var_model"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Python 3.10 accepts the mutable default")
def test_shim_imports_a_broken_module_and_is_inert_on_a_fixed_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = _fake_package(tmp_path, "fake_lava_broken", BROKEN)
    fixed = _fake_package(tmp_path, "fake_lava_fixed", FIXED)
    with pytest.raises(ValueError, match="mutable default"):  # what lava 0.10 does on Python 3.11
        importlib.import_module(broken)
    sys.modules.pop(broken, None)
    before = list(sys.meta_path)
    try:
        module, patched = shim.import_patched(broken)
        assert patched and sys.meta_path == before  # the hook is gone after the import
        a, b = module.CoreEncoder(), module.CoreEncoder()
        assert a.x == module.ByteEncoder() and a.x is not b.x  # a fresh default per object
        assert module.__file__.endswith("var_model.py")
        assert module.LINE == 15

        module, patched = shim.import_patched(fixed)  # already fixed: the hook declines
        assert not patched
        assert isinstance(module.__spec__.loader, importlib.machinery.SourceFileLoader)
        assert module.CoreEncoder().x is not module.CoreEncoder().x
        again, patched = shim.import_patched(fixed)  # already imported: nothing installed
        assert again is module and not patched and sys.meta_path == before
    finally:
        for name in (broken, fixed, "fake_lava_broken", "fake_lava_fixed"):
            sys.modules.pop(name, None)


def test_real_lava_var_model_is_the_module_the_shim_fixes() -> None:
    spec = importlib.machinery.PathFinder.find_spec("var_model", [_lava_compiler_dir()])
    source = Path(spec.origin).read_text()
    patched = shim.patch_source(source)
    assert patched is not None and "ByteEncoder = ByteEncoder()" not in patched
    compile(patched, spec.origin, "exec")


def _lava_compiler_dir() -> str:
    spec = importlib.util.find_spec("lava")
    if spec is None:
        pytest.skip("lava-nc is not installed")
    for root in spec.submodule_search_locations:
        path = Path(root) / "magma" / "compiler"
        if (path / "var_model.py").exists():
            return str(path)
    pytest.skip("lava-nc has no magma/compiler/var_model.py")


FRESH_RUN = textwrap.dedent('''\
    import multiprocessing, sys
    import numpy as np
    multiprocessing.get_start_method()  # fixes the start method first, as numba's parallel loops do
    from spike.compat.lava import ensure_lava
    n_hooks = len(sys.meta_path)
    print("patched", ensure_lava())
    assert len(sys.meta_path) == n_hooks
    from lava.proc.io.source import RingBuffer
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.magma.core.run_conditions import RunSteps
    src = RingBuffer(data=np.ones((2, 5), np.int32))
    dense = Dense(weights=np.array([[2, 2]]), weight_exp=6)
    lif = LIF(shape=(1,), du=4095, dv=0, vth=300)
    sink = Sink(shape=(1,), buffer=5)
    src.s_out.connect(dense.s_in); dense.a_out.connect(lif.a_in); lif.s_out.connect(sink.a_in)
    try:
        lif.run(condition=RunSteps(num_steps=5), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        print("spikes", sink.data.get().astype(int).ravel().tolist())
    finally:
        lif.stop()
    ''')


@pytest.mark.lava
def test_fresh_process_imports_lava_through_the_shim_and_runs_a_lif() -> None:
    _lava_compiler_dir()
    out = subprocess.run([sys.executable, "-c", FRESH_RUN], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split("\n")
    assert "patched True" in lines
    # a_in = 4 << 6 = 256 from step 1 on: v = 16384 per step > 300 << 6 = 19200 on the second input step
    assert "spikes [0, 0, 1, 0, 1]" in lines, out.stdout


def test_missing_lava_is_a_clear_error_and_everything_else_works(monkeypatch) -> None:
    from spike.backends import BackendError, backend_names, run
    from spike.backends.lava.backend import lower
    from spike.compiler.ir.nodes import Dense, Input, Output, Population
    from spike.compiler.passes.delays import target_delays
    from spike.compiler.ir.program import ProgramBuilder

    monkeypatch.setitem(sys.modules, "lava", None)  # import lava -> ImportError, find_spec -> None
    monkeypatch.setattr(shim, "_STATE", {"patched": None})
    with pytest.raises(shim.LavaUnavailable, match=r"pip install --ignore-requires-python lava-nc==0\.10\.0"):
        shim.ensure_lava()
    assert "lava" in backend_names()

    b = ProgramBuilder()
    b.add("in", Input(shape=(3,)))
    b.add("d", Dense(shape=(2,), in_shape=(3,), weight=np.full((2, 3), 0.5, np.float32)), "in")
    b.add("p", Population(shape=(2,), model="lif", beta=np.float32(0.5), threshold=np.float32(0.75),
                          reset="zero", reset_delay=False), "d")
    b.add("out", Output(shape=(2,)), "p")
    program = target_delays(b.build({"precision": "float32"}), 1, mode="raw")  # one step late
    x = np.ones((4, 1, 3), np.float32)
    with pytest.raises(BackendError, match=r"not usable here: lava-nc is not installed.*pip install "
                                           r"--ignore-requires-python lava-nc==0\.10\.0"):
        run(program, x, backend="lava")
    assert lower(program).procs["d"].kind == "dense"  # the lowering itself needs no lava
    np.testing.assert_array_equal(run(program, x, backend="numba").output[:, 0, 0], [0, 1, 1, 1])
