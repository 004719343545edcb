"""The numba backend: event-driven execution on CPU, counting the operations it performs.

Each node kind has one kernel that prepares (once per node object, in ``ctx.cache``) the arrays its
compiled loop needs, then makes one compiled call for the steps it is given: acyclic nodes run all
steps in a single call, nodes on a cycle one step per call. The loops live in ``numba.projections``
and ``numba.neurons``.

Counts (per sample, summed over steps), as NeuroBench defines them (design §7):
- projections: (non-zero input, non-zero weight) pairs delivered, border clipping included, add
  to ``syn_ops`` or ``macs``, decided per (sample, step) as NeuroBench decides per layer call:
  the pairs of step t of sample b are ``syn_ops`` when all that sample's input values of that
  step are in {-1, 0, 1}, else ``macs`` (batch size 1: NeuroBench's rule exactly); a source of
  signal "spike" (``spike.compiler.ir.signals``) is taken as binary: all ``syn_ops``, no test;
  ``dense_ops`` += all (input, weight) pairs of a step, every step; avg/sum pooling counts its
  (non-zero input, window) pairs as ``pool_ops`` only (not syn_ops/macs nor dense_ops: NeuroBench
  counts no pooling); max pooling only routes events and counts nothing;
- populations: ``neuron_updates`` += size per step, ``spikes`` += spikes emitted;
- host ops: ``host_flops`` += size * (number of sources - 1) per step.

Programs of precision "fixed" (``spike.compiler.passes.quantize``) run Loihi fixed point, bit-accurate with
lava-nc's ``PyLifModelBitAcc``/``PyDenseModelBitAcc``: int32 signals, integer weights shifted by
``weight_exp``, populations stepped by ``numba.neurons.loihi_lif_step``; same counts. Each
projection kernel runs the loop of ``numba.projections`` compiled for the program's arithmetic;
FTWT gates' kernels (the "gated" variants) are in ``numba.gates``.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numba
import numpy as np
import torch

from spike.backends.numba import neurons as N
from spike.backends.numba import projections as P
from spike.backends.engine import NodeContext
from spike.backends.host_ops import host_op_kernel
from spike.backends.layout import (
    SparseBlocks, bias_values, conv_layout, csr_arrays, delivery, geometry_2d, sparse_blocks,
    windows_per_position,
)
from spike.backends.registry import Backend, BackendError, register_backend
from spike.compiler.ir.nodes import FLOAT_DTYPES, Bernoulli, Dense, Identity, Pool2d, Population, Sparse
from spike.compiler.passes.quantize import loihi_neuron_params
from spike.numba_threads import threads_allowed, threads_at_most, threads_up_to
from spike import semantics

# what a kernel gets for an array the node does not have, per float dtype (one compiled signature per precision)
_EMPTY = {dt: np.zeros(0, dt) for dt in FLOAT_DTYPES.values()}
_NO_MEM = {dt: np.zeros((1, 1, 1), dt) for dt in FLOAT_DTYPES.values()}
_NO_BIAS = {dt: np.zeros(1, dt) for dt in FLOAT_DTYPES.values()}
_NO_ACTIVE = np.zeros((1, 1), np.int64)
_NO_ACTIVE3 = np.zeros((1, 1, 1), np.int64)  # a conv2d without a mask: no kept-channel lists
_NO_COUNT2 = np.zeros((1, 1), np.int64)
_NO_KEEP = np.zeros((1, 1), np.uint8)
_NO_INDEX = np.zeros((1, 1, 1), np.int32)
_NO_NLISTED = np.zeros((1, 1), np.int64)
_NO_FLAGS = np.zeros((1, 1), np.uint8)  # no silent-row flags (engine docstring, "Silent rows")
_LANE_MIN_STEPS = 32  # a sparse call over fewer steps runs each sample on one thread


class _ArrayPool:
    """Recycles the large per-run arrays (node outputs, membrane records) between runs.

    A fresh multi-megabyte array costs a page fault per 4 KiB page on first touch, which at low
    activity costs more than the events themselves. The pool keeps the arrays it handed out and
    reuses one once nothing else references it (no result, view or run holds it any more): zeroed
    again for :meth:`zeros` (arrays from ``MIN_BYTES``), as it is for :meth:`empty` (from
    ``EMPTY_MIN_BYTES``: the outputs the engine lets kernels overwrite, which then cost neither a
    page fault nor a zero fill). At most ``max_bytes`` of idle arrays are kept.
    """

    MIN_BYTES = 1 << 20
    EMPTY_MIN_BYTES = 1 << 16

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self.arrays: list[np.ndarray] = []
        self._free_refs = sys.getrefcount(np.zeros(1)) + 1  # held by the list only

    def zeros(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        a = self._take(shape, np.dtype(dtype), self.MIN_BYTES, np.zeros)
        if a is None:
            return np.zeros(shape, dtype=dtype)
        return a

    def empty(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        a = self._take(shape, np.dtype(dtype), self.EMPTY_MIN_BYTES, np.empty)
        if a is None:
            return np.empty(shape, dtype=dtype)
        return a

    def _take(self, shape: tuple[int, ...], dt: np.dtype, min_bytes: int, new: Any) -> np.ndarray | None:
        """An idle pooled array of ``shape`` and ``dt`` (zero-filled when ``new`` is ``np.zeros``), else
        a new one from ``new`` that the pool keeps; None below ``min_bytes``."""
        nbytes = math.prod(shape) * dt.itemsize
        if nbytes < min_bytes:
            return None
        shape = tuple(shape)
        arrays = self.arrays
        idle = 0
        for i in range(len(arrays)):
            if sys.getrefcount(arrays[i]) <= self._free_refs:
                if arrays[i].shape == shape and arrays[i].dtype == dt:
                    a = arrays[i]
                    if new is np.zeros:
                        a.fill(0)
                    return a
                idle += arrays[i].nbytes
        if idle + nbytes > self.max_bytes:  # drop idle arrays before growing past the cap
            self.arrays = [a for a in arrays if sys.getrefcount(a) > self._free_refs + 1]
        a = new(shape, dtype=dt)
        self.arrays.append(a)
        return a


_POOL = _ArrayPool()


def _zeros(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return _POOL.zeros(shape, dtype)


def _empty(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return _POOL.empty(shape, dtype)


BACKEND = register_backend(
    Backend(
        name="numba",
        precisions=frozenset({"float32", "float64", "fixed"}),
        zeros=_zeros,
        to_numpy=lambda a: a,
        from_numpy=lambda a: np.ascontiguousarray(a),
        run_context=threads_at_most,  # kernels are parallel over the samples
        chunked=True,  # long runs in chunks: no [T, B, size] buffer per node (engine docstring, "Chunks")
        empty=_empty,
        # every element of every step given is written (no zero-filling of their outputs)
        overwrites=frozenset({"dense", "sparse", "conv2d", "pool2d", "identity", "population"}),
        lists_spikes=frozenset({"population"}),  # a recorded population lists its spikes as it steps
        marks_silence=frozenset({"dense", "population"}),  # engine docstring, "Silent rows"
        reads_silence=frozenset({"dense", "population"}),
    )
)


# ----------------------------------------------------------------------------- helpers
# (public: the gated kernels of ``numba.gates`` use them too)


def fixed(ctx: NodeContext) -> bool:
    """Whether the run is Loihi fixed point (int32 signals)."""
    return ctx.precision == "fixed"


def float_dtype(ctx: NodeContext) -> type:
    """The dtype of a float run's values: float32, or float64 for a float64 program."""
    return FLOAT_DTYPES[ctx.precision]


def node_cache(ctx: NodeContext) -> dict:
    """The node's arrays for the run's arithmetic (kept across runs, per precision and output dtype:
    a float64 run's projection may write float32 currents, ``engine.signal_dtype``)."""
    return ctx.cache.setdefault((ctx.precision, ctx.out.dtype.str), {})


def pair_counters(ctx: NodeContext) -> tuple[np.ndarray, np.ndarray, bool]:
    """The ``syn_ops`` and ``macs`` counters of a projection, and whether its kernel tests the
    input values per (step, sample) (a source that is not a spike signal) or counts every pair
    as ``syn_ops``."""
    return ctx.counts["syn_ops"], ctx.counts["macs"], ctx.source_signals[0] != "spike"


def silence(ctx: NodeContext) -> tuple[np.ndarray, bool]:
    """A kernel's ``silent, marks`` arguments: the node's silent-row flags and whether it may leave
    zero rows unwritten (engine docstring, "Silent rows")."""
    return (_NO_FLAGS, False) if ctx.silent is None else (ctx.silent, True)


def source_silence(ctx: NodeContext, i: int = 0) -> tuple[np.ndarray, bool]:
    """A kernel's ``src_silent, src_marked`` arguments for source ``i``: its flags, and whether it has any."""
    flags = ctx.source_silent[i] if ctx.source_silent else None
    return (_NO_FLAGS, False) if flags is None else (flags, True)


def source(ctx: NodeContext) -> np.ndarray:
    """The projection's source for its kernel: int32 in fixed point, else the run's float dtype, or
    float32 as the engine gives it (a float64 run's spike signals, ``engine.signal_dtype``)."""
    src = ctx.sources[0]
    dt = np.int32 if fixed(ctx) else np.float32 if src.dtype == np.float32 else float_dtype(ctx)
    if src.dtype != dt or not src.flags.c_contiguous:
        src = np.ascontiguousarray(src, dtype=dt)
    return src


def weights(ctx: NodeContext, w: Any) -> np.ndarray:
    """Weights for the run's arithmetic: float32; in float64, float32 still where every weight is a
    float32 value (the kernels add them into float64 sums: the same terms, half the bytes per
    event), else float64; or (fixed point, integer-valued by validation) the narrowest of
    int8/int16/int32 that holds them (Loihi's 8-bit weights: int8): the kernels sum them in int64,
    and narrow rows cut the memory traffic per event."""
    a = np.asarray(w)
    if not fixed(ctx):
        a32 = np.ascontiguousarray(a, np.float32)
        if ctx.precision == "float32" or a.dtype == np.float32 or np.array_equal(a32, a):
            return a32
        return np.ascontiguousarray(a, np.float64)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    narrowest = next(t for t in (np.int8, np.int16, np.int32) if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max)
    return np.ascontiguousarray(a.astype(narrowest))


def bias(ctx: NodeContext, n: int) -> np.ndarray:
    """The projection's float bias, empty when it has none (or in fixed point: no bias there)."""
    b = None if fixed(ctx) else bias_values(ctx.node, n, ctx.name)
    dtype = ctx.out.dtype.type if not fixed(ctx) else np.float32  # the currents' dtype
    return _EMPTY[dtype] if b is None else b.astype(dtype, copy=False)


def conv_arrays(ctx: NodeContext) -> dict:
    """A conv2d's layout (``layout.conv_layout``) and weights for the run's arithmetic."""
    c = node_cache(ctx)
    if "wc" not in c:
        L = conv_layout(ctx.node, ctx.name)
        c["layout"], c["wc"], c["bias"] = L, weights(ctx, L.wc), bias(ctx, L.C_out)
    return c


# ----------------------------------------------------------------------------- projections


@BACKEND.kernel("dense")
def dense(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Dense = ctx.node
    c = node_cache(ctx)
    if "wt" not in c:
        if np.shape(node.weight) != (node.size, node.in_size):
            raise BackendError(f"dense {ctx.name!r}: weight {np.shape(node.weight)}, expected {(node.size, node.in_size)}")
        c["wt"] = np.ascontiguousarray(weights(ctx, node.weight).T)
        c["row_nnz"] = np.count_nonzero(c["wt"], axis=1).astype(np.int64)
        c["bias"] = bias(ctx, node.size)
        c["narrow"] = fixed(ctx) and node.in_size * int(np.abs(c["wt"], dtype=np.int64).max(initial=0)) < 2**31
    weight_exp, delay, start = delivery(ctx)
    src = source(ctx)
    P.dense_kernel(fixed(ctx), c["narrow"])(
        src, c["wt"], c["row_nnz"], c["bias"], weight_exp, ctx.out, t0, t1, delay, start,
        *pair_counters(ctx), ctx.counts["dense_ops"], node.in_size * node.size, *silence(ctx), *source_silence(ctx),
    )


@BACKEND.kernel("sparse")
def sparse(ctx: NodeContext, t0: int, t1: int) -> None:
    if t1 - t0 < _LANE_MIN_STEPS and _call_again(ctx, t0, t1):
        return
    node: Sparse = ctx.node
    c = node_cache(ctx)
    if "blocks" not in c:  # the CSR by blocks of targets (layout.SparseBlocks), built once per node
        indptr, indices, c["row_nnz"] = csr_arrays(node, ctx.name)
        c["blocks"] = L = sparse_blocks(indptr, indices, weights(ctx, node.data), node.size)
        c["bias"] = bias(ctx, node.size)
        c["kernel"] = P.sparse_kernel(fixed(ctx), L.coded, L.table.shape[0] == 1)
    L: SparseBlocks = c["blocks"]
    weight_exp, delay, start = delivery(ctx)  # the onset moves with each chunk (local steps)
    B = ctx.batch
    # Threads beyond one per sample split each sample's target blocks (lanes; 1: one thread a sample),
    # for a call over many steps only: waking threads for every step of a cycle costs more than it saves.
    lanes = max(1, min(L.nblk, threads_allowed() // B)) if t1 - t0 >= _LANE_MIN_STEPS and L.nblk > 1 else 1
    src = source(ctx)
    pre = (src, L.ptr, L.off, L.w, L.table, c["row_nnz"], c["bias"], weight_exp, ctx.out)
    post = (delay, start, *pair_counters(ctx), L.block, lanes,
            ctx.counts["dense_ops"], node.in_size * node.size)  # dense_ops counted by the kernel, per step
    if lanes > 1:
        with threads_up_to(B * lanes):
            c["kernel"](*pre, t0, t1, *post)
        return
    c["kernel"](*pre, t0, t1, *post)
    if src is ctx.sources[0]:  # not a copy (its later steps would be missing)
        _keep_call(ctx, c["kernel"], pre, post)


@BACKEND.kernel("conv2d")
def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    c = conv_arrays(ctx)
    L = c["layout"]
    if "in_pairs" not in c:
        c["in_pairs"] = L.in_pairs
    weight_exp, delay, start = delivery(ctx)
    P.conv2d_kernel(fixed(ctx), False)(
        source(ctx), c["wc"], c["in_pairs"], c["bias"], weight_exp, ctx.out, t0, t1, delay, start, L.geom,
        _NO_ACTIVE3, _NO_COUNT2, _NO_KEEP, *pair_counters(ctx),
    )
    ctx.counts["dense_ops"] += L.dense_per_step * (t1 - t0)


@BACKEND.kernel("pool2d")
def pool2d(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Pool2d = ctx.node
    c = ctx.cache
    if "geom" not in c:
        kh, kw = node.kernel
        C, H, W, Ho, Wo = geometry_2d(node, (kh, kw))
        if node.shape[0] != C:
            raise BackendError(f"pool2d {ctx.name!r}: {C} input channels, output shape {node.shape}")
        c["geom"] = np.array([C, H, W, Ho, Wo, kh, kw, *node.stride, *node.padding], np.int64)
        wy = windows_per_position(H, Ho, kh, node.stride[0], node.padding[0])
        wx = windows_per_position(W, Wo, kw, node.stride[1], node.padding[1])
        c["win_count"] = np.ascontiguousarray(np.outer(wy, wx).reshape(-1))
    src = source(ctx)
    if node.mode == "max":
        P.pool_max_kernel(fixed(ctx))(src, ctx.out, t0, t1, node.delay, c["geom"])
        return
    if fixed(ctx):  # check() rejects these; kept for direct kernel calls
        raise BackendError(f"pool2d {ctx.name!r}: {node.mode!r} pooling has no fixed-point form")
    divisor = float_dtype(ctx)(node.kernel[0] * node.kernel[1] if node.mode == "avg" else 0)
    P.pool_sum_forward(
        src, c["win_count"], ctx.out, t0, t1, node.delay, c["geom"], divisor, ctx.counts["pool_ops"]
    )  # pooling accumulates are pool_ops, never syn_ops/macs nor dense_ops (NeuroBench counts no pooling)


@BACKEND.kernel("identity")
def identity(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Identity = ctx.node
    scale = np.int64(node.scale) if fixed(ctx) else float_dtype(ctx)(node.scale)
    weight_exp, delay, _ = delivery(ctx)
    P.identity_kernel(fixed(ctx))(source(ctx), scale, weight_exp, ctx.out, t0, t1, delay, *pair_counters(ctx))
    ctx.counts["dense_ops"] += node.size * (t1 - t0)


# ----------------------------------------------------------------------------- host ops


def _write_numpy(out: np.ndarray, t0: int, t1: int, values: Any) -> None:
    out[t0:t1] = values.numpy()


BACKEND.kernel("hostop")(host_op_kernel(lambda a: torch.from_numpy(np.ascontiguousarray(a)), _write_numpy))


# ----------------------------------------------------------------------------- generated sources


@BACKEND.kernel("bernoulli")
def bernoulli(ctx: NodeContext, t0: int, t1: int) -> None:
    """``spike.semantics``' counter-based spikes (``numba.neurons.bernoulli_forward``) at aligned
    step ``base + t - latency``."""
    node: Bernoulli = ctx.node
    c = ctx.cache
    if "thresholds" not in c:
        c["thresholds"] = semantics.spike_thresholds(node.p, node.size)
        c["seed"] = semantics.seed_words(node.seed)
    N.bernoulli_forward(c["thresholds"], *c["seed"], ctx.out, t0, t1, ctx.base - ctx.program.latency_of(ctx.name))


# ----------------------------------------------------------------------------- neurons


@BACKEND.kernel("population")
def population(ctx: NodeContext, t0: int, t1: int) -> None:
    """``spike.semantics`` in float32 or float64 (I = sum of sources in source order, ((s0+s1)+s2); the
    recurrent sources of a ``late_recurrent`` population summed apart), or Loihi fixed point."""
    if fixed(ctx):
        _population_fixed(ctx, t0, t1)
        return
    population_float(ctx, t0, t1)


def population_float(ctx: NodeContext, t0: int, t1: int, sources: list[np.ndarray] | None = None,
                     active: np.ndarray | None = None, nactive: np.ndarray | None = None) -> None:
    """Steps t0..t1-1 of a float population from ``sources`` (default: all of the node's);
    ``active``/``nactive``: only those neurons update (an FTWT gate's mask)."""
    if active is None and _call_again(ctx, t0, t1):
        return
    node: Population = ctx.node
    c = ctx.cache
    dtype = float_dtype(ctx)
    if "params" not in c:
        params = semantics.neuron_params(node, dtype)
        narrow = params.astype(np.float32)
        # float32 values (as a float32 program's parameters are): read as float32 arrays, the same
        # values in the double update and half the bytes per neuron and step
        c["params"] = narrow if np.array_equal(narrow, params) else params
        c["flags"] = semantics.neuron_flags(node)
        c["bias"] = semantics.neuron_bias(node, dtype)
    if "state" not in ctx.state:
        start = c.get("start")
        if start is None or start[0].shape[1] != ctx.batch:  # computed once per node and batch size
            state = semantics.initial_state(node, ctx.batch, dtype)
            start = c["start"] = (state, ~state.any(axis=(0, 2)))  # quiet: per sample, the whole state is zero
        ctx.state["state"], ctx.state["quiet"] = start[0].copy(), start[1].copy()
    gated = active is not None
    kernel, curs, lates, flags_cur, flags_late, gain, v_reset, quiet_steps, copied = _prepare_population(
        ctx, sources, gated)
    if not gated:
        active, nactive = _NO_ACTIVE, np.zeros(ctx.batch, np.int64)
    record = ctx.mem is not None
    tail = (c["params"], gain, v_reset, _NO_BIAS[dtype] if c["bias"] is None else c["bias"],
            ctx.onset, ctx.state["state"], ctx.out, ctx.mem if record else _NO_MEM[dtype], record, active, nactive,
            ctx.counts["spikes"], ctx.counts["neuron_updates"], *_listing(ctx), ctx.state["quiet"], quiet_steps,
            flags_cur, flags_late, *silence(ctx))
    kernel(curs, lates, t0, t1, *tail)
    if not gated and not copied:
        _keep_call(ctx, kernel, (curs, lates), tail)


def _keep_call(ctx: NodeContext, kernel: Any, head: tuple, tail: tuple) -> None:
    """Keep a call's arguments, ``kernel(*head, t0, t1, *tail)``, for :func:`_call_again`."""
    ctx.state["step_args"] = (ctx.onset, kernel, head, tail)


def _call_again(ctx: NodeContext, t0: int, t1: int) -> bool:
    """Call the node's kernel over ``t0..t1`` with the arguments kept by its call before, if that
    call kept them at the same onset (a cycle's per-step calls: the arrays and counters do not
    change within a chunk); whether it did."""
    kept = ctx.state.get("step_args")
    if kept is None or kept[0] != ctx.onset:
        return False
    _, kernel, head, tail = kept
    kernel(*head, t0, t1, *tail)
    return True


# A float population steps its samples on numba's threads (the prange compilation of its kernel)
# from this many neuron updates per step (neurons x samples; within the run's threads_at_most(batch)),
# and on the serial compilation below it: waking the threads would cost about what the step does,
# and the serial kernel compiles in half the time.
PARALLEL_MIN_UPDATES = 1 << 14


def _prepare_population(ctx: NodeContext, sources: list[np.ndarray] | None, gated: bool) -> tuple:
    """A float population's kernel and what its calls pass along: ``(kernel, curs, lates, flags_cur,
    flags_late, gain, v_reset, quiet_steps, copied)`` (``flags_*``: the sources' silent-row flags,
    zeros for a source without them; ``quiet_steps``: :func:`numba.neurons.rest_is_fixed_point`,
    probed once per node and tuple lengths; never for a gated population, whose mask leaves states
    apart; ``copied``: :func:`_float_sources`'s)."""
    node: Population = ctx.node
    c = ctx.cache
    if sources is not None and node.late_recurrent:
        raise BackendError(f"population {ctx.name!r}: a gated population cannot add recurrent inputs late")
    srcs, copied = _float_sources(ctx, ctx.sources if sources is None else sources)
    late_idx = ctx.recurrent_sources() if node.late_recurrent else ()
    curs = tuple(s for i, s in enumerate(srcs) if i not in late_idx) or (_silence(ctx),)
    lates = tuple(s for i, s in enumerate(srcs) if i in late_idx) if late_idx else curs
    given = ctx.source_silent if sources is None and ctx.source_silent else [None] * len(srcs)
    flags = [_no_silence(ctx) if f is None else f for f in given]
    flags_cur = tuple(f for i, f in enumerate(flags) if i not in late_idx) or (_no_silence(ctx),)
    flags_late = tuple(f for i, f in enumerate(flags) if i in late_idx) if late_idx else flags_cur
    parallel = numba.get_num_threads() > 1 and ctx.batch * ctx.out.shape[-1] >= PARALLEL_MIN_UPDATES
    key = ("kernel", gated, len(curs), len(lates), ctx.out.dtype, parallel)
    if key not in c:  # once per node, call shape and threading
        kernel = N.population_kernel(c["flags"], gated, c["bias"] is not None, parallel)
        dtype = float_dtype(ctx)
        gain, v_reset = dtype(node.gain), dtype(node.v_reset)
        rest = not gated and N.rest_is_fixed_point(kernel, c["params"], gain, v_reset, semantics.N_STATES,
                                                   len(curs), len(lates), ctx.out.dtype, curs[0].dtype, dtype)
        c[key] = kernel, gain, v_reset, rest
    kernel, gain, v_reset, rest = c[key]
    return kernel, curs, lates, flags_cur, flags_late, gain, v_reset, rest, copied


def _listing(ctx: NodeContext) -> tuple[bool, np.ndarray, np.ndarray]:
    """The population kernels' ``listed, index, nlisted`` arguments (``ctx.spike_list`` or none)."""
    if ctx.spike_list is None:
        return False, _NO_INDEX, _NO_NLISTED
    return (True, *ctx.spike_list)


def _float_sources(ctx: NodeContext, srcs: list[np.ndarray]) -> tuple[list[np.ndarray], bool]:
    """A float population's sources as C-contiguous ``[rows, B, n]`` arrays of one float dtype (the
    kernel sums them per neuron in it, ``numba.neurons._input_sum``): float32 where all are float32
    (in a float64 run, spikes and currents whose sums float32 holds exactly: ``engine.signal_dtype``),
    else the run's; and whether one had to be copied (its later steps are not in the copy)."""
    dtype = np.float32 if all(s.dtype == np.float32 for s in srcs) else float_dtype(ctx)
    out = []
    for s in srcs:
        _check_width(ctx, s)
        out.append(s if s.dtype == dtype and s.flags.c_contiguous else np.ascontiguousarray(s, dtype))
    return out, any(a is not s for a, s in zip(out, srcs))


def _kept_zeros(store: dict, key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Zeros of ``shape`` kept in ``store[key]`` (made again when the shape changes)."""
    z = store.get(key)
    if z is None or z.shape != shape:
        z = store[key] = np.zeros(shape, dtype)
    return z


def _silence(ctx: NodeContext) -> np.ndarray:
    """A zero input as long as the node's output (a population without sources)."""
    return _kept_zeros(ctx.state, "silence", ctx.out.shape, float_dtype(ctx))


def _no_silence(ctx: NodeContext) -> np.ndarray:
    """Silent-row flags that flag nothing, ``[rows, B]`` like the node's output (one per run)."""
    return _kept_zeros(ctx.shared, "no_silence", ctx.out.shape[:2], np.uint8)


def _check_width(ctx: NodeContext, src: np.ndarray) -> None:
    if src.shape[2] != ctx.node.size:
        raise BackendError(f"population {ctx.name!r}: a source has {src.shape[2]} values per step, "
                           f"expected {ctx.node.size}")


def _summed_int32(ctx: NodeContext, t0: int, t1: int) -> tuple[np.ndarray, int]:
    """The fixed-point input: the sources summed over steps t0..t1-1 in source order, wrapping as
    lava's int32 port adds, and its step offset (a single source is used as it is, offset 0)."""
    srcs = ctx.sources
    for s in srcs:
        _check_width(ctx, s)
    if not srcs:
        return np.zeros((t1 - t0, ctx.batch, ctx.node.size), np.int32), -t0
    if len(srcs) == 1:
        return np.ascontiguousarray(srcs[0], dtype=np.int32), 0
    cur = srcs[0][t0:t1].astype(np.int32)  # a copy
    for s in srcs[1:]:
        np.add(cur, s[t0:t1], out=cur, casting="unsafe")
    return cur, -t0


def _population_fixed(ctx: NodeContext, t0: int, t1: int) -> None:
    """Loihi fixed point (``numba.neurons.loihi_lif_step``); input = int32 sum of the sources."""
    node: Population = ctx.node
    n = node.size
    c = ctx.cache
    if "fixed" not in c:
        c["fixed"] = loihi_neuron_params(node, ctx.name)
    p = c["fixed"]
    st = ctx.state
    if not st:
        st.update(u=np.zeros((ctx.batch, n), np.int32), v=semantics.initial_v_fixed(node, ctx.batch))
    cur, ioff = _summed_int32(ctx, t0, t1)
    record = ctx.mem is not None or ctx.mem_u is not None
    no_mem = np.zeros((1, 1, 1), np.int32)
    N.population_fixed_forward(
        cur, ioff, t0, t1, p["du"], p["dv"], p["bias"], ctx.onset, p["vth_eff"], node.model != "li",
        st["u"], st["v"], ctx.out,
        ctx.mem if ctx.mem is not None else (np.zeros_like(ctx.out) if record else no_mem),
        ctx.mem_u if ctx.mem_u is not None else (np.zeros_like(ctx.out) if record else no_mem),
        record, ctx.counts["spikes"], *_listing(ctx),
    )
    ctx.counts["neuron_updates"] += n * (t1 - t0)

