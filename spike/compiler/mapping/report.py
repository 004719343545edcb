"""The mapping report of a mapped program: per-core use of every limit, per-population summary and
placement cost, as a table (:meth:`MappingReport.render`) or JSON (:meth:`MappingReport.to_json`),
rebuilt from ``metadata["mapping"]`` (so also after loading a program from a file).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from spike.compiler.ir.program import Program
from spike.compiler.mapping.connectivity import HOST, MappingError

__all__ = ["MappingReport", "mapping_report", "mapping_of"]


def mapping_of(program: Program) -> Mapping[str, Any]:
    mapping = program.metadata.get("mapping")
    if not mapping:
        raise MappingError("program has no mapping: run partition(program, target) first")
    return mapping


@dataclass(frozen=True)
class MappingReport:
    """Per-core use of every limit, per-population summary and placement cost."""

    mapping: Mapping[str, Any]

    @property
    def cores(self) -> list[dict[str, Any]]:
        return list(self.mapping["cores"])

    def per_population(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        limits = self.mapping["limits"]
        for c in self.mapping["cores"]:
            r = rows.setdefault(c["population"], {
                "population": c["population"], "cores": 0, "neurons": 0, "synapses": 0,
                "max_neurons": 0, "max_mem_bits": 0, "max_fan_in": 0, "max_fan_out": 0,
                "chips": set(),
            })
            r["cores"] += 1
            r["neurons"] += c["neurons"]
            r["synapses"] += c["synapses"]
            r["max_neurons"] = max(r["max_neurons"], c["neurons"])
            r["max_mem_bits"] = max(r["max_mem_bits"], c["mem_bits"])
            r["max_fan_in"] = max(r["max_fan_in"], c["fan_in"])
            r["max_fan_out"] = max(r["max_fan_out"], c["fan_out"])
            r["chips"].add(c.get("chip", 0))
        out = []
        for r in rows.values():
            util = {
                "neurons": r["max_neurons"] / limits["neurons"],
                "syn_mem_bits": r["max_mem_bits"] / limits["syn_mem_bits"],
                "fan_in_axons": r["max_fan_in"] / limits["fan_in_axons"],
                "fan_out_axons": r["max_fan_out"] / limits["fan_out_axons"],
            }
            closest = max(util, key=util.get)
            out.append({**r, "chips": sorted(r["chips"]), "closest_limit": closest, "utilisation": util[closest]})
        return out

    def render(self) -> str:
        m = self.mapping
        lim = m["limits"]
        p = m.get("placement", {})
        populations = self.per_population()
        w = max([22, *(len(r["population"]) for r in populations)])
        lines = [
            f"mapping onto {m['target']}: {len(m['cores'])} cores on {m.get('chips_used', m['chips'])} chip(s) "
            f"({m['cores_per_chip']} cores/chip, mesh {m['mesh'][0]}x{m['mesh'][1]} tiles x "
            f"{m['cores_per_tile']} cores), {m['weight_bits']}-bit weights",
            f"limits per core: {lim['neurons']} neurons, {lim['syn_mem_bits']} bits synaptic memory, "
            f"{lim['fan_in_axons']} fan-in axons, {lim['fan_out_axons']} fan-out axons",
            f"{'population':<{w}} {'cores':>5} {'neurons':>8} {'synapses':>11} | max per core: "
            f"{'neurons':>7} {'memory':>7} {'fan-in':>6} {'fan-out':>7} | closest limit",
        ]
        for r in populations:
            lines.append(
                f"{r['population']:<{w}} {r['cores']:>5} {r['neurons']:>8} {r['synapses']:>11} | "
                f"{'':>13} {r['max_neurons']:>7} {100 * r['max_mem_bits'] / lim['syn_mem_bits']:>6.1f}% "
                f"{r['max_fan_in']:>6} {r['max_fan_out']:>7} | {r['closest_limit']} "
                f"{100 * r['utilisation']:.0f}%"
            )
        if p:
            lines.append(
                f"placement {p['method']} (rates {p['rates']}): {p['cost']:.4g} traffic x hops per step "
                f"(sequential {p['sequential_cost']:.4g})"
            )
        host_nodes = sorted(n for n, h in m.get("nodes", {}).items() if h == HOST)
        if host_nodes:
            shown = ", ".join(host_nodes[:8]) + (f", ... ({len(host_nodes)} in all)" if len(host_nodes) > 8 else "")
            lines.append(f"on the host: {shown}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        m = self.mapping
        return {
            "target": m["target"],
            "cores": [dict(c) for c in m["cores"]],
            "chips": m.get("chips_used", m["chips"]),
            "limits": dict(m["limits"]),
            "weight_bits": m["weight_bits"],
            "per_population": self.per_population(),
            "placement": dict(m.get("placement", {})),
            "nodes": dict(m.get("nodes", {})),
        }


def mapping_report(program: Program) -> MappingReport:
    """The mapping report of a mapped program (rebuilt from its metadata, e.g. after loading)."""
    return MappingReport(mapping_of(program))
