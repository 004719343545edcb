"""Runs programs with generated sources (``Bernoulli``), population ``bias`` and ``v_init`` on the
"cuda" and "numba" backends and checks that every output, probe, membrane and operation count
agree exactly, in float32 (arbitrary float weights: the same order of operations) and in Loihi
fixed point; a program without inputs, and one with an input besides its sources.

Run by ``tests/backends/test_sources_and_bias.py`` in a subprocess with ``NUMBA_ENABLE_CUDASIM=1``
(Numba's CUDA simulator) or on a real GPU:

    NUMBA_ENABLE_CUDASIM=1 python tests/backends/sources_cuda_check.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from spike.backends import run
from spike.compiler.pipeline import FIXED_PIPELINE, run_passes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared builders
from helpers.programs import FLOATS, spikes  # noqa: E402
from helpers.sources import generated, naive_bernoulli  # noqa: E402

PROBES = ["src", "p", "q", "r", "p.v", "q.v", "r.v"]


def run_on(backend: str, program, x, steps: int, batch: int, probes: list[str]):
    """One run of a checked program: its input ``x``, or ``steps`` and ``batch`` when it has none;
    ``p``'s spikes recorded as counts and lists."""
    kw = dict(probes=probes, record={"p": ("counts", "spikes")})
    if x is not None:
        return run(program, x, backend=backend, **kw)
    return run(program, backend=backend, steps=steps, batch=batch, **kw)


def programs() -> list[tuple]:
    """The checked programs, ``(name, program, x or None, steps, batch, probes)``: float32 with an
    input besides the generated source, and fixed point without inputs."""
    rng = np.random.default_rng(0)  # small: every simulated GPU thread is a Python thread
    prog = generated(rng, FLOATS, with_input=True, n_src=16, n=12)
    x = spikes(rng, 8, 2, (6,), 0.3)
    fixed = run_passes(generated(rng, n_src=16, n=12), FIXED_PIPELINE)
    return [("float32, generated and given spikes", prog, x, 8, 2, PROBES),
            ("fixed point, no inputs", fixed, None, 10, 2, PROBES + ["p.u"])]


def check(name: str, program, x, steps: int, batch: int, probes: list[str]) -> None:
    res = {be: run_on(be, program, x, steps, batch, probes) for be in ("numba", "cuda")}
    nb, cu = res["numba"], res["cuda"]
    for k in nb.outputs:
        np.testing.assert_array_equal(cu.outputs[k], nb.outputs[k], err_msg=f"{name}: output {k}")
    for k in probes:
        np.testing.assert_array_equal(cu.probes[k], nb.probes[k], err_msg=f"{name}: probe {k}")
    np.testing.assert_array_equal(cu.spike_counts["p"], nb.spike_counts["p"], err_msg=name)
    np.testing.assert_array_equal(cu.spike_lists["p"].dense(), nb.spike_lists["p"].dense(), err_msg=name)
    for node, counts in nb.ops.per_node.items():
        for key, value in counts.items():
            np.testing.assert_array_equal(cu.ops.per_node[node][key], value, err_msg=f"{name}: {node} {key}")
    src = program.node("src")
    np.testing.assert_array_equal(cu.probes["src"] != 0, naive_bernoulli(src.p, src.seed, steps, batch, src.size),
                                  err_msg=f"{name}: the hash")
    assert nb.ops.total()["spikes"] > 0, name
    print(f"{name}: equal ({nb.ops.total()['spikes']:.0f} spikes per sample)")


def main() -> None:
    for case in programs():
        check(*case)
    print("all equal")


if __name__ == "__main__":
    main()
