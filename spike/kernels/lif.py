"""Fused multi-step LIF as a torch autograd Function (forward and backward are compiled time loops).

:func:`lif_multistep` is the entry point used by the neuron modules (``spike.neurons``). It
flattens ``x[T, ...]`` to ``[T, M]``, expands the per-neuron parameters to ``[M]`` and calls
:class:`LIFFunction`, which dispatches to

* CPU tensors in the usual training step (autograd records the call, ``x`` needs a gradient, no
  parameter does, no membrane output): the Numba kernels in :mod:`spike.kernels.lif_kept_cpu`,
  compiled per flag set; the forward keeps the membrane (one ``[T, M]`` array, instead of ``x``)
  and the backward reads it;
* other CPU calls, or all of them with ``SPIKE_LIF_RECOMPUTE=1``: the Numba kernels in
  :mod:`spike.kernels.lif_cpu`;
* CUDA tensors: the Numba CUDA kernels in :mod:`spike.kernels.lif_cuda` (imported lazily);
* anything else, or ``backend="loop"``: a Python loop of :func:`spike.neurons.lif_step`
  (torch ops, same formulas, the reference).

Semantics and the adjoint recursion are documented in :mod:`spike.kernels.lif_cpu`; both CPU
paths give the same bits. :mod:`spike.kernels.lif_cpu` does not keep the membrane: the forward
stores the state every ``K`` steps (:func:`spike.kernels.lif_cpu.ckpt_every`: 16, more for narrow
layers) and the backward recomputes each segment (bit-identical) in cache, so a layer keeps only its
input plus ``T*M/K`` floats for backward, and its training step is slower (the layer of
``benchmarks/lif_train.py`` alone, interleaved in one process, one thread, 2-core AMD EPYC: 9.5-9.9
against 8.5 ms at T=100, 5.9-6.5 against 5.4-5.6 ms at T=1000). The CUDA backward recomputes into
scratch memory. Incoming
gradients that are constant over time (e.g. from ``spikes.sum()``) are passed as one row, never
materialised; an unused output's gradient is None (``set_materialize_grads(False)``).

:func:`lif_max_pool2d` (``spike.layers.LIFMaxPool2d``) is the same neuron followed by 2-D max
pooling of its spikes, as one function (:class:`LIFMaxPoolFunction`, on
:mod:`spike.kernels.lif_pool_cpu`): float32 CPU tensors only, the full-size spikes never stored.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from spike import surrogate as _sg
from spike.kernels import conv_lif_pool_cpu as CLP
from spike.kernels import lif_cpu as K
from spike.kernels import lif_kept_cpu as KK
from spike.kernels import lif_pool_cpu as LP
from spike.kernels.lif_cpu import RESET_CODES
from spike.kernels.max_pool import kernel_supported, pair

__all__ = ["LIFFunction", "LIFMaxPoolFunction", "ConvLIFMaxPoolFunction", "LIFConfig", "lif_multistep",
           "lif_max_pool2d", "lif_max_pool2d_supported", "conv_lif_max_pool2d", "conv_lif_max_pool2d_supported",
           "make_config", "clear_buffer_cache"]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


class LIFConfig(NamedTuple):
    """Static settings of one fused call (hashable; kept on the autograd context)."""

    gain: float
    reset: int  # RESET_CODES: 0 subtract, 1 zero, 2 none
    reset_delay: bool
    fire_ge: bool
    detach_reset: bool
    surrogate_id: int
    surrogate_param: float
    need_mem: bool
    grad: bool = True  # autograd records the call (torch.is_grad_enabled() where it was made)


def make_config(*, gain=1.0, reset="subtract", reset_delay=True, fire_ge=False,
                detach_reset=True, surrogate="atan", need_mem=False, grad=True) -> LIFConfig:
    if reset not in RESET_CODES:
        raise ValueError(f"reset: expected one of {sorted(RESET_CODES)}, got {reset!r}")
    sg = _sg.get(surrogate)
    return LIFConfig(float(gain), RESET_CODES[reset], bool(reset_delay), bool(fire_ge),
                     bool(detach_reset), sg.id, sg.param, bool(need_mem), bool(grad))


def _params(cfg: LIFConfig, dtype) -> np.ndarray:
    return K.make_params(cfg.gain, cfg.surrogate_id, cfg.surrogate_param, dtype)


_HUGE_MIN_BYTES = 8 << 20
_CACHE_MIN_BYTES = 1 << 20
_libc = None


class _BufferCache:
    """Reuses the memory of the big ``[T, M]`` CPU outputs (spikes, membrane, dL/dx).

    A fresh multi-MB tensor is page-faulted by the kernel on first touch, which on a VM costs
    about as much as the LIF kernel itself; a training loop asks for the same sizes every
    iteration. Buffers are numpy arrays handed to torch with ``torch.from_numpy``: torch's storage
    keeps the handed-out view alive, and a buffer is free again exactly when that view is gone
    (a weak reference; no guessing). At most ``max_bytes`` are kept (free buffers of other sizes
    are dropped to make room; beyond that, allocations fall back to ``torch.empty``). Set
    ``SPIKE_LIF_BUFFER_CACHE_MB=0`` to disable, or call :func:`clear_buffer_cache`.
    """

    def __init__(self, max_bytes: int):
        import threading

        self.max_bytes = max_bytes
        self.entries: list = []  # [buffer ndarray (uint8), weakref to the handed-out view]
        self.lock = threading.Lock()

    def _pooled(self) -> int:
        return sum(b.nbytes for b, _ in self.entries)

    def get(self, shape, dtype) -> torch.Tensor | None:
        import weakref

        npdt = np.dtype(_NUMPY_DTYPES[dtype])
        nbytes = math.prod(shape) * npdt.itemsize
        if nbytes > self.max_bytes:
            return None
        with self.lock:
            buf = None
            for e in self.entries:
                if e[0].nbytes == nbytes and e[1]() is None:
                    buf = e
                    break
            if buf is None:
                free = [e for e in self.entries if e[1]() is None]
                total = self._pooled()
                while total + nbytes > self.max_bytes and free:
                    e = free.pop(0)
                    self.entries = [k for k in self.entries if k is not e]  # by identity
                    total -= e[0].nbytes
                if total + nbytes > self.max_bytes:
                    return None
                if nbytes >= _HUGE_MIN_BYTES:
                    arr = np.empty(nbytes + (2 << 20), np.uint8)  # slack for 2 MiB alignment
                    off = (-arr.ctypes.data) % (2 << 20)
                    arr = arr[off:off + nbytes]
                    _advise_hugepage(arr.ctypes.data, nbytes)
                else:
                    arr = np.empty(nbytes, np.uint8)
                buf = [arr, lambda: None]
                self.entries.append(buf)
            view = buf[0].view(npdt).reshape(shape)
            buf[1] = weakref.ref(view)
            return torch.from_numpy(view)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


def _cache_bytes() -> int:
    try:
        return int(float(os.environ.get("SPIKE_LIF_BUFFER_CACHE_MB", "256")) * (1 << 20))
    except ValueError:
        return 1 << 30


_CACHE = _BufferCache(_cache_bytes())

# The usual training step (:func:`_lean`) keeps one [T, M] array per layer for its backward
# (spike.kernels.lif_kept_cpu); SPIKE_LIF_RECOMPUTE=1 keeps T*M/K checkpoints instead and recomputes
# from them (spike.kernels.lif_cpu): less memory, a slower step. Same results either way.
def _env_switch(name: str) -> bool:
    """An on/off environment variable: unset, empty or ``0`` is off, ``1`` is on."""
    value = os.environ.get(name, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{name}: expected 0 or 1, got {value!r}")
    return value == "1"


RECOMPUTE = _env_switch("SPIKE_LIF_RECOMPUTE")


def clear_buffer_cache() -> None:
    """Drop the reusable output buffers of the CPU kernels (memory still in use stays valid)."""
    _CACHE.clear()


def _empty_big(like: torch.Tensor, shape=None) -> torch.Tensor:
    """An uninitialised contiguous tensor of ``like``'s dtype and device (``like``'s shape unless
    ``shape`` is given), for the kernels' big outputs and checkpoints.

    On CPU, buffers of 1 MiB and more come from :class:`_BufferCache` (reused: no page faults) or,
    failing that, and from 8 MiB, are marked ``MADV_HUGEPAGE`` before first touch (fewer, larger
    faults). Both are transparent to torch: an ordinary contiguous CPU tensor."""
    shape = tuple(like.shape) if shape is None else tuple(shape)
    nbytes = math.prod(shape) * like.element_size()
    if like.device.type == "cpu" and nbytes >= _CACHE_MIN_BYTES:
        t = _CACHE.get(shape, like.dtype) if _CACHE.max_bytes > 0 else None
        if t is not None:
            return t
        t = like.new_empty(shape)
        if nbytes >= _HUGE_MIN_BYTES:
            _advise_hugepage(t.data_ptr(), nbytes)
        return t
    return like.new_empty(shape)


def _advise_hugepage(ptr: int, nbytes: int) -> None:
    global _libc
    if _libc is False:
        return
    try:
        if _libc is None:
            import ctypes
            import sys

            if not sys.platform.startswith("linux"):
                _libc = False
                return
            lib = ctypes.CDLL(None, use_errno=True)
            lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            lib.madvise.restype = ctypes.c_int
            _libc = lib
        huge = 2 << 20
        start = (ptr + huge - 1) // huge * huge
        end = (ptr + nbytes) // huge * huge
        if end > start:
            _libc.madvise(start, end - start, 14)  # MADV_HUGEPAGE
    except Exception:  # advisory: never fail a forward over it
        _libc = False


def _grad_rows(g: torch.Tensor | None, T: int, M: int, like: torch.Tensor):
    """A gradient as ``(rows, tstep)``: ``[T, M]`` contiguous with tstep 1, or a single row
    ``[1, M]`` with tstep 0 when it is the same at every step (e.g. the expanded ones of
    ``.sum()``) or absent (zeros). Avoids materialising broadcast gradients."""
    if g is None:
        return like.new_zeros((1, M)), 0
    if T > 0 and g.stride(0) == 0:
        return g[0:1].contiguous(), 0
    return g.contiguous(), 1


class LIFFunction(torch.autograd.Function):
    """``(spikes, mem) = LIFFunction.apply(x, beta, thr, alpha, cfg)``.

    ``x``: ``[T, M]`` float32/float64 contiguous; ``beta``, ``thr``: ``[M]`` or ``[1]`` (both
    ``[1]``: the kernels' uniform scalar path); ``alpha``: ``[M]`` (CubaLIF) or None; ``cfg``:
    :class:`LIFConfig`. ``mem`` is an empty tensor unless
    ``cfg.need_mem``. Gradients flow to ``x``, ``beta``, ``thr`` and ``alpha``.
    """

    @staticmethod
    def forward(ctx, x, beta, thr, alpha, cfg):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        T, M = x.shape
        cuba = alpha is not None
        spk = _empty_big(x)
        mem = _empty_big(x) if cfg.need_mem else x.new_empty((0,))
        if x.is_cuda:
            from spike.kernels import lif_cuda as KC

            KC.forward_torch(x, *_rows_bt(beta, thr, M), alpha, cfg, spk, mem)
            ckv = cki = None
        elif cfg.grad and ctx.needs_input_grad[0] and _lean(cfg, ctx.needs_input_grad) and not RECOMPUTE:
            kept = _empty_big(x)
            KK.forward_kernel(cfg.reset, cfg.reset_delay, cfg.fire_ge, cuba)(
                *_cpu_head(x, beta, thr, alpha, cfg)[:5], spk.numpy(), kept.numpy(), K.fwd_block(M))
            x = kept  # what the backward reads in place of x; no checkpoints
            ckv = cki = None
        else:
            ckv, cki = _new_checkpoints(x, cuba)
            K.lif_forward(
                *_cpu_head(x, beta, thr, alpha, cfg), spk.numpy(),
                mem.numpy() if cfg.need_mem else np.empty((1, 1), _NUMPY_DTYPES[x.dtype]), cfg.need_mem,
                *_cpu_checkpoints(x, ckv, cki), K.fwd_block(M),
            )
        ctx.cfg = cfg
        ctx.cuba = cuba
        ctx.kept = not x.is_cuda and ckv is None
        ctx.save_for_backward(x, beta, thr, alpha, ckv, cki)
        if not cfg.need_mem:
            ctx.mark_non_differentiable(mem)
        return spk, mem

    @staticmethod
    @once_differentiable
    def backward(ctx, gs, gv):  # type: ignore[override]
        x, beta, thr, alpha, ckv, cki = ctx.saved_tensors
        cfg: LIFConfig = ctx.cfg
        cuba = ctx.cuba
        T, M = x.shape
        if gs is None and gv is None:
            return None, None, None, None, None
        need = ctx.needs_input_grad
        has_gv = gv is not None and cfg.need_mem
        full = has_gv or need[1] or need[2] or (cuba and need[3])
        gs_r, gs_st = _grad_rows(gs, T, M, x)
        gv_r, gv_st = _grad_rows(gv if has_gv else None, T, M, x)
        dx = _empty_big(x)
        # per element (summed below for a uniform parameter); not written by the lean CPU path
        npg = M if (full or x.is_cuda) else 1
        dbeta = x.new_empty((npg,))
        dthr = x.new_empty((npg,))
        dalpha = x.new_empty((npg,)) if cuba else None
        if ctx.kept:  # x is the kept v_t (or h_t) of lif_kept_cpu; the adjoint is lean
            KK.backward_kernel(cfg.reset, cfg.reset_delay, cfg.fire_ge, cuba, not cfg.detach_reset, cfg.surrogate_id)(
                *_cpu_head(x, beta, thr, alpha, cfg)[:5], gs_r.numpy(), gs_st, dx.numpy(), K.bwd_block(M))
        elif x.is_cuda:
            from spike.kernels import lif_cuda as KC

            KC.backward_torch(x, *_rows_bt(beta, thr, M), alpha, cfg, gs_r, gs_st, gv_r, gv_st,
                              dx, dbeta, dthr, dalpha)
        else:
            K.lif_backward(
                *_cpu_head(x, beta, thr, alpha, cfg, adjoint=True), gs_r.numpy(), gs_st, gv_r.numpy(), gv_st,
                *_cpu_checkpoints(x, ckv, cki), *_cpu_grads(x, dx, dbeta, dthr, dalpha), int(full), K.bwd_block(M),
                K.streams_dx(T, M, x.element_size()),
            )
        return _input_grads(need, full, cuba, beta, thr, M, dx, dbeta, dthr, dalpha) + (None,)


def _lean(cfg: LIFConfig, need) -> bool:
    """Whether a call's backward is the lean adjoint, known at its forward: no membrane output (so
    no membrane gradient) and no parameter gradient (``need``: ``ctx.needs_input_grad``)."""
    return not cfg.need_mem and not any(need[1:4])


def _input_grads(need, full: bool, cuba: bool, beta: torch.Tensor, thr: torch.Tensor, M: int, dx, dbeta, dthr,
                 dalpha) -> tuple:
    """The gradients of ``(x, beta, thr, alpha)`` as autograd wants them: None where not needed, a
    uniform parameter's per-neuron gradients summed, none of them unless the adjoint was ``full``."""
    if beta.shape[0] != M:
        dbeta = dbeta.sum().reshape(1)
    if thr.shape[0] != M:
        dthr = dthr.sum().reshape(1)
    if not full:
        dbeta = dthr = dalpha = None
    return (dx if need[0] else None, dbeta if need[1] else None, dthr if need[2] else None,
            dalpha if (cuba and need[3]) else None)


def _kernel_bt(beta: torch.Tensor, thr: torch.Tensor, M: int):
    """beta, thr for the CPU kernels: dtype scalars when both are uniform (``[1]``), else rows."""
    if beta.shape[0] == 1 and thr.shape[0] == 1:
        return beta.detach().numpy()[0], thr.detach().numpy()[0]
    return tuple(t.numpy() for t in _rows_bt(beta, thr, M))


def _cpu_head(x: torch.Tensor, beta: torch.Tensor, thr: torch.Tensor, alpha: torch.Tensor | None, cfg: LIFConfig,
              adjoint: bool = False, M: int | None = None) -> tuple:
    """The CPU kernels' leading arguments ``(x, beta, thr, alpha, params, reset, delay, ge, cuba)``
    as numpy values (alpha a dummy row without a synaptic current), and with ``adjoint`` the
    backward kernels' ``(nd, sid)`` after them. ``M``: neurons per step (``x.shape[1]`` unless
    given)."""
    dt = _NUMPY_DTYPES[x.dtype]
    M = x.shape[1] if M is None else M
    cuba = alpha is not None
    head = (x.detach().numpy(), *_kernel_bt(beta, thr, M), alpha.detach().numpy() if cuba else np.zeros(1, dt),
            _params(cfg, dt), cfg.reset, int(cfg.reset_delay), int(cfg.fire_ge), int(cuba))
    return head + (int(not cfg.detach_reset), cfg.surrogate_id) if adjoint else head


def _new_checkpoints(x: torch.Tensor, cuba: bool, M: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Empty ``ckv`` (and, with a synaptic current, ``cki``) rows for the CPU forward kernels
    (``M`` neurons: ``x.shape[1]`` unless given)."""
    M = x.shape[1] if M is None else M
    shape = (K.n_ckpt(x.shape[0], K.ckpt_every(M, x.element_size())), M)
    return _empty_big(x, shape), (_empty_big(x, shape) if cuba else None)


def _cpu_checkpoints(x: torch.Tensor, ckv: torch.Tensor, cki: torch.Tensor | None) -> tuple:
    """The kernels' ``(ckv, cki, K)`` arguments (``cki`` a dummy without a synaptic current; ``K`` as
    :func:`_new_checkpoints` chose it)."""
    dummy = np.empty((1, 1), _NUMPY_DTYPES[x.dtype])
    return ckv.numpy(), (cki.numpy() if cki is not None else dummy), K.ckpt_every(ckv.shape[1], ckv.element_size())


def _cpu_grads(x: torch.Tensor, dx, dbeta, dthr, dalpha) -> tuple:
    """The backward kernels' ``(dx, dbeta, dthr, dalpha)`` outputs (``dalpha`` a dummy without one)."""
    return (dx.numpy(), *_cpu_param_grads(x, dbeta, dthr, dalpha))


def _cpu_param_grads(x: torch.Tensor, dbeta, dthr, dalpha) -> tuple:
    """The backward kernels' ``(dbeta, dthr, dalpha)`` outputs (``dalpha`` a dummy without one)."""
    return dbeta.numpy(), dthr.numpy(), dalpha.numpy() if dalpha is not None else np.zeros(1, _NUMPY_DTYPES[x.dtype])


def _rows_bt(beta: torch.Tensor, thr: torch.Tensor, M: int):
    """beta, thr as ``[M]`` rows (the CUDA kernels take rows only)."""
    return (beta.detach().expand(M).contiguous() if beta.shape[0] != M else beta.detach(),
            thr.detach().expand(M).contiguous() if thr.shape[0] != M else thr.detach())


def _uniform(p) -> bool:
    return not isinstance(p, torch.Tensor) or p.numel() == 1


def _per_neuron(p, shape: torch.Size, M: int, like: torch.Tensor, name: str,
                uniform: bool = False) -> torch.Tensor:
    """A float or tensor parameter, broadcast over ``shape`` (= x.shape[1:]) and flattened to
    ``[M]``; with ``uniform`` (a single value) it stays ``[1]`` (the kernels' scalar path)."""
    if not isinstance(p, torch.Tensor):
        return torch.full((1 if uniform else M,), float(p), dtype=like.dtype, device=like.device)
    p = p.to(dtype=like.dtype, device=like.device)
    if uniform and p.numel() == 1:
        return p.reshape(1)
    try:
        p = torch.broadcast_to(p, shape)
    except RuntimeError as e:
        raise ValueError(
            f"{name}: shape {tuple(p.shape)} does not broadcast over the neuron shape "
            f"{tuple(shape)} (x.shape[1:])"
        ) from e
    return p.reshape(M).contiguous()


def _fused_available(x: torch.Tensor) -> bool:
    if x.device.type == "cpu":
        return True
    if x.device.type == "cuda":
        try:
            from spike.kernels import lif_cuda as KC

            return KC.available()
        except Exception:  # numba.cuda missing or broken: fall back to the loop
            return False
    return False


def lif_multistep(
    x: torch.Tensor,
    beta,
    threshold,
    *,
    alpha=None,
    gain: float = 1.0,
    reset: str = "subtract",
    reset_delay: bool = True,
    fire_ge: bool = False,
    detach_reset: bool = True,
    surrogate="atan",
    return_mem: bool = False,
    backend: str = "auto",
):
    """Run LIF (or CubaLIF with ``alpha``) over ``x[T, ...]`` from a zero state.

    ``beta``, ``threshold``, ``alpha``: floats or tensors broadcastable to ``x.shape[1:]``
    (per-neuron parameters broadcast over the batch). Returns spikes ``[T, ...]``, or
    ``(spikes, mem)`` with ``return_mem`` (``mem`` is the membrane after any reset).
    ``backend``: ``"auto"`` (fused kernel on CPU/CUDA, loop elsewhere), ``"fused"`` or ``"loop"``.
    The fused kernels compute in float32 or float64; a float16/bfloat16 ``x`` is computed in float32
    and returned in its dtype, except under ``torch.autocast``, where the call is a float32 op (as
    autocast's ``layer_norm``): spikes and membrane come back in float32.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise ValueError("x: expected a tensor [T, ...] (time first)")
    if backend not in ("auto", "fused", "loop"):
        raise ValueError(f"backend: expected 'auto', 'fused' or 'loop', got {backend!r}")
    cfg = make_config(gain=gain, reset=reset, reset_delay=reset_delay, fire_ge=fire_ge,
                      detach_reset=detach_reset, surrogate=surrogate, need_mem=return_mem,
                      grad=torch.is_grad_enabled())
    use_fused = backend == "fused" or (backend == "auto" and _fused_available(x))
    if backend == "fused" and not _fused_available(x):
        raise ValueError(f"backend='fused': no fused kernel for device {x.device}")
    if not use_fused:
        return _loop(x, beta, threshold, alpha, cfg, reset, surrogate, return_mem)

    out_dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    if out_dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(x.device.type):
        out_dtype = torch.float32
    work = x if x.dtype in _NUMPY_DTYPES else x.to(torch.float32 if out_dtype != torch.float64 else out_dtype)
    spk, mem = LIFFunction.apply(*_kernel_inputs(work, beta, threshold, alpha), cfg)
    spk = spk.reshape(x.shape)
    if spk.dtype != out_dtype:
        spk = spk.to(out_dtype)
    if not return_mem:
        return spk
    mem = mem.reshape(x.shape)
    if mem.dtype != out_dtype:
        mem = mem.to(out_dtype)
    return spk, mem


def _kernel_inputs(x: torch.Tensor, beta, threshold, alpha):
    """``(x2, beta, thr, alpha)`` for the autograd functions: ``x[T, ...]`` (float32/float64) as
    contiguous ``[T, M]`` rows and the parameters as ``[M]`` rows (``[1]`` each when both beta
    and threshold are uniform; alpha None without a synaptic current)."""
    T = x.shape[0]
    shape = x.shape[1:]
    M = math.prod(shape)
    x2 = x.reshape(T, M)
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    return (x2, *_neuron_params(shape, x2, beta, threshold, alpha))


def _neuron_params(shape: torch.Size, like: torch.Tensor, beta, threshold, alpha):
    """``(beta, thr, alpha)`` as the autograd functions take them for neurons of ``shape`` (see
    :func:`_kernel_inputs`)."""
    M = math.prod(shape)
    uni = _uniform(beta) and _uniform(threshold)
    return (_per_neuron(beta, shape, M, like, "beta", uni), _per_neuron(threshold, shape, M, like, "threshold", uni),
            None if alpha is None else _per_neuron(alpha, shape, M, like, "alpha"))


class LIFMaxPoolFunction(torch.autograd.Function):
    """``y = LIFMaxPoolFunction.apply(x, beta, thr, alpha, cfg, kernel, hw)``: the spikes of
    :class:`LIFFunction` max-pooled over windows ``kernel = (kh, kw)`` (stride = window) of the
    planes ``hw = (h, w)`` that ``x``'s rows are made of (``x[T, M]``, ``M = P*h*w``, float32 CPU),
    on :mod:`spike.kernels.lif_pool_cpu`: ``y[T, P*(h//kh)*(w//kw)]``. Equal to
    ``max_pool2d(LIFFunction(x))`` bit for bit, gradients included; ``cfg.need_mem`` must be False."""

    @staticmethod
    def forward(ctx, x, beta, thr, alpha, cfg, kernel, hw):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        T, M = x.shape
        (kh, kw), (h, w) = kernel, hw
        P = M // (h * w)
        cuba = alpha is not None
        y = _empty_big(x, (T, P * (h // kh) * (w // kw)))
        q = torch.empty(y.shape, dtype=torch.uint8)
        ckv, cki = _new_checkpoints(x, cuba)
        ppi = LP.planes_per_item(P, h * w)
        LP.kernels(kh, kw).forward(*_cpu_head(x, beta, thr, alpha, cfg), y.numpy(), q.numpy(),
                                   *_cpu_checkpoints(x, ckv, cki), h, w, ppi)
        ctx.cfg, ctx.cuba, ctx.kernel, ctx.hw, ctx.ppi = cfg, cuba, kernel, hw, ppi
        ctx.save_for_backward(x, beta, thr, alpha, ckv, cki, q)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        x, beta, thr, alpha, ckv, cki, q = ctx.saved_tensors
        cfg: LIFConfig = ctx.cfg
        cuba = ctx.cuba
        T, M = x.shape
        if gy is None:
            return (None,) * 7
        need = ctx.needs_input_grad
        full = need[1] or need[2] or (cuba and need[3])
        gy_r, gy_st = _grad_rows(gy.to(x.dtype), T, q.shape[1], x)
        dx = _empty_big(x)
        npg = M if full else 1
        dbeta, dthr = x.new_empty((npg,)), x.new_empty((npg,))
        dalpha = x.new_empty((npg,)) if cuba else None
        LP.kernels(*ctx.kernel).backward(
            *_cpu_head(x, beta, thr, alpha, cfg, adjoint=True), gy_r.numpy(), gy_st, q.numpy(),
            *_cpu_checkpoints(x, ckv, cki), *_cpu_grads(x, dx, dbeta, dthr, dalpha), int(full), *ctx.hw, ctx.ppi)
        return _input_grads(need, full, cuba, beta, thr, M, dx, dbeta, dthr, dalpha) + (None, None, None)


def lif_max_pool2d_supported(x: torch.Tensor, kernel_size) -> bool:
    """Whether :func:`lif_max_pool2d` runs ``x`` on the fused kernels: a float32 CPU tensor
    ``[T, B, ..., H, W]`` (at least 4 dimensions, as ``TimeDistributed(MaxPool2d)`` takes), at least
    one window high and wide, a window of ``1..8`` per side, outside CPU autocast."""
    kh, kw = pair(kernel_size)
    return (isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() >= 4
            and kernel_supported((kh, kw)) and x.shape[-2] >= kh and x.shape[-1] >= kw and x.numel() > 0
            and not torch.is_autocast_enabled("cpu"))


def lif_max_pool2d(x: torch.Tensor, beta, threshold, kernel_size, *, alpha=None, gain: float = 1.0,
                   reset: str = "subtract", reset_delay: bool = True, fire_ge: bool = False,
                   detach_reset: bool = True, surrogate="atan") -> torch.Tensor:
    """``max_pool2d`` (window = stride = ``kernel_size``, on the last two dimensions) of the spikes of
    :func:`lif_multistep` over ``x[T, B, ..., H, W]``, fused (:class:`LIFMaxPoolFunction`) when
    :func:`lif_max_pool2d_supported`; values and gradients equal the unfused ``MaxPool2d(LIF(x))`` bit
    for bit. Returns ``[T, B, ..., H // kh, W // kw]``."""
    if not lif_max_pool2d_supported(x, kernel_size):
        raise ValueError(f"lif_max_pool2d: expects a float32 CPU tensor [T, B, ..., H, W] at least one "
                         f"{pair(kernel_size)} window large, outside autocast; got dtype {x.dtype}, "
                         f"device {x.device}, shape {list(x.shape)}")
    kh, kw = pair(kernel_size)
    cfg = make_config(gain=gain, reset=reset, reset_delay=reset_delay, fire_ge=fire_ge,
                      detach_reset=detach_reset, surrogate=surrogate)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    y = LIFMaxPoolFunction.apply(*_kernel_inputs(x, beta, threshold, alpha), cfg, (kh, kw), (h, w))
    return y.reshape(*x.shape[:-2], h // kh, w // kw)


class ConvLIFMaxPoolFunction(torch.autograd.Function):
    """``y = ConvLIFMaxPoolFunction.apply(inp, flat, weight, bias, beta, thr, alpha, cfg, kernel)``: the
    pooled spikes of :class:`LIFMaxPoolFunction` on the currents ``conv2d(inp[t], weight, bias)``
    (stride 1, no padding: ``inp[T, B, Cin, Hp, Wp]`` is padded already, a view of the start of the
    1-D ``flat``, :func:`~spike.kernels.conv_lif_pool_cpu.slack` floats longer), all in one pass on
    :mod:`spike.kernels.conv_lif_pool_cpu`: ``y[T, B*Cout*(Ho//kh)*(Wo//kw)]``. ``bias`` may be None.
    Gradients for the weight, the bias and the neuron's parameters; none for ``inp`` (it must not
    need one). Float32 CPU."""

    @staticmethod
    def forward(ctx, inp, flat, weight, bias, beta, thr, alpha, cfg, kernel):  # type: ignore[override]
        ctx.set_materialize_grads(False)
        T, B, _, hp, wp = inp.shape
        cout, _, ckh, ckw = weight.shape
        (kh, kw), ho, wo = kernel, hp - ckh + 1, wp - ckw + 1
        M = B * cout * ho * wo
        cuba = alpha is not None
        w = weight.detach().contiguous()
        b = bias.detach().contiguous() if bias is not None else inp.new_zeros(cout)
        y = _empty_big(inp, (T, B * cout * (ho // kh) * (wo // kw)))
        q = torch.empty(y.shape, dtype=torch.uint8)
        ckv, cki = _new_checkpoints(inp, cuba, M)
        ppi = CLP.planes_per_item(B * cout, ho * wo)
        head = _cpu_head(inp, beta, thr, alpha, cfg, M=M)
        CLP.kernels(kh, kw, ckh, ckw).forward(head[0], flat.numpy(), w.numpy(), b.numpy(), *head[1:], y.numpy(), q.numpy(),
                                              *_cpu_checkpoints(inp, ckv, cki), cout, ppi)
        ctx.cfg, ctx.cuba, ctx.kernel, ctx.ppi, ctx.has_bias = cfg, cuba, kernel, ppi, bias is not None
        ctx.items = -(-(B * cout) // ppi)
        ctx.save_for_backward(inp, flat, w, b, beta, thr, alpha, ckv, cki, q)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        inp, flat, w, b, beta, thr, alpha, ckv, cki, q = ctx.saved_tensors
        if gy is None:
            return (None,) * 9
        cuba, need = ctx.cuba, ctx.needs_input_grad
        T, M = inp.shape[0], ckv.shape[1]
        cout, ckh, ckw = w.shape[0], w.shape[2], w.shape[3]
        full = need[4] or need[5] or (cuba and need[6])
        gy_r, gy_st = _grad_rows(gy.to(inp.dtype), T, q.shape[1], inp)
        dw, db = torch.empty_like(w), inp.new_empty(cout)
        dwp, dbp = inp.new_empty((ctx.items, *w.shape)), inp.new_empty((ctx.items, cout))
        npg = M if full else 1
        dbeta, dthr = inp.new_empty((npg,)), inp.new_empty((npg,))
        dalpha = inp.new_empty((npg,)) if cuba else None
        head = _cpu_head(inp, beta, thr, alpha, cfg=ctx.cfg, adjoint=True, M=M)
        CLP.kernels(*ctx.kernel, ckh, ckw).backward(
            head[0], flat.numpy(), w.numpy(), b.numpy(), *head[1:], gy_r.numpy(), gy_st, q.numpy(),
            *_cpu_checkpoints(inp, ckv, cki),
            dw.numpy(), db.numpy(), dwp.numpy(), dbp.numpy(), *_cpu_param_grads(inp, dbeta, dthr, dalpha), int(full),
            cout, ctx.ppi)
        _, gbeta, gthr, galpha = _input_grads((False, *need[4:7]), full, cuba, beta, thr, M, None, dbeta, dthr, dalpha)
        return (None, None, dw if need[2] else None, db if (need[3] and ctx.has_bias) else None, gbeta, gthr, galpha,
                None, None)


def conv_lif_max_pool2d_supported(x: torch.Tensor, weight: torch.Tensor, padding, kernel_size) -> bool:
    """Whether :func:`conv_lif_max_pool2d` runs on the fused kernels: ``x[T, B, Cin, H, W]`` and
    ``weight[Cout, Cin, kh, kw]`` float32 CPU tensors, ``x`` needing no gradient, a convolution
    kernel of ``1..7`` per side with ``padding`` below it, at least one pooling window (``1..8``
    per side) in the output, outside CPU autocast."""
    ph, pw = pair(padding)
    if (x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 5 or x.requires_grad
            or weight.dtype != torch.float32 or weight.device.type != "cpu" or weight.dim() != 4
            or weight.shape[1] != x.shape[2] or torch.is_autocast_enabled("cpu") or not kernel_supported(kernel_size)):
        return False
    ckh, ckw = int(weight.shape[2]), int(weight.shape[3])
    kh, kw = pair(kernel_size)
    ho, wo = x.shape[3] + 2 * ph - ckh + 1, x.shape[4] + 2 * pw - ckw + 1
    return (1 <= ckh <= CLP.MAX_CONV_KERNEL and 1 <= ckw <= CLP.MAX_CONV_KERNEL and 0 <= ph < ckh and 0 <= pw < ckw
            and ho >= kh and wo >= kw)


def conv_lif_max_pool2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding, beta, threshold,
                        kernel_size, *, alpha=None, gain: float = 1.0, reset: str = "subtract",
                        reset_delay: bool = True, fire_ge: bool = False, detach_reset: bool = True,
                        surrogate="atan") -> torch.Tensor:
    """``max_pool2d(lif(conv2d(x[t], weight, bias, padding=padding)))`` over ``x[T, B, Cin, H, W]``
    (convolution stride 1, zero padding; pooling window = stride = ``kernel_size``) in one pass
    (:class:`ConvLIFMaxPoolFunction`), when :func:`conv_lif_max_pool2d_supported`. The currents are
    summed in the order of :mod:`spike.kernels.conv_lif_pool_cpu` (not oneDNN's): equal to the three
    ops within float32 rounding, exactly for dyadic weights. Returns ``[T, B, Cout, Ho // kh, Wo // kw]``."""
    if not conv_lif_max_pool2d_supported(x, weight, padding, kernel_size):
        raise ValueError(f"conv_lif_max_pool2d: expects float32 CPU tensors x [T, B, Cin, H, W] (no gradient) and "
                         f"weight [Cout, Cin, kh, kw] (kernel 1..{CLP.MAX_CONV_KERNEL}, padding below it) leaving "
                         f"at least one {pair(kernel_size)} window, outside autocast; got x {x.dtype} {x.device} "
                         f"{list(x.shape)}, weight {weight.dtype} {list(weight.shape)}, padding {padding}")
    ph, pw = pair(padding)
    T, B, cin, h, w = x.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    n = T * B * cin * hp * wp
    flat = x.new_zeros(n + CLP.slack(wp))  # the padded input, then room for unmasked row loads
    xp = flat[:n].view(T, B, cin, hp, wp)
    xp[..., ph:ph + h, pw:pw + w] = x
    cout = weight.shape[0]
    ho, wo = hp - weight.shape[2] + 1, wp - weight.shape[3] + 1
    cfg = make_config(gain=gain, reset=reset, reset_delay=reset_delay, fire_ge=fire_ge,
                      detach_reset=detach_reset, surrogate=surrogate)
    params = _neuron_params(torch.Size((B, cout, ho, wo)), xp, beta, threshold, alpha)
    kh, kw = pair(kernel_size)
    y = ConvLIFMaxPoolFunction.apply(xp, flat, weight, bias, *params, cfg, (kh, kw))
    return y.reshape(T, B, cout, ho // kh, wo // kw)


def _loop(x, beta, threshold, alpha, cfg: LIFConfig, reset: str, surrogate, return_mem: bool):
    """Reference path: a Python loop of :func:`spike.neurons.lif_step` (any device)."""
    from spike.neurons import lif_step

    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())

    def as_t(p):
        if p is None:
            return None
        return p.to(dtype=x.dtype, device=x.device) if isinstance(p, torch.Tensor) else float(p)

    b, th, al = as_t(beta), as_t(threshold), as_t(alpha)
    v = torch.zeros_like(x[0]) if x.shape[0] else None
    s = torch.zeros_like(x[0]) if x.shape[0] else None
    i = torch.zeros_like(x[0]) if (alpha is not None and x.shape[0]) else None
    spikes, mems = [], []
    for xt in x.unbind(0):
        s, v, i = lif_step(xt, v, s, b, th, i=i, alpha=al, gain=cfg.gain, reset=reset,
                           reset_delay=cfg.reset_delay, fire_ge=cfg.fire_ge,
                           detach_reset=cfg.detach_reset, surrogate=surrogate)
        spikes.append(s)
        mems.append(v)
    spk = torch.stack(spikes) if spikes else torch.empty_like(x)
    if not return_mem:
        return spk
    return spk, (torch.stack(mems) if mems else torch.empty_like(x))
