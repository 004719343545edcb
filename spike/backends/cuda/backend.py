"""The cuda backend: the numba backend's event-driven execution on an NVIDIA GPU (Numba CUDA).

Same semantics, operation order and operation counts as the numba backend (design §6), bit for
bit: see ``cuda.kernels`` for how the kernels keep float32 results exact. Per node call:

- projections: a compaction kernel lists the non-zero inputs of every (step, sample) in
  ascending order and counts their synaptic pairs on the GPU, as ``syn_ops`` or ``macs`` by the
  numba backend's rule (decided per (sample, step): ``macs`` when one of that sample's input
  values of that step is outside {-1, 0, 1}, NeuroBench's per-call rule with batch size 1; all
  ``syn_ops`` from a source of signal "spike"); a delivery kernel adds the weight rows (dense,
  sparse) or kernels (conv2d) of those inputs into the targets; pooling and identity are
  element-wise;
- populations: one thread per (sample, neuron) steps the neuron state in registers.

Timing as the numba backend (``Program.onset``): a projection delivers nothing, bias included,
before its onset (its delay plus its source's latency: no events are listed, no pairs counted),
and a fixed-point population applies its own bias from its onset (its latency) on.

Every array of a run (node outputs ``[T, B, size]``, membrane records, neuron state, scratch,
counters) lives on the device for the whole run; weights are uploaded once per node and kept
(``ctx.cache``). Event-dependent counts (``syn_ops``/``macs``, avg/sum pooling's ``pool_ops``,
``spikes``) are int64 ``[B]`` device counters copied to the host once, after a node's last step; the counts that follow from
the shapes alone (``dense_ops``, ``neuron_updates``, ``host_flops``) are added on the host, as
the numba backend does. ``numba.cuda`` is imported lazily: importing this module needs no GPU.
The kernels are in ``cuda.kernels`` (projections) and ``cuda.neurons``; FTWT gates' kernels
(the "gated" variants) in ``cuda.gates``.

Runs on a real GPU, or anywhere through Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` set
before numba is imported; slow: tiny programs only).
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from spike.backends.engine import NodeContext
from spike.backends.host_ops import host_op_kernel
from spike.backends.layout import (
    bias_values, conv_layout, csr_arrays, delivery, f32, geometry_2d, windows_per_position,
)
from spike.backends.registry import Backend, BackendError, register_backend
from spike import semantics
from spike.compiler.ir.nodes import Dense, Identity, Pool2d, Population, Sparse
from spike.compiler.passes.quantize import loihi_neuron_params
from spike.compat.numba_cuda import numba_cuda

_PRECISIONS = ("float32", "fixed")

_NO_GPU = (
    "no CUDA GPU found and NUMBA_ENABLE_CUDASIM is not set (run on a machine with an NVIDIA GPU "
    "and numba-cuda, or set NUMBA_ENABLE_CUDASIM=1 before numba is imported to use Numba's CUDA "
    "simulator)"
)


def device_kernels() -> Any:
    """``cuda.kernels`` (imported on first use: it imports ``numba.cuda``)."""
    from spike.backends.cuda import kernels as cuda_kernels

    return cuda_kernels


def device_neurons() -> Any:
    """``cuda.neurons`` (imported on first use, as :func:`device_kernels`)."""
    from spike.backends.cuda import neurons as cuda_neurons

    return cuda_neurons


def _available() -> str | None:
    try:
        cuda = numba_cuda()
        K = device_kernels()
    except Exception as e:  # numba without its CUDA target, or a broken CUDA install
        return f"numba.cuda cannot be used ({type(e).__name__}: {e}); install numba-cuda"
    if K.SIMULATING:
        return None
    try:
        ok = bool(cuda.is_available())
    except Exception:  # pragma: no cover - driver errors
        ok = False
    return None if ok else _NO_GPU


# ----------------------------------------------------------------------------- device arrays


class _DevicePool:
    """Recycles device arrays between runs: a new allocation (``cuMemAlloc``) and its deferred
    free cost more than the work of a sparse step. An array is reused once only the pool holds it
    (nothing else references it), keyed by shape and dtype; at most ``max_bytes`` stay idle."""

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.max_bytes = max_bytes
        self.arrays: list[Any] = []
        probe = [object()]
        for a in probe:  # references of an array held by the list only, counted as below
            self._idle_refs = sys.getrefcount(a)

    def _idle(self) -> list[bool]:
        idle = []
        for a in self.arrays:
            idle.append(sys.getrefcount(a) <= self._idle_refs)
        return idle

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        dt = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        idle = self._idle()
        idle_bytes = 0
        for a, free in zip(self.arrays, idle):
            if free:
                if a.shape == shape and a.dtype == dt:
                    return a
                idle_bytes += a.nbytes
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if idle_bytes + nbytes > self.max_bytes:  # drop idle arrays before growing past the cap
            self.arrays = [a for a, free in zip(self.arrays, idle) if not free]
        a = numba_cuda().device_array(shape, dtype=dt)
        self.arrays.append(a)
        return a

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        a = self.empty(shape, dtype)
        _fill_zero(a)
        return a


_HOST_ZERO_BYTES = 1 << 20  # smaller arrays are zeroed by a copy from the host (no launch)


def _fill_zero(a: Any) -> None:
    n = int(a.size)
    if not n:
        return
    if n * a.dtype.itemsize <= _HOST_ZERO_BYTES:
        a.copy_to_device(np.zeros(a.shape, a.dtype))
    else:
        K = device_kernels()
        K.fill_zero[K.blocks_for(n), K.TPB](a.reshape(n))


_POOL = _DevicePool()


def _zeros(shape: tuple[int, ...], dtype: str) -> Any:
    return _POOL.zeros(shape, dtype)


def from_host(a: np.ndarray) -> Any:
    a = np.ascontiguousarray(a)
    d = _POOL.empty(a.shape, a.dtype)
    d.copy_to_device(a)
    return d


def to_host(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def to_device(a: np.ndarray) -> Any:
    return numba_cuda().to_device(np.ascontiguousarray(a))


BACKEND = register_backend(
    Backend(
        name="cuda",
        precisions=frozenset(_PRECISIONS),
        zeros=_zeros,
        to_numpy=to_host,
        from_numpy=from_host,
        available=_available,
    )
)


# ----------------------------------------------------------------------------- helpers
# (public: the gated kernels of ``cuda.gates`` use them too)


def fixed(ctx: NodeContext) -> bool:
    """Whether the run is Loihi fixed point (int32 signals)."""
    return ctx.precision == "fixed"


def node_cache(ctx: NodeContext) -> dict:
    """The node's device arrays for the run's arithmetic (kept across runs, per precision)."""
    return ctx.cache.setdefault(ctx.precision, {})


def pair_counters(ctx: NodeContext) -> tuple[Any, Any, bool]:
    """A projection's device counters for ``syn_ops`` and ``macs`` and whether the kernels test
    its input values per (step, sample) (a source that is not a spike signal; else every pair is
    ``syn_ops`` and no ``macs`` counter is made)."""
    check = ctx.source_signals[0] != "spike"
    acs = _counter(ctx, "syn_ops")
    return acs, (_counter(ctx, "macs") if check else acs), check


def device_bias(ctx: NodeContext, n: int) -> tuple[Any, bool]:
    """Device bias (a one-element dummy when there is none, or in fixed point) and whether there is one."""
    b = None if fixed(ctx) else bias_values(ctx.node, n, ctx.name)
    if b is None:
        return to_device(np.zeros(1, np.float32)), False
    return to_device(b), True


def source(ctx: NodeContext, i: int = 0) -> Any:
    src = ctx.sources[i]
    dt = np.dtype(np.int32 if fixed(ctx) else np.float32)
    if isinstance(src, np.ndarray):  # not produced by this backend (direct kernel calls)
        src = to_device(np.asarray(src, dt))
    elif src.dtype != dt:
        raise BackendError(f"node {ctx.name!r}: source {i} is {src.dtype}, expected {dt}")
    return src


def weights(ctx: NodeContext, w: Any) -> np.ndarray:
    """Weights for the run's arithmetic: float32, or (fixed point, integer-valued by validation) int32."""
    if not fixed(ctx):
        return f32(w)
    a = np.asarray(w).astype(np.int64)
    if a.size and (a.min() < -(1 << 31) or a.max() >= 1 << 31):
        raise BackendError(f"node {ctx.name!r}: fixed-point weights beyond the int32 range")
    return np.ascontiguousarray(a.astype(np.int32))


def conv_arrays(ctx: NodeContext) -> dict:
    """A conv2d's layout (``layout.conv_layout``) on the device, weights in the run's arithmetic."""
    c = node_cache(ctx)
    if "wc" not in c:
        L = conv_layout(ctx.node, ctx.name)
        c["layout"], c["wc"], c["geom"] = L, to_device(weights(ctx, L.wc)), to_device(L.geom)
        c["bias"], c["has_bias"] = device_bias(ctx, L.C_out)
        c["no_acc"] = to_device(np.zeros((1, 1), np.int64))  # unused accumulator rows (float32)
    return c


def _acc_rows(ctx: NodeContext, units: int, n_out: int) -> tuple[int, Any]:
    """Grid and int64 accumulator rows (one per block) of a fixed-point scatter kernel."""
    K = device_kernels()
    grid = max(1, min(K.grid_for(units), 4096, (256 << 20) // max(8 * n_out, 1)))
    return grid, _scratch(ctx, "acc", (grid, max(n_out, 1)), np.int64)


def _scatter_grid(ctx: NodeContext, units: int, n_out: int, no_acc: Any) -> tuple[int, Any]:
    """Grid and accumulator rows of a scatter kernel over ``units`` (step, sample) pairs: one block
    per unit and no rows in float32 (``no_acc``), :func:`_acc_rows` in fixed point."""
    if fixed(ctx):
        return _acc_rows(ctx, units, n_out)
    return device_kernels().grid_for(units), no_acc


def _counter(ctx: NodeContext, key: str) -> Any:
    """The node's device counter for ``key`` (int64 ``[B]``), zeroed at its first use in a run."""
    dc = ctx.state.setdefault("device_counts", {})
    if key not in dc:
        dc[key] = _POOL.zeros((ctx.batch,), np.int64)
    return dc[key]


def finish(ctx: NodeContext, t1: int) -> None:
    """After the node's last step: copy its device counters into the run's host counters."""
    if t1 >= ctx.steps:
        for key, d in ctx.state.get("device_counts", {}).items():
            ctx.counts[key] += d.copy_to_host()


def _scratch(ctx: NodeContext, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
    """A per-run device buffer of this node, reused by every call of the run."""
    a = ctx.state.get(name)
    if a is None or tuple(a.shape) != tuple(shape):
        a = _POOL.empty(shape, dtype)
        ctx.state[name] = a
    return a


def gather(ctx: NodeContext, src: Any, t0: int, t1: int, delay: int, pair_w: Any, write_idx: bool,
           onset: int | None = None, key: str | None = None) -> tuple[Any, Any]:
    """Active inputs of steps t0..t1-1 (``idx``, ``cnt``) and their pairs into the node's counter
    ``key``, or (no ``key``) its ``syn_ops``/``macs`` counters by :func:`pair_counters`, with the
    decision per (step, sample) left in ``ctx.state["pair_real"]`` (``[t1 - t0, B]``, 1: ``macs``);
    no events (nor pairs) before step ``onset`` (default: ``delay``, the source's first step)."""
    K = device_kernels()
    onset = delay if onset is None else max(int(onset), delay)
    nsteps, B = t1 - t0, ctx.batch
    n_in = src.shape[2]
    idx = _scratch(ctx, "idx", (nsteps, B, n_in if write_idx else 1), np.int32)
    cnt = _scratch(ctx, "cnt", (nsteps, B), np.int32)
    real = _scratch(ctx, "pair_real", (nsteps, B), np.int32)
    if key is None:
        acs, macs, check = pair_counters(ctx)
    else:
        acs = macs = _counter(ctx, key)
        check = False
    K.gather_active[K.grid_for(nsteps * B), K.TPB](
        src, t0, nsteps, delay, onset, pair_w, idx, cnt, acs, macs, check, real, write_idx
    )
    return idx, cnt


def events(ctx: NodeContext, t0: int, t1: int, pair_w: Any) -> tuple[Any, Any, Any, int, int, int]:
    """An event-driven projection's call over steps t0..t1-1: ``(src, idx, cnt, weight_exp, delay,
    start)``, its source, active inputs (:func:`gather`, pairs counted with ``pair_w``) and
    ``layout.delivery``."""
    weight_exp, delay, start = delivery(ctx)
    src = source(ctx)
    idx, cnt = gather(ctx, src, t0, t1, delay, pair_w, True, start)
    return src, idx, cnt, weight_exp, delay, start


# ----------------------------------------------------------------------------- projections


@BACKEND.kernel("dense")
def dense(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Dense = ctx.node
    c = node_cache(ctx)
    K = device_kernels()
    if "wt" not in c:
        if np.shape(node.weight) != (node.size, node.in_size):
            raise BackendError(f"dense {ctx.name!r}: weight {np.shape(node.weight)}, expected {(node.size, node.in_size)}")
        wt = np.ascontiguousarray(weights(ctx, node.weight).T)
        c["wt"] = to_device(wt)
        c["row_nnz"] = to_device(np.count_nonzero(wt, axis=1).astype(np.int64))
        c["bias"], c["has_bias"] = device_bias(ctx, node.size)
    if t1 > t0 and ctx.batch > 0:
        src, idx, cnt, weight_exp, delay, start = events(ctx, t0, t1, c["row_nnz"])
        n_tiles = (node.size + K.TPB - 1) // K.TPB
        K.dense_kernel(fixed(ctx))[K.grid_for((t1 - t0) * ctx.batch * n_tiles), K.TPB](
            src, idx, cnt, c["wt"], c["bias"], c["has_bias"], weight_exp, ctx.out, t0, t1 - t0, delay, start
        )
    ctx.counts["dense_ops"] += node.in_size * node.size * (t1 - t0)
    finish(ctx, t1)


@BACKEND.kernel("sparse")
def sparse(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Sparse = ctx.node
    c = node_cache(ctx)
    if "indptr" not in c:
        indptr, indices, row_nnz = csr_arrays(node, ctx.name)
        data = weights(ctx, node.data)
        # rows naming one target twice are applied serially (their terms must add in CSR order)
        serial = np.array(
            [len(np.unique(indices[indptr[i]:indptr[i + 1]])) < indptr[i + 1] - indptr[i] for i in range(node.in_size)],
            dtype=np.int8,
        )
        c["indptr"], c["indices"] = to_device(indptr), to_device(indices if len(indices) else np.zeros(1, np.int64))
        c["data"] = to_device(data if len(data) else np.zeros(1, data.dtype))
        c["row_nnz"], c["serial"] = to_device(row_nnz), to_device(serial)
        c["bias"], c["has_bias"] = device_bias(ctx, node.size)
        c["no_acc"] = to_device(np.zeros((1, 1), np.int64))
    if t1 > t0 and ctx.batch > 0:
        K = device_kernels()
        src, idx, cnt, weight_exp, delay, start = events(ctx, t0, t1, c["row_nnz"])
        grid, acc = _scatter_grid(ctx, (t1 - t0) * ctx.batch, node.size, c["no_acc"])
        K.sparse_kernel(fixed(ctx))[grid, K.TPB](
            src, idx, cnt, c["indptr"], c["indices"], c["data"], c["serial"], c["bias"], c["has_bias"], weight_exp,
            acc, ctx.out, t0, t1 - t0, delay, start,
        )
    ctx.counts["dense_ops"] += node.in_size * node.size * (t1 - t0)
    finish(ctx, t1)


@BACKEND.kernel("conv2d")
def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    c = conv_arrays(ctx)
    L = c["layout"]
    K = device_kernels()
    if "in_pairs" not in c:
        c["in_pairs"] = to_device(L.in_pairs)
        c["no_keep"] = to_device(np.zeros((1, 1), np.uint8))
        c["no_count"], c["no_real"] = to_device(np.zeros(1, np.int64)), to_device(np.zeros((1, 1), np.int32))
    if t1 > t0 and ctx.batch > 0:
        src, idx, cnt, weight_exp, delay, start = events(ctx, t0, t1, c["in_pairs"])
        grid, acc = _scatter_grid(ctx, (t1 - t0) * ctx.batch, ctx.node.size, c["no_acc"])
        K.conv2d_kernel(fixed(ctx), False)[grid, K.TPB](
            src, idx, cnt, c["wc"], c["bias"], c["has_bias"], weight_exp, acc, c["no_keep"], ctx.out, t0, t1 - t0,
            delay, start, c["geom"], c["no_count"], c["no_count"], c["no_real"],
        )
    ctx.counts["dense_ops"] += L.dense_per_step * (t1 - t0)
    finish(ctx, t1)


def _elementwise(ctx: NodeContext, t0: int, t1: int) -> tuple[Any, int, int]:
    """``cuda.kernels``, the steps and the elements (``steps * B * size``) of an element-wise node
    call over steps t0..t1-1."""
    nsteps = t1 - t0
    return device_kernels(), nsteps, nsteps * ctx.batch * ctx.node.size


def _pool_arrays(ctx: NodeContext) -> dict:
    """A pool2d's window geometry ``geom`` (int64 ``[C, H, W, Ho, Wo, kh, kw, sy, sx, py, px]``) and
    ``win_count`` (the windows each flat input ``(c, y, x)`` falls in) on the device."""
    c = ctx.cache
    if "geom" in c:
        return c
    node: Pool2d = ctx.node
    kh, kw = node.kernel
    C, H, W, Ho, Wo = geometry_2d(node, (kh, kw))
    if node.shape[0] != C:
        raise BackendError(f"pool2d {ctx.name!r}: {C} input channels, output shape {node.shape}")
    c["geom"] = to_device(np.array([C, H, W, Ho, Wo, kh, kw, *node.stride, *node.padding], np.int64))
    wy = windows_per_position(H, Ho, kh, node.stride[0], node.padding[0])
    wx = windows_per_position(W, Wo, kw, node.stride[1], node.padding[1])
    c["win_count"] = to_device(np.ascontiguousarray(np.tile(np.outer(wy, wx).reshape(-1), C)))
    return c


@BACKEND.kernel("pool2d")
def pool2d(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Pool2d = ctx.node
    c = _pool_arrays(ctx)
    K, nsteps, total = _elementwise(ctx, t0, t1)
    if node.mode == "max":
        if total:
            K.pool_max_kernel(fixed(ctx))[K.blocks_for(total), K.TPB](source(ctx), ctx.out, t0, nsteps, node.delay,
                                                                       c["geom"])
        return
    if fixed(ctx):  # check() rejects these; kept for direct kernel calls
        raise BackendError(f"pool2d {ctx.name!r}: {node.mode!r} pooling has no fixed-point form")
    if total:
        src = source(ctx)
        # pooling accumulates are pool_ops, never syn_ops/macs nor dense_ops (NeuroBench counts no pooling)
        gather(ctx, src, t0, t1, node.delay, c["win_count"], False, key="pool_ops")
        divisor = np.float32(node.kernel[0] * node.kernel[1] if node.mode == "avg" else 0)
        K.pool_sum_forward[K.blocks_for(total), K.TPB](src, ctx.out, t0, nsteps, node.delay, c["geom"], divisor)
    finish(ctx, t1)


@BACKEND.kernel("identity")
def identity(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Identity = ctx.node
    c = ctx.cache
    if "ones" not in c:
        c["ones"] = to_device(np.ones(max(node.size, 1), np.int64))
    K, nsteps, total = _elementwise(ctx, t0, t1)
    if total:
        src = source(ctx)
        gather(ctx, src, t0, t1, node.delay, c["ones"], False)
        if fixed(ctx):  # the delivered integer where the source spiked (0 elsewhere)
            scale, unit = np.int64(_wrap_int32(_shift_by_exp(int(np.int64(node.scale)), int(node.weight_exp)))), False
        else:
            scale = np.float32(node.scale)
            unit = bool(scale == 1)
        K.identity_kernel(fixed(ctx))[K.blocks_for(total), K.TPB](src, scale, unit, ctx.out, t0, nsteps, node.delay)
    ctx.counts["dense_ops"] += node.size * nsteps
    finish(ctx, t1)


def _shift_by_exp(x: int, e: int) -> int:
    return x * (1 << e) if e >= 0 else x >> -e


def _wrap_int32(x: int) -> int:
    return ((x + (1 << 31)) & ((1 << 32) - 1)) - (1 << 31)


# ----------------------------------------------------------------------------- host ops


def _as_tensor(a: Any) -> Any:
    """A torch view of a device array (a host copy under the simulator)."""
    import torch

    if device_kernels().SIMULATING:
        return torch.from_numpy(np.ascontiguousarray(a.copy_to_host()))
    return torch.as_tensor(a, device="cuda")


def _write_tensor(out: Any, t0: int, t1: int, values: Any) -> None:
    if device_kernels().SIMULATING:
        out[t0:t1].copy_to_device(np.ascontiguousarray(values.numpy()))
    else:
        _as_tensor(out[t0:t1]).copy_(values)


# Host ops through torch on the GPU (the kernels every backend shares), counted there too.
BACKEND.kernel("hostop")(host_op_kernel(_as_tensor, _write_tensor))


# ----------------------------------------------------------------------------- generated sources


@BACKEND.kernel("bernoulli")
def bernoulli(ctx: NodeContext, t0: int, t1: int) -> None:
    """``spike.semantics``' counter-based spikes (``cuda.neurons.bernoulli_forward``)."""
    node = ctx.node
    c = ctx.cache
    KN = device_neurons()
    if "thresholds" not in c:
        c["thresholds"] = to_device(semantics.spike_thresholds(node.p, node.size))
        c["seed"] = semantics.seed_words(node.seed)
    B, n = ctx.batch, node.size
    if t1 > t0 and B > 0 and n > 0:
        n_tiles = (n + KN.TPB - 1) // KN.TPB
        KN.bernoulli_forward[device_kernels().grid_for(B * n_tiles), KN.TPB](
            c["thresholds"], *c["seed"], ctx.out, t0, t1, ctx.base - ctx.program.latency_of(ctx.name))


# ----------------------------------------------------------------------------- neurons


@BACKEND.kernel("population")
def population(ctx: NodeContext, t0: int, t1: int) -> None:
    """``spike.semantics`` in float32, in the numba backend's order (see ``numba.backend.population``),
    or Loihi fixed point."""
    if fixed(ctx):
        _population_fixed(ctx, t0, t1)
        return
    population_float(ctx, t0, t1)


def population_float(ctx: NodeContext, t0: int, t1: int, skip: int | None = None, keep: Any = None,
                     nactive: np.ndarray | None = None) -> None:
    """Steps t0..t1-1 of a float32 population from its sources but the one at position ``skip`` (an
    FTWT gate); ``keep`` ``[B, n]`` uint8 on the device: only those neurons (``nactive[b]`` of
    sample b) update."""
    node: Population = ctx.node
    n, B = node.size, ctx.batch
    c = ctx.cache
    KN = device_neurons()
    if "params" not in c:
        c["params"] = to_device(semantics.neuron_params(node))
        c["no_mem"] = to_device(np.zeros((1, 1, 1), np.float32))
        c["no_keep"] = to_device(np.zeros((1, 1), np.uint8))
        bias = semantics.neuron_bias(node)
        c["biased"] = bias is not None
        c["bias"] = to_device(bias if bias is not None else np.zeros(1, np.float32))
    st = ctx.state
    if "state" not in st:
        st["state"] = from_host(semantics.initial_state(node, B))
    spikes = _counter(ctx, "spikes")
    nsteps = t1 - t0
    if nsteps > 0 and B > 0 and n > 0:
        positions = [i for i in range(len(ctx.sources)) if i != skip]
        late_pos: tuple[int, ...] = ()
        if node.late_recurrent:
            if skip is not None:
                raise BackendError(f"population {ctx.name!r}: a gated population cannot add recurrent inputs late")
            late_pos = ctx.recurrent_sources()
        if late_pos:  # both over steps t0..t1-1 (one offset)
            cur, ioff = _summed(ctx, [i for i in positions if i not in late_pos], t0, t1, "cur", whole=False)
            late, _ = _summed(ctx, late_pos, t0, t1, "late", whole=False)
        else:
            cur, ioff = _summed(ctx, positions, t0, t1, "cur")
            late = cur
        record = ctx.mem is not None
        n_tiles = (n + KN.TPB - 1) // KN.TPB
        KN.population_forward[device_kernels().grid_for(B * n_tiles), KN.TPB](
            cur, late, ioff, t0, t1, c["params"], np.float32(node.gain), np.float32(node.v_reset),
            *semantics.neuron_flags(node), c["bias"], c["biased"], ctx.onset, st["state"], ctx.out,
            ctx.mem if record else c["no_mem"], record,
            c["no_keep"] if keep is None else keep, keep is not None, spikes,
        )
    ctx.counts["neuron_updates"] += (n if nactive is None else nactive) * nsteps
    finish(ctx, t1)


def _summed(ctx: NodeContext, positions: list[int], t0: int, t1: int, key: str,
            whole: bool = True) -> tuple[Any, int]:
    """The sum of the sources at ``positions`` over steps t0..t1-1 in source order, in the run's
    arithmetic (float32, or int32 wrapping), and its step offset (``whole``: a single source is
    used as it is, offset 0)."""
    K = device_kernels()
    n, B = ctx.node.size, ctx.batch
    srcs = [source(ctx, i) for i in positions]
    for s in srcs:
        if s.shape[2] != n:
            raise BackendError(f"population {ctx.name!r}: a source has {s.shape[2]} values per step, expected {n}")
    if len(srcs) == 1 and whole:
        return srcs[0], 0
    nsteps = t1 - t0
    cur = _scratch(ctx, key, (nsteps, B, n), np.int32 if fixed(ctx) else np.float32)
    if not srcs:
        _fill_zero(cur)
    else:
        grid = K.blocks_for(nsteps * B * n)
        K.copy_steps[grid, K.TPB](cur, 0, srcs[0], t0, nsteps)
        for s in srcs[1:]:
            K.add_steps[grid, K.TPB](cur, 0, s, t0, nsteps)
    return cur, -t0


def _population_fixed(ctx: NodeContext, t0: int, t1: int) -> None:
    """Loihi fixed point (``numba.neurons.loihi_lif_step``); input = int32 sum of the sources."""
    node: Population = ctx.node
    n, B = node.size, ctx.batch
    c = ctx.cache
    KN = device_neurons()
    if "fixed" not in c:
        p = loihi_neuron_params(node, ctx.name)
        c["fixed"] = {k: to_device(np.asarray(p[k], np.int64)) for k in ("du", "dv", "bias", "vth_eff")}
        c["no_mem_i32"] = to_device(np.zeros((1, 1, 1), np.int32))
    p = c["fixed"]
    st = ctx.state
    if "u" not in st:
        st["u"] = _POOL.zeros((B, n), np.int32)
        st["v"] = from_host(semantics.initial_v_fixed(node, B))  # after u is referenced: a distinct array
    spikes = _counter(ctx, "spikes")
    nsteps = t1 - t0
    if nsteps > 0 and B > 0 and n > 0:
        cur, ioff = _summed(ctx, list(range(len(ctx.sources))), t0, t1, "cur")
        n_tiles = (n + KN.TPB - 1) // KN.TPB
        KN.population_fixed_forward[device_kernels().grid_for(B * n_tiles), KN.TPB](
            cur, ioff, t0, t1, p["du"], p["dv"], p["bias"], ctx.onset, p["vth_eff"],
            node.model != "li", st["u"], st["v"],
            ctx.out, ctx.mem if ctx.mem is not None else c["no_mem_i32"],
            ctx.mem_u if ctx.mem_u is not None else c["no_mem_i32"],
            ctx.mem is not None, ctx.mem_u is not None, spikes,
        )
    ctx.counts["neuron_updates"] += n * nsteps
    finish(ctx, t1)
