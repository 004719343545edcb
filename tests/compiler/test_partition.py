"""Partitioning onto cores and placement on the mesh, checked against limits computed here
directly from the weights (not with the mapping modules' own helpers)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from spike.compiler.ir.nodes import Conv2d, Dense, Identity, Input, Output, Pool2d, Population, Sparse
from spike.compiler.mapping.connectivity import MappingError, projection_pattern
from spike.compiler.mapping.partition import map_program, partition
from spike.compiler.mapping.place import place, placement_cost
from spike.compiler.mapping.report import mapping_report
from spike.compiler.ir.program import ProgramBuilder
from spike.workflows import calibration_rates


def fig(value, unit):
    return {"value": value, "unit": unit, "source": "test target", "kind": "estimated"}


def make_target(tmp_path, name="tiny", neurons=16, mem=900, fan_in=40, fan_out=30, wbits=4,
                cores_per_chip=8, rows=2, cols=2, per_tile=2, per_neuron=None):
    core = {
        "neurons": fig(neurons, "neurons"), "syn_mem_bits": fig(mem, "bits"),
        "fan_in_axons": fig(fan_in, "axons"), "fan_out_axons": fig(fan_out, "axons"),
        "weight_bits": fig(wbits, "bits"),
    }
    if per_neuron is not None:
        core["fan_out_per_neuron"] = fig(per_neuron, "cores")
    data = {
        "schema_version": 1, "name": name, "core": core,
        "chip": {"cores_per_chip": fig(cores_per_chip, "cores"), "mesh_rows": fig(rows, "tiles"),
                 "mesh_cols": fig(cols, "tiles"), "cores_per_tile": fig(per_tile, "cores")},
        "energy": {"syn_op": fig(1.0, "pJ"), "hop": fig(2.0, "pJ")},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def pop(n):
    return Population(shape=(n,), model="lif", beta=np.full(n, 0.9, np.float32),
                      threshold=np.full(n, 0.5, np.float32))


def sparse_weights(rng, n_out, n_in, density):
    w = rng.integers(-8, 9, size=(n_out, n_in)).astype(np.float32) / 16
    w[rng.random((n_out, n_in)) > density] = 0
    return w


def random_mlp(rng):
    """Input -> dense -> pop -> (CSR sparse) -> pop -> dense -> pop, plus a recurrent projection."""
    sizes = [int(rng.integers(5, 30))] + [int(rng.integers(1, 60)) for _ in range(3)]
    b = ProgramBuilder()
    b.add("x", Input(shape=(sizes[0],), signal="spike"))
    weights = {}
    prev = "x"
    for k in range(1, 4):
        w = sparse_weights(rng, sizes[k], sizes[k - 1], density=float(rng.uniform(0.05, 0.4)))
        if k == 2:  # as CSR over source neurons
            csr = w.T.copy()
            indptr = np.concatenate([[0], np.cumsum((csr != 0).sum(1))]).astype(np.int64)
            indices = np.nonzero(csr)[1].astype(np.int64)
            data = csr[csr != 0].astype(np.float32)
            b.add(f"p{k}", Sparse(shape=(sizes[k],), in_shape=(sizes[k - 1],), indptr=indptr,
                                  indices=indices, data=data), prev)
        else:
            b.add(f"p{k}", Dense(shape=(sizes[k],), in_shape=(sizes[k - 1],), weight=w), prev)
        weights[(prev, f"l{k}")] = w
        b.add(f"l{k}", pop(sizes[k]), f"p{k}")
        prev = f"l{k}"
    wr = sparse_weights(rng, sizes[1], sizes[1], density=0.1)
    b.add("rec", Dense(shape=(sizes[1],), in_shape=(sizes[1],), weight=wr, delay=1), "l1")
    b.connect("rec", "l1")
    weights[("l1", "l1")] = wr
    b.add("out", Output(shape=(sizes[3],)), "l3")
    return b.build({"precision": "float32"}), weights


def check_mapping(program, weights, limits, wbits):
    """Every neuron on exactly one core; every core within every limit (recomputed here)."""
    m = program.metadata["mapping"]
    core_of = {p: np.full(program.node(p).size, -1) for p in program.populations()}
    for c in m["cores"]:
        assert (core_of[c["population"]][c["start"]:c["stop"]] == -1).all(), "neuron on two cores"
        core_of[c["population"]][c["start"]:c["stop"]] = c["id"]
    for p, arr in core_of.items():
        assert (arr >= 0).all(), f"{p}: neuron without a core"
    for c in m["cores"]:
        pop_name, a, b = c["population"], c["start"], c["stop"]
        synapses, sources = 0, set()
        for (src, dst), w in weights.items():
            if dst != pop_name:
                continue
            block = w[a:b] != 0  # [neurons of the core, source neurons]
            synapses += int(block.sum())
            sources |= {(src, int(i)) for i in np.nonzero(block.any(0))[0]}
        fan_out = 0
        for i in range(a, b):
            dests = set()
            for (src, dst), w in weights.items():
                if src == pop_name:
                    dests |= {int(core_of[dst][j]) for j in np.nonzero(w[:, i])[0]}
            fan_out += len(dests)
        assert b - a <= limits["neurons"]
        assert synapses * wbits <= limits["mem"]
        assert len(sources) <= limits["fan_in"]
        assert fan_out <= limits["fan_out"]
        assert (c["synapses"], c["fan_in"], c["fan_out"]) == (synapses, len(sources), fan_out)


@pytest.mark.parametrize("seed", range(6))
def test_random_networks_respect_every_limit(tmp_path, seed):
    rng = np.random.default_rng(seed)
    program, weights = random_mlp(rng)
    limits = {"neurons": int(rng.integers(4, 20)), "mem": int(rng.integers(150, 900)),
              "fan_in": int(rng.integers(30, 70)), "fan_out": int(rng.integers(20, 80))}
    target = make_target(tmp_path, neurons=limits["neurons"], mem=limits["mem"], fan_in=limits["fan_in"],
                         fan_out=limits["fan_out"], wbits=4)
    try:
        mapped = partition(program, target)
    except MappingError as e:  # only when one neuron alone is over a limit: check that claim
        msg = str(e)
        assert "cannot" in msg and "limit" in msg
        return
    check_mapping(mapped, weights, limits, 4)
    placed = place(mapped, rates={"l1": rng.random(program.node("l1").size)})
    check_mapping(placed, weights, limits, 4)
    m = placed.metadata["mapping"]
    assert sorted(c["slot"] for c in m["cores"]) == sorted(set(c["slot"] for c in m["cores"]))
    assert m["placement"]["cost"] <= m["placement"]["sequential_cost"] + 1e-9
    json.dumps(placed.metadata)  # saved with the program


def chains_program(n_chains=2, length=4, size=8):
    """Chains a1->a2->..., b1->b2->... added interleaved: a1, b1, a2, b2, ..."""
    b = ProgramBuilder()
    rng = np.random.default_rng(0)
    for k in range(length):
        for c in "abcd"[:n_chains]:
            if k:
                w = np.where(rng.random((size, size)) < 0.5, 0.25, 0).astype(np.float32)
                w[np.arange(size), np.arange(size)] = 0.5  # every neuron connected
                b.add(f"{c}{k}_w", Dense(shape=(size,), in_shape=(size,), weight=w), f"{c}{k - 1}")
                b.add(f"{c}{k}", pop(size), f"{c}{k}_w")
            else:
                b.add(f"{c}{k}", pop(size))
    return b.build()


def test_placement_beats_sequential_on_interleaved_chains(tmp_path):
    program = chains_program()
    # one row of 4 tiles per chip, one core per tile: sequential puts chain neighbours 2 hops apart
    target = make_target(tmp_path, neurons=8, mem=10_000, fan_in=100, fan_out=100, cores_per_chip=4,
                         rows=1, cols=4, per_tile=1)
    mapped = partition(program, target)
    m = mapped.metadata["mapping"]
    assert len(m["cores"]) == 8 and m["chips"] == 2
    seq = placement_cost(mapped)
    assert seq == pytest.approx(2 * 8 * 6)  # 6 chain edges x 8 neurons x 2 hops
    placed = place(mapped)
    best = placement_cost(placed)
    assert best < seq
    assert best == pytest.approx(8 * 6)  # every chain edge one hop: optimal
    assert placed.metadata["mapping"]["placement"]["method"] != "sequential"


def test_placement_uses_rates(tmp_path):
    program = chains_program(n_chains=3, length=2)
    target = make_target(tmp_path, neurons=8, mem=10_000, fan_in=100, fan_out=100, cores_per_chip=4,
                         rows=2, cols=2, per_tile=1)
    mapped = partition(program, target)
    rates = {"a0": np.full(8, 0.5), "b0": np.zeros(8), "c0": np.zeros(8)}
    placed = place(mapped, rates=rates)
    pos = {c["population"]: (c["x"], c["y"]) for c in placed.metadata["mapping"]["cores"]}
    assert abs(pos["a0"][0] - pos["a1"][0]) + abs(pos["a0"][1] - pos["a1"][1]) == 1
    assert placement_cost(placed, rates) <= placement_cost(mapped, rates)
    assert placed.metadata["mapping"]["placement"]["rates"] == "calibrated"


def test_single_neuron_over_fan_in_is_an_error(tmp_path):
    b = ProgramBuilder()
    b.add("x", Input(shape=(50,)))
    b.add("fc", Dense(shape=(3,), in_shape=(50,), weight=np.ones((3, 50), np.float32)), "x")
    b.add("hidden", pop(3), "fc")
    target = make_target(tmp_path, fan_in=40, mem=100_000)
    with pytest.raises(MappingError, match=r"layer 'hidden'.*50 input axons.*limit of 40 fan-in axons"):
        partition(b.build(), target)
    target = make_target(tmp_path, fan_in=400, mem=100)
    with pytest.raises(MappingError, match=r"layer 'hidden'.*50 synapses = 200 bits.*limit of 100 bits"):
        partition(b.build(), target)


def test_fan_out_per_neuron_and_cores_needed(tmp_path):
    b = ProgramBuilder()
    b.add("x", Input(shape=(4,)))
    b.add("w1", Identity(shape=(4,), in_shape=(4,)), "x")
    b.add("a", pop(4), "w1")
    b.add("w2", Dense(shape=(8,), in_shape=(4,), weight=np.ones((8, 4), np.float32)), "a")
    b.add("b", pop(8), "w2")
    tn = make_target(tmp_path, neurons=4, fan_in=100, mem=10_000, per_neuron=1)
    with pytest.raises(MappingError, match=r"layer 'a'.*sends to 2 cores.*1 destination core"):
        partition(b.build(), tn)
    with pytest.raises(MappingError, match="no neuromorphic cores"):
        partition(b.build(), "cmos45nm_fp32")


def test_conv_pattern_counts_expanded_synapses():
    rng = np.random.default_rng(3)
    w = rng.integers(-2, 3, size=(4, 2, 3, 3)).astype(np.float32)  # groups=2: C_in 4, C_out 4
    node = Conv2d(shape=(4, 3, 3), in_shape=(4, 5, 5), weight=w, stride=(2, 2), padding=(1, 1), groups=2)
    m = projection_pattern(node).toarray()
    ref = np.zeros((4 * 25, 4 * 9), bool)
    for co in range(4):
        for cl in range(2):
            ci = (co // 2) * 2 + cl
            for oy in range(3):
                for ox in range(3):
                    for ky in range(3):
                        for kx in range(3):
                            iy, ix = oy * 2 + ky - 1, ox * 2 + kx - 1
                            if 0 <= iy < 5 and 0 <= ix < 5 and w[co, cl, ky, kx] != 0:
                                ref[ci * 25 + iy * 5 + ix, co * 9 + oy * 3 + ox] = True
    assert (m != 0).sum() == ref.sum() and ((m != 0) == ref).all()
    pool = Pool2d(shape=(2, 2, 2), in_shape=(2, 4, 4), mode="max", kernel=(2, 2), stride=(2, 2))
    pm = projection_pattern(pool)
    assert pm.nnz == 2 * 16 and (pm.getnnz(axis=0) == 4).all()


def test_cnn_chain_and_report(tmp_path):
    rng = np.random.default_rng(1)
    b = ProgramBuilder()
    b.add("img", Input(shape=(1, 6, 6)))
    b.add("conv", Conv2d(shape=(3, 6, 6), in_shape=(1, 6, 6), weight=rng.normal(size=(3, 1, 3, 3)).astype(np.float32),
                         padding=(1, 1)), "img")
    b.add("c1", pop(108), "conv")
    b.add("pool", Pool2d(shape=(3, 3, 3), in_shape=(3, 6, 6), mode="max"), "c1")
    b.add("fc", Dense(shape=(5,), in_shape=(27,), weight=rng.normal(size=(5, 27)).astype(np.float32)), "pool")
    b.add("o", pop(5), "fc")
    b.add("out", Output(shape=(5,)), "o")
    program = b.build()
    target = make_target(tmp_path, neurons=32, mem=4000, fan_in=120, fan_out=60)
    mapped = map_program(program, target)
    m = mapped.metadata["mapping"]
    assert m["nodes"]["conv"] == "c1" and m["nodes"]["pool"] == "o" and m["nodes"]["fc"] == "o"
    assert m["nodes"]["img"] == "host"
    # the pool -> fc chain makes every c1 neuron a source of every o neuron: 108 synapses each
    o_core = next(c for c in m["cores"] if c["population"] == "o")
    assert o_core["fan_in"] == 108 and o_core["synapses"] == 5 * 108
    report = mapping_report(mapped)
    text = report.render()
    assert "c1" in text and "closest limit" in text and len(text.splitlines()) < 25
    js = report.to_json()
    assert {r["population"] for r in js["per_population"]} == {"c1", "o"}
    json.dumps(js)


def test_mapping_survives_save_and_load(tmp_path):
    from spike.compiler.io.hdf5 import load_program, save_program

    program, _ = random_mlp(np.random.default_rng(7))
    mapped = map_program(program, make_target(tmp_path, neurons=64, mem=100_000, fan_in=400, fan_out=400))
    save_program(mapped, tmp_path / "p.h5")
    loaded = load_program(tmp_path / "p.h5")
    assert loaded.metadata["mapping"] == json.loads(json.dumps(mapped.metadata["mapping"]))
    assert loaded.metadata["target"] == "tiny"
    assert mapping_report(loaded).render() == mapping_report(mapped).render()


def test_shipped_loihi_mapping_of_an_mlp():
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("x", Input(shape=(100,)))
    b.add("fc1", Dense(shape=(1500,), in_shape=(100,), weight=rng.normal(size=(1500, 100)).astype(np.float32)), "x")
    b.add("h", pop(1500), "fc1")
    b.add("fc2", Dense(shape=(10,), in_shape=(1500,), weight=rng.normal(size=(10, 1500)).astype(np.float32)), "h")
    b.add("o", pop(10), "fc2")
    mapped = map_program(b.build(), "loihi1")
    m = mapped.metadata["mapping"]
    assert m["target"] == "loihi1" and m["weight_bits"] == 9
    cores_h = [c for c in m["cores"] if c["population"] == "h"]
    assert len(cores_h) == 2 and all(c["neurons"] <= 1024 for c in cores_h)
    # 1500 x 9-bit synapses per o neuron: 10 x 13,500 bits fit in one 128 KB core
    assert [c["mem_bits"] for c in m["cores"] if c["population"] == "o"] == [10 * 1500 * 9]


# ------------------------------------------------------------------------------ routing counts


def routed_program(rng):
    n_in, n1, n2 = 12, 20, 12
    w1 = sparse_weights(rng, n1, n_in, 0.5)
    wr = sparse_weights(rng, n1, n1, 0.2)
    w2 = sparse_weights(rng, n2, n1, 0.4)
    csr = w2.T.copy()
    indptr = np.concatenate([[0], np.cumsum((csr != 0).sum(1))]).astype(np.int64)
    b = ProgramBuilder()
    b.add("x", Input(shape=(n_in,)))
    b.add("p1", Dense(shape=(n1,), in_shape=(n_in,), weight=w1), "x")
    b.add("l1", pop(n1), "p1")
    b.add("rec", Dense(shape=(n1,), in_shape=(n1,), weight=wr, delay=1), "l1")
    b.connect("rec", "l1")
    b.add("p2", Sparse(shape=(n2,), in_shape=(n1,), indptr=indptr, indices=np.nonzero(csr)[1].astype(np.int64),
                       data=csr[csr != 0].astype(np.float32), delay=2), "l1")
    b.add("l2", pop(n2), "p2")
    b.add("idn", Identity(shape=(n2,), in_shape=(n2,)), "l2")
    b.add("h", __import__("spike.compiler.ir.nodes", fromlist=["HostOp"]).HostOp(shape=(n2,), op="add"), ["l2", "idn"])
    b.add("out", Output(shape=(n2,)), "h")
    paths = [  # (source, terminal, weight [n_dst, n_src] or None for the host, dest, delay)
        ("x", "p1", w1, "l1", 0), ("l1", "rec", wr, "l1", 1), ("l1", "p2", w2, "l2", 2),
        ("l2", "h", None, None, 0), ("l2", "idn", None, None, 0),
    ]
    return b.build({"precision": "float32"}), paths


def naive_routing(program, paths, events, B, T):
    m = program.metadata["mapping"]
    core_of = {p: np.full(program.node(p).size, -1) for p in program.populations()}
    for c in m["cores"]:
        core_of[c["population"]][c["start"]:c["stop"]] = c["id"]
    xy = {c["id"]: (c["x"], c["y"]) for c in m["cores"]}
    host = tuple(m["host_port"])
    hops = lambda a, b: abs(a[0] - b[0]) + abs(a[1] - b[1])  # noqa: E731
    out = {}
    for src, term, w, dst, delay in paths:
        local, hop, mem = np.zeros(B), np.zeros(B), np.zeros(B)
        for b in range(B):
            for t in range(T - delay):
                for i in np.nonzero(events[src][t, b])[0]:
                    here = host if src == "x" else xy[core_of[src][i]]
                    if w is None:  # to the host
                        hop[b] += hops(here, host)
                        continue
                    targets = np.nonzero(w[:, i])[0]
                    for core in sorted({int(core_of[dst][j]) for j in targets}):
                        if src != "x" and core == core_of[src][i]:
                            local[b] += 1
                        else:
                            hop[b] += hops(here, xy[core])
                        mem[b] += sum(1 for j in targets if core_of[dst][j] == core) * m["weight_bits"] / 8
        out[term] = (local, hop, mem)
    return out


def test_routing_counts_match_a_naive_loop(tmp_path):
    from spike.backends import run

    rng = np.random.default_rng(11)
    program, paths = routed_program(rng)
    target = make_target(tmp_path, neurons=8, mem=10_000, fan_in=100, fan_out=100, wbits=5,
                         cores_per_chip=4, rows=1, cols=2, per_tile=2)
    mapped = map_program(program, target)
    assert mapped.metadata["mapping"]["chips"] == 2
    T, B = 9, 3
    x = (rng.random((T, B, 12)) < 0.5).astype(np.float32)
    res = run(mapped, x, backend="torch", probes=["x", "l1", "l2"])
    events = {k: res.probes[k].reshape(T, B, -1) for k in ("x", "l1", "l2")}
    assert events["l1"].sum() > 0 and events["l2"].sum() > 0
    want = naive_routing(mapped, paths, events, B, T)
    per_node = res.ops.per_node
    for term, (local, hop, mem) in want.items():
        np.testing.assert_array_equal(per_node[term]["spikes_routed_local"], local, err_msg=term)
        np.testing.assert_array_equal(per_node[term]["spikes_routed_hops"], hop, err_msg=term)
        np.testing.assert_allclose(per_node[term]["syn_mem_reads_bytes"], mem, err_msg=term)
    assert want["rec"][0].sum() > 0 and want["p2"][1].sum() > 0  # both kinds of delivery happen
    for name in ("l1", "l2"):  # populations route nothing themselves
        assert per_node[name]["spikes_routed_hops"].sum() == 0
    totals = res.ops.to_json()["total"]
    assert totals["spikes_routed_hops"] == pytest.approx(sum(v[1].mean() for v in want.values()))
    # an unmapped program reports no routing keys at all
    plain = run(program, x, backend="torch")
    assert "spikes_routed_hops" not in plain.ops.to_json()["total"]
    assert "spikes_routed_hops" not in plain.ops.per_node["p1"]


def test_calibration_rates(tmp_path):
    rng = np.random.default_rng(2)
    program, _ = routed_program(rng)
    x = (rng.random((6, 2, 12)) < 0.5).astype(np.float32)
    rates = calibration_rates(program, x, backend="torch")
    assert set(rates) == {"x", "l1", "l2"} and rates["l1"].shape == (20,)
    assert np.all((rates["l1"] >= 0) & (rates["l1"] <= 1))
    np.testing.assert_allclose(rates["x"], x.mean(axis=(0, 1)))
    target = make_target(tmp_path, neurons=8, mem=10_000, fan_in=100, fan_out=100)
    placed = map_program(program, target, rates=rates)
    assert placed.metadata["mapping"]["placement"]["rates"] == "calibrated"


def test_wide_fan_out_is_one_destination(tmp_path):
    """256 synapses from one neuron into one core are one destination (no small-int overflow)."""
    b = ProgramBuilder()
    b.add("a", pop(1))
    b.add("w", Dense(shape=(256,), in_shape=(1,), weight=np.ones((256, 1), np.float32)), "a")
    b.add("b", pop(256), "w")
    b.add("w2", Dense(shape=(1,), in_shape=(256,), weight=np.ones((1, 256), np.float32)), "b")
    b.add("pool", Pool2d(shape=(1, 1, 1), in_shape=(1, 1, 1), mode="sum", kernel=(1, 1), stride=(1, 1)), "w2")
    b.add("c", pop(1), "pool")
    target = make_target(tmp_path, neurons=256, mem=10**6, fan_in=300, fan_out=300)
    m = partition(b.build(), target).metadata["mapping"]
    a, bb, c = m["cores"]
    assert (a["fan_out"], bb["fan_in"], bb["synapses"]) == (1, 1, 256)
    assert (bb["fan_out"], c["fan_in"], c["synapses"]) == (256, 256, 256)
