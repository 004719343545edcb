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
    conv_layout, f32 as _f32, geometry_2d as _geometry_2d, windows_per_position,
)
from spike.backends.registry import Backend, BackendError, register_backend
from spike import semantics
from spike.compiler.ir.nodes import (
    Conv2d, Dense, HostOp, Identity, Pool2d, Population, Sparse,
)

_PRECISIONS = ("float32", "fixed")

_NO_GPU = (
    "no CUDA GPU found and NUMBA_ENABLE_CUDASIM is not set (run on a machine with an NVIDIA GPU "
    "and numba-cuda, or set NUMBA_ENABLE_CUDASIM=1 before numba is imported to use Numba's CUDA "
    "simulator)"
)


def _kernels() -> Any:
    from spike.backends.cuda import kernels as cuda_kernels

    return cuda_kernels


def _cuda() -> Any:
    from numba import cuda

    return cuda


def _available() -> str | None:
    try:
        cuda = _cuda()
        K = _kernels()
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
        a = _cuda().device_array(shape, dtype=dt)
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
        K = _kernels()
        K.fill_zero[K.blocks_for(n), K.TPB](a.reshape(n))


_POOL = _DevicePool()


def _zeros(shape: tuple[int, ...], dtype: str) -> Any:
    return _POOL.zeros(shape, dtype)


def _from_numpy(a: np.ndarray) -> Any:
    a = np.ascontiguousarray(a)
    d = _POOL.empty(a.shape, a.dtype)
    d.copy_to_device(a)
    return d


def _to_numpy(a: Any) -> np.ndarray:
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def _to_device(a: np.ndarray) -> Any:
    return _cuda().to_device(np.ascontiguousarray(a))


BACKEND = register_backend(
    Backend(
        name="cuda",
        precisions=frozenset(_PRECISIONS),
        zeros=_zeros,
        to_numpy=_to_numpy,
        from_numpy=_from_numpy,
        available=_available,
    )
)


# ----------------------------------------------------------------------------- helpers


def _fixed(ctx: NodeContext) -> bool:
    """Whether the run is Loihi fixed point (int32 signals)."""
    return getattr(ctx, "precision", "float32") == "fixed"


def _mem_u(ctx: NodeContext) -> Any:
    """The Loihi current record (fixed point, probe ``NODE.u``), or None."""
    return getattr(ctx, "mem_u", None)


def _pair_counters(ctx: NodeContext) -> tuple[Any, Any, bool]:
    """A projection's device counters for ``syn_ops`` and ``macs`` and whether the kernels test
    its input values per (step, sample) (a source that is not a spike signal; else every pair is
    ``syn_ops`` and no ``macs`` counter is made)."""
    check = ctx.source_signals[0] != "spike"
    acs = _counter(ctx, "syn_ops")
    return acs, (_counter(ctx, "macs") if check else acs), check


def _bias(node: Any, n: int, name: str) -> tuple[Any, bool]:
    """Device bias (a one-element dummy when there is none) and whether there is one."""
    if getattr(node, "bias", None) is None:
        return _to_device(np.zeros(1, np.float32)), False
    b = _f32(node.bias).reshape(-1)
    if b.shape[0] != n:
        raise BackendError(f"{node.KIND} {name!r}: bias has {b.shape[0]} values, expected {n}")
    return _to_device(b), True


def _source(ctx: NodeContext, i: int = 0) -> Any:
    src = ctx.sources[i]
    dt = np.dtype(np.int32 if _fixed(ctx) else np.float32)
    if isinstance(src, np.ndarray):  # not produced by this backend (direct kernel calls)
        src = _to_device(np.asarray(src, dt))
    elif src.dtype != dt:
        raise BackendError(f"node {ctx.name!r}: source {i} is {src.dtype}, expected {dt}")
    return src


def _int_weights(a: Any, name: str) -> np.ndarray:
    """Fixed-point weights (integer-valued by validation) as int32."""
    w = np.asarray(a).astype(np.int64)
    if w.size and (w.min() < -(1 << 31) or w.max() >= 1 << 31):
        raise BackendError(f"node {name!r}: fixed-point weights beyond the int32 range")
    return np.ascontiguousarray(w.astype(np.int32))


def _acc_rows(ctx: NodeContext, units: int, n_out: int) -> tuple[int, Any]:
    """Grid and int64 accumulator rows (one per block) of a fixed-point scatter kernel."""
    K = _kernels()
    grid = max(1, min(K.grid_for(units), 4096, (256 << 20) // max(8 * n_out, 1)))
    return grid, _scratch(ctx, "acc", (grid, max(n_out, 1)), np.int64)


def _counter(ctx: NodeContext, key: str) -> Any:
    """The node's device counter for ``key`` (int64 ``[B]``), zeroed at its first use in a run."""
    dc = ctx.state.setdefault("device_counts", {})
    if key not in dc:
        dc[key] = _POOL.zeros((ctx.batch,), np.int64)
    return dc[key]


def _finish(ctx: NodeContext, t1: int) -> None:
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


def _gather(ctx: NodeContext, src: Any, t0: int, t1: int, delay: int, pair_w: Any, write_idx: bool,
            onset: int | None = None, key: str | None = None) -> tuple[Any, Any]:
    """Active inputs of steps t0..t1-1 (``idx``, ``cnt``) and their pairs into the node's counter
    ``key``, or (no ``key``) its ``syn_ops``/``macs`` counters by :func:`_pair_counters`, with the
    decision per (step, sample) left in ``ctx.state["pair_real"]`` (``[t1 - t0, B]``, 1: ``macs``);
    no events (nor pairs) before step ``onset`` (default: ``delay``, the source's first step)."""
    K = _kernels()
    onset = delay if onset is None else max(int(onset), delay)
    nsteps, B = t1 - t0, ctx.batch
    n_in = src.shape[2]
    idx = _scratch(ctx, "idx", (nsteps, B, n_in if write_idx else 1), np.int32)
    cnt = _scratch(ctx, "cnt", (nsteps, B), np.int32)
    real = _scratch(ctx, "pair_real", (nsteps, B), np.int32)
    if key is None:
        acs, macs, check = _pair_counters(ctx)
    else:
        acs = macs = _counter(ctx, key)
        check = False
    K.gather_active[K.grid_for(nsteps * B), K.TPB](
        src, t0, nsteps, delay, onset, pair_w, idx, cnt, acs, macs, check, real, write_idx
    )
    return idx, cnt


# ----------------------------------------------------------------------------- projections


@BACKEND.kernel("dense")
def dense(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Dense = ctx.node
    c = ctx.cache
    K = _kernels()
    if "wt" not in c:
        w = _f32(node.weight)
        if w.shape != (node.size, node.in_size):
            raise BackendError(f"dense {ctx.name!r}: weight {w.shape}, expected {(node.size, node.in_size)}")
        wt = np.ascontiguousarray(w.T)
        c["wt"] = _to_device(wt)
        c["row_nnz"] = _to_device(np.count_nonzero(wt, axis=1).astype(np.int64))
        c["bias"], c["has_bias"] = _bias(node, node.size, ctx.name)
    if _fixed(ctx) and "wt_fixed" not in c:
        c["wt_fixed"] = _to_device(np.ascontiguousarray(_int_weights(node.weight, ctx.name).T))
    if t1 > t0 and ctx.batch > 0 and _fixed(ctx):
        src = _source(ctx)
        idx, cnt = _gather(ctx, src, t0, t1, node.delay, c["row_nnz"], True)
        n_tiles = (node.size + K.TPB - 1) // K.TPB
        K.dense_fixed_deliver[K.grid_for((t1 - t0) * ctx.batch * n_tiles), K.TPB](
            src, idx, cnt, c["wt_fixed"], int(node.weight_exp), ctx.out, t0, t1 - t0, node.delay
        )
    elif t1 > t0 and ctx.batch > 0:
        src = _source(ctx)
        onset = ctx.onset  # Program.onset: delay + the source's latency
        idx, cnt = _gather(ctx, src, t0, t1, node.delay, c["row_nnz"], True, onset)
        n_tiles = (node.size + K.TPB - 1) // K.TPB
        K.dense_deliver[K.grid_for((t1 - t0) * ctx.batch * n_tiles), K.TPB](
            src, idx, cnt, c["wt"], c["bias"], c["has_bias"], ctx.out, t0, t1 - t0, node.delay, onset
        )
    ctx.counts["dense_ops"] += node.in_size * node.size * (t1 - t0)
    _finish(ctx, t1)


@BACKEND.kernel("sparse")
def sparse(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Sparse = ctx.node
    c = ctx.cache
    K = _kernels()
    if "indptr" not in c:
        indptr = np.ascontiguousarray(node.indptr, dtype=np.int64)
        indices = np.ascontiguousarray(node.indices, dtype=np.int64)
        data = _f32(node.data)
        if indptr.shape != (node.in_size + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) \
                or indptr[-1] != len(indices) or len(indices) != len(data):
            raise BackendError(f"sparse {ctx.name!r}: malformed CSR (indptr/indices/data)")
        if len(indices) and (indices.min() < 0 or indices.max() >= node.size):
            raise BackendError(f"sparse {ctx.name!r}: target index out of range [0, {node.size})")
        nz = np.concatenate([[0], np.cumsum(data != 0, dtype=np.int64)])
        row_nnz = np.ascontiguousarray(nz[indptr[1:]] - nz[indptr[:-1]])
        # rows naming one target twice are applied serially (their terms must add in CSR order)
        serial = np.array(
            [len(np.unique(indices[indptr[i]:indptr[i + 1]])) < indptr[i + 1] - indptr[i] for i in range(node.in_size)],
            dtype=np.int8,
        )
        c["indptr"], c["indices"] = _to_device(indptr), _to_device(indices)
        c["data"] = _to_device(data if len(data) else np.zeros(1, np.float32))
        if not len(indices):
            c["indices"] = _to_device(np.zeros(1, np.int64))
        c["row_nnz"], c["serial"] = _to_device(row_nnz), _to_device(serial)
        c["bias"], c["has_bias"] = _bias(node, node.size, ctx.name)
    if _fixed(ctx) and "data_fixed" not in c:
        c["data_fixed"] = _to_device(_int_weights(node.data, ctx.name) if len(node.data) else np.zeros(1, np.int32))
    if t1 > t0 and ctx.batch > 0 and _fixed(ctx):
        src = _source(ctx)
        idx, cnt = _gather(ctx, src, t0, t1, node.delay, c["row_nnz"], True)
        grid, acc = _acc_rows(ctx, (t1 - t0) * ctx.batch, node.size)
        K.sparse_fixed_deliver[grid, K.TPB](
            src, idx, cnt, c["indptr"], c["indices"], c["data_fixed"], int(node.weight_exp), acc, ctx.out,
            t0, t1 - t0, node.delay,
        )
    elif t1 > t0 and ctx.batch > 0:
        src = _source(ctx)
        onset = ctx.onset  # Program.onset: delay + the source's latency
        idx, cnt = _gather(ctx, src, t0, t1, node.delay, c["row_nnz"], True, onset)
        K.sparse_deliver[K.grid_for((t1 - t0) * ctx.batch), K.TPB](
            src, idx, cnt, c["indptr"], c["indices"], c["data"], c["serial"], c["bias"], c["has_bias"],
            ctx.out, t0, t1 - t0, node.delay, onset,
        )
    ctx.counts["dense_ops"] += node.in_size * node.size * (t1 - t0)
    _finish(ctx, t1)


@BACKEND.kernel("conv2d")
def conv2d(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Conv2d = ctx.node
    c = ctx.cache
    K = _kernels()
    if "wc" not in c:
        L = conv_layout(node, ctx.name)
        c["dense_per_step"] = L.dense_per_step
        c["wc"], c["in_pairs"] = _to_device(L.wc), _to_device(L.in_pairs)
        c["geom"] = _to_device(L.geom)
        c["bias"], c["has_bias"] = _bias(node, L.C_out, ctx.name)
    if _fixed(ctx) and "wc_fixed" not in c:
        c["wc_fixed"] = _to_device(conv_layout(node, ctx.name, _int_weights(node.weight, ctx.name)).wc)
    if t1 > t0 and ctx.batch > 0 and _fixed(ctx):
        src = _source(ctx)
        idx, cnt = _gather(ctx, src, t0, t1, node.delay, c["in_pairs"], True)
        grid, acc = _acc_rows(ctx, (t1 - t0) * ctx.batch, node.size)
        K.conv2d_fixed_deliver[grid, K.TPB](
            src, idx, cnt, c["wc_fixed"], int(node.weight_exp), acc, ctx.out, t0, t1 - t0, node.delay, c["geom"]
        )
    elif t1 > t0 and ctx.batch > 0:
        src = _source(ctx)
        onset = ctx.onset  # Program.onset: delay + the source's latency
        idx, cnt = _gather(ctx, src, t0, t1, node.delay, c["in_pairs"], True, onset)
        K.conv2d_deliver[K.grid_for((t1 - t0) * ctx.batch), K.TPB](
            src, idx, cnt, c["wc"], c["bias"], c["has_bias"], ctx.out, t0, t1 - t0, node.delay, onset, c["geom"]
        )
    ctx.counts["dense_ops"] += c["dense_per_step"] * (t1 - t0)
    _finish(ctx, t1)


@BACKEND.kernel("pool2d")
def pool2d(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Pool2d = ctx.node
    c = ctx.cache
    K = _kernels()
    if "geom" not in c:
        kh, kw = node.kernel
        C, H, W, Ho, Wo = _geometry_2d(node, (kh, kw))
        if node.shape[0] != C:
            raise BackendError(f"pool2d {ctx.name!r}: {C} input channels, output shape {node.shape}")
        c["geom"] = _to_device(np.array([C, H, W, Ho, Wo, kh, kw, *node.stride, *node.padding], np.int64))
        wy = windows_per_position(H, Ho, kh, node.stride[0], node.padding[0])
        wx = windows_per_position(W, Wo, kw, node.stride[1], node.padding[1])
        win = np.outer(wy, wx).reshape(-1)
        c["win_count"] = _to_device(np.ascontiguousarray(np.tile(win, C)))  # per flat input (c, y, x)
    nsteps = t1 - t0
    total = nsteps * ctx.batch * node.size
    if node.mode == "max":
        kern = K.pool_or_forward if _fixed(ctx) else K.pool_max_forward
        if total:
            kern[K.blocks_for(total), K.TPB](_source(ctx), ctx.out, t0, nsteps, node.delay, c["geom"])
        return
    if _fixed(ctx):  # check() rejects these; kept for direct kernel calls
        raise BackendError(f"pool2d {ctx.name!r}: {node.mode!r} pooling has no fixed-point form")
    if total:
        src = _source(ctx)
        # pooling accumulates are pool_ops, never syn_ops/macs nor dense_ops (NeuroBench counts no pooling)
        _gather(ctx, src, t0, t1, node.delay, c["win_count"], False, key="pool_ops")
        divisor = np.float32(node.kernel[0] * node.kernel[1] if node.mode == "avg" else 0)
        K.pool_sum_forward[K.blocks_for(total), K.TPB](src, ctx.out, t0, nsteps, node.delay, c["geom"], divisor)
    _finish(ctx, t1)


@BACKEND.kernel("identity")
def identity(ctx: NodeContext, t0: int, t1: int) -> None:
    node: Identity = ctx.node
    c = ctx.cache
    K = _kernels()
    if "ones" not in c:
        c["ones"] = _to_device(np.ones(max(node.size, 1), np.int64))
    nsteps = t1 - t0
    total = nsteps * ctx.batch * node.size
    if total:
        src = _source(ctx)
        _gather(ctx, src, t0, t1, node.delay, c["ones"], False)
        if _fixed(ctx):
            on, off = (_wrap_int32(_shift_by_exp(w, int(node.weight_exp))) for w in (int(np.int64(node.scale)), 0))
            K.identity_fixed_forward[K.blocks_for(total), K.TPB](
                src, np.int64(on), np.int64(off), ctx.out, t0, nsteps, node.delay
            )
        else:
            scale = np.float32(node.scale)
            K.identity_forward[K.blocks_for(total), K.TPB](
                src, scale, bool(scale == 1), ctx.out, t0, nsteps, node.delay
            )
    ctx.counts["dense_ops"] += node.size * nsteps
    _finish(ctx, t1)


def _shift_by_exp(x: int, e: int) -> int:
    return x * (1 << e) if e >= 0 else x >> -e


def _wrap_int32(x: int) -> int:
    return ((x + (1 << 31)) & ((1 << 32) - 1)) - (1 << 31)


# ----------------------------------------------------------------------------- host ops


def _as_tensor(a: Any) -> Any:
    """A torch view of a device array (a host copy under the simulator)."""
    import torch

    if _kernels().SIMULATING:
        return torch.from_numpy(np.ascontiguousarray(a.copy_to_host()))
    return torch.as_tensor(a, device="cuda")


def _write_tensor(out: Any, t0: int, t1: int, values: Any) -> None:
    if _kernels().SIMULATING:
        out[t0:t1].copy_to_device(np.ascontiguousarray(values.numpy()))
    else:
        _as_tensor(out[t0:t1]).copy_(values)


# Host ops through torch on the GPU (the kernels every backend shares), counted there too.
BACKEND.kernel("hostop")(host_op_kernel(_as_tensor, _write_tensor))


# ----------------------------------------------------------------------------- neurons


@BACKEND.kernel("population")
def population(ctx: NodeContext, t0: int, t1: int) -> None:
    """``spike.semantics`` in float32, in the numba backend's order (see ``numba.backend.population``),
    or Loihi fixed point."""
    if _fixed(ctx):
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
    K = _kernels()
    if "params" not in c:
        c["params"] = _to_device(semantics.neuron_params(node))
        c["no_mem"] = _to_device(np.zeros((1, 1, 1), np.float32))
        c["no_keep"] = _to_device(np.zeros((1, 1), np.uint8))
    st = ctx.state
    if "state" not in st:
        st["state"] = _from_numpy(semantics.initial_state(node, B))
    spikes = _counter(ctx, "spikes")
    nsteps = t1 - t0
    if nsteps > 0 and B > 0 and n > 0:
        positions = [i for i in range(len(ctx.sources)) if i != skip]
        late_pos = []
        if node.late_recurrent:
            if skip is not None:
                raise BackendError(f"population {ctx.name!r}: a gated population cannot add recurrent inputs late")
            late_pos = [i for i, s in enumerate(ctx.program.sources(ctx.name)) if ctx.name in ctx.program.sources(s)]
        if late_pos:  # both over steps t0..t1-1 (one offset)
            cur, ioff = _summed(ctx, [i for i in positions if i not in late_pos], t0, t1, "cur", whole=False)
            late, _ = _summed(ctx, late_pos, t0, t1, "late", whole=False)
        else:
            cur, ioff = _summed(ctx, positions, t0, t1, "cur")
            late = cur
        record = ctx.mem is not None
        n_tiles = (n + K.TPB - 1) // K.TPB
        K.population_forward[K.grid_for(B * n_tiles), K.TPB](
            cur, late, ioff, t0, t1, c["params"], np.float32(node.gain), np.float32(node.v_reset),
            *semantics.neuron_flags(node), st["state"], ctx.out, ctx.mem if record else c["no_mem"], record,
            c["no_keep"] if keep is None else keep, keep is not None, spikes,
        )
    ctx.counts["neuron_updates"] += (n if nactive is None else nactive) * nsteps
    _finish(ctx, t1)


def _summed(ctx: NodeContext, positions: list[int], t0: int, t1: int, key: str, dtype: Any = np.float32,
            whole: bool = True) -> tuple[Any, int]:
    """The sum of the sources at ``positions`` over steps t0..t1-1 in source order (numpy's order;
    int32 sums wrap) and its step offset (``whole``: a single source is used as it is, offset 0)."""
    K = _kernels()
    n, B = ctx.node.size, ctx.batch
    srcs = [_source(ctx, i) for i in positions]
    for s in srcs:
        if s.shape[2] != n:
            raise BackendError(f"population {ctx.name!r}: a source has {s.shape[2]} values per step, expected {n}")
    if len(srcs) == 1 and whole:
        return srcs[0], 0
    nsteps = t1 - t0
    cur = _scratch(ctx, key, (nsteps, B, n), dtype)
    if not srcs:
        _fill_zero(cur)
    else:
        grid = K.blocks_for(nsteps * B * n)
        K.copy_steps[grid, K.TPB](cur, 0, srcs[0], t0, nsteps)
        for s in srcs[1:]:
            K.add_steps[grid, K.TPB](cur, 0, s, t0, nsteps)
    return cur, -t0


def _population_fixed(ctx: NodeContext, t0: int, t1: int) -> None:
    """Loihi fixed point (``numba.kernels.loihi_lif_step``); input = int32 sum of the sources."""
    from spike.compiler.passes.quantize import loihi_neuron_params

    node: Population = ctx.node
    n, B = node.size, ctx.batch
    c = ctx.cache
    K = _kernels()
    if "fixed" not in c:
        p = loihi_neuron_params(node, ctx.name)
        c["fixed"] = {k: _to_device(np.asarray(p[k], np.int64)) for k in ("du", "dv", "bias", "vth_eff")}
        c["no_mem_i32"] = _to_device(np.zeros((1, 1, 1), np.int32))
    p = c["fixed"]
    st = ctx.state
    if "u" not in st:
        for key in ("u", "v"):  # one at a time: each is referenced before the next is drawn
            st[key] = _POOL.zeros((B, n), np.int32)
    spikes = _counter(ctx, "spikes")
    nsteps = t1 - t0
    if nsteps > 0 and B > 0 and n > 0:
        cur, ioff = _summed(ctx, list(range(len(ctx.sources))), t0, t1, "cur", np.int32)
        n_tiles = (n + K.TPB - 1) // K.TPB
        K.population_fixed_forward[K.grid_for(B * n_tiles), K.TPB](
            cur, ioff, t0, t1, p["du"], p["dv"], p["bias"], ctx.onset, p["vth_eff"],
            node.model != "li", st["u"], st["v"],
            ctx.out, ctx.mem if ctx.mem is not None else c["no_mem_i32"],
            _mem_u(ctx) if _mem_u(ctx) is not None else c["no_mem_i32"],
            ctx.mem is not None, _mem_u(ctx) is not None, spikes,
        )
    ctx.counts["neuron_updates"] += n * nsteps
    _finish(ctx, t1)


from spike.backends.cuda import gates as cuda_gate  # noqa: E402,F401  (FTWT gates: gate kernel, gated conv2d/population)
