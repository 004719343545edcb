"""Energy of a run on a hardware target, from the measured op counts (design §7).

Energy per sample = sum over counted operations of count x energy per operation, plus static
power x run time. Categories (the keys of ``breakdown``) and the figure each one uses:

=========================  ===============================  ======================================
category                   count (per sample)               figure (``hw_configs/<target>.yaml``)
=========================  ===============================  ======================================
``syn_ops``                ``syn_ops``                      ``energy.syn_op``
``macs``                   ``macs``                         ``energy.mac``
``pool_ops``               ``pool_ops``                     ``energy.syn_op``
``neuron_updates_active``  spikes of the population          ``energy.neuron_update_active``
``neuron_updates_idle``    ``neuron_updates`` - spikes       ``energy.neuron_update_idle``
``spikes``                 ``spikes``                       ``energy.spike`` (sent within a tile)
``spikes_routed_hops``     ``spikes_routed_hops``           ``energy.hop`` (per mesh hop)
``syn_mem_reads``          ``syn_mem_reads_bytes``          ``energy.sram_read`` (per byte)
``host_flops``             ``host_flops``                   ``energy.host_flop``
``static``                 chips x run time                 ``power.static``
=========================  ===============================  ======================================

An *active* neuron update is one that emits a spike (the update that also resets and sends);
every other update is *idle*. Run time is ``batch_time_s`` when given (seconds the hardware takes
per sample), else ``(steps + latency) x timing.time_per_step`` (a program compiled for a target
with synaptic delays runs ``program.total_latency`` more steps on chip); chips are the mapped program's chips in use
(1 when unmapped). A category with a non-zero count but no figure in the target is NOT charged: it
is listed under ``uncharged`` (JSON) and "not charged" (table), never silently dropped.
``dense_ops`` is never charged on the target: it feeds the ANN comparison row.
``pool_ops`` (the accumulates of avg/sum pooling, which NeuroBench leaves out of its counts) are
charged as synaptic operations: at ``energy.syn_op`` on targets with cores (they pool on cores)
and on CMOS targets, where ``energy.syn_op`` is the add (E_AC) an accumulate costs.

Comparison rows (labelled; the convention SNN papers such as SpikeGPT use, arithmetic only):
the same network as a dense ANN on ``cmos45nm_fp32`` (every dense op a MAC, 4.6 pJ) and the SNN on
the same CMOS (syn_ops and pool_ops as adds at 0.9 pJ, macs at 4.6 pJ); the figures come from that
YAML file. ``dense_ops`` holds no pooling (as NeuroBench's Dense).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from spike.hardware import Figure, HardwareTarget, load_target

if TYPE_CHECKING:  # the counts and program a backend run gave; energy imports no compiler or backend
    from spike.backends.result import OpCounts
    from spike.compiler.ir.program import Program

# category -> (figure path, short column label)
CATEGORIES: dict[str, tuple[str, str]] = {
    "syn_ops": ("energy.syn_op", "syn_ops"),
    "macs": ("energy.mac", "macs"),
    "pool_ops": ("energy.syn_op", "pool_ops"),  # pooling accumulates, charged as synaptic ops
    "neuron_updates_active": ("energy.neuron_update_active", "upd_active"),
    "neuron_updates_idle": ("energy.neuron_update_idle", "upd_idle"),
    "spikes": ("energy.spike", "spikes"),
    "spikes_routed_hops": ("energy.hop", "hops"),
    "syn_mem_reads": ("energy.sram_read", "mem_reads"),
    "host_flops": ("energy.host_flop", "host_flops"),
}
STATIC = "static"
COMPARISON_TARGET = "cmos45nm_fp32"


def _category_counts(counts: Mapping[str, float]) -> dict[str, float]:
    spikes = float(counts.get("spikes", 0.0))
    updates = float(counts.get("neuron_updates", 0.0))
    active = min(spikes, updates)
    return {
        "syn_ops": float(counts.get("syn_ops", 0.0)),
        "macs": float(counts.get("macs", 0.0)),
        "pool_ops": float(counts.get("pool_ops", 0.0)),
        "neuron_updates_active": active,
        "neuron_updates_idle": updates - active,
        "spikes": spikes,
        "spikes_routed_hops": float(counts.get("spikes_routed_hops", 0.0)),
        "syn_mem_reads": float(counts.get("syn_mem_reads_bytes", 0.0)),
        "host_flops": float(counts.get("host_flops", 0.0)),
    }


def _figure(target: HardwareTarget, path: str) -> Figure | None:
    section, name = path.split(".")
    obj = getattr(target, section)
    return getattr(obj, name, None) if obj is not None else None


@dataclass
class EnergyReport:
    """Energy per sample (joules) on one target, per node and in total, with provenance.
    :meth:`table` prints it; :meth:`to_records` and :meth:`to_dict` give it as rows and as columns
    (``pandas.DataFrame(report.to_dict())``); :meth:`to_json` is the report's ``energy`` section."""

    target: str
    steps: int
    chips: int
    run_time_s: float | None
    per_node: list[dict[str, Any]]
    breakdown: dict[str, float]
    sources: dict[str, dict[str, Any]]
    estimates: list[str]
    uncharged: dict[str, float]
    comparison: list[dict[str, Any]] = field(default_factory=list)

    @property
    def static_j(self) -> float:
        return self.breakdown.get(STATIC, 0.0)

    @property
    def dynamic_j(self) -> float:
        return sum(v for k, v in self.breakdown.items() if k != STATIC)

    @property
    def total_j(self) -> float:
        return self.dynamic_j + self.static_j

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "total_j": self.total_j,
            "dynamic_j": self.dynamic_j,
            "static_j": self.static_j,
            "per_node": [dict(r) for r in self.per_node],
            "breakdown": dict(self.breakdown),
            "sources": {k: dict(v) for k, v in self.sources.items()},
            "estimates": list(self.estimates),
            "uncharged": dict(self.uncharged),
            "comparison": [dict(c) for c in self.comparison],
            "steps": self.steps,
            "chips": self.chips,
            "run_time_s": self.run_time_s,
            "energy_is": "joules per sample (mean over samples), summed over steps",
        }

    def to_records(self) -> list[dict[str, Any]]:
        """One row per node: ``{"node", "kind", "energy_j", <each category of CATEGORIES the
        target charges>, "neurons", "firing_rate"}``, joules per sample; then a ``"static"`` row
        (kind "chip") when the target has static power."""
        cats = [c for c in CATEGORIES if c in self.breakdown]
        rows = [{"node": r["name"], "kind": r["kind"], "energy_j": r["energy_j"],
                 **{c: r["breakdown"].get(c, 0.0) for c in cats},
                 "neurons": r.get("neurons", 0), "firing_rate": r.get("firing_rate")} for r in self.per_node]
        if STATIC in self.breakdown:
            rows.append({"node": STATIC, "kind": "chip", "energy_j": self.static_j, **{c: 0.0 for c in cats},
                         "neurons": 0, "firing_rate": None})
        return rows

    def to_dict(self) -> dict[str, list[Any]]:
        """The rows of :meth:`to_records` as columns: what ``pandas.DataFrame(...)`` takes."""
        rows = self.to_records()
        return {c: [r[c] for r in rows] for c in (rows[0] if rows else ("node", "kind", "energy_j"))}

    def table(self) -> str:
        cats = [c for c in CATEGORIES if any(r["breakdown"].get(c, 0.0) for r in self.per_node)]
        w = max([22, *(len(r["name"]) for r in self.per_node)])  # node names in full
        head = f"{'node':<{w}} {'kind':<10} " + " ".join(f"{CATEGORIES[c][1]:>10}" for c in cats) + f" {'total':>12} {'share':>6}"
        lines = [
            f"energy on {self.target} per sample ({self.steps} steps, {self.chips} chip(s))",
            head,
            "-" * len(head),
        ]
        dyn = self.dynamic_j or 1.0
        for r in self.per_node:
            if not r["energy_j"] and not any(r["counts"].values()):
                continue
            lines.append(
                f"{r['name']:<{w}} {r['kind'][:10]:<10} "
                + " ".join(f"{fmt_energy(r['breakdown'].get(c, 0.0)):>10}" for c in cats)
                + f" {fmt_energy(r['energy_j']):>12} {100 * r['energy_j'] / dyn:>5.1f}%"
            )
        lines.append("-" * len(head))
        lines.append(
            f"{'dynamic':<{w}} {'':<10} " + " ".join(f"{fmt_energy(self.breakdown.get(c, 0.0)):>10}" for c in cats)
            + f" {fmt_energy(self.dynamic_j):>12}"
        )
        if STATIC in self.breakdown:
            lines.append(
                f"static {fmt_energy(self.static_j)}: {self.sources['power.static']['value']} "
                f"{self.sources['power.static']['unit']} x {self.chips} chip(s) x {self.run_time_s:.4g} s"
            )
        lines.append(f"total {fmt_energy(self.total_j)} per sample")
        if self.uncharged:
            lines.append(
                f"not charged (no figure in {self.target}): "
                + ", ".join(f"{k} {v:.4g}" for k, v in self.uncharged.items())
            )
        if self.comparison:
            lines.append("comparison, 45 nm CMOS arithmetic only (the convention of SNN papers):")
            for c in self.comparison:
                lines.append(f"  {c['label']}: {fmt_energy(c['energy_j'])}  [{c['formula']}]")
        lines.append("figures used:")
        for path, s in self.sources.items():
            lines.append(f"  {path} = {s['value']} {s['unit']} [{s['kind']}] {s['source']}")
        lines.append("estimates: " + (", ".join(self.estimates) if self.estimates else "none"))
        return "\n".join(lines)


def fmt_energy(j: float) -> str:
    """Joules with an SI prefix: ``1.23 nJ``."""
    if j == 0:
        return "0 J"
    for scale, unit in ((1, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"), (1e-12, "pJ")):
        if abs(j) >= scale:
            return f"{j / scale:.3g} {unit}"
    return f"{j / 1e-15:.3g} fJ"


def _node_rows(ops: OpCounts, program: Program | None, steps: int) -> list[tuple[str, str, dict[str, float], dict[str, Any]]]:
    """Per node: its kind, counts per sample and, for a population, its neurons and firing rate
    ``spikes / (neurons x counted steps)`` (the latency steps after the input's ``steps`` included)."""
    counted = ops.steps if ops.steps is not None else steps
    rows = []
    for name in ops.per_node:
        counts = ops.node_mean(name)
        extra: dict[str, Any] = {"neurons": 0, "firing_rate": None}
        if program is not None and name in program.graph:
            node = program.node(name)
            if node.KIND == "population":
                extra = {
                    "neurons": node.size,
                    "firing_rate": counts.get("spikes", 0.0) / max(node.size * counted, 1),
                }
        rows.append((name, ops.kinds.get(name, ""), counts, extra))
    return rows


def comparison_rows(ops: OpCounts) -> list[dict[str, Any]]:
    """The dense-ANN and SNN rows on 45 nm fp32 CMOS (figures from ``cmos45nm_fp32.yaml``)."""
    cmos = load_target(COMPARISON_TARGET)
    mac, add = cmos.energy.mac, cmos.energy.syn_op
    t = ops.total()
    ann = t.get("dense_ops", 0.0) * mac.si
    snn = (t.get("syn_ops", 0.0) + t.get("pool_ops", 0.0)) * add.si + t.get("macs", 0.0) * mac.si
    return [
        {
            "label": f"dense ANN on {cmos.name}",
            "energy_j": ann,
            "formula": f"dense_ops x E_MAC {mac.value} {mac.unit}",
            "target": cmos.name,
            "sources": [mac.source],
        },
        {
            "label": f"SNN on {cmos.name}",
            "energy_j": snn,
            "formula": (f"syn_ops x E_AC {add.value} {add.unit} + macs x E_MAC {mac.value} {mac.unit}"
                        + (f" + pool_ops x E_AC {add.value} {add.unit}" if t.get("pool_ops", 0.0) else "")),
            "target": cmos.name,
            "sources": [add.source, mac.source],
            "ann_over_snn": ann / snn if snn else None,
        },
    ]


def run_steps(ops: OpCounts, program: Program | None, steps: int | None = None) -> int:
    """The input steps ``T`` of the run that counted ``ops``: ``ops.steps - latency`` (the counts
    cover the ``program.total_latency`` padding steps too; latency 0 without a program). ``steps``,
    when given, must equal it (counts without ``steps`` need it)."""
    latency = program.total_latency if program is not None else 0
    if ops.steps is None:
        if steps is None:
            raise ValueError("the counts do not record their steps (OpCounts.steps is None): give steps=T, "
                             "the input steps of the run")
        return int(steps)
    counted = int(ops.steps) - latency
    if counted < 1:
        raise ValueError(f"counts summed over {ops.steps} steps cannot come from a run of this program "
                         f"(it runs {latency} latency step(s) after the input's)")
    if steps is not None and int(steps) != counted:
        raise ValueError(f"steps={steps} contradicts the counts: they were summed over {ops.steps} steps, "
                         f"{counted} input step(s) + {latency} latency step(s) of the program"
                         + ("" if program is not None else " (none without a program: pass the program)"))
    return counted


def energy_report(
    ops: OpCounts,
    program: Program | None,
    target: "str | os.PathLike | HardwareTarget",
    steps: int | None = None,
    batch_time_s: float | None = None,
    compare: bool = True,
) -> EnergyReport:
    """Energy per sample of the counted run ``ops`` (per sample, summed over its steps) on
    ``target``. ``program`` supplies neuron counts (firing rates), its latency and the mapping's
    chip count. ``steps``, the input steps ``T``, is taken from the counts (:func:`run_steps`);
    a value that contradicts them is refused."""
    steps = run_steps(ops, program, steps)
    tgt = load_target(target)
    figs = {cat: _figure(tgt, path) for cat, (path, _) in CATEGORIES.items()}
    per_node, breakdown, uncharged = [], {c: 0.0 for c in CATEGORIES}, {}
    for name, kind, counts, extra in _node_rows(ops, program, steps):
        cat_counts = _category_counts(counts)
        node_break = {}
        for cat, n in cat_counts.items():
            fig = figs[cat]
            if fig is None:
                if n:
                    uncharged[cat] = uncharged.get(cat, 0.0) + n
                continue
            node_break[cat] = n * fig.si
            breakdown[cat] += node_break[cat]
        per_node.append({
            "name": name, "kind": kind, "energy_j": sum(node_break.values()), "breakdown": node_break,
            "counts": cat_counts, **extra,
        })
    breakdown = {c: v for c, v in breakdown.items() if figs[c] is not None}
    used = {CATEGORIES[c][0]: figs[c] for c in breakdown if any(r["counts"][c] for r in per_node)}

    mapping = (program.metadata.get("mapping") if program is not None else None) or {}
    chips = int(mapping.get("chips_used", mapping.get("chips", 1)) or 1)
    run_time = batch_time_s
    if run_time is None and tgt.timing.time_per_step is not None:
        run_time = (steps + (program.total_latency if program is not None else 0)) * tgt.timing.time_per_step.si
        used["timing.time_per_step"] = tgt.timing.time_per_step
    static = tgt.power.static
    if static is not None:
        if run_time is None:
            uncharged[STATIC] = float(chips)
        else:
            breakdown[STATIC] = static.si * chips * run_time
            used["power.static"] = static
    estimates = [p for p, f in used.items() if f.is_estimate]  # their sources are in ``sources``
    return EnergyReport(
        target=tgt.name,
        steps=int(steps),
        chips=chips,
        run_time_s=run_time,
        per_node=per_node,
        breakdown=breakdown,
        sources={p: f.to_json() for p, f in used.items()},
        estimates=estimates,
        uncharged=uncharged,
        comparison=comparison_rows(ops) if compare else [],
    )


# ------------------------------------------------------------------------- reading a report back


def as_energy_json(report: Any) -> dict[str, Any]:
    """The energy JSON of an :class:`EnergyReport`, its JSON, a report holding it under ``"energy"``
    or a path to such a file."""
    if isinstance(report, EnergyReport):
        return report.to_json()
    if isinstance(report, (str, os.PathLike)):
        report = json.loads(Path(report).read_text())
    if isinstance(report, Mapping):
        if "energy" in report and isinstance(report["energy"], Mapping):
            return dict(report["energy"])
        if "per_node" in report:
            return dict(report)
    raise ValueError(
        "expected an EnergyReport, its to_json() dict, a report dict with an 'energy' key, "
        f"or a path to such a JSON file; got {type(report).__name__}"
    )


__all__ = ["EnergyReport", "energy_report", "run_steps", "comparison_rows", "as_energy_json", "fmt_energy",
           "CATEGORIES"]
