"""Generated spike sources (``Bernoulli``), a population's own ``bias`` and ``v_init``, runs without
inputs, records (counts, spike lists) and chunked runs, on every backend.

- the Bernoulli hash: equal to a naive Python loop written from the definition, bit for bit; spike
  rates within tolerance of p; no correlation between neighbouring steps or neurons;
- the same spikes, outputs, membranes and counts on numba, torch and lava (float32 on dyadic values,
  and Loihi fixed point after ``quantize``), cuda through Numba's simulator
  (``sources_cuda_check.py``, in a subprocess);
- counts and spike lists from a run equal what the dense record says; a chunked numba run equals
  the run over all steps bit for bit;
- clear errors: a run without inputs and without ``steps``/``batch``, bad records, ``v_init`` with a
  latency.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spike import semantics
from spike.backends import engine, run
from spike.backends.recording import Recorder
from spike.compiler.ir.nodes import Bernoulli, Dense, Output, Population
from spike.compiler.ir.program import ProgramBuilder, ProgramError, rebuild_graph
from spike.compiler.passes.delays import target_delays
from spike.compiler.pipeline import FIXED_PIPELINE, run_passes

from helpers import ROOT
from helpers.lava import needs_lava
from helpers.programs import DYADIC, spikes
from helpers.sources import generated, lif, naive_bernoulli

PROBES = ["src", "p", "q", "r", "p.v", "q.v", "r.v"]


def _source(p, seed=5, n=None) -> ProgramBuilder:
    n = n or np.size(p)
    b = ProgramBuilder()
    b.add("src", Bernoulli(shape=(n,), p=np.asarray(p, np.float64), seed=seed))
    b.add("out", Output(shape=(n,)), "src")
    return b


def _equal_results(a, b, what: str) -> None:
    assert set(a.outputs) == set(b.outputs) and set(a.probes) == set(b.probes), what
    for k in a.outputs:
        np.testing.assert_array_equal(a.outputs[k], b.outputs[k], err_msg=f"{what}: output {k}")
    for k in a.probes:
        np.testing.assert_array_equal(a.probes[k], b.probes[k], err_msg=f"{what}: probe {k}")
    assert list(a.ops.per_node) == list(b.ops.per_node), what
    for name, counts in a.ops.per_node.items():
        for key, value in counts.items():
            np.testing.assert_array_equal(b.ops.per_node[name][key], value, err_msg=f"{what}: {name} {key}")


# ---------------------------------------------------------------- the hash
def test_hash_equals_the_naive_loop_bit_for_bit():
    rng = np.random.default_rng(0)
    p = np.concatenate([[0.0, 1.0, 0.5, 2.0**-32, 1 - 2.0**-33], rng.random(18)])
    for seed in (0, 7, 2**32 + 5, 2**63 - 1):
        want = naive_bernoulli(p, seed, 17, 3, p.size)
        np.testing.assert_array_equal(semantics.bernoulli_spikes(p, p.size, seed, 17, 3), want)
        for backend in ("numba", "torch"):
            got = run(_source(p, seed).build(), backend=backend, steps=17, batch=3).output
            np.testing.assert_array_equal(got != 0, want, err_msg=f"{backend} seed {seed}")
    # silent before the node's latency: step0 < 0
    np.testing.assert_array_equal(semantics.bernoulli_spikes(p, p.size, 3, 9, 2, step0=-4),
                                  naive_bernoulli(p, 3, 9, 2, p.size, step0=-4))


def test_rates_and_independence():
    n, T, B = 2000, 200, 2
    x = run(_source(0.1, seed=11, n=n).build(), steps=T, batch=B).output != 0
    rate = x.mean()
    sd = np.sqrt(0.1 * 0.9 / x.size)
    assert abs(rate - 0.1) < 5 * sd, rate
    xf = x.astype(np.float64) - rate
    for a, b in ((xf[1:], xf[:-1]), (xf[:, :, 1:], xf[:, :, :-1]), (xf[:, 1], xf[:, 0])):  # steps, neurons, samples
        corr = (a * b).mean() / xf.var()
        assert abs(corr) < 0.01, corr
    p = np.linspace(0.0, 1.0, 41)
    y = run(_source(p, seed=3).build(), steps=2000, batch=2).output != 0
    per_neuron = y.mean(axis=(0, 1))
    tol = 5 * np.sqrt(np.maximum(p * (1 - p), 1e-12) / 4000)
    assert np.all(np.abs(per_neuron - p) <= tol), per_neuron - p
    assert per_neuron[0] == 0.0 and per_neuron[-1] == 1.0
    other = run(_source(p, seed=4).build(), steps=2000, batch=2).output != 0
    assert not np.array_equal(other, y)  # another seed, other spikes


# ---------------------------------------------------------------- backends agree
def test_numba_and_torch_agree_with_bias_v_init_and_sources():
    rng = np.random.default_rng(1)
    prog = generated(rng, with_input=True)
    x = spikes(rng, 20, 3, (6,), 0.3)
    res = {be: run(prog, x, backend=be, probes=PROBES) for be in ("numba", "torch")}
    _equal_results(res["numba"], res["torch"], "numba vs torch")
    np.testing.assert_array_equal(res["numba"].probes["src"] != 0,
                                  naive_bernoulli(prog.node("src").p, prog.node("src").seed, 20, 3, 24))
    v = res["numba"].probes["p.v"]
    assert res["numba"].ops.total()["spikes"] > 0 and (res["numba"].probes["r"] != 0).any()
    # v_init is where the membrane starts: with no input and no bias, the first step only decays it
    quiet = prog.node("p").replace(bias=None)
    b = ProgramBuilder()
    b.add("p", quiet)
    one = run(b.build(), backend="numba", steps=1, batch=1, probes=["p.v"]).probes["p.v"][0, 0]
    start = np.float32(0.5) * quiet.v_init
    np.testing.assert_array_equal(one, np.where(start > quiet.threshold, 0, start))
    assert v.shape == (20, 3, 16)


def test_bias_is_added_after_the_charge_from_the_onset():
    """v' = beta*v + gain*I + bias, bias not scaled by gain; a population with latency applies
    its bias from its latency on (none before)."""
    b = ProgramBuilder()
    b.add("p", Population(shape=(2,), model="li", beta=np.array(0.5, np.float32), gain=4.0, bias=np.array([0.25, -1.0], np.float32),
                          v_init=np.array([1.0, 2.0], np.float32)))
    prog = b.build()
    v = run(prog, steps=3, batch=1, probes=["p.v"]).probes["p.v"][:, 0]
    np.testing.assert_array_equal(v, [[0.75, 0.0], [0.625, -1.0], [0.5625, -1.5]])
    late = prog.with_graph(prog.graph, latency={"p": 2})
    with pytest.raises(ProgramError, match="v_init"):
        run(late, steps=3, batch=1)
    rest = late.with_graph(rebuild_graph(late, nodes={"p": prog.node("p").replace(v_init=None)}))
    for backend in ("numba", "torch"):
        v = run(rest, backend=backend, steps=3, batch=1, probes=["p.v"]).probes["p.v"][:, 0]
        np.testing.assert_array_equal(v, [[0.25, -1.0], [0.375, -1.5], [0.4375, -1.75]], err_msg=backend)


@needs_lava
def test_lava_float_and_fixed_equal_numba():
    rng = np.random.default_rng(2)
    prog = generated(rng)
    T, B = 10, 2  # float: dyadic sums stay exact in float32 over these steps
    res = {be: run(prog, backend=be, steps=T, batch=B, probes=PROBES) for be in ("numba", "lava")}
    _equal_results(res["numba"], res["lava"], "float numba vs lava")
    fixed = run_passes(prog, FIXED_PIPELINE)
    assert fixed.node("p").bias is None and fixed.node("p").v_init.dtype == np.int32
    assert np.any(fixed.node("p").bias_mant != 0) and np.any(fixed.node("p").v_init != 0)
    probes = PROBES + ["p.u"]
    res = {be: run(fixed, backend=be, steps=30, batch=B, probes=probes) for be in ("numba", "torch", "lava")}
    _equal_results(res["numba"], res["torch"], "fixed numba vs torch")
    _equal_results(res["numba"], res["lava"], "fixed numba vs lava")
    assert res["numba"].ops.total()["spikes"] > 0


def _cuda_check(simulate: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "SPIKE_CUDA_TPB")}
    if simulate:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return subprocess.run([sys.executable, str(Path(__file__).with_name("sources_cuda_check.py"))], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def test_cuda_simulator_equals_numba():
    p = _cuda_check(simulate=True)
    assert p.returncode == 0 and "all equal" in p.stdout, f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}"


@pytest.mark.gpu
def test_cuda_gpu_equals_numba():
    p = _cuda_check(simulate=False)
    if "no CUDA GPU found" in p.stderr:
        pytest.skip("no CUDA GPU usable by numba")
    assert p.returncode == 0 and "all equal" in p.stdout, f"{p.stdout[-4000:]}\n{p.stderr[-4000:]}"


# ---------------------------------------------------------------- records and chunks
def test_counts_and_spike_lists_equal_the_dense_record(monkeypatch):
    rng = np.random.default_rng(3)
    prog = generated(rng)
    dense = run(prog, steps=60, batch=2, probes=["p", "q", "src"])
    record = {"p": "counts", "q": ("counts", "spikes", "dense"), "src": "spikes", "out": "counts"}
    for chunked in (False, True):
        if chunked:  # chunks of 7 steps (history 2, the longest delay)
            monkeypatch.setattr(engine, "CHUNK_BYTES", 0)
            monkeypatch.setattr(engine, "CYCLIC_CHUNK_BYTES", 0)
            monkeypatch.setattr(engine, "MIN_CHUNK_STEPS", 7)
        got = run(prog, steps=60, batch=2, probes=["p.v"], record=record)
        assert (got.timing.get("chunk_steps") == 7) is chunked
        assert set(got.outputs) == {"out_r"} and set(got.probes) == {"q", "p.v"}  # "out" counted only
        assert set(got.spike_counts) == {"p", "q", "out"} and set(got.spike_lists) == {"q", "src"}
        for name in ("p", "q", "out"):
            want = (dense.probes[name if name != "out" else "p"] != 0).sum(axis=0)
            np.testing.assert_array_equal(got.spike_counts[name], want, err_msg=name)
            assert got.spike_counts[name].dtype == np.int64
        for name in ("q", "src"):
            sl = got.spike_lists[name]
            np.testing.assert_array_equal(sl.dense(), dense.probes[name] != 0, err_msg=name)
            np.testing.assert_array_equal(sl.counts(), (dense.probes[name] != 0).sum(axis=0))
            order = np.lexsort((sl.neurons, sl.samples, sl.times))
            assert np.array_equal(order, np.arange(len(sl)))  # sorted by step, sample, neuron
        np.testing.assert_array_equal(got.probes["q"], dense.probes["q"])
        assert list(got.ops.per_node) == list(dense.ops.per_node)
        for name, counts in dense.ops.per_node.items():
            for key, value in counts.items():
                np.testing.assert_array_equal(got.ops.per_node[name][key], value, err_msg=f"{name} {key}")
        assert got.ops.steps == 60


@pytest.mark.parametrize("chunked", [False, True])
def test_a_recorded_output_is_listed_by_its_population(monkeypatch, chunked):
    """Recording only an Output: the spikes come from its source population's own lists (no pass
    over a dense array: ``Recorder.add`` is never called) and equal the dense record."""
    prog = generated(np.random.default_rng(5))
    dense = run(prog, steps=40, batch=2, probes=["p", "r"])
    if chunked:
        for name, value in (("CHUNK_BYTES", 0), ("CYCLIC_CHUNK_BYTES", 0), ("MIN_CHUNK_STEPS", 9)):
            monkeypatch.setattr(engine, name, value)

    def no_dense_pass(*_args, **_kw):
        raise AssertionError("a recorded Output was read from its dense array")

    monkeypatch.setattr(Recorder, "add", no_dense_pass)
    got = run(prog, steps=40, batch=2, record={"out": ("counts", "spikes"), "out_r": "counts"})
    assert (got.timing.get("chunk_steps") == 9) is chunked and not got.outputs
    np.testing.assert_array_equal(got.spike_lists["out"].dense(), dense.probes["p"] != 0)
    np.testing.assert_array_equal(got.spike_counts["out"], (dense.probes["p"] != 0).sum(axis=0))
    np.testing.assert_array_equal(got.spike_counts["out_r"], (dense.probes["r"] != 0).sum(axis=0))


def test_chunked_runs_equal_whole_runs_with_latency(monkeypatch):
    """A fixed-point program compiled with the target's delays (latency, biases from their onsets,
    a Bernoulli source with a latency) and a recurrent float program: chunked = whole, bit for bit."""
    rng = np.random.default_rng(4)
    b = ProgramBuilder()
    b.add("src", Bernoulli(shape=(12,), p=np.array(0.3), seed=9))
    b.add("fc", Dense(shape=(10,), in_shape=(12,), weight=DYADIC.weights(rng, (10, 12), 1.0)), "src")
    b.add("p", lif(rng, 10, bias=np.array(0.125, np.float32)), "fc")
    b.add("rec", Dense(shape=(10,), in_shape=(10,), weight=DYADIC.weights(rng, (10, 10), 0.5), delay=1), "p")
    b.connect("rec", "p")
    b.add("fc2", Dense(shape=(5,), in_shape=(10,), weight=DYADIC.weights(rng, (5, 10), 1.0), delay=3), "p")
    b.add("q", lif(rng, 5, bias=np.array(-0.0625, np.float32)), "fc2")
    b.add("out", Output(shape=(5,)), "q")
    prog = b.build()
    fixed = target_delays(run_passes(prog, FIXED_PIPELINE), delay=1)
    assert fixed.total_latency > 0
    generic = run(run_passes(prog, FIXED_PIPELINE), steps=50, batch=2, probes=["p", "q"])
    for program in (prog, fixed):
        whole = run(program, steps=50, batch=2, probes=["p", "q", "p.v", "src"], record={"q": "spikes"})
        monkeypatch.setattr(engine, "CHUNK_BYTES", 0)
        monkeypatch.setattr(engine, "CYCLIC_CHUNK_BYTES", 0)
        monkeypatch.setattr(engine, "MIN_CHUNK_STEPS", 6)
        part = run(program, steps=50, batch=2, probes=["p", "q", "p.v", "src"], record={"q": "spikes"})
        monkeypatch.undo()
        assert part.timing["chunk_steps"] == 6
        _equal_results(whole, part, "chunked")
        np.testing.assert_array_equal(part.spike_lists["q"].dense(), whole.probes["q"] != 0)
    # the target's delays change nothing the network computes (aligned outputs), the source included
    delayed = run(fixed, steps=50, batch=2, probes=["p", "q"])
    for name in ("p", "q"):
        np.testing.assert_array_equal(delayed.probes[name], generic.probes[name], err_msg=name)
    assert fixed.latency_of("p") == 1 and fixed.latency_of("q") == 0  # fc2's delay 3 absorbs the target's
    start = prog.node("p").replace(v_init=np.array(0.25, np.float32))
    with_v_init = prog.with_graph(rebuild_graph(prog, nodes={"p": start}))
    with pytest.raises(ProgramError, match="v_init"):  # p trails by a step: its start would leak
        run(target_delays(run_passes(with_v_init, FIXED_PIPELINE), delay=1), steps=5, batch=1)


# ---------------------------------------------------------------- errors
def test_errors_are_clear():
    prog = _source(0.5).build()
    with pytest.raises(ValueError, match="steps=T and batch=B"):
        run(prog)
    with pytest.raises(ValueError, match="steps=T and batch=B"):
        run(prog, steps=3)
    with pytest.raises(ValueError, match="takes no inputs"):
        run(prog, np.zeros((3, 1, 1)), steps=3, batch=1)
    with pytest.raises(ValueError, match="steps must be a whole number"):
        run(prog, steps=0, batch=1)
    with pytest.raises(ValueError, match="no node 'nope'"):
        run(prog, steps=2, batch=1, record={"nope": "counts"})
    with pytest.raises(ValueError, match="expected one or more of"):
        run(prog, steps=2, batch=1, record={"src": "histogram"})
    rng = np.random.default_rng(5)
    with_input = generated(rng, with_input=True)
    x = spikes(rng, 4, 2, (6,))
    with pytest.raises(ValueError, match="disagrees with the inputs"):
        run(with_input, x, steps=5)
    with pytest.raises(ValueError, match="missing inputs"):
        run(with_input, steps=4, batch=2)
    b = ProgramBuilder()
    b.add("src", Bernoulli(shape=(3,), p=np.array(0.5)))
    b.add("fc", Dense(shape=(2,), in_shape=(3,), weight=np.ones((2, 3), np.float32)), "src")
    b.add("li", Population(shape=(2,), model="li", beta=np.array(0.5, np.float32)), "fc")
    with pytest.raises(ValueError, match="'li'.*real signal"):
        run(b.build(), steps=2, batch=1, record={"li": "counts"})
