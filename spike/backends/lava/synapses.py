"""Lava's forms of the IR's synapses: weights as Lava's Dense, Sparse and Conv take them.

Fixed-point weights: a Lava Dense/Sparse with ``weights = 2 * W_int``, ``weight_exp = e - 1``,
``num_weight_bits=8``, sign mode mixed equals our projection exactly (``quantize`` docstring).
The bit-accurate DelayDense/DelaySparse clip and truncate the weights as Dense/Sparse do, sum the
weights of the active inputs per delay slot and shift each sum by ``weight_exp`` the same way;
with one delay for every synapse that is Dense's sum, so the same ``2W`` and ``e - 1`` hold
(``test_fixed_delayed_synapses_equal_numba_for_every_form_and_exponent``).

Conv2d and pool2d synapses: Lava's Conv takes ``[C_out, kw, kh, C_in/groups]`` and convolves
(:func:`conv_lava_layout`); where Lava's Conv cannot serve (delays, fixed-point exponents) the same
synapses go to a Sparse as a CSR matrix over flat ``(C, H, W)`` (:func:`conv_as_csr`); an IR
``sparse`` projection (CSR over sources) becomes Lava's CSR over targets (:func:`csr_of_sparse`).
"""
from __future__ import annotations

import numpy as np

from spike.compiler.ir.nodes import Conv2d, Pool2d, Sparse, conv_output_hw

__all__ = ["lava_weights_fixed", "conv_lava_layout", "conv_as_csr", "csr_of_sparse"]


def lava_weights_fixed(w_int: np.ndarray, exp: int) -> tuple[np.ndarray, int]:
    """(Lava weights, Lava weight_exp) equal to integer weights ``w_int`` shifted by ``exp``."""
    return (2 * np.asarray(w_int).astype(np.int64)).astype(np.int32), int(exp) - 1


def conv_lava_layout(w: np.ndarray) -> np.ndarray:
    """Torch ``[C_out, C_in/g, kh, kw]`` (correlation) -> Lava ``[C_out, kw, kh, C_in/g]``
    (Lava's Conv convolves, i.e. flips the kernel)."""
    return np.ascontiguousarray(np.asarray(w)[:, :, ::-1, ::-1].transpose(0, 3, 2, 1))


def conv_as_csr(node: Conv2d | Pool2d, w: np.ndarray):
    """The synapses of a conv2d (weights ``w`` ``[C_out, C_in/groups, kh, kw]``) or of a pool2d
    (``w`` ``[C, 1, kh, kw]``, one group per channel) as a scipy CSR matrix ``[n_out, n_in]`` over
    flat ``(C, H, W)`` (zero weights dropped)."""
    import scipy.sparse as sp

    C_out, cin_pg, kh, kw = w.shape
    C, H, W = node.in_shape
    Ho, Wo = conv_output_hw((H, W), (kh, kw), tuple(node.stride), tuple(node.padding))
    G = int(node.groups) if isinstance(node, Conv2d) else C
    cout_pg = C_out // G
    co, ci, ky, kx, oy, ox = np.meshgrid(np.arange(C_out), np.arange(cin_pg), np.arange(kh), np.arange(kw),
                                         np.arange(Ho), np.arange(Wo), indexing="ij")
    iy = oy * node.stride[0] - node.padding[0] + ky
    ix = ox * node.stride[1] - node.padding[1] + kx
    c_in = (co // cout_pg) * cin_pg + ci
    vals = w[co, ci, ky, kx]
    ok = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W) & (vals != 0)
    rows = (co * Ho + oy) * Wo + ox
    cols = (c_in * H + iy) * W + ix
    m = sp.csr_matrix((vals[ok], (rows[ok], cols[ok])), shape=(C_out * Ho * Wo, C * H * W))
    m.sum_duplicates()
    return m


def csr_of_sparse(node: Sparse, data: np.ndarray):
    import scipy.sparse as sp

    by_source = sp.csr_matrix(
        (data, np.asarray(node.indices, np.int64), np.asarray(node.indptr, np.int64)), shape=(node.in_size, node.size)
    )
    m = by_source.T.tocsr()
    m.sum_duplicates()
    return m
