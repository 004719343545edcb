"""Place a partitioned program's cores on the chip mesh, minimising spike traffic x hops (design §5).

Mesh: chip c's tiles occupy global columns ``c*mesh_cols .. (c+1)*mesh_cols-1`` (chips in one
row, neighbours adjacent); a core's position is its tile ``(x, y)``; the hop distance between
cores is the Manhattan distance between their tiles (0 within a tile). The host attaches at
``(-1, 0)``, one hop west of chip 0's first tile.

Placement minimises ``sum traffic(a, b) x hops(a, b)`` (plus host traffic x hops to the host
port), traffic = deliveries per step weighted by firing rates (a calibration run's per-neuron
rates; uniform 1 by default). Heuristic: the better of the sequential placement and a spectral
ordering (Fiedler vector of the core traffic graph, ``networkx.spectral_ordering``) laid along a
snake path through the tiles; then pairwise swap / move hill climbing with exact incremental cost
deltas until no move improves. The result is never worse than the sequential placement.

Memory and time follow the cores placed, never the size of the chip: hop distances are computed
from slot coordinates when needed (no slots x slots matrix); the snake path is generated only as
far as the cores placed; the swap search, which weighs every core against every slot of the chips
used (cores x slots values), runs only when that product is at most ``max_search``.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping

import networkx as nx
import numpy as np
import scipy.sparse as sp

from spike.compiler.ir.program import Program
from spike.compiler.mapping.connectivity import ONES_DTYPE, MappingError, boolean_pattern, connections
from spike.compiler.mapping.report import mapping_of
from spike.hardware import load_target

__all__ = ["place", "placement_cost", "placement_cost_of", "traffic", "core_positions", "set_positions"]


def _slot_xy(mapping: Mapping[str, Any], slot: int) -> tuple[int, int, int]:
    """(chip, x, y) of a slot: chip by chip, tiles row-major, ``cores_per_tile`` slots per tile."""
    cpc, cpt = mapping["cores_per_chip"], mapping["cores_per_tile"]
    rows, cols = mapping["mesh"]
    chip, within = divmod(slot, cpc)
    tile = within // cpt
    y, x = divmod(tile, cols)
    return chip, chip * cols + x, y


def set_positions(mapping: dict[str, Any], slots: Iterable[int]) -> None:
    for core, slot in zip(mapping["cores"], slots):
        chip, x, y = _slot_xy(mapping, int(slot))
        core.update({"slot": int(slot), "chip": chip, "x": x, "y": y})
    mapping["chips_used"] = len({c["chip"] for c in mapping["cores"]}) if mapping["cores"] else 0


def core_positions(mapping: Mapping[str, Any]) -> np.ndarray:
    """``[n_cores, 2]`` tile coordinates (x, y) of every core."""
    return np.array([[c["x"], c["y"]] for c in mapping["cores"]], dtype=np.int64).reshape(-1, 2)


def _neuron_core_index(program: Program, mapping: Mapping[str, Any]) -> dict[str, np.ndarray]:
    index = {p: np.full(program.node(p).size, -1, dtype=np.int64) for p in program.populations()}
    for c in mapping["cores"]:
        index[c["population"]][c["start"] : c["stop"]] = c["id"]
    return index


def _rate_vector(name: str, size: int, rates: Mapping[str, Any] | None, default: float) -> np.ndarray:
    if rates is None or name not in rates:
        return np.full(size, default, dtype=np.float64)
    r = np.asarray(rates[name], dtype=np.float64).reshape(-1)
    if r.size == 1:
        return np.full(size, float(r[0]))
    if r.size != size:
        raise MappingError(f"rates[{name!r}] has {r.size} values, the node has {size} neurons")
    return r


def traffic(program: Program, mapping: Mapping[str, Any], rates: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(core-to-core deliveries per step ``[n, n]``, host <-> core deliveries per step ``[n]``).

    Each (source neuron, destination core) pair carries the source's rate per step; nodes missing
    from ``rates`` get the mean of the given rates (1 when none are given).
    """
    n = len(mapping["cores"])
    core_of = _neuron_core_index(program, mapping)
    given = [np.asarray(v, dtype=np.float64).ravel() for v in (rates or {}).values()]
    default = float(np.mean(np.concatenate(given))) if given and sum(g.size for g in given) else 1.0
    w = np.zeros((n, n))
    host = np.zeros(n)
    for c in connections(program):
        r = _rate_vector(c.source, c.matrix.shape[0], rates, default)
        m = c.matrix.tocoo()
        if c.dest is None:  # to the host: one delivery per neuron with any synapse there
            senders = np.unique(m.row)
            np.add.at(host, core_of[c.source][senders], r[senders])
            continue
        dest = boolean_pattern(sp.csr_matrix((np.ones(len(m.row), ONES_DTYPE), (m.row, core_of[c.dest][m.col])), shape=(m.shape[0], n)))
        d = dest.tocoo()
        if c.source_on_host:
            np.add.at(host, d.col, r[d.row])
        else:
            np.add.at(w, (core_of[c.source][d.row], d.col), r[d.row])
    return w, host


def _slot_coords(mapping: Mapping[str, Any], slots: np.ndarray) -> np.ndarray:
    """``[len(slots), 2]`` global tile coordinates (x, y) of slots (vectorised :func:`_slot_xy`)."""
    cpc, cpt = int(mapping["cores_per_chip"]), int(mapping["cores_per_tile"])
    cols = int(mapping["mesh"][1])
    chip, within = np.divmod(np.asarray(slots, dtype=np.int64), cpc)
    y, x = np.divmod(within // cpt, cols)
    return np.stack([chip * cols + x, y], axis=-1).reshape(-1, 2)


def _hops(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` Manhattan distances (float64) between tile coordinates."""
    return np.abs(a[:, None, :] - b[None, :, :]).sum(-1).astype(np.float64)


def _host_hops(mapping: Mapping[str, Any], xy: np.ndarray) -> np.ndarray:
    """Hops (float64) from each tile coordinate to the host port."""
    hx, hy = mapping["host_port"]
    return (np.abs(xy[:, 0] - hx) + np.abs(xy[:, 1] - hy)).astype(np.float64)


def _cost(w: np.ndarray, host: np.ndarray, mapping: Mapping[str, Any], slots: np.ndarray) -> float:
    xy = _slot_coords(mapping, slots)
    return float((w * _hops(xy, xy)).sum() + (host * _host_hops(mapping, xy)).sum())


def placement_cost_of(program: Program, mapping: Mapping[str, Any], rates: Mapping[str, Any] | None) -> float:
    w, host = traffic(program, mapping, rates)
    slots = np.array([c["slot"] for c in mapping["cores"]], dtype=np.int64)
    return _cost(w, host, mapping, slots)


def placement_cost(program: Program, rates: Mapping[str, Any] | None = None) -> float:
    """Traffic-weighted hops per step of a mapped program's placement (the quantity placed)."""
    return placement_cost_of(program, mapping_of(program), rates)


def _snake_slots(mapping: Mapping[str, Any], n: int) -> list[int]:
    """The first ``n`` slots along a snake through the global tile grid (column by column,
    alternating up and down; a tile's slots in order), so consecutive slots are at most one hop
    apart. Only the tiles the ``n`` slots fill are visited."""
    cpc, cpt = int(mapping["cores_per_chip"]), int(mapping["cores_per_tile"])
    rows, cols = (int(v) for v in mapping["mesh"])
    if min(cpc, cpt, rows, cols) < 1:
        raise MappingError(f"mapping: mesh {rows}x{cols} tiles of {cpt} cores, {cpc} cores per chip: "
                           "every figure must be >= 1")
    order: list[int] = []
    column = 0
    while len(order) < n:
        chip, x = divmod(column, cols)
        for y in (range(rows) if column % 2 == 0 else range(rows - 1, -1, -1)):
            first = chip * cpc + (y * cols + x) * cpt
            order.extend(range(first, first + cpt))
            if len(order) >= n:
                break
        column += 1
    return order[:n]


def _spectral_order(w: np.ndarray) -> list[int]:
    n = len(w)
    sym = w + w.T
    g = nx.Graph()
    g.add_nodes_from(range(n))
    rows, cols = np.nonzero(np.triu(sym, 1))
    g.add_weighted_edges_from((int(a), int(b), float(sym[a, b])) for a, b in zip(rows, cols))
    if n < 3 or g.number_of_edges() == 0:
        return list(range(n))
    try:
        with warnings.catch_warnings():  # networkx 2.8 warns about its future sparse-array API
            warnings.simplefilter("ignore", FutureWarning)
            return [int(v) for v in nx.spectral_ordering(g, weight="weight", seed=0)]
    except (nx.NetworkXError, ImportError, ValueError):
        return list(range(n))


def _improve(
    w: np.ndarray, host: np.ndarray, mapping: Mapping[str, Any], n_slots: int, slots: np.ndarray, max_passes: int
) -> np.ndarray:
    """Hill climbing over swaps (and moves to free slots among ``n_slots``) with exact cost deltas;
    memory: a few ``[cores, n_slots]`` arrays, hop distances computed one slot row at a time."""
    n = len(slots)
    xy = _slot_coords(mapping, np.arange(n_slots))
    sym = w + w.T
    np.fill_diagonal(sym, 0.0)  # traffic within a core never moves
    slots = slots.copy()
    core_at = np.full(n_slots, -1, dtype=np.int64)
    core_at[slots] = np.arange(n)

    def row(p: int) -> np.ndarray:  # hops from slot p to every slot
        return _hops(xy[p : p + 1], xy)[0]

    c = sym @ _hops(xy[slots], xy) + host[:, None] * _host_hops(mapping, xy)[None, :]  # c[u, q]: u's cost at q
    for _ in range(max_passes):
        improved = False
        for u in range(n):
            pu = slots[u]
            d_pu = row(pu)
            delta = c[u] - c[u, pu]
            occ = np.nonzero(core_at >= 0)[0]
            vs = core_at[occ]
            delta[occ] += c[vs, pu] - c[vs, occ] + 2 * sym[u, vs] * d_pu[occ]
            delta[pu] = 0.0
            q = int(np.argmin(delta))
            if delta[q] >= -1e-9 * max(1.0, abs(c[u, pu])):
                continue
            v = core_at[q]
            d_q = row(q)
            c += np.outer(sym[:, u], d_q - d_pu)
            slots[u], core_at[q], core_at[pu] = q, u, v
            if v >= 0:
                c += np.outer(sym[:, v], d_pu - d_q)
                slots[v] = pu
            improved = True
        if not improved:
            break
    return slots


def place(
    program: Program, target: Any = None, rates: Mapping[str, Any] | None = None, max_passes: int = 20,
    max_search: int = 4_000_000,
) -> Program:
    """Place a partitioned program's cores on the chip mesh, minimising traffic x hops.

    ``rates``: per-node firing rates per neuron per step from a calibration run (see
    ``spike.workflows.calibration_rates``); uniform when None. ``target`` defaults to the one the program was
    partitioned for (it must match). The swap search is skipped when cores x slots exceeds
    ``max_search`` (the better of the sequential and spectral placements is kept); nothing else
    grows with the number of slots on the chips.
    """
    mapping = {**mapping_of(program)}
    if target is not None:
        name = load_target(target).name
        if name != mapping["target"]:
            raise MappingError(f"program was partitioned for {mapping['target']!r}, not {name!r}: partition again")
    mapping["cores"] = [dict(c) for c in mapping["cores"]]
    n = len(mapping["cores"])
    n_slots = mapping["chips"] * mapping["cores_per_chip"]
    w, host = traffic(program, mapping, rates)
    sequential = np.arange(n, dtype=np.int64)
    snake = np.array(_snake_slots(mapping, n), dtype=np.int64)
    candidates = {
        "sequential": sequential,
        "spectral": snake[np.argsort(_spectral_order(w))] if n else sequential,
    }
    best = min(candidates, key=lambda k: (_cost(w, host, mapping, candidates[k]), k != "sequential"))
    slots = candidates[best]
    method = best
    if n and n * n_slots <= max_search:
        slots = _improve(w, host, mapping, n_slots, slots, max_passes)
        method += "+swap"
    set_positions(mapping, slots)
    mapping["placement"] = {
        "method": method,
        "rates": "uniform" if rates is None else "calibrated",
        "cost": _cost(w, host, mapping, slots),
        "sequential_cost": _cost(w, host, mapping, sequential),
    }
    return program.with_graph(program.graph, metadata={**dict(program.metadata), "mapping": mapping})
