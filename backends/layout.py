"""Host-side layouts of projection weights shared by the event-driven backends (numba, cuda)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spike.backends.registry import BackendError
from spike.compiler.ir import conv_output_hw


def f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


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
    return ConvLayout(wc, geom, C, H, W, C_out, Ho, Wo, kh, kw, G, cin_pg, cout_pg)
