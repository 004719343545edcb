"""The cuda backend: bit-identical outputs, membranes and operation counts to the numba backend,
through Numba's CUDA simulator (any machine) and on a real GPU (``-m gpu``); a clear error where
neither is available.

Numba chooses between the simulator and the real CUDA target when it is first imported, so every
test runs in a subprocess with its own environment (``tests/backends/cuda_sim_check.py`` does the work).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

CHECK = Path(__file__).with_name("cuda_sim_check.py")


def _env(simulate: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "SPIKE_CUDA_TPB")}
    if simulate:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return env


def _python(code_or_args: list[str], simulate: bool, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *code_or_args], env=_env(simulate), cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )


def _gpu_present() -> bool:
    """A real CUDA GPU usable by numba (asked in a subprocess: no simulator there)."""
    try:
        p = _python(["-c", "from numba import cuda; print(bool(cuda.is_available()))"], False, 120)
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0 and p.stdout.strip().endswith("True")


def _report(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout[-6000:]}\n--- stderr\n{p.stderr[-6000:]}"


#: the programs of ``cuda_sim_check.py`` that the default suite runs through the simulator: every
#: kernel family once (dense with bias and delay, conv + max pooling, recurrent delay 1, residual +
#: host add, every neuron variant, sparse CSR, Loihi fixed point, FTWT gates, SpikeGPT, max pooling
#: of currents, biases behind delays, a program compiled for loihi2); the slow test runs the rest
SUITE_CASES = ("mlp", "conv_max", "recurrent", "residual", "neurons", "sparse", "fixed_conv", "ftwt",
               "spikegpt", "maxpool_currents", "bias_delays", "loihi_mlp_fixed")


@pytest.mark.late
def test_simulator_matches_numba_bit_for_bit():
    """One program per kernel family (``SUITE_CASES``) through the CUDA simulator: identical to numba,
    outputs, membranes and counts, and to the generic program's outputs."""
    p = _python([str(CHECK), "--only", *SUITE_CASES], simulate=True, timeout=600)
    assert p.returncode == 0 and "ALL EQUAL" in p.stdout, _report(p)
    assert all(f"  {name:12s} OK" in p.stdout for name in SUITE_CASES), _report(p)


@pytest.mark.slow
def test_simulator_matches_numba_on_the_other_programs():
    """The rest of ``cuda_sim_check.py``: real-valued and mixed input, conv + avg/sum pooling, every
    neuron form, fixed-point recurrent programs, max pooling of currents on loihi2,
    latency-compensated programs (``compiler/delays.py``: fixed point, gated convs; MLPs and a
    residual CNN compiled for loihi2, with delay-2 shortcuts). ``benchmarks/gpu_check.sh`` runs it."""
    p = _python([str(CHECK), "--skip", *SUITE_CASES], simulate=True, timeout=600)
    assert p.returncode == 0 and "ALL EQUAL" in p.stdout, _report(p)


@pytest.mark.gpu
def test_gpu_matches_numba_bit_for_bit():
    """The same programs plus ones wider than a thread block, on a real GPU (no simulator)."""
    if not _gpu_present():
        pytest.skip("no CUDA GPU usable by numba")
    p = _python([str(CHECK), "--large"], simulate=False, timeout=600)
    assert p.returncode == 0 and "ALL EQUAL" in p.stdout and "simulator=False" in p.stdout, _report(p)


def test_no_gpu_and_no_simulator_is_a_clear_error():
    if _gpu_present():
        pytest.skip("a CUDA GPU is present")
    code = """
import numpy as np
from spike.backends import BackendError, run
from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder
b = ProgramBuilder()
b.add("in", Input(shape=(3,)))
b.add("fc", Dense(shape=(2,), in_shape=(3,), weight=np.ones((2, 3), np.float32)), "in")
b.add("p", Population(shape=(2,)), "fc")
b.add("out", Output(shape=(2,)), "p")
try:
    run(b.build(), np.ones((2, 1, 3), np.float32), backend="cuda")
except BackendError as e:
    print("BackendError:", e)
"""
    p = _python(["-c", code], simulate=False, timeout=120)
    assert p.returncode == 0, _report(p)
    assert "BackendError: backend 'cuda' is not usable here" in p.stdout, _report(p)
    assert "no CUDA GPU found and NUMBA_ENABLE_CUDASIM is not set" in p.stdout, _report(p)


def test_registered_without_importing_numba_cuda():
    """The registry knows "cuda"; importing the backend module needs neither a GPU nor the
    simulator (numba.cuda is imported lazily)."""
    code = (
        "import sys\n"
        "from spike.backends.registry import backend_names, get_backend\n"
        "assert 'cuda' in backend_names(), backend_names()\n"
        "be = get_backend('cuda')\n"
        "assert 'numba.cuda' not in sys.modules, 'numba.cuda imported eagerly'\n"
        "assert be.precisions and 'float32' in be.precisions\n"
        "print('ok', sorted(be.kernels))\n"
    )
    p = _python(["-c", code], simulate=False, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("ok"), _report(p)
