"""SpikeGPT: a spiking RWKV-4 language model (Zhu, Zhao, Li, Eshraghian; arXiv 2302.13939).

Forward (``idx [B, T]`` token ids; all internal tensors are time first, ``[T, B, C]``)::

    x = emb(idx)                     # nn.Embedding (vocab x C)
    x = emb_spike(x)                 # binary embedding: H(x >= 0), ATan(alpha=2) surrogate backward
    x = ln0(x)
    for each block (pre-LN):
        x = x + sn1(att(ln1(x)))     # SRWKV time mixing, then a LIF layer
        x = x + sn2(ffn(ln2(x)))     # SRFFN channel mixing, then a LIF layer
        x = drop(x)                  # dropout 0.03 on the residual stream, training only
    logits = head(ln_out(x))         # untied

SRWKV (:class:`TimeMix`): ``xx = shift(x)`` (the previous token's ``x``; zero at t=0),
``x_k = mu_k x + (1-mu_k) xx`` (likewise ``v``, ``r``), ``k = key(x_k)``, ``v = value(x_v)``,
``r = receptance(x_r)``, ``out = output(gate(r) * wkv(time_decay, time_first, k, v))`` with the
fused WKV of :mod:`spike.kernels.wkv`. SRFFN (:class:`ChannelMix`): ``gate(receptance(x_r)) *
value(act(key(x_k)))`` with ``act = relu(.)^2``, key ``C -> 4C``, value ``4C -> C``.
``sn1``/``sn2`` are SpikingJelly LIF neurons (:meth:`spike.neurons.LIF.spikingjelly`: tau=2,
decay_input, fire on ``>=``, hard reset to 0, reset not detached, ATan(2)); their state runs along
the token axis and starts at zero for every sequence. ``spiking=False`` replaces ``emb_spike``,
``sn1`` and ``sn2`` by identities: the same-size non-spiking RWKV (the ``--no-spikes`` ablation).

Initialisation as the reference (``src/model.py``): per layer ``l`` of ``L`` (``L >= 2``) and
channel ``i`` of ``C``: ``time_decay = -5 + 8 (i/(C-1))^(0.7 + 1.3 l/(L-1))``,
``time_first = ln(0.3) + 0.5 ((i+1) % 3 - 1)``, ``mu_k = (i/C)^(1-l/L)``, ``mu_v = mu_k + 0.3 l/(L-1)``,
``mu_r = (i/C)^(0.5 (1-l/L))``, FFN ``mu_k = mu_r = (i/C)^(1-l/L)``. Linear and embedding weights
keep PyTorch's default initialisation: the reference's ``train.py`` never runs its ``RWKV_Init``
(that needs ``RWKV_LOAD_MODEL=False`` in the environment).

Loss (:func:`lm_loss`): cross-entropy plus L2Wrap (adds ``1e-4/(B*T) * max logit`` to the gradient
of each position's largest logit).

RNN mode: :meth:`SpikeGPT.step` runs one token with an O(1) state per layer
(:class:`SpikeGPTState`: token-shift inputs of both mixers, the WKV ``a``, ``b``, ``p``, and both
LIF membranes). It runs the same code as the parallel forward with ``T = 1`` (the same WKV kernel,
the LIF formula the fused kernel computes, no rescaling), so token-by-token and whole-sequence
outputs agree: identical spikes, logits equal to float32 rounding of the matrix products.
``forward(idx, return_state=True)`` returns the state after the last token (prefill),
``forward(idx, state=s)`` continues from a state. Spikes can be recorded with ``record={}``: keys
``"emb"``, ``"blocks.{i}.sn1"``, ``"blocks.{i}.sn2"`` (``[T, B, C]`` from forward, ``[B, C]``
from step).

Loading checkpoints of the reference code: :func:`convert_reference_state_dict` and
:func:`load_reference`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spike import surrogate as _sg
from spike.neurons import LIF, lif_step
from spike.kernels.wkv import NEG, WKVState, wkv, wkv_with_state
from spike.train.checkpoint import load_weights

__all__ = [
    "PRESETS",
    "SpikeGPT",
    "SpikeGPTState",
    "Heaviside",
    "TokenShift",
    "WKV",
    "SquaredReLU",
    "TimeMix",
    "ChannelMix",
    "Block",
    "build_spikegpt",
    "lm_loss",
    "L2Wrap",
    "convert_reference_state_dict",
    "to_reference_state_dict",
    "load_reference",
    "evaluate_lm",
    "sample_logits",
    "generate",
]

#: Model sizes. ``vocab_size`` (216m) is the GPT-NeoX tokenizer's; the others take it from the data.
#: ``tiny`` (about 0.2M parameters with a character vocabulary) is for tests and the demo: in short
#: CPU budgets more optimizer steps beat width (measured on the built-in corpus, 2.5 minutes on
#: one core: 4 x 64 at batch 8 reached test BPC 2.32 spiking / 1.87 without spikes; 4 x 128
#: 2.41 / 1.97).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=4, n_embd=64, ctx_len=128),
    "46m": dict(n_layer=12, n_embd=512, ctx_len=1024),
    "216m": dict(n_layer=18, n_embd=768, ctx_len=1024, vocab_size=50277),
}


# ---------------------------------------------------------------------------------------------
# ops as modules (so that a lowering can read the structure)
# ---------------------------------------------------------------------------------------------


class Heaviside(nn.Module):
    """Binary embedding: ``H(x) = 1 if x >= 0 else 0`` forward, ATan(alpha) surrogate backward
    (SpikingJelly ``surrogate.ATan``, as the reference's ``self.atan``)."""

    def __init__(self, alpha: float = 2.0):
        super().__init__()
        self.surrogate = _sg.atan(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.surrogate.spike(x, fire_ge=True)

    def extra_repr(self) -> str:
        return f"fire_ge=True, surrogate=atan({self.surrogate.param:g})"


class TokenShift(nn.Module):
    """``x[T, B, C] -> [prev, x_0, ..., x_{T-2}]`` (``prev`` ``[B, C]``; zeros when None)."""

    def forward(self, x: torch.Tensor, prev: Optional[torch.Tensor] = None) -> torch.Tensor:
        first = torch.zeros_like(x[:1]) if prev is None else prev.to(x.dtype)[None]
        return torch.cat([first, x[:-1]], 0)


class WKV(nn.Module):
    """The WKV recurrence (:mod:`spike.kernels.wkv`); parameters live on the owning :class:`TimeMix`.
    ``impl``: ``"auto"`` (fused kernels), ``"fused"`` or ``"loop"`` (per-token torch loop)."""

    def __init__(self, impl: str = "auto"):
        super().__init__()
        self.impl = impl

    def forward(self, time_decay, time_first, k, v, state: Optional[WKVState] = None,
                return_state: bool = False):
        if state is None and not return_state:
            return wkv(time_decay, time_first, k, v, impl=self.impl), None
        return wkv_with_state(time_decay, time_first, k, v, state)

    def extra_repr(self) -> str:
        return f"impl={self.impl!r}"


class SquaredReLU(nn.Module):
    """``relu(x)^2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(torch.relu(x))


def _mix(x, xx, mu):
    """``mu x + (1-mu) xx``, computed as ``xx + mu (x - xx)`` (one fused op)."""
    return torch.lerp(xx, x, mu)


class TimeMix(nn.Module):
    """SRWKV (RWKV-4 time mixing). Parameters named as the reference's ``att``."""

    def __init__(self, n_embd: int, layer_id: int, n_layer: int):
        super().__init__()
        C = n_embd
        r01 = layer_id / (n_layer - 1)
        r10 = 1.0 - layer_id / n_layer
        with torch.no_grad():
            h = torch.arange(C, dtype=torch.float32)
            decay = -5 + 8 * (h / (C - 1)) ** (0.7 + 1.3 * r01)
            zigzag = torch.tensor([(i + 1) % 3 - 1 for i in range(C)], dtype=torch.float32) * 0.5
            first = torch.ones(C) * math.log(0.3) + zigzag
            frac = h / C
            self.time_decay = nn.Parameter(decay)
            self.time_first = nn.Parameter(first)
            self.time_mix_k = nn.Parameter(torch.pow(frac, r10))
            self.time_mix_v = nn.Parameter(torch.pow(frac, r10) + 0.3 * r01)
            self.time_mix_r = nn.Parameter(torch.pow(frac, 0.5 * r10))
        self.shift = TokenShift()
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.gate = nn.Sigmoid()
        self.wkv = WKV()
        self.output = nn.Linear(C, C, bias=False)

    def forward(self, x, shift_state=None, wkv_state: Optional[WKVState] = None,
                return_state: bool = False):
        """``x [T, B, C]`` -> ``(out, last x, new WKV state)`` (the last two None in training)."""
        xx = self.shift(x, shift_state)
        xk = _mix(x, xx, self.time_mix_k)
        xv = _mix(x, xx, self.time_mix_v)
        xr = _mix(x, xx, self.time_mix_r)
        k = self.key(xk)
        v = self.value(xv)
        r = self.receptance(xr)
        y, new_wkv = self.wkv(self.time_decay, self.time_first, k, v, wkv_state, return_state)
        out = self.output(self.gate(r) * y)
        return out, (x[-1] if return_state else None), new_wkv


class ChannelMix(nn.Module):
    """SRFFN (RWKV-4 channel mixing). Parameters named as the reference's ``ffn``: ``key`` is
    W_G (C -> 4C), ``value`` W_S (4C -> C), ``receptance`` W_P (C -> C)."""

    def __init__(self, n_embd: int, layer_id: int, n_layer: int):
        super().__init__()
        C = n_embd
        r10 = 1.0 - layer_id / n_layer
        with torch.no_grad():
            frac = torch.arange(C, dtype=torch.float32) / C
            self.time_mix_k = nn.Parameter(torch.pow(frac, r10))
            self.time_mix_r = nn.Parameter(torch.pow(frac, r10))
        self.shift = TokenShift()
        self.key = nn.Linear(C, 4 * C, bias=False)
        self.act = SquaredReLU()
        self.value = nn.Linear(4 * C, C, bias=False)
        self.receptance = nn.Linear(C, C, bias=False)
        self.gate = nn.Sigmoid()

    def forward(self, x, shift_state=None, return_state: bool = False):
        """``x [T, B, C]`` -> ``(out, last x)`` (None in training)."""
        xx = self.shift(x, shift_state)
        xk = _mix(x, xx, self.time_mix_k)
        xr = _mix(x, xx, self.time_mix_r)
        kv = self.value(self.act(self.key(xk)))
        out = self.gate(self.receptance(xr)) * kv
        return out, (x[-1] if return_state else None)


def _make_lif(spiking: bool, tau: float, v_threshold: float, alpha: float) -> nn.Module:
    if not spiking:
        return nn.Identity()
    return LIF.spikingjelly(tau=tau, v_threshold=v_threshold, surrogate=_sg.atan(alpha))


def _lif_from(sn: nn.Module, x: torch.Tensor, v0: Optional[torch.Tensor], need_state: bool):
    """Run ``sn`` over ``x [T, B, C]``: returns ``(spikes, membrane after the last token)``.

    From the zero state (``v0`` None) the fused multi-step kernel runs; from a given membrane a
    loop of :func:`spike.neurons.lif_step` (the formula the kernel computes, bit for bit)."""
    if isinstance(sn, nn.Identity):
        return x, None
    if v0 is None:
        if not need_state:
            return sn(x), None
        spk, mem = sn(x, return_mem=True)
        return spk, mem[-1]
    beta = sn._beta().to(x.dtype)
    thr = sn.threshold.to(x.dtype)
    v = v0.to(x.dtype)
    out = []
    for xt in x.unbind(0):
        s, v, _ = lif_step(xt, v, None, beta, thr, gain=sn.gain, reset=sn.reset,
                           reset_delay=sn.reset_delay, fire_ge=sn.fire_ge,
                           detach_reset=sn.detach_reset, surrogate=sn.surrogate)
        out.append(s)
    return torch.stack(out), v


class Block(nn.Module):
    """One pre-LN SpikeGPT block: ``x + sn1(att(ln1 x))``, ``+ sn2(ffn(ln2 x))``, dropout."""

    def __init__(self, n_embd: int, layer_id: int, n_layer: int, *, spiking: bool = True,
                 dropout: float = 0.03, tau: float = 2.0, v_threshold: float = 1.0,
                 surrogate_alpha: float = 2.0):
        super().__init__()
        self.layer_id = layer_id
        self.ln1 = nn.LayerNorm(n_embd)
        self.att = TimeMix(n_embd, layer_id, n_layer)
        self.sn1 = _make_lif(spiking, tau, v_threshold, surrogate_alpha)
        self.ln2 = nn.LayerNorm(n_embd)
        self.ffn = ChannelMix(n_embd, layer_id, n_layer)
        self.sn2 = _make_lif(spiking, tau, v_threshold, surrogate_alpha)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, state: Optional[tuple] = None, return_state: bool = False,
                record: Optional[dict] = None, prefix: str = ""):
        """``x [T, B, C]``; ``state``: this layer's ``(att_x, a, b, p, ffn_x, v1, v2)`` or None.
        Returns ``(x, new state or None)``."""
        want = return_state or state is not None
        if state is None:
            att_x = wkv_st = ffn_x = v1 = v2 = None
        else:
            att_x, a, b, p, ffn_x, v1, v2 = state
            wkv_st = WKVState(a, b, p)
        h, att_last, wkv_new = self.att(self.ln1(x), att_x, wkv_st, want)
        s1, v1_new = _lif_from(self.sn1, h, v1, want)
        if record is not None:
            record[f"{prefix}sn1"] = s1.detach()
        x = x + s1
        h, ffn_last = self.ffn(self.ln2(x), ffn_x, want)
        s2, v2_new = _lif_from(self.sn2, h, v2, want)
        if record is not None:
            record[f"{prefix}sn2"] = s2.detach()
        x = x + s2
        x = self.drop(x)
        if not want:
            return x, None
        return x, (att_last, *wkv_new, ffn_last, v1_new, v2_new)


class SpikeGPTState(NamedTuple):
    """RNN-mode state, every field ``[L, B, C]``: the token-shift inputs of the time mixer
    (``att_x``) and channel mixer (``ffn_x``), the WKV state (``att_a``, ``att_b``, ``att_p``)
    and the LIF membranes after reset (``sn1_v``, ``sn2_v``; zeros without spikes)."""

    att_x: torch.Tensor
    att_a: torch.Tensor
    att_b: torch.Tensor
    att_p: torch.Tensor
    ffn_x: torch.Tensor
    sn1_v: torch.Tensor
    sn2_v: torch.Tensor

    def layer(self, i: int) -> tuple:
        return tuple(f[i] for f in self)


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------


class SpikeGPT(nn.Module):
    """SpikeGPT (module docstring). ``forward(idx [B, T]) -> logits [B, T, V]``."""

    def __init__(self, vocab_size: int, n_layer: int = 4, n_embd: int = 64, ctx_len: int = 128,
                 *, spiking: bool = True, dropout: float = 0.03, tau: float = 2.0,
                 v_threshold: float = 1.0, surrogate_alpha: float = 2.0):
        super().__init__()
        if int(n_layer) < 2:
            raise ValueError(f"n_layer: SpikeGPT needs at least 2 layers (the initialisation divides "
                             f"by n_layer - 1), got {n_layer}")
        if int(n_embd) < 2:
            raise ValueError(f"n_embd: must be >= 2, got {n_embd}")
        if int(vocab_size) < 1 or int(ctx_len) < 1:
            raise ValueError(f"vocab_size and ctx_len must be >= 1, got {vocab_size}, {ctx_len}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {dropout}")
        self.vocab_size = int(vocab_size)
        self.n_layer = int(n_layer)
        self.n_embd = int(n_embd)
        self.ctx_len = int(ctx_len)
        self.spiking = bool(spiking)
        self.config = dict(vocab_size=self.vocab_size, n_layer=self.n_layer, n_embd=self.n_embd,
                           ctx_len=self.ctx_len, spiking=self.spiking, dropout=float(dropout),
                           tau=float(tau), v_threshold=float(v_threshold),
                           surrogate_alpha=float(surrogate_alpha))
        C = self.n_embd
        self.emb = nn.Embedding(self.vocab_size, C)
        self.emb_spike = Heaviside(surrogate_alpha) if spiking else nn.Identity()
        self.ln0 = nn.LayerNorm(C)
        self.blocks = nn.ModuleList(
            Block(C, i, self.n_layer, spiking=spiking, dropout=dropout, tau=tau,
                  v_threshold=v_threshold, surrogate_alpha=surrogate_alpha)
            for i in range(self.n_layer))
        self.ln_out = nn.LayerNorm(C)
        self.head = nn.Linear(C, self.vocab_size, bias=False)

    # -- kernels (the benchmark compares them)
    def set_kernels(self, wkv: str = "auto", lif: str = "auto") -> "SpikeGPT":
        """``wkv``: ``"auto"``/``"fused"``/``"loop"``; ``lif``: ``"auto"``/``"fused"``/``"loop"``."""
        for blk in self.blocks:
            blk.att.wkv.impl = wkv
            for sn in (blk.sn1, blk.sn2):
                if isinstance(sn, LIF):
                    sn.backend = lif
        return self

    def init_state(self, batch_size: int = 1, dtype=None, device=None) -> SpikeGPTState:
        """The state before the first token (zeros; WKV ``p = -1e38``)."""
        p = self.head.weight
        dtype = dtype or p.dtype
        device = device or p.device
        z = torch.zeros(self.n_layer, batch_size, self.n_embd, dtype=dtype, device=device)
        return SpikeGPTState(z, z.clone(), z.clone(), torch.full_like(z, NEG), z.clone(), z.clone(),
                             z.clone())

    def forward(self, idx: torch.Tensor, state: Optional[SpikeGPTState] = None,
                return_state: bool = False, record: Optional[dict] = None):
        """``idx [B, T]`` -> logits ``[B, T, V]`` (a view of time-first logits), plus the state
        after the last token when ``return_state`` or ``state`` is given."""
        if idx.dim() != 2:
            raise ValueError(f"idx: expected token ids [B, T], got shape {tuple(idx.shape)}")
        if state is None and idx.shape[1] > self.ctx_len and self.training:
            raise ValueError(f"idx: {idx.shape[1]} tokens exceed ctx_len={self.ctx_len}")
        logits, new_state = self._forward_tf(idx.t(), state, return_state, record)
        logits = logits.transpose(0, 1)
        if state is None and not return_state:
            return logits
        return logits, new_state

    def _forward_tf(self, idx_tf, state, return_state, record):
        x = self.emb(idx_tf.to(self.emb.weight.device))
        x = self.emb_spike(x)
        if record is not None:
            record["emb"] = x.detach()
        x = self.ln0(x)
        want = return_state or state is not None
        layers = []
        for i, blk in enumerate(self.blocks):
            x, st = blk(x, None if state is None else state.layer(i), want, record, f"blocks.{i}.")
            layers.append(st)
        logits = self.head(self.ln_out(x))
        if not want:
            return logits, None
        ref = self.init_state(idx_tf.shape[1], x.dtype, x.device) if not self.spiking else None
        fields = []
        for j in range(7):
            parts = []
            for st in layers:
                t = st[j]
                if t is None:  # no LIF (spiking=False): keep zeros
                    t = ref[j][0]
                parts.append(t)
            fields.append(torch.stack(parts))
        return logits, SpikeGPTState(*fields)

    @torch.no_grad()
    def step(self, token, state: Optional[SpikeGPTState] = None, record: Optional[dict] = None):
        """One token in RNN mode: ``token`` (int or ``[B]`` ids) -> ``(logits [B, V], new state)``.
        ``state`` None is the state before the first token. ``record`` gets ``[B, C]`` spikes."""
        if not torch.is_tensor(token):
            token = torch.tensor([int(token)])
        token = token.reshape(-1)
        if state is None:
            state = self.init_state(token.shape[0])
        rec = {} if record is not None else None
        logits, new_state = self._forward_tf(token[None], state, True, rec)
        if record is not None:
            record.update({k: v[0] for k, v in rec.items()})
        return logits[0], new_state

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def build_spikegpt(size: str = "tiny", vocab_size: Optional[int] = None, **overrides: Any) -> SpikeGPT:
    """A model from a preset (:data:`PRESETS`) with overrides (``n_layer``, ``spiking``, ...).
    ``vocab_size`` defaults to the preset's (216m) and must otherwise be given."""
    if size not in PRESETS:
        raise ValueError(f"size: unknown SpikeGPT preset {size!r}; known: {sorted(PRESETS)}")
    kw: dict[str, Any] = dict(PRESETS[size])
    if vocab_size is not None:
        kw["vocab_size"] = int(vocab_size)
    if "vocab_size" not in kw:
        raise ValueError(f"vocab_size: required for preset {size!r}")
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return SpikeGPT(**kw)


# ---------------------------------------------------------------------------------------------
# loss
# ---------------------------------------------------------------------------------------------


class L2Wrap(torch.autograd.Function):
    """Returns ``loss``; backward adds ``1e-4/(B*T) * max`` at each position's argmax logit
    (RWKV's L2Wrap; pulls the largest logits toward 0). ``logits`` ``[..., V]`` with ``B*T``
    positions."""

    @staticmethod
    def forward(ctx, loss, logits):  # type: ignore[override]
        ctx.save_for_backward(logits)
        return loss

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        positions = y.numel() // y.shape[-1]
        factor = 1e-4 / positions
        maxx, ids = torch.max(y, -1, keepdim=True)
        gy = torch.zeros_like(y)
        gy.scatter_(-1, ids, maxx * factor)
        return grad_output, gy * grad_output


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, l2wrap: bool = True) -> torch.Tensor:
    """Mean cross-entropy of ``logits [B, T, V]`` against ``targets [B, T]`` (+ L2Wrap's gradient).
    Works on the time-first memory of :meth:`SpikeGPT.forward`'s output without copying it."""
    V = logits.shape[-1]
    lt = logits.transpose(0, 1)
    flat = lt.reshape(-1, V)
    loss = F.cross_entropy(flat, targets.to(logits.device).t().reshape(-1))
    return L2Wrap.apply(loss, lt) if l2wrap else loss


# ---------------------------------------------------------------------------------------------
# reference checkpoints (ridgerchu/SpikeGPT src/model.py)
# ---------------------------------------------------------------------------------------------

_REF_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_REF_ATT = {"time_decay", "time_first", "time_mix_k", "time_mix_v", "time_mix_r", "key.weight",
            "value.weight", "receptance.weight", "output.weight"}
_REF_FFN = {"time_mix_k", "time_mix_r", "key.weight", "receptance.weight", "value.weight"}
_LN = {"weight", "bias"}


def _ref_to_ours(key: str) -> Optional[str]:
    """Our name for a reference key, or None when the reference key is not part of its model."""
    if key in ("emb.weight", "head.weight") or key in {f"ln_out.{p}" for p in _LN}:
        return key
    m = _REF_BLOCK.match(key)
    if not m:
        return None
    i, rest = int(m.group(1)), m.group(2)
    parts = rest.split(".", 1)
    if len(parts) != 2:
        return None
    mod, name = parts
    if mod in ("ln1", "ln2") and name in _LN:
        return key
    if mod == "ln0" and name in _LN and i == 0:
        return f"ln0.{name}"
    if mod == "att" and name in _REF_ATT:
        return key
    if mod == "ffn" and name in _REF_FFN:
        return key
    return None


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor], ctx_len: int = 1024,
                                 spiking: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Convert a state dict saved by the reference code (``GPT.state_dict()``, model_type
    ``RWKV``) to ours: returns ``(state_dict, model kwargs)`` for :class:`SpikeGPT`.

    Names are kept except ``blocks.0.ln0.*`` -> ``ln0.*``; ``time_mix_*`` ``[1, 1, C]`` become
    ``[C]``; a ``module.`` prefix (DDP/accelerate) is dropped. The LIF buffers (``beta``,
    ``threshold``; the reference's neurons have none) come from a fresh model. Sizes are read from
    the shapes (``emb.weight`` ``[V, C]``, the highest block index); ``ctx_len`` is not stored by
    the reference and is given here. Any other key (``ffnPre`` of model_type ``RWKV-ffnPre``,
    ``head_q``/``head_k``/``copy_mask`` of ``RWKV_HEAD_QK_DIM > 0``, ...), a missing key or a wrong
    shape is a ValueError naming the key.
    """
    sd = {}
    for key, val in state_dict.items():
        if not isinstance(key, str):
            raise ValueError(f"reference state dict: key {key!r} is not a string")
        name = key[len("module."):] if key.startswith("module.") else key
        if not torch.is_tensor(val):
            raise ValueError(f"reference state dict: {key!r} is a {type(val).__name__}, not a tensor")
        sd[name] = val
    if "emb.weight" not in sd:
        raise ValueError("reference state dict: missing key 'emb.weight' (is this a SpikeGPT/RWKV "
                         "checkpoint?)")
    V, C = sd["emb.weight"].shape
    ids = {int(m.group(1)) for k in sd for m in [_REF_BLOCK.match(k)] if m}
    if not ids:
        raise ValueError("reference state dict: no 'blocks.{i}.*' keys")
    L = max(ids) + 1
    for key in sd:
        if _ref_to_ours(key) is None:
            why = ""
            if ".ffnPre." in key:
                why = " (model_type 'RWKV-ffnPre' is not supported)"
            elif key.startswith(("head_q", "head_k", "copy_mask")):
                why = " (RWKV_HEAD_QK_DIM > 0 is not supported)"
            raise ValueError(f"reference state dict: unexpected key {key!r}{why}")
    kwargs = dict(vocab_size=int(V), n_layer=int(L), n_embd=int(C), ctx_len=int(ctx_len),
                  spiking=bool(spiking))
    if L < 2:
        raise ValueError(f"reference state dict: {L} block(s); SpikeGPT needs at least 2")
    model = SpikeGPT(**kwargs)
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, val in sd.items():
        name = _ref_to_ours(key)
        want = ours[name].shape
        t = val.detach()
        if ".time_mix_" in key and t.dim() == 3 and tuple(t.shape[:2]) == (1, 1):
            t = t.reshape(-1)
        if tuple(t.shape) != tuple(want):
            raise ValueError(f"reference state dict: {key!r} has shape {tuple(val.shape)}, "
                             f"expected {tuple(want)} for a {L}-layer, C={C}, vocab={V} model")
        out[name] = t.to(ours[name].dtype).clone()
    for name, val in ours.items():
        if name in out:
            continue
        if name.endswith((".beta", ".threshold")) and ".sn" in name:
            out[name] = val.clone()
            continue
        ref = "blocks.0.ln0." + name.split(".", 1)[1] if name.startswith("ln0.") else name
        if ".time_mix_" in ref:
            ref += " (shape [1, 1, C])"
        raise ValueError(f"reference state dict: missing key {ref!r}")
    return out, kwargs


def to_reference_state_dict(model: SpikeGPT) -> dict[str, torch.Tensor]:
    """Our weights under the reference's names and shapes (inverse of
    :func:`convert_reference_state_dict`)."""
    out = {}
    for name, val in model.state_dict().items():
        if ".sn" in name and name.endswith((".beta", ".threshold")):
            continue
        t = val.detach().clone()
        if ".time_mix_" in name:
            t = t.reshape(1, 1, -1)
        if name.startswith("ln0."):
            name = "blocks.0." + name
        out[name] = t
    return out


def load_reference(source, ctx_len: int = 1024, spiking: bool = True,
                   map_location: Any = "cpu") -> SpikeGPT:
    """A :class:`SpikeGPT` with the weights of a reference checkpoint (a path to the ``.pth`` its
    trainer saves, or the state dict itself)."""
    if isinstance(source, Mapping):
        sd = source
    else:
        sd = load_weights(source, map_location)
        if not isinstance(sd, Mapping):
            raise ValueError(f"{source}: expected a state dict, found {type(sd).__name__}")
    ours, kwargs = convert_reference_state_dict(sd, ctx_len=ctx_len, spiking=spiking)
    model = SpikeGPT(**kwargs)
    model.load_state_dict(ours)
    return model


# ---------------------------------------------------------------------------------------------
# evaluation and generation
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_lm(model: SpikeGPT, batches) -> dict[str, float]:
    """Mean cross-entropy per target token over ``batches`` of ``(x [B, T], y [B, T])`` (token
    weighted; each window from a fresh state). Returns ``loss`` (nats), ``bits`` (per token),
    ``ppl`` and ``tokens``."""
    was = model.training
    model.eval()
    total = 0.0
    count = 0
    try:
        for x, y in batches:
            logits = model(x)
            V = logits.shape[-1]
            ce = F.cross_entropy(logits.transpose(0, 1).reshape(-1, V),
                                 y.to(logits.device).t().reshape(-1), reduction="sum")
            total += float(ce)
            count += y.numel()
    finally:
        model.train(was)
    if count == 0:
        raise ValueError("evaluate_lm: no tokens to evaluate")
    loss = total / count
    return {"loss": loss, "bits": loss / math.log(2), "ppl": math.exp(min(loss, 700.0)),
            "tokens": count}


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Sample ids from ``logits [B, V]``: softmax at ``temperature`` (0: argmax), restricted to the
    smallest set of most likely tokens whose probability reaches ``top_p`` (nucleus sampling)."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature must be >= 0 and top_p in (0, 1], got {temperature}, {top_p}")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sp, si = torch.sort(probs, dim=-1, descending=True)
        cum = torch.cumsum(sp, dim=-1)
        keep = (cum - sp) < top_p  # always keeps the most likely token
        sp = sp * keep
        probs = torch.zeros_like(probs).scatter_(-1, si, sp)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(model: SpikeGPT, prompt_ids: Sequence[int], n_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, generator: Optional[torch.Generator] = None) -> list[int]:
    """Continue ``prompt_ids`` by ``n_tokens`` sampled tokens in RNN mode: the prompt is run in
    parallel (:meth:`SpikeGPT.forward` with ``return_state``), every new token by
    :meth:`SpikeGPT.step`. Returns the new ids only."""
    if len(prompt_ids) == 0:
        raise ValueError("generate: the prompt must have at least one token")
    model.eval()
    idx = torch.tensor([list(prompt_ids)], dtype=torch.long)
    logits, state = model(idx, return_state=True)
    last = logits[:, -1].float().cpu()
    out: list[int] = []
    for _ in range(int(n_tokens)):
        tok = sample_logits(last, temperature, top_p, generator)
        out.append(int(tok[0]))
        last, state = model.step(tok, state)
        last = last.float().cpu()
    return out
