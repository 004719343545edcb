"""SpikeGPT -> Program: the spiking parts as event-driven nodes, the real-valued parts as host ops.

One program step is one token. The input ``tokens`` is one spike per step on the token's line
(a one-hot ``[T, B, V]`` spike train); the program outputs the logits ``[T, B, V]``.

- Binary embedding: a ``dense`` projection of the one-hot token (the lookup, ``V x C`` weights)
  into the ``emb`` population: ``v = I`` (beta 0), spike on ``v >= 0`` (the Heaviside).
- Per block ``i`` (names ``blocks.{i}.*`` as the model's modules): LayerNorm, token shift + mix,
  the K/V/R/O and FFN matmuls, WKV, sigmoid, squared ReLU and the gating products as host ops;
  ``sn1``/``sn2`` as ``lif`` populations (SpikingJelly semantics, from the model's neurons);
  the residual ``x + s`` as ``add`` host ops whose spike operand is counted as synaptic events.
- ``ln_out`` and the untied ``head`` as host ops.

``metadata["stepwise"]`` makes every backend run the program token by token, so that each host
matmul sees the ``[1, B, C]`` shapes of :meth:`SpikeGPT.step` and rounds alike: spikes and logits
equal RNN-mode inference bit for bit. A ``--no-spikes`` model lowers without the populations.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from torch import nn

from spike.compiler.frontends.registry import Frontend, register
from spike.compiler.frontends.torch_fx import _neuron_params
from spike.compiler.ir.nodes import Dense, HostOp, Input, Output, Population
from spike.compiler.ir.program import Program, ProgramBuilder
from spike.compiler.ir.validate import validate_program
from spike.hardware import HardwareTarget
from spike.models.spikegpt.model import SpikeGPT

__all__ = ["lower_spikegpt", "SPIKEGPT_KIND"]

SPIKEGPT_KIND = "spikegpt"


def _np(t: Any) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))


class _Lowering:
    def __init__(self, C: int):
        self.b = ProgramBuilder()
        self.C = C

    def host(self, name: str, op: str, sources: list[str] | str, size: int | None = None, **params: Any) -> str:
        arrays = {k: (None if v is None else _np(v)) for k, v in params.items() if k != "eps"}
        extra = {"eps": float(params["eps"])} if "eps" in params else {}
        return self.b.add(name, HostOp(shape=(size or self.C,), op=op, **arrays, **extra), sources)

    def layernorm(self, name: str, ln: nn.LayerNorm, src: str) -> str:
        return self.host(name, "layernorm", src, weight=ln.weight, bias=ln.bias, eps=ln.eps)

    def matmul(self, name: str, lin: nn.Linear, src: str) -> str:
        return self.host(name, "matmul", src, size=lin.out_features, weight=lin.weight, bias=lin.bias)

    def neuron(self, name: str, sn: nn.Module, src: str) -> str:
        if isinstance(sn, nn.Identity):  # --no-spikes
            return src
        return self.b.add(name, Population(shape=(self.C,), **_neuron_params(sn, name, (self.C,))), src)


def lower_spikegpt(model: nn.Module, metadata: Mapping[str, Any] | None = None) -> Program:
    """The Program of a :class:`~spike.models.spikegpt.model.SpikeGPT` (eval-mode semantics: no dropout)."""
    if not isinstance(model, SpikeGPT):
        raise TypeError(f"lower_spikegpt: expected a SpikeGPT, got {type(model).__name__}")
    V, C = model.vocab_size, model.n_embd
    L = _Lowering(C)
    b = L.b
    b.add("tokens", Input(shape=(V,), signal="spike"))
    b.add("emb", Dense(shape=(C,), in_shape=(V,), weight=_np(model.emb.weight.T)), "tokens")
    x = "emb"
    if model.spiking:  # H(e >= 0): v = 0*v + e, fire on v >= 0, reset to zero
        x = b.add("emb_spike", Population(
            shape=(C,), model="lif", beta=np.zeros(C, np.float32), threshold=np.zeros(C, np.float32), gain=1.0,
            reset="zero", reset_delay=False, fire_ge=True), "emb")
    x = L.layernorm("ln0", model.ln0, x)
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}."
        att, ffn = blk.att, blk.ffn
        h = L.layernorm(p + "ln1", blk.ln1, x)
        mixed = {m: L.host(f"{p}att.mix_{m}", "token_mix", h, weight=getattr(att, f"time_mix_{m}")) for m in "kvr"}
        k = L.matmul(p + "att.key", att.key, mixed["k"])
        v = L.matmul(p + "att.value", att.value, mixed["v"])
        r = L.matmul(p + "att.receptance", att.receptance, mixed["r"])
        y = L.host(p + "att.wkv", "wkv", [k, v], weight=att.time_decay, bias=att.time_first)
        g = L.host(p + "att.gate", "sigmoid", r)
        o = L.matmul(p + "att.output", att.output, L.host(p + "att.gated", "mul", [g, y]))
        x = L.host(p + "add1", "add", [x, L.neuron(p + "sn1", blk.sn1, o)])
        h = L.layernorm(p + "ln2", blk.ln2, x)
        mk = L.host(p + "ffn.mix_k", "token_mix", h, weight=ffn.time_mix_k)
        mr = L.host(p + "ffn.mix_r", "token_mix", h, weight=ffn.time_mix_r)
        kk = L.host(p + "ffn.act", "squared_relu", L.matmul(p + "ffn.key", ffn.key, mk), size=ffn.key.out_features)
        kv = L.matmul(p + "ffn.value", ffn.value, kk)
        g = L.host(p + "ffn.gate", "sigmoid", L.matmul(p + "ffn.receptance", ffn.receptance, mr))
        o = L.host(p + "ffn.gated", "mul", [g, kv])
        x = L.host(p + "add2", "add", [x, L.neuron(p + "sn2", blk.sn2, o)])
    logits = L.matmul("head", model.head, L.layernorm("ln_out", model.ln_out, x))
    b.add("logits", Output(shape=(V,)), logits)
    layers = {"emb": "emb_spike" if model.spiking else None,
              "sn1": [f"blocks.{i}.sn1" for i in range(model.n_layer)] if model.spiking else [],
              "sn2": [f"blocks.{i}.sn2" for i in range(model.n_layer)] if model.spiking else []}
    meta = {"model": SPIKEGPT_KIND, "stepwise": True, "spikegpt": dict(model.config), "layers": layers,
            "precision": "float32", **(metadata or {})}
    return b.build(metadata=meta)


def _check(target: HardwareTarget, precision: str) -> None:
    """SpikeGPT is mostly host ops: float32, on targets without cores."""
    if precision != "float32":
        raise ValueError(f"precision {precision!r}: SpikeGPT's host ops (LayerNorm, WKV, matmuls on real "
                         "values) have no fixed-point form; compile it in float32")
    if target.has_cores:
        raise ValueError(f"target {target.name!r}: SpikeGPT is mostly host ops (real-valued matmuls, WKV, "
                         "LayerNorm) that no neuromorphic core runs; compile it for a host target such as "
                         "'generic' or 'cmos45nm_fp32'")


def _lower(model: SpikeGPT, example_input: Any = None, *, metadata: Mapping[str, Any] | None = None,
           **_: Any) -> Program:
    return lower_spikegpt(model, metadata=metadata)


def _validated(program: Program) -> Program:
    validate_program(program)
    return program


# its lowering emits canonical nodes: the float passes are a validation
register(Frontend(SPIKEGPT_KIND, lambda model: isinstance(model, SpikeGPT), _lower, needs_example=False, check=_check,
                  passes=(_validated,)))
