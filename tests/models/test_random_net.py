"""``spike.models.random_net``: random connectivity (exact fan-out and fan-in, pair probability within
tolerance, no autapses or multapses unless allowed), seeding (same seed, same network; building
twice; a later connection leaves earlier ones alone), weights and delays (constants, per-synapse
arrays, callables; one projection per delay), the exported (pre, post, weight, delay) arrays (a
network rebuilt from them spikes the same), ``feed_forward`` and ``brunel``, and what ``simulate``
records (counts equal to the spike lists and to the dense record; numba equal to torch)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from spike.compiler.io.hdf5 import assert_programs_equal, programs_equal
from spike.compiler.ir.nodes import Bernoulli, Dense, Population, Sparse
from spike.compiler.ir.program import ProgramBuilder
from spike.models.random_net import (
    Network, beta_from_tau, brunel, feed_forward, fixed_fan_in, fixed_fan_out, one_to_one, probability, rate_to_p,
    simulate, synapse_count, synapses,
)

from helpers import ROOT


def _net(rule, n_pre=300, n_post=200, seed=0, same=False, **kw):
    net = Network(seed=seed)
    net.poisson("src", n_pre, 0.1)
    net.population("a", n_post)
    net.connect("a" if same else "src", "a", rule, **kw)
    return net


def _syn(rule, **kw):
    return next(iter(synapses(_net(rule, **kw).build()).values()))


# ---------------------------------------------------------------- connectivity
def test_fixed_fan_out_is_exact():
    s = _syn(fixed_fan_out(17))
    assert len(s) == 300 * 17 == synapse_count(fixed_fan_out(17), 300, 200)
    np.testing.assert_array_equal(np.bincount(s.pre, minlength=300), 17)
    assert len(set(zip(s.pre.tolist(), s.post.tolist()))) == len(s)  # no multapses
    indeg = np.bincount(s.post, minlength=200)
    assert abs(indeg.mean() - 300 * 17 / 200) < 1e-9 and indeg.std() < 2 * np.sqrt(300 * 17 / 200)  # spread evenly
    same = _syn(fixed_fan_out(199), n_post=200, same=True)  # all but itself
    assert not np.any(same.pre == same.post)
    np.testing.assert_array_equal(np.bincount(same.pre, minlength=200), 199)


def test_fixed_fan_in_is_exact():
    s = _syn(fixed_fan_in(23), same=True)
    np.testing.assert_array_equal(np.bincount(s.post, minlength=200), 23)
    assert not np.any(s.pre == s.post)
    assert len(set(zip(s.pre.tolist(), s.post.tolist()))) == len(s)
    order = np.lexsort((s.post, s.pre))
    np.testing.assert_array_equal(order, np.arange(len(s)))  # sorted by pre, then post (the CSR order)


def test_probability_within_tolerance():
    p = 0.05
    s = _syn(probability(p), n_pre=400, n_post=400, same=True)
    pairs = 400 * 399
    assert abs(len(s) - p * pairs) < 5 * np.sqrt(pairs * p * (1 - p))
    assert not np.any(s.pre == s.post) and len(set(zip(s.pre.tolist(), s.post.tolist()))) == len(s)
    out = np.bincount(s.pre, minlength=400)
    assert abs(out.var() - 399 * p * (1 - p)) < 0.35 * 399 * p * (1 - p)  # binomial fan-out per neuron
    assert len(_syn(probability(0.0))) == 0 and len(_syn(probability(1.0))) == 300 * 200


def test_autapses_and_multapses_when_allowed():
    s = _syn(fixed_fan_out(150, autapses=True, multapses=True), n_post=200, same=True)
    np.testing.assert_array_equal(np.bincount(s.pre, minlength=200), 150)
    pairs = s.pre * 200 + s.post
    assert len(np.unique(pairs)) < len(pairs) and np.any(s.pre == s.post)
    t = _syn(one_to_one(), n_pre=200, n_post=200)
    np.testing.assert_array_equal(t.pre, np.arange(200))
    np.testing.assert_array_equal(t.post, np.arange(200))


def test_same_seed_same_network():
    a, b = _net(fixed_fan_out(20), seed=4).build(), _net(fixed_fan_out(20), seed=4).build()
    assert_programs_equal(a, b)
    assert not programs_equal(a, _net(fixed_fan_out(20), seed=5).build())
    net = _net(probability(0.1), seed=4)
    assert_programs_equal(net.build(), net.build())  # building twice: the same program
    first = synapses(net.build())["src->a"]
    net.connect("a", "a", fixed_fan_in(5))  # a connection declared later leaves the earlier one alone
    again = synapses(net.build())["src->a"]
    np.testing.assert_array_equal(first.post, again.post)
    ss = np.random.SeedSequence(4)
    assert_programs_equal(_net(fixed_fan_out(20), seed=ss).build(), a)


def test_weights_and_delays():
    n = synapse_count(fixed_fan_out(5), 300, 200)
    w = np.arange(n, dtype=np.float32) / n
    d = np.arange(n) % 3 + 1
    prog = _net(fixed_fan_out(5), weight=w, delay=d).build()
    assert prog.metadata["connections"]["src->a"] == ["src->a@d1", "src->a@d2", "src->a@d3"]
    assert [prog.node(f"src->a@d{k}").delay for k in (1, 2, 3)] == [1, 2, 3]
    assert prog.sources("a") == ["src->a@d1", "src->a@d2", "src->a@d3"]
    s = synapses(prog)["src->a"]
    np.testing.assert_array_equal(s.weight, w)  # the synapses' order: by pre, then post
    np.testing.assert_array_equal(s.delay, d)
    drawn = _syn(fixed_fan_out(5), weight=lambda rng, k: rng.normal(0.5, 0.1, k), delay=lambda rng, k: rng.integers(1, 4, k))
    assert 0.45 < drawn.weight.mean() < 0.55 and set(np.unique(drawn.delay)) == {1, 2, 3}
    const = _syn(fixed_fan_out(5), weight=-0.25, delay=0)
    assert np.all(const.weight == -0.25) and np.all(const.delay == 0)


def test_bad_declarations_are_clear():
    with pytest.raises(ValueError, match="cannot draw 201 distinct neurons out of 200"):
        _net(fixed_fan_out(201)).build()
    with pytest.raises(ValueError, match="out of 199"):
        _net(fixed_fan_in(200), n_post=200, same=True).build()
    with pytest.raises(ValueError, match="weight: expected one value or 1500"):
        _net(fixed_fan_out(5), weight=np.ones(7)).build()
    with pytest.raises(ValueError, match="delay: must be >= 0"):
        _net(fixed_fan_out(5), delay=-1).build()
    with pytest.raises(ValueError, match="whole numbers of steps"):
        _net(fixed_fan_out(5), delay=np.full(1500, 1.5)).build()
    with pytest.raises(ValueError, match="probability rule"):
        probability(1.5)
    with pytest.raises(ValueError, match="k must be"):
        fixed_fan_out(-1)
    net = _net(fixed_fan_out(5))
    with pytest.raises(ValueError, match="not a population"):
        net.connect("a", "src", fixed_fan_out(1))
    with pytest.raises(ValueError, match="taken"):
        net.population("a", 3)
    with pytest.raises(ValueError, match="one_to_one"):
        _net(one_to_one()).build()
    with pytest.raises(ValueError, match="expected one or more of"):
        net.record("a", "rates")
    with pytest.raises(ValueError, match="beta: expected one value or 200"):
        Network().population("x", 200, beta=np.ones(3))


# ---------------------------------------------------------------- export
def test_exported_synapses_rebuild_the_same_network():
    """What a Brian2 or NEST user builds from the exported arrays (here: dense weight matrices, one
    per delay) spikes exactly as the original program."""
    prog = feed_forward(120, 10, layers=2, weight=0.375, delay=np.arange(1200) % 2 + 1, p_in=0.1, seed=3)
    b = ProgramBuilder()
    for name, node in prog.nodes():
        if isinstance(node, (Population, Bernoulli)):
            b.add(name, node)
    for conn in synapses(prog).values():
        n_pre, n_post = prog.node(conn.source).size, prog.node(conn.target).size
        for d in np.unique(conn.delay):
            keep = conn.delay == d
            w = np.zeros((n_post, n_pre), np.float32)
            np.add.at(w, (conn.post[keep], conn.pre[keep]), conn.weight[keep])
            b.add(f"{conn.name}/{d}", Dense(shape=(n_post,), in_shape=(n_pre,), weight=w, delay=int(d)), conn.source)
            b.connect(f"{conn.name}/{d}", conn.target)
    rebuilt = b.build()
    want = simulate(prog, steps=80, batch=2)
    got = simulate(rebuilt, steps=80, batch=2, record=prog.metadata["record"])
    assert want.spike_counts["l2"].sum() > 0
    for layer in ("l1", "l2"):
        np.testing.assert_array_equal(got.spike_counts[layer], want.spike_counts[layer], err_msg=layer)


# ---------------------------------------------------------------- standard networks
def test_feed_forward():
    prog = feed_forward(500, 20, layers=2, p_in=0.05, record=("counts", "spikes"), seed=1)
    assert [n for n, _ in prog.nodes()] == ["in", "l1", "l2", "in->l1", "l1->l2"]
    assert isinstance(prog.node("in"), Bernoulli) and isinstance(prog.node("in->l1"), Sparse)
    assert prog.metadata["record"] == {"l1": ["counts", "spikes"], "l2": ["counts", "spikes"]}
    for s in synapses(prog).values():
        np.testing.assert_array_equal(np.bincount(s.pre, minlength=500), 20)
    res = {be: simulate(prog, steps=60, batch=2, backend=be, probes=["l1", "l2"]) for be in ("numba", "torch")}
    nb = res["numba"]
    for layer in ("l1", "l2"):
        counts = nb.spike_counts[layer]
        assert counts.shape == (2, 500) and counts.sum() > 0
        np.testing.assert_array_equal(counts, nb.spike_lists[layer].counts())  # counts = counts of the spike list
        np.testing.assert_array_equal(counts, (nb.probes[layer] != 0).sum(axis=0))
        np.testing.assert_array_equal(res["torch"].spike_counts[layer], counts)
        t, k = nb.spike_lists[layer].of_sample(1)
        np.testing.assert_array_equal(np.bincount(k, minlength=500), counts[1])
    assert nb.ops.per_node["l1"]["spikes"].tolist() == nb.spike_counts["l1"].sum(axis=1).tolist()
    assert nb.outputs == {}


def test_brunel():
    prog = brunel(500, fan_out=40, seed=2)
    exc, inh = prog.node("exc"), prog.node("inh")
    assert (exc.size, inh.size) == (400, 100)
    syn = synapses(prog)
    for src in ("exc", "inh"):
        out = np.bincount(syn[f"{src}->exc"].pre, minlength=prog.node(src).size) + \
            np.bincount(syn[f"{src}->inh"].pre, minlength=prog.node(src).size)
        np.testing.assert_array_equal(out, 40)  # exactly fan_out targets each
        assert not np.any(syn[f"{src}->{src}"].pre == syn[f"{src}->{src}"].post)
    assert np.all(syn["exc->inh"].weight == np.float32(0.1)) and np.all(syn["inh->exc"].weight == np.float32(-0.5))
    assert np.all(syn["exc->exc"].delay == 2)
    p_ext = prog.node("ext_exc").p
    np.testing.assert_allclose(p_ext, 2.0 * 1.0 * (1 - 0.95) / 0.25)
    np.testing.assert_array_equal(syn["ext_inh->inh"].pre, np.arange(100))
    res = simulate(prog, steps=200, batch=1)
    rates = {k: v.mean() / 200 for k, v in res.spike_counts.items()}
    assert 0.005 < rates["exc"] < 0.5 and 0.005 < rates["inh"] < 0.5, rates
    biased = brunel(100, fan_out=10, drive="bias", seed=2)
    np.testing.assert_allclose(biased.node("exc").bias, 2.0 * (1 - 0.95))
    assert not any(isinstance(node, Bernoulli) for _, node in biased.nodes())
    with pytest.raises(ValueError, match="p_ext"):
        brunel(100, fan_out=10, J_ext=0.05)


def test_conversions():
    assert beta_from_tau(20.0, 1.0) == pytest.approx(np.exp(-0.05))
    assert rate_to_p(50.0, 0.1) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="outside"):
        rate_to_p(2000.0, 1.0)


def test_population_parameters_and_inputs():
    net = Network(seed=9)
    net.input("x", 4)
    net.population("a", 6, beta=np.linspace(0.5, 0.9, 6), bias=0.125, v_init=lambda rng, n: rng.uniform(0, 0.5, n))
    net.connect("x", "a", fixed_fan_in(2), weight=0.5)
    net.record("a", "counts")
    prog = net.build()
    a = prog.node("a")
    assert a.beta.shape == (6,) and a.bias.shape == (1,) and a.v_init.shape == (6,) and 0 <= a.v_init.min()
    res = simulate(prog, inputs=np.ones((10, 3, 4), np.float32))
    assert res.spike_counts["a"].shape == (3, 6)
    again = Network(seed=9)
    again.input("x", 4)
    again.population("a", 6, beta=np.linspace(0.5, 0.9, 6), bias=0.125, v_init=lambda rng, n: rng.uniform(0, 0.5, n))
    np.testing.assert_array_equal(again.nodes["a"].v_init, a.v_init)  # drawn v_init: seeded too


@pytest.mark.slow
def test_large_feed_forward_counts_only_memory():
    """N = 100k LIF, fan-out 100 (10M synapses), T = 1000, counts only: the numba run keeps a few
    steps per node (chunks), not [T, B, N] (400 MB per node); peak RSS well under the dense run's."""
    code = (
        "import resource, numpy as np\n"
        "from spike.models.random_net import feed_forward, simulate\n"
        "prog = feed_forward(100_000, 100, seed=0)\n"
        "res = simulate(prog, steps=1000)\n"
        "assert res.timing['chunk_steps'] < 1000 and res.spike_counts['l1'].shape == (1, 100_000)\n"
        "print('rss_mib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rss = float(p.stdout.split("rss_mib")[1])
    assert rss < 1100, rss  # the dense run peaks near 1.8 GB
