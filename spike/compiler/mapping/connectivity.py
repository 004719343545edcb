"""The event paths of a program as the mapping sees them (design §5): who sends spikes to whom.

- **Where nodes live.** Each core holds a contiguous neuron range of ONE population (small
  populations are not packed together). A projection lives on the cores of the population it
  feeds; a chain of projections (``pool2d -> conv2d -> population``) is composed into one
  connectivity from the chain's *event source* to the population. Event sources are populations
  (on chip) and inputs and host ops (off chip, "host"); projections that feed a host op run on
  the host. Outputs are read by monitors and route nothing.

:func:`connections` lists every path from an event source through a chain of projections into a
population or to the host, with its boolean synapse pattern (:func:`projection_pattern`): what
``partition`` counts and ``place`` weighs with traffic.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from spike.compiler.ir.nodes import Conv2d, Dense, Gate, Identity, Input, Output, Pool2d, Population, Projection, Sparse
from spike.compiler.ir.program import Program

HOST = "host"

__all__ = ["MappingError", "Connection", "connections", "projection_pattern", "boolean_pattern", "HOST", "ONES_DTYPE"]


class MappingError(ValueError):
    """A program that cannot be mapped onto a target; names the layer, the limit and the numbers."""


ONES_DTYPE = np.int64  # dtype of the ones that get summed before a pattern is taken


def boolean_pattern(m: sp.spmatrix) -> sp.csr_matrix:
    """Boolean pattern of a sparse matrix as CSR with int8 ones (no explicit zeros).

    Sums that build a pattern (duplicates, products) must run in a wide integer type
    (:data:`ONES_DTYPE`): int8 would wrap at 128 paths and lose synapses."""
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    m.sum_duplicates()
    m.data = np.ones(len(m.data), dtype=np.int8)
    return m


def _conv_pairs(
    nz: tuple[np.ndarray, ...], in_shape: tuple[int, ...], out_shape: tuple[int, ...],
    stride: tuple[int, int], padding: tuple[int, int], ci_of: np.ndarray,
) -> sp.csr_matrix:
    """Expanded (source, target) pattern of a 2-D window op from its non-zero taps ``nz``."""
    c_in, h, w = in_shape
    c_out, ho, wo = out_shape
    co, _, ky, kx = nz
    oy, ox = np.divmod(np.arange(ho * wo, dtype=np.int64), wo)
    rows, cols = [], []
    for k in range(len(co)):  # one kernel tap at a time keeps memory at one output map
        iy = oy * stride[0] + ky[k] - padding[0]
        ix = ox * stride[1] + kx[k] - padding[1]
        ok = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        rows.append(ci_of[k] * h * w + iy[ok] * w + ix[ok])
        cols.append(co[k] * ho * wo + oy[ok] * wo + ox[ok])
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(r), ONES_DTYPE), (r, c)), shape=(c_in * h * w, c_out * ho * wo))
    return boolean_pattern(m)


def projection_pattern(node: Projection) -> sp.csr_matrix:
    """Boolean synapse pattern ``[in_size, size]`` of one projection (non-zero weights)."""
    if isinstance(node, Dense):
        return boolean_pattern(sp.csr_matrix(np.asarray(node.weight).T != 0))
    if isinstance(node, Sparse):
        m = sp.csr_matrix(
            (np.asarray(node.data) != 0, np.asarray(node.indices), np.asarray(node.indptr)),
            shape=(node.in_size, node.size),
        )
        return boolean_pattern(m)
    if isinstance(node, Identity):
        return boolean_pattern(sp.identity(node.size, format="csr") * (1 if node.scale != 0 else 0))
    if isinstance(node, Conv2d):
        wt = np.asarray(node.weight)
        nz = np.nonzero(wt)
        c_out, c_in = node.shape[0], node.in_shape[0]
        per_group_out, per_group_in = c_out // node.groups, c_in // node.groups
        ci_of = (nz[0] // per_group_out) * per_group_in + nz[1]
        return _conv_pairs(nz, node.in_shape, node.shape, node.stride, node.padding, ci_of)
    if isinstance(node, Pool2d):
        c = node.shape[0]
        kh, kw = node.kernel
        co, ky, kx = (a.ravel() for a in np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij"))
        nz = (co, np.zeros_like(co), ky, kx)
        return _conv_pairs(nz, node.in_shape, node.shape, node.stride, node.padding, co)
    raise MappingError(f"projection kind {node.KIND!r} has no synapse pattern")


@dataclass(frozen=True, eq=False)
class Connection:
    """Events from ``source`` (a population, or an off-chip input/host op) through a chain of
    projections into ``dest`` (a population, or ``None`` for the host).

    ``terminal`` is the node whose op counts get the routing counts (the projection feeding the
    destination, or the destination itself when nothing sits between). ``matrix`` is the boolean
    pattern ``[source size, dest size]`` (dest host: one column per host-side neuron); ``delay``
    sums the chain's delays.
    """

    source: str
    terminal: str
    dest: str | None
    delay: int
    matrix: sp.csr_matrix
    source_on_host: bool


def _on_chip_source(node: Any) -> bool:
    return isinstance(node, Population)


def _resolve(program: Program, name: str, seen: frozenset[str]) -> tuple[str, sp.csr_matrix | None, int]:
    """(event source, pattern source -> ``name``'s output or None for identity, total delay)."""
    node = program.node(name)
    if not isinstance(node, Projection):
        return name, None, 0
    if name in seen:
        raise MappingError(f"node {name!r}: a cycle made only of projections cannot be mapped")
    srcs = program.sources(name)
    if len(srcs) != 1:
        raise MappingError(f"projection {name!r} must read exactly one source, it reads {len(srcs)}")
    source, m, delay = _resolve(program, srcs[0], seen | {name})
    own = projection_pattern(node)
    return source, own if m is None else boolean_pattern(m.astype(ONES_DTYPE) @ own.astype(ONES_DTYPE)), delay + node.delay


# keyed by the graph object: passes that only change metadata share it
_CONN_CACHE: "weakref.WeakKeyDictionary[nx.DiGraph, list[Connection]]" = weakref.WeakKeyDictionary()


def connections(program: Program) -> list[Connection]:
    """Every event path into a population or to the host (cached per program object)."""
    if program.graph in _CONN_CACHE:
        return _CONN_CACHE[program.graph]
    out: list[Connection] = []
    for name, node in program.nodes():
        if isinstance(node, (Projection, Output, Input)):
            continue
        to_host = not isinstance(node, Population)  # host op / batchnorm: runs on the host
        for pred in program.sources(name):
            if isinstance(program.node(pred), Gate):
                continue  # an FTWT channel mask from the host, not spike traffic (its source's events go to the gate)
            source, m, delay = _resolve(program, pred, frozenset())
            src_node = program.node(source)
            on_host = not _on_chip_source(src_node)
            if to_host and on_host:
                continue  # host to host: nothing crosses the chip
            terminal = pred if isinstance(program.node(pred), Projection) else name
            if m is None:  # source feeds the node directly, element by element
                if to_host:
                    m = boolean_pattern(sp.csr_matrix(np.ones((src_node.size, 1), np.int8)))
                elif src_node.size == node.size:
                    m = boolean_pattern(sp.identity(node.size, format="csr"))
                else:
                    raise MappingError(
                        f"population {name!r} reads {source!r} directly but their sizes differ "
                        f"({src_node.size} vs {node.size})"
                    )
            out.append(Connection(source, terminal, None if to_host else name, delay, m, on_host))
    _CONN_CACHE[program.graph] = out
    return out
