"""Figures return matplotlib Figures whose artists carry the data: energy bars (static as its own
bar), one raster dot per recorded spike, one trace per neuron."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from spike.energy import energy_report
from spike.plots import energy_figure, membrane_figure, raster_figure, save_figure

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
