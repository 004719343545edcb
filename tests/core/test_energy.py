"""Energy reports: totals equal a hand computation from the counts and the YAML figures."""
from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import yaml

from spike.compiler.ir.nodes import Dense, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder
from spike.energy import EnergyReport, energy_report
from spike.plots import plot_report

from helpers.energy import counts, small_program

PJ = 1e-12


def yaml_figures(name):
    """Figures straight from the shipped file, in SI, without spike.hardware."""
    data = yaml.safe_load(resources.files("spike.hw_configs").joinpath(f"{name}.yaml").read_text())
    scale = {"pJ": 1e-12, "pJ/byte": 1e-12, "W/chip": 1.0, "us": 1e-6, "s": 1.0, "ms": 1e-3}
    return {f"{s}.{k}": v["value"] * scale.get(v["unit"], 1.0)
            for s in ("energy", "power", "timing") for k, v in (data.get(s) or {}).items()}




def test_loihi1_energy_equals_hand_computation():
    f = yaml_figures("loihi1")
    program = small_program()
    rep = energy_report(counts(), program, "loihi1", steps=10)
    syn, macs, upd, spk, host, hops, mem = 40, 2, 60, 15, 12, 12, 40.0  # means over the 2 samples
    dynamic = (syn * f["energy.syn_op"] + spk * f["energy.neuron_update_active"]
               + (upd - spk) * f["energy.neuron_update_idle"] + spk * f["energy.spike"]
               + hops * f["energy.hop"] + mem * f["energy.sram_read"] + host * f["energy.host_flop"])
    static = f["power.static"] * 1 * 10 * f["timing.time_per_step"]
    assert rep.dynamic_j == pytest.approx(dynamic, rel=1e-12)
    assert rep.static_j == pytest.approx(static, rel=1e-12)
    assert rep.total_j == pytest.approx(dynamic + static, rel=1e-12)
    assert rep.uncharged == {"macs": macs}  # Loihi 1 gives no MAC figure: reported, not dropped
    node = {r["name"]: r for r in rep.per_node}
    assert node["fc"]["energy_j"] == pytest.approx(syn * 23.6 * PJ + 8 * 3.5 * PJ)  # fc: 8 hops (mean)
    assert node["h"]["firing_rate"] == pytest.approx(15 / (6 * 10))
    assert sum(r["energy_j"] for r in rep.per_node) == pytest.approx(rep.dynamic_j)
    # a measured run time replaces steps x time_per_step
    timed = energy_report(counts(), program, "loihi1", steps=10, batch_time_s=2e-3)
    assert timed.static_j == pytest.approx(f["power.static"] * 2e-3)


def test_cmos_energy_and_comparison_rows():
    f = yaml_figures("cmos45nm_fp32")
    rep = energy_report(counts(), small_program(), "cmos45nm_fp32", steps=10)
    want = 40 * f["energy.syn_op"] + 2 * f["energy.mac"] + 40.0 * f["energy.sram_read"] + 12 * f["energy.host_flop"]
    assert rep.total_j == pytest.approx(want) and rep.static_j == 0.0
    assert set(rep.uncharged) == {"neuron_updates_active", "neuron_updates_idle", "spikes", "spikes_routed_hops"}
    ann, snn = rep.comparison
    assert "ANN" in ann["label"] and "SNN" in snn["label"]
    assert ann["energy_j"] == pytest.approx(240 * 4.6 * PJ)
    assert snn["energy_j"] == pytest.approx(40 * 0.9 * PJ + 2 * 4.6 * PJ)
    assert snn["ann_over_snn"] == pytest.approx(ann["energy_j"] / snn["energy_j"])


def test_table_and_json_name_sources_and_estimates():
    rep = energy_report(counts(), small_program(), "loihi1", steps=10)
    text = rep.table()
    assert "Davies et al. 2018" in text and "Horowitz" in text
    est = next(line for line in text.splitlines() if line.startswith("estimates:"))
    assert "energy.hop" in est and "power.static" in est and "energy.syn_op" not in est
    assert "not charged" in text and "macs" in text
    assert "dense ANN on cmos45nm_fp32" in text and "SNN on cmos45nm_fp32" in text
    js = rep.to_json()
    assert {"total_j", "per_node", "breakdown", "sources", "estimates"} <= set(js)
    assert js["sources"]["energy.syn_op"]["kind"] == "published"
    assert js["sources"]["energy.hop"]["kind"] == "estimated" and "energy.hop" in js["estimates"]
    assert js["total_j"] == pytest.approx(sum(js["breakdown"].values()))
    json.dumps(js, allow_nan=False)
    # Loihi 2: every energy figure is an estimate
    l2 = energy_report(counts(), small_program(), "loihi2", steps=10).to_json()
    assert all(k in l2["estimates"] for k in l2["sources"] if k.startswith("energy."))


def test_generic_target_charges_nothing():
    rep = energy_report(counts(routing=False), small_program(), "generic", steps=4)
    assert rep.total_j == 0.0 and rep.sources == {} and rep.estimates == []
    assert "syn_ops" in rep.uncharged


def test_plot_is_a_png_written_atomically(tmp_path):
    rep = energy_report(counts(), small_program(), "loihi1", steps=10)
    for i, arg in enumerate([rep, rep.to_json(), {"accuracy": 1.0, "energy": rep.to_json()}]):
        out = plot_report(arg, tmp_path / "plots" / f"r{i}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"energy": rep.to_json()}))
    plot_report(path, tmp_path / "plots" / "r0.png")  # overwrite in place
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["r0.png", "r1.png", "r2.png"]
    with pytest.raises(ValueError, match="expected an EnergyReport"):
        plot_report(42, tmp_path / "x.png")


def test_energy_of_a_mapped_run(tmp_path):
    from spike.backends import run
    from spike.compiler.mapping.partition import map_program

    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    b.add("x", Input(shape=(30,)))
    b.add("fc", Dense(shape=(40,), in_shape=(30,), weight=(rng.integers(0, 40, (40, 30)) / 256).astype(np.float32)), "x")
    b.add("h", Population(shape=(40,), beta=np.full(40, 0.9, np.float32), threshold=np.full(40, 0.5, np.float32)), "fc")
    b.add("out", Output(shape=(40,)), "h")
    mapped = map_program(b.build(), "loihi1")
    x = (rng.random((8, 2, 30)) < 0.4).astype(np.float32)
    res = run(mapped, x, backend="torch")
    rep = energy_report(res.ops, mapped, "loihi1", steps=8)
    t = res.ops.total()
    assert t["spikes_routed_hops"] > 0 and t["spikes"] > 0
    assert rep.breakdown["spikes_routed_hops"] == pytest.approx(t["spikes_routed_hops"] * 3.5 * PJ)
    assert rep.breakdown["syn_ops"] == pytest.approx(t["syn_ops"] * 23.6 * PJ)
    assert rep.chips == 1 and isinstance(rep, EnergyReport)


def test_pool_ops_are_charged_as_synaptic_ops():
    """Avg/sum pooling accumulates (``pool_ops``, not in NeuroBench's counts nor ``dense_ops``):
    the target's ``syn_op`` figure on targets with cores, the add (E_AC) on CMOS (design §7)."""
    ops = counts(routing=False)
    zero = np.zeros(2, np.int64)
    ops.per_node["pool"] = {k: zero.copy() for k in ("syn_ops", "macs", "dense_ops", "neuron_updates", "spikes",
                                                      "host_flops")}
    ops.per_node["pool"]["pool_ops"] = np.array([20, 40])  # mean 30
    ops.kinds["pool"] = "pool2d"
    for target in ("loihi1", "truenorth", "cmos45nm_fp32", "cmos45nm_int8"):
        f = yaml_figures(target)
        base = energy_report(counts(routing=False), small_program(), target, steps=10)
        rep = energy_report(ops, small_program(), target, steps=10)
        assert rep.breakdown["pool_ops"] == pytest.approx(30 * f["energy.syn_op"], rel=1e-12), target
        assert rep.dynamic_j == pytest.approx(base.dynamic_j + 30 * f["energy.syn_op"], rel=1e-12), target
        node = {r["name"]: r for r in rep.per_node}
        assert node["pool"]["energy_j"] == pytest.approx(30 * f["energy.syn_op"], rel=1e-12)
        assert "pool_ops" not in rep.uncharged and "energy.syn_op" in rep.sources
        assert "pool_ops" in rep.table().splitlines()[1]  # a column of the table
    ann, snn = energy_report(ops, small_program(), "loihi1", steps=10).comparison
    assert ann["energy_j"] == pytest.approx(240 * 4.6 * PJ)  # dense_ops: no pooling
    assert snn["energy_j"] == pytest.approx((40 + 30) * 0.9 * PJ + 2 * 4.6 * PJ)
    assert "pool_ops x E_AC" in snn["formula"]
    assert "pool_ops" in energy_report(ops, small_program(), "generic", steps=10).uncharged
