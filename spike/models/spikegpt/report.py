"""Firing rates, operation counts and energy of a compiled SpikeGPT run, three ways.

- **as executed**: the counts the backend measured (``macs`` of the real-valued matmuls,
  ``syn_ops`` of the embedding lookup and of the spikes added into the residual stream,
  ``host_flops`` of LayerNorm, token mix, WKV, sigmoid, squared ReLU and the products), charged
  by :func:`spike.energy.energy_report` on the target.
- **paper's convention** (SpikeGPT §energy, reference.md): the block projections (K, V, R, O;
  FFN key, value, receptance) charged as accumulates, ``E_AC x firing rate x FLOPs``, at the
  firing rate of the spiking layer that feeds the sub-layer (block ``i``'s time mixer: the
  binary embedding for ``i = 0``, else SN2 of block ``i-1``; its channel mixer: SN1 of block
  ``i``); WKV and the element-wise ops as MACs (their measured ``host_flops``); the embedding,
  the residual adds and the head as executed. Our reading of the paper; the released code
  publishes no energy script.
- **vanilla GPT** of the same ``L``, ``d`` and context ``T`` (the run's tokens), the paper's way:
  every operation a MAC, per token ``L (12 d^2 + T d) + V d`` (Kaplan et al. 2020: ``2N +
  2 L n_ctx d`` forward FLOPs with ``N = 12 L d^2``, plus the head).

All figures are per token (counts summed over the run and the batch, divided by tokens).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spike.backends.result import RunResult
from spike.compiler.ir.program import Program
from spike.energy import energy_report
from spike.hardware import load_target

__all__ = ["SpikeGPTReport", "spikegpt_report", "vanilla_gpt_macs"]

_BLOCK_MATMULS = {"att": ("key", "value", "receptance", "output"), "ffn": ("key", "value", "receptance")}


def vanilla_gpt_macs(n_layer: int, n_embd: int, ctx: int, vocab: int) -> float:
    """MACs per token of a GPT with the same sizes (Kaplan et al. 2020, plus the untied head)."""
    return float(n_layer * (12 * n_embd**2 + ctx * n_embd) + vocab * n_embd)


@dataclass
class SpikeGPTReport:
    tokens: int
    batch: int
    target: str
    firing: list[dict[str, Any]]
    executed: dict[str, float]
    paper: dict[str, float]
    vanilla: dict[str, float]
    energy_pj: dict[str, float]
    figures: dict[str, Any]
    bits_per_token: float | None = None
    energy_detail: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens, "batch": self.batch, "target": self.target,
            "bits_per_token": self.bits_per_token, "firing": self.firing,
            "per_token": {"executed": self.executed, "paper_convention": self.paper, "vanilla_gpt": self.vanilla},
            "energy_pj_per_token": self.energy_pj,
            "ratios": {
                "vanilla_over_paper": self.energy_pj["vanilla_gpt"] / max(self.energy_pj["paper_convention"], 1e-30),
                "vanilla_over_executed": self.energy_pj["vanilla_gpt"] / max(self.energy_pj["executed"], 1e-30),
            },
            "figures": self.figures,
        }

    def table(self) -> str:
        lines = [f"SpikeGPT run: {self.tokens} tokens x {self.batch}"
                 + (f", {self.bits_per_token:.3f} bits per token" if self.bits_per_token is not None else "")]
        if self.firing:
            lines.append("firing rate (spikes per neuron per token):")
            lines += [f"  {r['layer']:<12} {r['node']:<18} {r['rate']:.4f}" for r in self.firing]
        lines.append(f"{'per token':<34}{'syn_ops':>12}{'macs':>12}{'host_flops':>12}{'energy':>12}")
        rows = (("as executed", self.executed, self.energy_pj["executed"]),
                ("paper's convention", self.paper, self.energy_pj["paper_convention"]),
                ("vanilla GPT (same L, d, T)", self.vanilla, self.energy_pj["vanilla_gpt"]))
        for label, counts, pj in rows:
            lines.append(f"{label:<34}{counts.get('syn_ops', 0):>12,.0f}{counts.get('macs', 0):>12,.0f}"
                         f"{counts.get('host_flops', 0):>12,.0f}{pj / 1e3:>10,.1f}nJ")
        j = self.to_json()["ratios"]
        lines.append(f"vanilla GPT / SpikeGPT energy on {self.target}: {j['vanilla_over_paper']:.1f}x by the paper's "
                     f"convention, {j['vanilla_over_executed']:.1f}x as executed (the paper claims 32.2x)")
        return "\n".join(lines)

    def per_block(self) -> list[dict[str, Any]]:
        """The executed run per token, grouped by where the nodes sit (what ``spike run --plot``
        draws): ``"embedding"`` (the token lookup, the binary embedding, ``ln0``), ``"block i"``
        (nodes ``blocks.i.*``), ``"head"`` (``ln_out``, the head). Each row: ``block``;
        ``syn_ops``, ``macs``, ``host_flops`` per token (the group's counts per stream / tokens per
        stream); ``energy_j`` per token by category on :attr:`target` (no static energy; the rows sum
        to ``energy_pj["executed"]``); ``rates``, the firing rates of its spiking layers
        (``{"embedding": r}`` or ``{"sn1": r1, "sn2": r2}``)."""
        detail = self.energy_detail
        steps = max(int(detail.steps), 1)
        rates = {r["node"]: r["rate"] for r in self.firing}
        groups: dict[str, dict[str, Any]] = {}
        seen_block = False
        for node in detail.per_node:
            m = _BLOCK_NODE.match(node["name"])
            seen_block = seen_block or m is not None
            label = f"block {m.group(1)}" if m else ("head" if seen_block else "embedding")
            g = groups.setdefault(label, {"block": label, "syn_ops": 0.0, "macs": 0.0, "host_flops": 0.0,
                                          "energy_j": {}, "rates": {}})
            for k in ("syn_ops", "macs", "host_flops"):
                g[k] += node["counts"].get(k, 0.0) / steps
            for cat, j in node["breakdown"].items():
                g["energy_j"][cat] = g["energy_j"].get(cat, 0.0) + j / steps
            if node["name"] in rates:
                key = m.group(2) if m and m.group(2) in ("sn1", "sn2") else "embedding"
                g["rates"][key] = rates[node["name"]]
        return list(groups.values())


_BLOCK_NODE = re.compile(r"^blocks\.(\d+)\.([^.]+)")


def _per_token(result: RunResult, names: list[str], key: str, tokens: int) -> float:
    return float(sum(int(np.sum(result.ops.per_node[n][key])) for n in names)) / tokens


def spikegpt_report(program: Program, result: RunResult, target: str = "cmos45nm_fp32",
                    token_ids: np.ndarray | None = None) -> SpikeGPTReport:
    """The report of ``result``, a run of the compiled SpikeGPT ``program``; ``token_ids``
    ``[T, B]`` (the input) adds the run's bits per token (next-token cross-entropy)."""
    meta = program.metadata
    if meta.get("model") != "spikegpt":
        raise ValueError("spikegpt_report: the program is not a compiled SpikeGPT (metadata model != 'spikegpt')")
    cfg, layers = meta["spikegpt"], meta["layers"]
    T, B = result.outputs["logits"].shape[:2]
    tokens = T * B
    per_node = result.ops.per_node
    nodes = list(per_node)

    def rate(name: str | None) -> float:
        if name is None:
            return 1.0  # --no-spikes: every input charged
        c = per_node[name]
        return float(np.sum(c["spikes"])) / max(float(np.sum(c["neuron_updates"])), 1.0)

    firing = []
    if layers.get("emb"):
        firing.append({"layer": "embedding", "node": layers["emb"], "rate": rate(layers["emb"])})
    for i, (s1, s2) in enumerate(zip(layers["sn1"], layers["sn2"])):
        firing += [{"layer": f"block {i} SN1", "node": s1, "rate": rate(s1)},
                   {"layer": f"block {i} SN2", "node": s2, "rate": rate(s2)}]

    executed = {k: _per_token(result, nodes, k, tokens)
                for k in ("syn_ops", "macs", "host_flops", "dense_ops", "neuron_updates", "spikes")}
    spiking_inputs = [layers.get("emb")] + list(layers["sn2"])
    charged_ac = 0.0
    block_macs = []
    for i in range(int(cfg["n_layer"])):
        for part, feeding in (("att", spiking_inputs[i] if layers["sn2"] else None),
                              ("ffn", layers["sn1"][i] if layers["sn1"] else None)):
            names = [f"blocks.{i}.{part}.{m}" for m in _BLOCK_MATMULS[part]]
            block_macs += names
            charged_ac += _per_token(result, names, "dense_ops", tokens) * rate(feeding)
    other = [n for n in nodes if n not in block_macs]
    paper = {"syn_ops": charged_ac + _per_token(result, other, "syn_ops", tokens),
             "macs": _per_token(result, other, "macs", tokens) + executed["host_flops"], "host_flops": 0.0}
    vanilla = {"macs": vanilla_gpt_macs(int(cfg["n_layer"]), int(cfg["n_embd"]), T, int(cfg["vocab_size"]))}

    hw = load_target(target)
    figs = hw.figures()
    for path in ("energy.syn_op", "energy.mac"):
        if path not in figs:
            raise ValueError(f"target {hw.name!r} has no {path} figure: the SpikeGPT comparison needs E_AC and E_MAC")
    e_ac, e_mac = figs["energy.syn_op"].si * 1e12, figs["energy.mac"].si * 1e12
    detail = energy_report(result.ops, program, hw, T, compare=False)
    energy_pj = {
        "executed": sum(v for k, v in detail.breakdown.items() if k != "static") * 1e12 / T,
        "paper_convention": paper["syn_ops"] * e_ac + paper["macs"] * e_mac,
        "vanilla_gpt": vanilla["macs"] * e_mac,
    }
    bits = None
    if token_ids is not None and T > 1:
        logits = torch.from_numpy(np.asarray(result.outputs["logits"][:-1], np.float64))
        target_ids = torch.from_numpy(np.asarray(token_ids[1:], np.int64))
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_ids.reshape(-1))
        bits = float(ce) / float(np.log(2))
    return SpikeGPTReport(
        tokens=T, batch=B, target=hw.name, firing=firing, executed=executed, paper=paper, vanilla=vanilla,
        energy_pj=energy_pj, bits_per_token=bits, energy_detail=detail,
        figures={"E_AC_pJ": e_ac, "E_MAC_pJ": e_mac, "sources": {p: figs[p].to_json() for p in
                                                                 ("energy.syn_op", "energy.mac")}},
    )
