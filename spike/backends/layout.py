"""Host-side layouts of weights and neuron parameters shared by the event-driven backends (numba, cuda, lava)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

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
    indptr = np.asarray(indptr, np.int64)
    nz = np.concatenate([[0], np.cumsum(np.asarray(data) != 0, dtype=np.int64)])
    return np.ascontiguousarray(nz[indptr[1:]] - nz[indptr[:-1]])


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
