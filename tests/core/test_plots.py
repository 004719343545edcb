"""Figures return matplotlib Figures whose artists carry the data: energy bars (static as its own
bar), one raster dot per recorded spike, one trace per neuron, one bar per model and node in the
FTWT comparison, SpikeGPT's blocks per token; `spike run --plot` of a SpikeGPT program writes one."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from spike.backends import run
from spike.cli import main
from spike.compiler.io.hdf5 import save_program
from spike.energy import energy_report
from spike.models.spikegpt.lowering import lower_spikegpt
from spike.models.spikegpt.model import build_spikegpt
from spike.models.spikegpt.report import spikegpt_report
from spike.models.spikegpt.text import CharVocab
from spike.plots import (energy_figure, ftwt_comparison_figure, membrane_figure, raster_figure, save_figure,
                         spikegpt_figure)

from helpers.energy import counts, small_program


def test_energy_figure_shows_static_energy_as_its_own_bar(tmp_path) -> None:
    rep = energy_report(counts(), small_program(), "loihi1", steps=10)
    fig = energy_figure(rep)
    assert isinstance(fig, Figure)
    ax = fig.axes[1]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[-1] == "static" and labels[:-1] == [r["name"] for r in rep.per_node if r["energy_j"]]
    static = [p for p in ax.patches if p.get_label() == "static (whole chip)" or p.get_hatch() == "//"]
    unit = {"J": 1, "mJ": 1e-3, "uJ": 1e-6, "nJ": 1e-9, "pJ": 1e-12}[ax.get_ylabel().split()[0]]
    assert len(static) == 1 and np.isclose(static[0].get_height() * unit, rep.static_j)
    assert save_figure(fig, tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_raster_has_a_dot_per_spike() -> None:
    rng = np.random.default_rng(0)
    spikes = {"l1": (rng.random((12, 2, 5)) < 0.3).astype(np.float32),
              "l2": (rng.random((12, 2, 3)) < 0.5).astype(np.float32)}
    fig = raster_figure(spikes, sample=1)
    for ax, (name, s) in zip(fig.axes, spikes.items()):
        dots = ax.collections[0].get_offsets()
        t, j = np.nonzero(s[:, 1])
        assert sorted(map(tuple, np.asarray(dots).astype(int))) == sorted(zip(t, j))
        assert ax.get_title(loc="left").startswith(f"{name}: {len(t)} spikes")


def test_membrane_traces_are_the_values() -> None:
    v = np.cumsum(np.ones((8, 1, 10), np.float32), axis=0)
    fig = membrane_figure({"pop": v}, {"pop": 1.0}, neurons=4)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 5  # four neurons and the threshold
    np.testing.assert_array_equal(lines[0].get_ydata(), v[:, 0, 0])
    assert tuple(lines[-1].get_ydata()) == (1.0, 1.0)


# ------------------------------------------------------------------ FTWT: unmasked vs masked, one axis

def _run_report(rows: dict[str, dict[str, float]], energy: dict[str, float] | None = None) -> dict:
    """The parts of a `spike run --json` report the comparison reads: ops.per_node (and energy)."""
    keys = ("syn_ops", "macs", "pool_ops", "host_flops", "neuron_updates")
    rep = {"ops": {"per_node": [{"name": n, "kind": "", **{k: v.get(k, 0.0) for k in keys}} for n, v in rows.items()]}}
    if energy is not None:
        rep["energy"] = {"target": "loihi1", "per_node": [{"name": n, "energy_j": e} for n, e in energy.items()]}
    return rep


_BASE = {"conv0": {"macs": 300.0}, "pop0": {"neuron_updates": 50.0}, "conv1": {"syn_ops": 1000.0},
         "fc": {"syn_ops": 80.0}}
_MASKED = {"conv0": {"macs": 300.0}, "pop0": {"neuron_updates": 30.0}, "gate1": {"host_flops": 40.0},
           "conv1": {"syn_ops": 400.0}, "fc": {"syn_ops": 60.0}}


def _bars(ax) -> list:
    return [p for p in ax.patches if p.get_width() > 0 and p.get_height() > 0]


def test_ftwt_comparison_groups_nodes_on_one_axis(tmp_path) -> None:
    base, masked = _run_report(_BASE), _run_report(_MASKED)
    path = tmp_path / "base.json"  # a saved report is read as well as a dict
    path.write_text(json.dumps(base))
    fig = ftwt_comparison_figure(path, masked)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    # nodes with operations, in program order; the gate only the masked model has sits before its conv
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv0", "gate1", "conv1", "fc"]
    unit = 1e3 if ax.get_ylabel().startswith("thousand") else 1.0
    heights = {}
    for p in _bars(ax):
        key = (round(p.get_x() + p.get_width() / 2, 6), p.get_facecolor())
        heights[key] = heights.get(key, 0.0) + p.get_height() * unit
    # two bars per node (gate and its zero baseline: one), each the node's syn_ops + macs + host_flops
    assert sorted(round(h) for h in heights.values()) == sorted([300, 300, 40, 1000, 400, 80, 60])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "unmasked: 1,380 ops" and labels[1] == f"FTWT: 800 ops, {800 / 1380 - 1:+.1%}"
    assert {"accumulates (syn_ops)", "MACs"} <= set(labels)
    # one masked model: each node annotated with its change
    assert [t.get_text() for t in ax.texts] == ["+0%", "-60%", "-25%"]


def test_ftwt_comparison_of_several_ratios_and_of_energy() -> None:
    masked = {"r=0.9": _run_report(_MASKED), "r=0.8": _run_report({**_MASKED, "conv1": {"syn_ops": 200.0}})}
    fig = ftwt_comparison_figure(_run_report(_BASE), masked)
    ax = fig.axes[0]
    centres = {round(p.get_x() + p.get_width() / 2, 6) for p in _bars(ax)}
    assert len(centres) == 3 * 4 - 1  # three models on four nodes; the gate has no baseline bar
    assert [t.get_text().split(":")[0] for t in ax.get_legend().get_texts()][:3] == ["unmasked", "r=0.9", "r=0.8"]
    assert not ax.texts  # per-node changes only with one masked model
    energy = ftwt_comparison_figure(_run_report(_BASE, {"conv1": 2e-9, "fc": 1e-9}),
                                    _run_report(_MASKED, {"conv1": 1e-9, "fc": 5e-10}), metric="energy")
    ax = energy.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "fc"]
    assert ax.get_ylabel() == "nJ per sample" and "loihi1" in ax.get_title()
    assert sorted(round(p.get_height(), 6) for p in _bars(ax)) == [0.5, 1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="energy section"):
        ftwt_comparison_figure(_run_report(_BASE), _run_report(_MASKED), metric="energy")
    with pytest.raises(ValueError, match="run report"):
        ftwt_comparison_figure({"per_node": []}, _run_report(_MASKED))


# ------------------------------------------------------------------ SpikeGPT per block and per token

V = 13


def _tiny_spikegpt(vocab: int = V, layers: int = 2):
    torch.manual_seed(0)
    m = build_spikegpt("tiny", vocab_size=vocab, n_layer=layers, n_embd=16, spiking=True).eval()
    with torch.no_grad():  # random weights rarely reach the threshold: scale the LIF inputs up
        for blk in m.blocks:
            blk.att.output.weight.mul_(20)
            blk.ffn.value.weight.mul_(40)
    return m


def test_spikegpt_figure_shows_blocks_per_token() -> None:
    program = lower_spikegpt(_tiny_spikegpt())
    ids = np.random.default_rng(5).integers(0, V, (16, 1))
    x = np.zeros((16, 1, V), np.float32)
    x[np.arange(16), 0, ids[:, 0]] = 1
    rep = spikegpt_report(program, run(program, x), token_ids=ids)
    rows = rep.per_block()
    assert [r["block"] for r in rows] == ["embedding", "block 0", "block 1", "head"]
    for key in ("syn_ops", "macs", "host_flops"):  # the blocks split the table's per-token counts
        assert sum(r[key] for r in rows) == pytest.approx(rep.executed[key])
    assert sum(sum(r["energy_j"].values()) for r in rows) * 1e12 == pytest.approx(rep.energy_pj["executed"])

    fig = spikegpt_figure(rep)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    a_rate, a_ops, a_energy, a_three = fig.axes
    assert [t.get_text() for t in a_rate.get_xticklabels()] == ["emb", "0", "1"]  # the head has no spiking layer
    rates = {r["node"]: r["rate"] for r in rep.firing}
    want = [rates["blocks.0.sn1"], rates["blocks.1.sn1"], rates["blocks.0.sn2"], rates["blocks.1.sn2"],
            rates["emb_spike"]]
    np.testing.assert_allclose([p.get_height() for p in a_rate.patches], want)
    for ax in (a_ops, a_energy):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["emb", "0", "1", "head"]
    assert a_ops.get_ylabel() == "operations per token" and a_ops.get_yscale() == "log"
    macs = [p.get_height() for p in a_ops.patches[len(rows): 2 * len(rows)]]
    np.testing.assert_allclose(np.nan_to_num(macs), [r["macs"] for r in rows])
    unit = {"nJ": 1e-9, "uJ": 1e-6, "pJ": 1e-12}[a_energy.get_ylabel().split()[0]]
    assert a_energy.get_ylabel().endswith("per token")
    assert sum(p.get_height() for p in a_energy.patches) * unit * 1e12 == pytest.approx(rep.energy_pj["executed"])
    unit = {"nJ": 1e3, "uJ": 1e6, "pJ": 1.0}[a_three.get_xlabel().split()[0]]
    np.testing.assert_allclose([p.get_width() * unit for p in a_three.patches],
                               [rep.energy_pj[k] for k in ("executed", "paper_convention", "vanilla_gpt")])
    assert [t.get_text() for t in a_three.get_yticklabels()][:2] == ["as executed", "paper's convention"]


def test_spikegpt_figure_of_a_model_without_spikes_says_so() -> None:
    torch.manual_seed(0)
    program = lower_spikegpt(build_spikegpt("tiny", vocab_size=V, n_layer=2, n_embd=8, spiking=False).eval())
    x = np.zeros((6, 2, V), np.float32)
    x[:, :, 3] = 1
    rep = spikegpt_report(program, run(program, x))
    a_rate = spikegpt_figure(rep).axes[0]
    assert not a_rate.patches and "no spiking layers" in a_rate.texts[0].get_text()


def test_spike_run_plots_a_spikegpt_program(tmp_path, capsys) -> None:
    text = "the quick brown fox jumps over the lazy dog. " * 20
    data = tmp_path / "text.txt"
    data.write_text(text, encoding="utf-8")
    voc = CharVocab(sorted(set(text)))
    model = _tiny_spikegpt(voc.size)
    save_program(lower_spikegpt(model, metadata={"vocab": voc.to_config()}), tmp_path / "gpt.h5")
    png = tmp_path / "plots" / "gpt.png"
    assert main(["run", str(tmp_path / "gpt.h5"), "--data", str(data), "--tokens", "12", "--plot", str(png),
                 "--quiet"]) == 0
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1000, 650)  # 10 x 6.5 in
    assert f"plot -> {png}" in capsys.readouterr().out
