"""The compatibility fix for numba-cuda on numpy >= 2.5 (``spike.compat.numba_cuda``): numpy gets
``row_stack`` (= ``vstack``) back before ``numba.cuda`` compiles, and only where it lacks one.

numpy < 2.5 still has ``row_stack``, so a numpy >= 2.5 is imitated by deleting it first. The
failure itself (numba-cuda's typing registries, loaded at the first CUDA compile) only happens
with the numba-cuda package; Numba's built-in CUDA target does not overload ``row_stack``."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spike.compat.numba_cuda import restore_row_stack

ROOT = Path(__file__).resolve().parents[2]
HAS_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None

# numpy >= 2.5 imitated: no row_stack; then load the CUDA target's typing registries, as its first compile does
_WITHOUT_ROW_STACK = (
    "import numpy as np\n"
    "if hasattr(np, 'row_stack'):\n"
    "    del np.row_stack\n"
    "    np.__all__ = [n for n in np.__all__ if n != 'row_stack']\n"  # as numpy 2.5 (scipy lists __all__)
)
_FIRST_COMPILE = "from numba.cuda.target import CUDATypingContext\nCUDATypingContext().refresh()\n"


def _python(code: str, simulate: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if simulate:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_missing_row_stack_comes_back_as_vstack(monkeypatch):
    monkeypatch.delattr(np, "row_stack", raising=False)
    assert not hasattr(np, "row_stack")
    assert restore_row_stack() is True
    rows = ([1, 2], [3, 4.5])
    got = np.row_stack(rows, dtype=np.float32)
    want = np.vstack(rows, dtype=np.float32)
    assert got.dtype == want.dtype == np.float32 and np.array_equal(got, want)
    assert np.array_equal(np.row_stack((np.arange(3), np.arange(3, 6))), [[0, 1, 2], [3, 4, 5]])
    assert restore_row_stack() is False  # now present: left alone


@pytest.mark.skipif(not hasattr(np, "row_stack"), reason="numpy >= 2.5: no row_stack of its own")
def test_numpys_own_row_stack_is_left_alone():
    own = np.row_stack
    assert restore_row_stack() is False
    assert np.row_stack is own


def test_the_cuda_modules_restore_it_before_numba_cuda():
    """The cuda backend's kernels and the CUDA training kernels bind ``numba.cuda`` through the fix
    (simulator: no GPU needed); a real GPU's first compile then finds ``np.row_stack``."""
    code = _WITHOUT_ROW_STACK + (
        "import spike.kernels.lif_cuda as lif_cuda\n"
        "assert not hasattr(np, 'row_stack')\n"
        "assert lif_cuda.available()\n"
        "assert hasattr(np, 'row_stack')\n"
        "del np.row_stack\n"
        "import spike.backends.cuda.kernels\n"
        "assert np.row_stack((np.ones(2), np.zeros(2))).shape == (2, 2)\n"
        "print('OK')\n"
    )
    p = _python(code, simulate=True)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-2000:]


def test_the_first_compile_finds_row_stack():
    p = _python(_WITHOUT_ROW_STACK + "from spike.compat.numba_cuda import numba_cuda\nnumba_cuda()\n"
                + _FIRST_COMPILE + "print('OK')\n", simulate=False)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-2000:]


@pytest.mark.skipif(not HAS_NUMBA_CUDA, reason="the failure needs the numba-cuda package (the GPU machine's target)")
def test_without_the_fix_numba_cuda_fails_on_a_numpy_without_row_stack():
    """The control: numba-cuda's first compile does need ``np.row_stack``."""
    p = _python(_WITHOUT_ROW_STACK + _FIRST_COMPILE, simulate=False)
    assert p.returncode != 0 and "row_stack" in p.stderr
