"""Host-side layouts of weights and neuron parameters shared by the event-driven backends (numba, cuda, lava)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from spike.backends.registry import BackendError
from spike.compiler.ir.nodes import conv_output_hw
from spike.compiler.ir.program import ProgramError
from spike.compiler.ir.validate import check_node


def f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def delivery(ctx: Any) -> tuple[int, int, int]:
    """A projection's ``(weight_exp, delay, start)`` in an event-driven kernel: its first step with
    events is its onset (``Program.onset``: the bias travels with the events) in float32, its delay
    in fixed point (no bias there; the source is silent until then), and its weights are shifted by
    ``weight_exp`` in fixed point only."""
    node = ctx.node
    if ctx.precision == "fixed":
        return int(node.weight_exp), node.delay, node.delay
    return 0, node.delay, ctx.onset


def bias_values(node: Any, n: int, name: str) -> np.ndarray | None:
    """A projection's bias as float32 ``[n]``, or None when it has none."""
    if getattr(node, "bias", None) is None:
        return None
    b = f32(node.bias).reshape(-1)
    if b.shape[0] != n:
        raise BackendError(f"{node.KIND} {name!r}: bias has {b.shape[0]} values, expected {n}")
    return b


def csr_arrays(node: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sparse projection's ``(indptr, indices, row_nnz)`` (int64; ``row_nnz[i]``: the non-zero
    weights of input i's row), after the IR's own checks of the node (``validate.check_node``:
    CSR structure, target range, bias); a malformed node raises :class:`BackendError`."""
    try:
        check_node(name, node)
    except ProgramError as e:
        raise BackendError(f"sparse {name!r}: {e}") from None
    indptr = np.ascontiguousarray(node.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(node.indices, dtype=np.int64)
    return indptr, indices, csr_row_nnz(indptr, node.data)


def csr_row_nnz(indptr: np.ndarray, data: Any) -> np.ndarray:
    """Per CSR row (source input), its number of non-zero weights."""
    return _row_nnz(np.ascontiguousarray(indptr, np.int64), np.ascontiguousarray(data))


@njit(cache=True)
def _row_nnz(indptr, data):
    n = np.zeros(indptr.shape[0] - 1, np.int64)
    for i in range(n.shape[0]):
        c = 0
        for k in range(indptr[i], indptr[i + 1]):
            c += data[k] != 0
        n[i] = c
    return n


def geometry_2d(node: Any, kernel: tuple[int, int]) -> tuple[int, int, int, int, int]:
    """``(C, H, W, Ho, Wo)`` of a conv/pool node, checked against its declared output shape."""
    if len(node.in_shape) != 3 or len(node.shape) != 3:
        raise BackendError(f"{node.KIND}: in_shape and shape must be (C, H, W), got {node.in_shape}, {node.shape}")
    C, H, W = node.in_shape
    Ho, Wo = conv_output_hw((H, W), kernel, tuple(node.stride), tuple(node.padding))
    if tuple(node.shape[1:]) != (Ho, Wo):
        raise BackendError(f"{node.KIND}: output shape {node.shape} does not match the window geometry ({Ho}, {Wo})")
    return C, H, W, Ho, Wo


@dataclass(frozen=True)
class ConvLayout:
    """A conv2d's kernel as the scatter kernels read it: ``wc[g, c_in, ky, kx, c_out]`` (the output
    channels of one tap contiguous), and ``geom`` = ``[C, H, W, C_out, Ho, Wo, kh, kw, sy, sx, py,
    px, cin_pg, cout_pg]``."""

    wc: np.ndarray
    geom: np.ndarray
    C: int
    H: int
    W: int
    C_out: int
    Ho: int
    Wo: int
    kh: int
    kw: int
    groups: int
    cin_pg: int
    cout_pg: int
    stride: tuple[int, int]
    padding: tuple[int, int]

    def input_pairs(self, per_tap: np.ndarray) -> np.ndarray:
        """Per input element ``(c, y, x)`` (flat): the sum of ``per_tap[c, ky, kx]`` over the taps
        through which that element reaches an output (border clipping included)."""
        vy = reach(self.H, self.kh, self.Ho, self.stride[0], self.padding[0])
        vx = reach(self.W, self.kw, self.Wo, self.stride[1], self.padding[1])
        return np.ascontiguousarray(np.einsum("yk,ckl,xl->cyx", vy, per_tap, vx).reshape(-1), np.int64)

    @property
    def in_pairs(self) -> np.ndarray:
        """(event, non-zero weight) pairs one event at each input element delivers."""
        taps = np.count_nonzero(self.wc, axis=4).astype(np.int64).reshape(self.C, self.kh, self.kw)
        return self.input_pairs(taps)

    @property
    def dense_per_step(self) -> int:
        """All (input, weight) pairs of one step: NeuroBench's Dense count."""
        return int(self.input_pairs(np.full((self.C, self.kh, self.kw), self.cout_pg, np.int64)).sum())


def conv_layout(node: Any, name: str, weight: Any = None) -> ConvLayout:
    """Check a Conv2d node's weight against its shapes and lay it out for event scattering.

    ``weight`` overrides ``node.weight`` (e.g. the integer weights of a fixed-point program).
    """
    w = np.asarray(node.weight if weight is None else weight)
    if w.dtype.kind == "f":
        w = f32(w)
    G = int(node.groups)
    if w.ndim != 4:
        raise BackendError(f"conv2d {name!r}: weight must be [C_out, C_in/groups, kh, kw], got {w.shape}")
    C_out, cin_pg, kh, kw = w.shape
    C, H, W, Ho, Wo = geometry_2d(node, (kh, kw))
    if C_out != node.shape[0] or C % G or C_out % G or cin_pg != C // G:
        raise BackendError(
            f"conv2d {name!r}: weight {w.shape} does not fit in_shape {node.in_shape}, shape {node.shape}, groups {G}"
        )
    cout_pg = C_out // G
    wc = np.ascontiguousarray(w.reshape(G, cout_pg, cin_pg, kh, kw).transpose(0, 2, 3, 4, 1))
    geom = np.array([C, H, W, C_out, Ho, Wo, kh, kw, *node.stride, *node.padding, cin_pg, cout_pg], np.int64)
    return ConvLayout(wc, geom, C, H, W, C_out, Ho, Wo, kh, kw, G, cin_pg, cout_pg,
                      tuple(node.stride), tuple(node.padding))


def reach(n: int, k: int, n_out: int, s: int, p: int) -> np.ndarray:
    """``r[y, ky]`` = 1 when input coordinate y reaches an output through kernel tap ky."""
    ny = np.arange(n)[:, None] + p - np.arange(k)[None, :]
    return ((ny >= 0) & (ny % s == 0) & (ny // s < n_out)).astype(np.int64)


def windows_per_position(n: int, n_out: int, k: int, s: int, p: int) -> np.ndarray:
    """For each input coordinate, the number of pooling windows (along one axis) containing it."""
    res = np.zeros(n, np.int64)
    for o in range(n_out):
        lo = o * s - p
        res[max(lo, 0):min(lo + k, n)] += 1
    return res


# ----------------------------------------------------------------------------- blocked CSR

BLOCK_MAX = 1 << 16  # targets per block: offsets within a block fit uint16
BLOCK_L1 = 1 << 14  # blocks of 16384 float32 targets (64 KiB) stay in about a core's L1 cache while scattered into
SEGMENT_MIN = 64  # split a row into more blocks only while its segments keep this many synapses on average
CODE_MAX = 4096  # at most this many distinct weights: stored as codes (uint8 up to 256, else uint16) into a
#   table that stays in the L1 cache (16 KiB of float32)


@dataclass(frozen=True)
class SparseBlocks:
    """A CSR projection laid out for event scattering by blocks of targets.

    The targets are cut into ``nblk`` blocks of ``block`` (the last one shorter); the synapses of
    source ``i`` into block ``k`` are ``ptr[i, k] .. ptr[i, k+1]-1``, in their CSR order (each row
    stably sorted by block, so a row stays contiguous), with targets ``k * block + off[...]``
    (uint16). Since rows are contiguous, ``ptr[i, nblk]`` is ``ptr[i + 1, 0]``: ``ptr`` is a
    read-only strided view of one flat array of ``n_in * nblk + 1`` pointers (rows overlapping by
    one entry), int32 when ``nnz`` allows: 4 bytes per (row, block), so the pointers of the events
    of a step take few cache lines. Weights: ``table[w[...]]`` when ``table`` is not empty (at most
    ``CODE_MAX`` distinct weights, told apart by their bits: uint8 or uint16 codes), else
    ``w[...]`` themselves. The
    weights are the node's, bit for bit, so a target receives the same terms in the same order as
    from the CSR.
    """

    ptr: np.ndarray  # [n_in, nblk + 1] int32 (int64 from 2**31 synapses), a view of n_in * nblk + 1 values
    off: np.ndarray  # [nnz] uint16
    w: np.ndarray  # [nnz] uint8 or uint16 codes, or the weights
    table: np.ndarray  # the distinct weights (empty: not coded)
    block: int
    nblk: int

    @property
    def coded(self) -> bool:
        return self.table.shape[0] > 0

    @property
    def nbytes(self) -> int:
        n_ptr = self.ptr.shape[0] * (self.ptr.shape[1] - 1) + 1  # the flat pointers under the view
        return n_ptr * self.ptr.itemsize + self.off.nbytes + self.w.nbytes + self.table.nbytes


def block_size(n_in: int, n_out: int, nnz: int) -> tuple[int, int]:
    """``(block, nblk)``: targets per block and number of blocks for a projection of ``nnz``
    synapses. At least enough blocks for uint16 offsets; more, down to blocks that fit the L1
    cache, while the average row keeps ``SEGMENT_MIN`` synapses per block (each (event, block)
    segment costs a pointer lookup and a loop start)."""
    need = max(1, -(-n_out // BLOCK_MAX))
    fan_out = nnz / max(n_in, 1)
    nblk = max(need, min(-(-n_out // BLOCK_L1), int(fan_out // SEGMENT_MIN)))
    nblk = max(1, min(nblk, max(n_out, 1)))
    block = max(1, -(-n_out // nblk))
    return block, -(-max(n_out, 1) // block)


def sparse_blocks(indptr: np.ndarray, indices: np.ndarray, weights: np.ndarray, n_out: int,
                  block: int | None = None) -> SparseBlocks:
    """The :class:`SparseBlocks` of a checked CSR (``indptr``, ``indices`` int64) with ``weights``
    (float32, or integers for fixed point) in CSR order; ``block``: targets per block (at most
    65536), else :func:`block_size`'s."""
    n_in = indptr.shape[0] - 1
    nnz = indices.shape[0]
    if block is None:
        block, nblk = block_size(n_in, n_out, nnz)
    else:
        if not 1 <= block <= BLOCK_MAX:
            raise ValueError(f"block must lie in [1, {BLOCK_MAX}], got {block}")
        nblk = -(-max(n_out, 1) // block)
    weights = np.ascontiguousarray(weights)
    bits = weights.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[weights.dtype.itemsize])
    codes, table_bits, ok = _weight_codes(bits, CODE_MAX)
    if ok and table_bits.shape[0] <= 256:
        codes = codes.astype(np.uint8)
    if ok:
        table = np.ascontiguousarray(table_bits.astype(bits.dtype).view(weights.dtype))
    else:
        codes, table = weights, np.zeros(0, weights.dtype)
    flat = np.empty(n_in * nblk + 1, np.int32 if nnz < 2**31 else np.int64)
    off = np.empty(nnz, np.uint16)
    w = np.empty(nnz, codes.dtype)
    _block_layout(indptr, indices, codes, block, nblk, flat, off, w)
    ptr = np.lib.stride_tricks.as_strided(flat, (n_in, nblk + 1), (nblk * flat.itemsize, flat.itemsize),
                                          writeable=False)
    return SparseBlocks(ptr, off, w, table, block, nblk)


@njit(cache=True)
def _weight_codes(bits, most):
    """``(codes, table, ok)``: uint16 codes of the bit patterns ``bits`` into ``table`` (first seen
    first), found with a small open-addressing hash; ``ok`` False once more than ``most`` differ."""
    size = 4 * most
    keys = np.zeros(size, np.uint64)
    used = np.zeros(size, np.bool_)
    code_of = np.zeros(size, np.int64)
    table = np.zeros(most, np.uint64)
    codes = np.zeros(bits.shape[0], np.uint16)
    n = 0
    for k in range(bits.shape[0]):
        x = np.uint64(bits[k])
        h = np.int64((x * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) % size
        while used[h] and keys[h] != x:
            h = (h + 1) % size
        if not used[h]:
            if n == most:
                return codes, table[:0], False
            used[h] = True
            keys[h] = x
            code_of[h] = n
            table[n] = x
            n += 1
        codes[k] = code_of[h]
    return codes, table[:n], True


@njit(cache=True)
def _block_layout(indptr, indices, w, block, nblk, flat, off, w_out):
    """Fill the pointers ``flat`` (row ``i``'s segment into block ``k`` starts at ``flat[i * nblk +
    k]``; ``flat[n_in * nblk]`` = nnz), ``off`` and ``w_out`` of :class:`SparseBlocks`: each row's
    synapses stably sorted by target block (a counting sort per row)."""
    n_in = indptr.shape[0] - 1
    pos = np.zeros(nblk + 1, np.int64)
    for i in range(n_in):
        p0 = indptr[i]
        p1 = indptr[i + 1]
        pos[:] = 0
        for k in range(p0, p1):
            pos[indices[k] // block + 1] += 1
        flat[i * nblk] = p0
        for b in range(nblk - 1):
            pos[b + 1] += pos[b]
            flat[i * nblk + b + 1] = p0 + pos[b + 1]
        for k in range(p0, p1):
            b = indices[k] // block
            q = p0 + pos[b]
            off[q] = indices[k] - b * block
            w_out[q] = w[k]
            pos[b] += 1
    flat[n_in * nblk] = indptr[n_in]
