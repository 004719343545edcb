"""Figures of a run: energy and firing rate per layer, spike rasters, membrane traces, an FTWT
model against its unmasked baseline, and a SpikeGPT run per block and per token.

Every ``*_figure`` function returns a matplotlib :class:`~matplotlib.figure.Figure` (it shows in a
notebook as it is); :func:`save_figure` writes one as a PNG atomically, and :func:`plot_report` is
the two in one for ``spike run --plot``.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from spike.atomic import atomic_write_bytes
from spike.energy import CATEGORIES, as_energy_json, fmt_energy

__all__ = ["energy_figure", "raster_figure", "membrane_figure", "ftwt_comparison_figure", "spikegpt_figure",
           "save_figure", "plot_report"]

_UNITS = ((1, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"))


def _unit(peak: float) -> tuple[float, str]:
    """The (scale in joules, name) of the largest unit not above ``peak`` (pJ below 1 nJ)."""
    return next(((s, u) for s, u in _UNITS if peak >= s), (1e-12, "pJ"))


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
    scale, unit = _unit(max([r["energy_j"] for r in charged] + [static], default=0.0))
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


# ------------------------------------------------------------------------ FTWT: unmasked vs masked

# what a node's operations are (key in a run report's ``ops.per_node``), the legend text, the hatch
_OP_KINDS = (("syn_ops", "accumulates (syn_ops)", ""), ("macs", "MACs", "//"),
             ("pool_ops", "pooling accumulates", "xx"), ("host_flops", "host FLOPs (e.g. FTWT gates)", ".."))
_MODEL_COLOURS = ("0.55", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _run_report(report: Any) -> dict[str, Any]:
    """A run report (``spike run --json``, ``Report.to_run_report``) given as a dict or a path."""
    if isinstance(report, (str, os.PathLike)):
        report = json.loads(Path(report).read_text())
    if isinstance(report, Mapping) and isinstance(report.get("ops"), Mapping) and "per_node" in report["ops"]:
        return dict(report)
    raise ValueError("expected a run report (a dict with ops.per_node, as `spike run --json` writes) or a path to "
                     f"one; got {type(report).__name__}")


def _fmt_ops(n: float) -> str:
    return f"{n:,.0f} ops"


def _merged_order(orders: Sequence[Sequence[str]]) -> list[str]:
    """The first order, with each name only a later one has inserted before its successor there."""
    out = list(orders[0])
    for order in orders[1:]:
        for i, name in enumerate(order):
            if name not in out:
                after = next((m for m in order[i + 1:] if m in out), None)
                out.insert(out.index(after) if after is not None else len(out), name)
    return out


def _node_values(report: dict[str, Any], metric: str) -> dict[str, dict[str, float]]:
    """kind -> node -> value per sample: the op kinds of ``_OP_KINDS`` (``ops``) or ``energy_j``."""
    if metric == "ops":
        rows = report["ops"]["per_node"]
        return {k: {r["name"]: float(r.get(k) or 0.0) for r in rows} for k, _, _ in _OP_KINDS}
    if metric == "energy":
        if not report.get("energy"):
            raise ValueError("metric='energy': a report has no energy section "
                             "(run it for a target with energy figures)")
        return {"energy_j": {r["name"]: float(r["energy_j"]) for r in report["energy"]["per_node"]}}
    raise ValueError(f"metric must be 'ops' or 'energy', got {metric!r}")


def ftwt_comparison_figure(baseline: Any, masked: Any, metric: str = "ops") -> Figure:
    """Operations (or energy) per sample per node of the unmasked baseline and of the FTWT-masked
    model(s), as grouped bars on one x-axis: one group per node, one bar per model.

    ``baseline``, ``masked``: run reports (``Report.to_run_report``, ``spike run --json``; dicts or
    paths); ``masked`` may be ``{label: report}`` for several masked models (e.g. one per ratio r).
    ``metric="ops"``: each bar stacks the node's ``syn_ops``, ``macs``, ``pool_ops`` and
    ``host_flops`` per sample (hatch = kind); ``metric="energy"``: joules per sample per node from
    the reports' ``energy`` sections. A node counted in one model only (a gate) is 0 in the others;
    nodes with nothing counted anywhere are left out. The legend gives each model's total ``S`` and,
    for a masked model, its change ``S_masked / S_baseline - 1``; with one masked model each group
    is annotated with that node's change."""
    masked_reports = ({str(k): v for k, v in masked.items()} if isinstance(masked, Mapping) and "ops" not in masked
                      else {"FTWT": masked})
    reports = {"unmasked": _run_report(baseline), **{k: _run_report(v) for k, v in masked_reports.items()}}
    values = {m: _node_values(r, metric) for m, r in reports.items()}
    order = _merged_order([[row["name"] for row in r["ops"]["per_node"]] for r in reports.values()])
    kinds = [k for k in values["unmasked"] if any(v[k].get(n) for v in values.values() for n in order)]
    nodes = [n for n in order if any(v[k].get(n) for v in values.values() for k in kinds)]
    totals = {m: sum(v[k].get(n, 0.0) for k in kinds for n in nodes) for m, v in values.items()}
    peak = max((sum(v[k].get(n, 0.0) for k in kinds) for v in values.values() for n in nodes), default=0.0)
    if metric == "energy":
        scale, unit = _unit(peak)
        ylabel, fmt = f"{unit} per sample", fmt_energy
    else:
        scale, unit = next(((s, u) for s, u in ((1e9, "billion "), (1e6, "million "), (1e3, "thousand "))
                            if peak >= s), (1.0, ""))
        ylabel, fmt = f"{unit}operations per sample", _fmt_ops
    fig = _figure(min(14.0, max(9.0, 3.5 + 0.3 * len(nodes) * len(reports))), 5.0)
    ax = fig.subplots()
    width = 0.8 / len(reports)
    x = np.arange(len(nodes))
    hatches = dict((k, h) for k, _, h in _OP_KINDS)
    handles = []
    for j, (model, vals) in enumerate(values.items()):
        colour = _MODEL_COLOURS[j % len(_MODEL_COLOURS)]
        pos = x + (j - (len(reports) - 1) / 2) * width
        bottom = np.zeros(len(nodes))
        for k in kinds:
            h = np.array([vals[k].get(n, 0.0) for n in nodes]) / scale
            ax.bar(pos, h, width, bottom=bottom, color=colour, hatch=hatches.get(k, ""), edgecolor="white",
                   linewidth=0.5)
            bottom += h
        change = "" if j == 0 else (f", {totals[model] / totals['unmasked'] - 1:+.1%}" if totals["unmasked"] else "")
        handles.append(Patch(facecolor=colour, label=f"{model}: {fmt(totals[model])}{change}"))
        if j == 1 and len(reports) == 2:  # one masked model: its change on each node
            base = [sum(values["unmasked"][k].get(n, 0.0) for k in kinds) for n in nodes]
            for xi, top, b in zip(pos, bottom, base):
                if b:
                    ax.annotate(f"{top * scale / b - 1:+.0%}", (xi, top), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7)
    if metric == "ops" and len(kinds) > 1:
        handles += [Patch(facecolor="white", edgecolor="0.3", hatch=h, label=label)
                    for k, label, h in _OP_KINDS if k in kinds]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_xticks(x, nodes, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(nodes) - 0.4)
    ax.set_ylim(0, peak / scale * 1.12 if peak else 1.0)  # room for the change labels
    ax.set_ylabel(ylabel)
    ax.set_xlabel("node (program order)", fontsize=8)
    what = "operations" if metric == "ops" else f"energy on {reports['unmasked']['energy'].get('target', '?')}"
    ax.set_title(f"{what} per sample per node: unmasked vs FTWT-masked", fontsize=11)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ SpikeGPT per block

def _block_ticks(ax: Any, labels: Sequence[str], x: np.ndarray) -> None:
    """Tick labels for the block groups, thinned to at most about 16 so they never overlap."""
    step = max(1, -(-len(labels) // 16))
    keep = [i for i in range(len(labels)) if i % step == 0 or i == len(labels) - 1 or not labels[i].isdigit()]
    ax.set_xticks(x[keep], [labels[i] for i in keep], fontsize=8)
    ax.set_xlim(x[0] - 0.6, x[-1] + 0.6)
    ax.set_xlabel("block", fontsize=8)


# one colour per kind of operation, the same in the counts and the energy panels
_OP_COLOURS = {"syn_ops": "tab:blue", "macs": "tab:red", "host_flops": "tab:green", "pool_ops": "tab:purple",
               "neuron_updates_active": "tab:orange", "neuron_updates_idle": "tab:brown", "spikes": "tab:olive"}


def spikegpt_figure(report: Any) -> Figure:
    """A compiled SpikeGPT run in four panels, every figure per token as in the report's table:
    the firing rate of each block's SN1 and SN2 (and of the binary embedding); ``syn_ops``,
    ``macs`` and ``host_flops`` per token per block as executed (log scale); energy per token per
    block as executed on the report's target, stacked by category (the bars sum to the table's
    "as executed" energy); energy per token three ways (as executed, the paper's convention, a
    vanilla GPT), each SpikeGPT bar labelled with ``E_vanilla / E``. ``report``: a
    :class:`spike.models.spikegpt.report.SpikeGPTReport` (its ``per_block()`` rows and ``energy_pj``)."""
    rows = report.per_block()
    labels = ["emb" if r["block"] == "embedding" else r["block"].removeprefix("block ") for r in rows]
    x = np.arange(len(rows))
    fig = _figure(10.0, 6.5)
    (a_rate, a_ops), (a_energy, a_three) = fig.subplots(2, 2)

    spiking = [i for i, r in enumerate(rows) if r["rates"]]  # the head has no spiking layer
    a_rate.set_title("firing rate per block", fontsize=10)
    if spiking:
        xr = np.arange(len(spiking))
        width = 0.4
        for j, (key, colour, label) in enumerate((("sn1", "tab:blue", "SN1 (after time mixing)"),
                                                  ("sn2", "tab:orange", "SN2 (after channel mixing)"))):
            idx = [k for k, i in enumerate(spiking) if key in rows[i]["rates"]]
            a_rate.bar(xr[idx] + (j - 0.5) * width, [rows[spiking[k]]["rates"][key] for k in idx], width,
                       color=colour, label=label)
        emb = [k for k, i in enumerate(spiking) if "embedding" in rows[i]["rates"]]
        a_rate.bar(xr[emb], [rows[spiking[k]]["rates"]["embedding"] for k in emb], 2 * width, color="0.55",
                   label="binary embedding")
        a_rate.set_ylabel("spikes per neuron per token", fontsize=9)
        a_rate.margins(y=0.3)
        a_rate.legend(fontsize=7, ncol=2, loc="upper right")
        _block_ticks(a_rate, [labels[i] for i in spiking], xr)
    else:  # a --no-spikes model
        a_rate.text(0.5, 0.5, "no spiking layers\n(a --no-spikes model)", ha="center", va="center",
                    transform=a_rate.transAxes, fontsize=10, color="0.4")
        a_rate.set_axis_off()

    width = 0.27
    peak = 0.0
    for j, key in enumerate(("syn_ops", "macs", "host_flops")):
        vals = np.array([r[key] for r in rows], dtype=float)
        peak = max(peak, float(vals.max(initial=0.0)))
        a_ops.bar(x + (j - 1) * width, np.where(vals > 0, vals, np.nan), width, color=_OP_COLOURS[key], label=key)
    a_ops.set_yscale("log")
    if peak > 0:
        a_ops.set_ylim(top=peak * 30)  # room for the legend above the bars
    a_ops.set_ylabel("operations per token", fontsize=9)
    a_ops.set_title("operations per token per block, as executed", fontsize=10)
    a_ops.legend(fontsize=7, ncol=3, loc="upper center")
    _block_ticks(a_ops, labels, x)

    total = sum(sum(r["energy_j"].values()) for r in rows)
    scale, unit = _unit(max((sum(r["energy_j"].values()) for r in rows), default=0.0))
    bottom = np.zeros(len(rows))
    for cat in CATEGORIES:
        vals = np.array([r["energy_j"].get(cat, 0.0) for r in rows]) / scale
        if vals.any():
            a_energy.bar(x, vals, 0.7, bottom=bottom, color=_OP_COLOURS.get(cat), label=cat)
            bottom += vals
    a_energy.set_ylabel(f"{unit} per token", fontsize=9)
    a_energy.set_title(f"energy per token per block, as executed ({fmt_energy(total)} in all)", fontsize=10)
    a_energy.margins(y=0.3)
    a_energy.legend(fontsize=7, ncol=3, loc="upper center", title=f"on {report.target}", title_fontsize=7)
    _block_ticks(a_energy, labels, x)

    pj = report.energy_pj
    three = (("as executed", pj["executed"], "tab:blue"), ("paper's convention", pj["paper_convention"], "tab:cyan"),
             ("vanilla GPT\n(same L, d, T)", pj["vanilla_gpt"], "0.55"))
    scale3, unit3 = _unit(max(v for _, v, _ in three) * 1e-12)
    y = np.arange(len(three))[::-1]
    a_three.barh(y, [v * 1e-12 / scale3 for _, v, _ in three], 0.6, color=[c for _, _, c in three])
    for k, (yi, (_, v, _)) in enumerate(zip(y, three)):
        ratio = "" if k == 2 else f"  (vanilla / this: {pj['vanilla_gpt'] / max(v, 1e-30):.1f}x)"
        a_three.annotate(fmt_energy(v * 1e-12) + ratio, (v * 1e-12 / scale3, yi), xytext=(3, 0),
                         textcoords="offset points", va="center", fontsize=8)
    a_three.set_yticks(y, [label for label, _, _ in three], fontsize=8)
    a_three.set_xlabel(f"{unit3} per token", fontsize=9)
    a_three.set_xlim(0, max(v for _, v, _ in three) * 1e-12 / scale3 * 1.8)
    a_three.set_title(f"energy per token, three ways, on {report.target}", fontsize=10)

    blocks = sum(r["block"].startswith("block ") for r in rows)
    bits = "" if report.bits_per_token is None else f", {report.bits_per_token:.3f} bits per token"
    fig.suptitle(f"SpikeGPT: {blocks} blocks, {report.tokens} tokens x {report.batch}{bits}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_report(report: Any, path: "str | os.PathLike") -> Path:
    """:func:`energy_figure` of ``report`` written to ``path`` (PNG, atomically)."""
    return save_figure(energy_figure(report), path)
