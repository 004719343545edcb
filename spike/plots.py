"""Figures of a run: energy and firing rate per layer, spike rasters, membrane traces.

Every ``*_figure`` function returns a matplotlib :class:`~matplotlib.figure.Figure` (it shows in a
notebook as it is); :func:`save_figure` writes one as a PNG atomically, and :func:`plot_report` is
the two in one for ``spike run --plot``.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from spike.atomic import atomic_write_bytes
from spike.energy import CATEGORIES, as_energy_json, fmt_energy

__all__ = ["energy_figure", "raster_figure", "membrane_figure", "save_figure", "plot_report"]

_UNITS = ((1, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"))


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: "str | os.PathLike") -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (temp file, then rename)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out = Path(path)
    atomic_write_bytes(out, buf.getvalue())
    return out


def energy_figure(report: Any) -> Figure:
    """Firing rate per population (left) and energy per sample per node, stacked by category,
    with the target's static energy as its own bar (right). ``report``: an
    :class:`spike.energy.EnergyReport`, its JSON, a report holding it under ``"energy"`` or a path."""
    data = as_energy_json(report)
    rows = data["per_node"]
    pops = [r for r in rows if r.get("firing_rate") is not None]
    charged = [r for r in rows if r.get("energy_j")]
    static = float(data.get("static_j") or 0.0)
    names = [r["name"] for r in charged] + (["static"] if static else [])
    fig = _figure(max(8.0, 0.5 * (len(pops) + len(names)) + 4), 4.5)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(range(len(pops)), [r["firing_rate"] for r in pops], color="tab:blue")
    ax1.set_xticks(range(len(pops)), [r["name"] for r in pops], rotation=45, ha="right", fontsize=8)
    ax1.set_ylabel("spikes per neuron per step")
    ax1.set_title("firing rate per layer")
    peak = max([r["energy_j"] for r in charged] + [static], default=0.0)
    scale, unit = next(((s, u) for s, u in _UNITS if peak >= s), (1e-12, "pJ"))
    bottom = np.zeros(len(charged))
    for cat in CATEGORIES:
        vals = np.array([r["breakdown"].get(cat, 0.0) for r in charged]) / scale
        if vals.any():
            ax2.bar(range(len(charged)), vals, bottom=bottom, label=cat)
            bottom += vals
    if static:
        ax2.bar([len(charged)], [static / scale], color="0.6", hatch="//", label="static (whole chip)")
    ax2.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax2.set_ylabel(f"{unit} per sample")
    ax2.set_title(f"energy on {data.get('target', '?')}: {fmt_energy(data.get('total_j', 0.0))} per sample")
    if names:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def raster_figure(spikes: Mapping[str, np.ndarray], sample: int = 0) -> Figure:
    """Spike raster of one sample: a panel per layer, a dot per (step, neuron) that spiked.
    ``spikes``: layer name -> ``[T, B, n]`` array (``RunResult.probes`` of populations)."""
    layers = list(spikes)
    fig = _figure(8.0, 1.0 + 1.6 * max(len(layers), 1))
    axes = fig.subplots(max(len(layers), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, layers):
        s = np.asarray(spikes[name])
        s = s.reshape(s.shape[0], s.shape[1], -1)[:, sample]
        t, j = np.nonzero(s)
        ax.scatter(t, j, s=4, marker="|", color="black", linewidths=0.8)
        ax.set_ylim(-0.5, s.shape[1] - 0.5)
        ax.set_xlim(-0.5, s.shape[0] - 0.5)
        ax.set_ylabel(f"{name}\nneuron", fontsize=8)
        ax.set_title(f"{name}: {len(t)} spikes, {s.shape[1]} neurons, rate {s.mean():.3f}", fontsize=8, loc="left")
    axes[-1].set_xlabel("step")
    fig.suptitle(f"spike raster, sample {sample}", fontsize=10)
    fig.tight_layout()
    return fig


def membrane_figure(membranes: Mapping[str, np.ndarray], thresholds: Mapping[str, float] | None = None,
                    sample: int = 0, neurons: int = 6) -> Figure:
    """Membrane traces of the first ``neurons`` neurons of each layer for one sample, with the
    threshold as a dashed line when given. ``membranes``: layer -> ``[T, B, n]`` (``name.v`` probes)."""
    layers = list(membranes)
    fig = _figure(8.0, 1.0 + 1.8 * max(len(layers), 1))
    axes = fig.subplots(max(len(layers), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, layers):
        v = np.asarray(membranes[name])
        v = v.reshape(v.shape[0], v.shape[1], -1)[:, sample, :neurons]
        for j in range(v.shape[1]):
            ax.plot(np.arange(v.shape[0]), v[:, j], linewidth=1, label=f"neuron {j}")
        if thresholds and name in thresholds:
            ax.axhline(thresholds[name], color="0.3", linestyle="--", linewidth=0.8, label="threshold")
        ax.set_ylabel(f"{name}\nmembrane", fontsize=8)
    axes[0].legend(fontsize=6, ncol=4, loc="upper right")
    axes[-1].set_xlabel("step")
    fig.suptitle(f"membrane potential, sample {sample}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_report(report: Any, path: "str | os.PathLike") -> Path:
    """:func:`energy_figure` of ``report`` written to ``path`` (PNG, atomically)."""
    return save_figure(energy_figure(report), path)
