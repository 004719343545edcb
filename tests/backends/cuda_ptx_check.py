"""Compiles every CUDA kernel that the cuda backend and the CUDA training kernels launch, for a real
GPU target (sm_90 PTX: Numba typing, lowering and NVVM), on a machine without a GPU.

The CUDA simulator runs our kernels as Python, so it never types them for the GPU; this check does,
before a GPU session spends its time on it. It needs numba-cuda and NVVM (``make cuda-compile-check``
builds that environment: numba-cuda, nvidia-cuda-nvcc-cu12, numpy 2). Here a launch compiles the
kernel for the argument types it is given (``numba.cuda.compile_ptx``) and runs nothing: device
arrays are numpy arrays of zeros, so only the kernels that the host code launches on zero data are
reached, and the results are not checked (``cuda_sim_check.py`` and ``bash benchmarks/gpu_check.sh``
do that). The programs are ``cuda_sim_check.py``'s (those with host ops need torch on the GPU and
are skipped), and ``sources_cuda_check.py``'s (generated sources, bias, ``v_init``, recorded spike
lists); the LIF and WKV training kernels go through their numpy entry points.

    python tests/backends/cuda_ptx_check.py [--only NAME ...]     # exit 1 when a kernel fails
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from spike.compat.numba_cuda import numba_cuda

cuda = numba_cuda()
if getattr(cuda, "compile_ptx", None) is None:  # the simulator, or Numba's built-in target without NVVM
    sys.exit("cuda_ptx_check: needs numba-cuda's real target (NUMBA_ENABLE_CUDASIM unset); make cuda-compile-check")

import numba.cuda.dispatcher as cuda_dispatcher  # noqa: E402  (after numba_cuda(): numpy's compat first)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cuda_sim_check, sources_cuda_check
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared builders

CC = (9, 0)  # Hopper (H100, H200): the GPU machines' chips
COMPILED: dict[tuple, float] = {}
FAILED: dict[tuple, str] = {}


class HostArray(np.ndarray):
    """A "device array" on the host: the methods the backend calls on Numba's device arrays."""

    def copy_to_host(self, ary: Any = None, stream: Any = 0) -> np.ndarray:
        return np.array(self)

    def copy_to_device(self, ary: Any, stream: Any = 0) -> None:
        np.copyto(np.asarray(self), np.asarray(ary), casting="unsafe")


def compile_launch(self: Any, args: tuple, launch_config: Any) -> None:
    """``CUDADispatcher.call`` replaced: compile this kernel for ``args``' types, launch nothing."""
    sig = tuple(self.typeof_pyval(a) for a in args)
    key = (id(self), self.py_func.__module__, self.py_func.__qualname__, sig)
    if key in COMPILED or key in FAILED:
        return
    t = time.perf_counter()
    try:
        cuda.compile_ptx(self.py_func, sig, cc=CC, fastmath=self.targetoptions.get("fastmath", False))
        COMPILED[key] = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 - every failure is reported
        FAILED[key] = f"{type(e).__name__}: {e}"


def offline() -> None:
    """No driver: device arrays on the host, launches compile only, device functions for ``CC``."""
    cuda.to_device = lambda a, stream=0, copy=True, to=None: np.array(a).view(HostArray)
    cuda.device_array = lambda shape, dtype=np.float64, strides=None, order="C", stream=0: (
        np.zeros(shape, dtype).view(HostArray))
    cuda.device_array_like = lambda a, stream=0: np.zeros_like(a).view(HostArray)
    cuda.is_available = lambda: True
    cuda.synchronize = lambda: None
    device = SimpleNamespace(compute_capability=CC, name=f"sm_{CC[0]}{CC[1]} (offline)")
    cuda_dispatcher.get_current_device = lambda: device  # device functions compile for this cc
    cuda_dispatcher.CUDADispatcher.call = compile_launch


def source_programs() -> None:
    """``sources_cuda_check.py``'s programs (Bernoulli sources, in float32 with an input besides
    and in fixed point without inputs), run as that check runs them."""
    import sources_cuda_check

    for _, program, x, steps, batch, probes in sources_cuda_check.programs():
        sources_cuda_check.run_on("cuda", program, x, steps, batch, probes)


def training_kernels() -> None:
    """The LIF forward/backward (both dtypes, with and without a synaptic current) and WKV kernels."""
    from spike.kernels import lif_cuda, wkv_cuda

    rng = np.random.default_rng(0)
    T, M = 19, 9
    for dt in (np.float64, np.float32):
        x = rng.random((T, M)).astype(dt)
        beta, thr, alpha = np.full(M, 0.9, dt), np.ones(M, dt), np.full(M, 0.5, dt)
        gs, gv = rng.standard_normal((T, M)).astype(dt), rng.standard_normal((T, M)).astype(dt)
        for al, kw in ((None, dict(reset="subtract", reset_delay=True, fire_ge=False, surrogate="atan",
                                   detach_reset=True)),
                       (alpha, dict(reset="zero", reset_delay=False, fire_ge=True, surrogate="sigmoid",
                                    detach_reset=False))):
            lif_cuda.forward_numpy(x, beta, thr, al, reset=kw["reset"], reset_delay=kw["reset_delay"],
                                   fire_ge=kw["fire_ge"])
            lif_cuda.backward_numpy(x, beta, thr, al, gs, gv, **kw)
    k, v, gy = (rng.standard_normal((9, 2, 3)) for _ in range(3))
    w, u = -np.exp(rng.standard_normal(3)), rng.standard_normal(3)
    wkv_cuda.forward_numpy(w, u, k, v)
    wkv_cuda.backward_numpy(w, u, k, v, gy)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="only these cuda_sim_check cases (and no training kernels)")
    args = ap.parse_args(argv)
    offline()
    import cuda_sim_check
    from spike.backends import run

    cases = dict(cuda_sim_check.CASES, **cuda_sim_check.LARGE)
    if args.only:
        cases = {k: v for k, v in cases.items() if k in args.only}
    for k, (name, make) in enumerate(cases.items()):
        program, x = make(np.random.default_rng(100 + k))[:2]
        try:
            run(program, x, backend="cuda")
            print(f"  {name:16s} {len(COMPILED)} kernels compiled so far", flush=True)
        except AssertionError as e:  # host ops: torch without CUDA here
            if "CUDA" not in str(e):
                raise
            print(f"  {name:16s} skipped ({e})", flush=True)
    if not args.only:
        source_programs()
        print(f"  {'sources':16s} {len(COMPILED)} kernels compiled so far", flush=True)
        training_kernels()
        print(f"  {'lif, wkv':16s} {len(COMPILED)} kernels compiled so far", flush=True)
    for key, why in FAILED.items():
        print(f"FAILED {key[1]}.{key[2]} {key[3]}: {why[:2000]}")
    print(f"{len(COMPILED)} kernel signatures compiled for sm_{CC[0]}{CC[1]} in {sum(COMPILED.values()):.0f} s, "
          f"{len(FAILED)} failed")
    return 1 if FAILED or not COMPILED else 0


if __name__ == "__main__":
    sys.exit(main())
