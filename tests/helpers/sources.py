"""Programs with generated spike sources (``Bernoulli``) and populations with their own ``bias`` and
``v_init``, for the backend tests (``tests/backends/test_sources_and_bias.py``) and the cuda check
(``tests/backends/sources_cuda_check.py``); and the naive oracle of the spike hash."""
from __future__ import annotations

import numpy as np

from spike.compiler.ir.nodes import Bernoulli, Dense, Identity, Input, Output, Population, Sparse
from spike.compiler.ir.program import Program, ProgramBuilder

from helpers.programs import DYADIC, csr

_M = 0xFFFFFFFF


def _mix(x: int) -> int:
    """lowbias32 on Python ints: the textbook form (whole products, reduced mod 2^32)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _M
    x ^= x >> 15
    x = (x * 0x846CA68B) & _M
    return x ^ (x >> 16)


def _absorb(k: int, v: int) -> int:
    return _mix(((k ^ v) + 0x9E3779B9) & _M)


def naive_bernoulli(p, seed: int, steps: int, batch: int, n: int, step0: int = 0) -> np.ndarray:
    """The spikes of a ``Bernoulli`` node by a plain Python loop over (step, sample, neuron), written
    from the definition (``spike.semantics``): ``[steps, batch, n]`` bool."""
    p = np.broadcast_to(np.asarray(p, np.float64).reshape(-1), (n,))
    thr = [int(np.floor(float(q) * 2.0**32)) for q in p]
    out = np.zeros((steps, batch, n), bool)
    for t in range(steps):
        s = t + step0
        if s < 0:
            continue
        for b in range(batch):
            key = _absorb(_absorb(_absorb(_mix(((seed & _M) + 0x9E3779B9) & _M), seed >> 32), b), s)
            for k in range(n):
                out[t, b, k] = _mix(_absorb(key, k)) < thr[k]
    return out


def lif(rng: np.random.Generator, n: int, beta: float | None = None, **kw) -> Population:
    """A population Lava's LIF computes (reset to zero in the step it fires, ``v > thr``), dyadic
    per-neuron threshold; ``kw``: further fields (``bias``, ``v_init``, ...)."""
    b = np.full(n, 0.5, np.float32) if beta is None else np.full(n, beta, np.float32)
    thr = (rng.integers(48, 96, n) / 64).astype(np.float32)
    return Population(shape=(n,), beta=b, threshold=thr, reset="zero", reset_delay=False, **kw)


def dyadic(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    """``n`` multiples of 1/64 in ``[lo, hi]`` (float32)."""
    return (rng.integers(int(lo * 64), int(hi * 64) + 1, n) / 64).astype(np.float32)


def generated(rng: np.random.Generator, num=DYADIC, with_input: bool = False, n_src: int = 24, n: int = 16,
              seed: int = 2**40 + 17) -> Program:
    """A ``Bernoulli`` source (per-neuron p, 0 and 1 included) -> dense (delay 1) -> ``p`` (bias,
    v_init); ``p`` -> sparse (delay 2) -> ``q`` (bias, v_init, beta 1); a bias-only cuba_lif ``r``
    fed by ``q`` through an identity (delay 1). ``with_input``: an ``Input`` also feeds ``p``
    (through a dense of delay 1). Lava-ready (reset zero in the step, ``>``, delays >= 1)."""
    b = ProgramBuilder()
    p = np.concatenate([[0.0, 1.0], rng.uniform(0.05, 0.6, n_src - 2)])
    b.add("src", Bernoulli(shape=(n_src,), p=p, seed=seed))
    b.add("fc", Dense(shape=(n,), in_shape=(n_src,), weight=num.weights(rng, (n, n_src), 0.8), delay=1), "src")
    srcs = ["fc"]
    if with_input:
        b.add("in", Input(shape=(6,)))
        b.add("fc_in", Dense(shape=(n,), in_shape=(6,), weight=num.weights(rng, (n, 6), 0.8), delay=1), "in")
        srcs.append("fc_in")
    b.add("p", lif(rng, n, bias=dyadic(rng, n, -0.125, 0.25), v_init=dyadic(rng, n, -0.5, 0.9)), srcs)
    w = num.weights(rng, (8, n), 1.0) * (rng.random((8, n)) < 0.5)
    b.add("sp", Sparse(shape=(8,), in_shape=(n,), **csr(w), delay=2), "p")
    b.add("q", lif(rng, 8, beta=1.0, bias=np.array(0.0625, np.float32), v_init=dyadic(rng, 8, 0.0, 0.5)), "sp")
    b.add("id", Identity(shape=(8,), in_shape=(8,), scale=0.5, delay=1), "q")
    b.add("r", Population(shape=(8,), model="cuba_lif", beta=np.full(8, 0.5, np.float32),
                          alpha=np.full(8, 0.5, np.float32), threshold=np.ones(8, np.float32), reset="zero",
                          reset_delay=False, bias=dyadic(rng, 8, 0.375, 0.625), v_init=np.array(0.25, np.float32)), "id")
    b.add("out", Output(shape=(n,)), "p")
    b.add("out_r", Output(shape=(8,)), "r")
    return b.build({"precision": "float32"})
