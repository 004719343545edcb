"""Partition populations onto neuromorphic cores and place the cores on the chip mesh (design §5).

Both passes are pure: they return a new :class:`Program` (same graph, same node objects) whose
``metadata["mapping"]`` (plain JSON, saved with the program) describes the mapping, and whose
``metadata["target"]`` names the target. :func:`map_program` runs both.

Model of the hardware (what the numbers mean)
---------------------------------------------
- **Where nodes live.** Each core holds a contiguous neuron range of ONE population (small
  populations are not packed together). A projection lives on the cores of the population it
  feeds; a chain of projections (``pool2d -> conv2d -> population``) is composed into one
  connectivity from the chain's *event source* to the population. Event sources are populations
  (on chip) and inputs and host ops (off chip, "host"); projections that feed a host op run on
  the host. Outputs are read by monitors and route nothing.
- **Synapses and synaptic memory.** The synapses of a core are the (source neuron, target
  neuron) pairs with a non-zero connection into the core's neurons, counted per projection chain.
  Convolutions are EXPANDED: every target neuron stores the kernel weights it receives (no weight
  sharing, as Loihi 1 stores them), border clipping included. Memory = synapses x weight bits;
  weight bits of a fixed-point program are each projection's ``num_weight_bits`` (set by
  ``quantize``); otherwise ``partition(weight_bits=...)``, else ``program.metadata["weight_bits"]``,
  else the target's ``core.weight_bits`` (its widest weight). Routing tables and per-synapse index
  bits are not modelled.
- **Fan-in axons** of a core: distinct source neurons (over all sources, host inputs included)
  with a synapse into the core -- one input axon each.
- **Fan-out axons** of a core (Loihi's meaning: output axons, one per destination core a neuron's
  spikes are sent to): sum over the core's neurons of the number of distinct destination cores
  of that neuron (the host counts as one destination). ``core.fan_out_per_neuron`` (TrueNorth:
  1) bounds each neuron's destinations.
- **Mesh.** Chip c's tiles occupy global columns ``c*mesh_cols .. (c+1)*mesh_cols-1`` (chips in
  one row, neighbours adjacent); a core's position is its tile ``(x, y)``; the hop distance
  between cores is the Manhattan distance between their tiles (0 within a tile). The host
  attaches at ``(-1, 0)``, one hop west of chip 0's first tile.

Partitioning is greedy over neurons in order: a core is closed when the next neuron would break
neurons, synaptic memory or fan-in (greedy maximal ranges are optimal for contiguous ranges under
monotone limits). Fan-out depends on how the destinations were split, so ranges are then refined
(split further, never merged) until every core's fan-out fits -- repeated to a fixed point, since
splitting a population can raise the fan-out of the populations feeding it.

Placement minimises ``sum traffic(a, b) x hops(a, b)`` (plus host traffic x hops to the host
port), traffic = deliveries per step weighted by firing rates (a calibration run's per-neuron
rates; uniform 1 by default). Heuristic: the better of the sequential placement and a spectral
ordering (Fiedler vector of the core traffic graph, ``networkx.spectral_ordering``) laid along a
snake path through the tiles; then pairwise swap / move hill climbing with exact incremental cost
deltas until no move improves. The result is never worse than the sequential placement.
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import networkx as nx
import numpy as np
import scipy.sparse as sp

from spike.compiler.ir.nodes import (
    Conv2d, Dense, Gate, Identity, Input, Output, Pool2d, Population, Projection, Sparse,
)
from spike.compiler.ir.program import Program

MAPPING_VERSION = 1
HOST = "host"
LIMIT_KEYS = ("neurons", "syn_mem_bits", "fan_in_axons", "fan_out_axons")

__all__ = [
    "MappingError", "Connection", "MappingReport", "partition", "place", "map_program",
    "connections", "placement_cost", "mapping_report", "core_positions",
    "MAPPING_VERSION",
]


class MappingError(ValueError):
    """A program that cannot be mapped onto a target; names the layer, the limit and the numbers."""


# ------------------------------------------------------------------------------ connectivity


_ONE = np.int64  # dtype of the ones that get summed before a pattern is taken


def _pattern(m: sp.spmatrix) -> sp.csr_matrix:
    """Boolean pattern of a sparse matrix as CSR with int8 ones (no explicit zeros).

    Sums that build a pattern (duplicates, products) must run in a wide integer type
    (:data:`_ONE`): int8 would wrap at 128 paths and lose synapses."""
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
    m = sp.csr_matrix((np.ones(len(r), _ONE), (r, c)), shape=(c_in * h * w, c_out * ho * wo))
    return _pattern(m)


def projection_pattern(node: Projection) -> sp.csr_matrix:
    """Boolean synapse pattern ``[in_size, size]`` of one projection (non-zero weights)."""
    if isinstance(node, Dense):
        return _pattern(sp.csr_matrix(np.asarray(node.weight).T != 0))
    if isinstance(node, Sparse):
        m = sp.csr_matrix(
            (np.asarray(node.data) != 0, np.asarray(node.indices), np.asarray(node.indptr)),
            shape=(node.in_size, node.size),
        )
        return _pattern(m)
    if isinstance(node, Identity):
        return _pattern(sp.identity(node.size, format="csr") * (1 if node.scale != 0 else 0))
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
    return source, own if m is None else _pattern(m.astype(_ONE) @ own.astype(_ONE)), delay + node.delay


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
                    m = _pattern(sp.csr_matrix(np.ones((src_node.size, 1), np.int8)))
                elif src_node.size == node.size:
                    m = _pattern(sp.identity(node.size, format="csr"))
                else:
                    raise MappingError(
                        f"population {name!r} reads {source!r} directly but their sizes differ "
                        f"({src_node.size} vs {node.size})"
                    )
            out.append(Connection(source, terminal, None if to_host else name, delay, m, on_host))
    _CONN_CACHE[program.graph] = out
    return out


# ------------------------------------------------------------------------------ partition


def _limit(target: Any, key: str) -> int:
    return int(getattr(target.core, key).value)


def _weight_bits(program: Program, target: Any, weight_bits: int | None) -> int:
    limit = _limit(target, "weight_bits")
    if weight_bits is None:
        weight_bits = program.metadata.get("weight_bits")
    if weight_bits is None:
        return limit
    weight_bits = int(weight_bits)
    if weight_bits < 1 or weight_bits > limit:
        raise MappingError(f"weights are {weight_bits}-bit; target {target.name} allows 1 to {limit} bits")
    return weight_bits


def _connection_bits(program: Program, conns: list[Connection], default: int, target: Any) -> dict[str, int]:
    """Weight bits per terminal projection: its ``num_weight_bits`` in a fixed-point program."""
    fixed = program.metadata.get("precision") == "fixed"
    limit = _limit(target, "weight_bits")
    bits = {}
    for c in conns:
        node = program.node(c.terminal)
        b = int(getattr(node, "num_weight_bits", default)) if fixed and isinstance(node, Projection) else default
        if c.dest is not None and not 1 <= b <= limit:
            raise MappingError(
                f"projection {c.terminal!r} into layer {c.dest!r}: {b}-bit weights, target {target.name} "
                f"allows 1 to {limit} bits"
            )
        bits[c.terminal] = b
    return bits


def _incoming(
    program: Program, pop: str, conns: list[Connection], bits: Mapping[str, int]
) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """(union pattern [all source neurons, pop size] as CSC, synapses and synaptic memory bits
    per target neuron).

    Rows are source neurons, one block per distinct source node; synapses are counted per
    connection (two chains from one source store two synapse sets, but share the axon)."""
    n = program.node(pop).size
    offsets: dict[str, int] = {}
    rows, cols = [], []
    syn = np.zeros(n, dtype=np.int64)
    mem = np.zeros(n, dtype=np.int64)
    for c in conns:
        if c.dest != pop:
            continue
        per_neuron = c.matrix.getnnz(axis=0)
        syn += per_neuron
        mem += per_neuron * bits[c.terminal]
        if c.source not in offsets:
            offsets[c.source] = sum(program.node(s).size for s in offsets)
        m = c.matrix.tocoo()
        rows.append(m.row.astype(np.int64) + offsets[c.source])
        cols.append(m.col.astype(np.int64))
    total = sum(program.node(s).size for s in offsets)
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    k = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    union = sp.csc_matrix((np.ones(len(r), _ONE), (r, k)), shape=(total, n))
    union.sum_duplicates()
    union.data[:] = 1
    return union, syn, mem


def _greedy_ranges(
    name: str, program: Program, target: Any, union: sp.csc_matrix, syn: np.ndarray, mem_each: np.ndarray
) -> list[tuple[int, int]]:
    n = len(syn)
    max_n, max_mem, max_in = (_limit(target, k) for k in ("neurons", "syn_mem_bits", "fan_in_axons"))
    fan_in_each = np.diff(union.indptr)
    # a neuron that cannot fit even alone: report the worst one
    worst_in, worst_mem = int(np.argmax(fan_in_each)) if n else 0, int(np.argmax(mem_each)) if n else 0
    if n and fan_in_each[worst_in] > max_in:
        raise MappingError(
            f"layer {name!r} cannot fit on a {target.name} core: neuron {worst_in} has "
            f"{int(fan_in_each[worst_in])} input axons (distinct source neurons), over the limit of "
            f"{max_in} fan-in axons per core"
        )
    if n and mem_each[worst_mem] > max_mem:
        raise MappingError(
            f"layer {name!r} cannot fit on a {target.name} core: neuron {worst_mem} has "
            f"{int(syn[worst_mem])} synapses = {int(mem_each[worst_mem])} bits, over the "
            f"limit of {max_mem} bits of synaptic memory per core"
        )
    ranges = []
    stamp = np.full(union.shape[0], -1, dtype=np.int64)
    start, mem, fan_in, core = 0, 0, 0, 0
    for j in range(n):
        idx = union.indices[union.indptr[j] : union.indptr[j + 1]]
        new = idx[stamp[idx] != core]
        if j > start and (
            j - start + 1 > max_n or mem + mem_each[j] > max_mem or fan_in + len(new) > max_in
        ):
            ranges.append((start, j))
            core += 1
            start, mem, fan_in = j, 0, 0
            new = idx
        stamp[new] = core
        fan_in += len(new)
        mem += int(mem_each[j])
    if n:
        ranges.append((start, n))
    return ranges


def _core_index(program: Program, ranges: Mapping[str, list[tuple[int, int]]]) -> tuple[dict[str, np.ndarray], int]:
    """Global core id of every neuron, cores numbered population by population (graph order)."""
    index, next_id = {}, 0
    for pop in program.populations():
        arr = np.empty(program.node(pop).size, dtype=np.int64)
        for a, b in ranges[pop]:
            arr[a:b] = next_id
            next_id += 1
        index[pop] = arr
    return index, next_id


def _dest_cores(
    program: Program, conns: list[Connection], core_of: Mapping[str, np.ndarray], n_cores: int, pop: str,
) -> sp.csr_matrix:
    """Pattern [pop size, n_cores + 1]: which cores (last column: host) each neuron sends to."""
    n = program.node(pop).size
    acc = sp.csr_matrix((n, n_cores + 1), dtype=_ONE)
    for c in conns:
        if c.source != pop:
            continue
        m = c.matrix.tocoo()
        cols = core_of[c.dest][m.col] if c.dest is not None else np.full(len(m.col), n_cores)
        acc = acc + sp.csr_matrix((np.ones(len(m.row), _ONE), (m.row, cols)), shape=(n, n_cores + 1))
    return _pattern(acc)


def partition(program: Program, target: Any, weight_bits: int | None = None) -> Program:
    """Split every population into contiguous neuron ranges on cores under ``target``'s limits.

    Returns a new Program with ``metadata["mapping"]`` (cores placed sequentially; run
    :func:`place` to optimise) and ``metadata["target"]``. Raises :class:`MappingError` when a
    layer cannot fit even one neuron per core, naming the layer, the limit and the numbers.
    """
    from spike.hardware import load_target

    target = load_target(target)
    if not target.has_cores:
        raise MappingError(f"target {target.name!r} has no neuromorphic cores: nothing to partition")
    wbits = _weight_bits(program, target, weight_bits)
    conns = connections(program)
    bits = _connection_bits(program, conns, wbits, target)
    pops = program.populations()
    ranges: dict[str, list[tuple[int, int]]] = {}
    incoming: dict[str, tuple[sp.csc_matrix, np.ndarray, np.ndarray]] = {}
    for pop in pops:
        incoming[pop] = _incoming(program, pop, conns, bits)
        ranges[pop] = _greedy_ranges(pop, program, target, *incoming[pop])

    max_out = _limit(target, "fan_out_axons")
    per_neuron = target.core.fan_out_per_neuron
    changed = True
    while changed:  # refine for fan-out until nothing splits (only ever splits: terminates)
        changed = False
        core_of, n_cores = _core_index(program, ranges)
        for pop in pops:
            fo = np.diff(_dest_cores(program, conns, core_of, n_cores, pop).indptr)
            if len(fo) and per_neuron is not None and fo.max() > per_neuron.value:
                i = int(np.argmax(fo))
                raise MappingError(
                    f"layer {pop!r} cannot be mapped on {target.name}: neuron {i} sends to {int(fo[i])} "
                    f"cores, over the limit of {int(per_neuron.value)} destination core(s) per neuron"
                )
            if len(fo) and fo.max() > max_out:
                i = int(np.argmax(fo))
                raise MappingError(
                    f"layer {pop!r} cannot fit on a {target.name} core: neuron {i} alone needs {int(fo[i])} "
                    f"fan-out axons (destination cores), over the limit of {max_out} per core"
                )
            new_ranges = []
            for a, b in ranges[pop]:
                start, acc = a, 0
                for j in range(a, b):
                    if j > start and acc + fo[j] > max_out:
                        new_ranges.append((start, j))
                        start, acc = j, 0
                    acc += int(fo[j])
                new_ranges.append((start, b))
            if len(new_ranges) != len(ranges[pop]):
                ranges[pop] = new_ranges
                changed = True
                break  # core ids moved: recompute before looking at the next population

    core_of, n_cores = _core_index(program, ranges)
    cores = []
    for pop in pops:
        union, syn, mem = incoming[pop]
        fo_each = np.diff(_dest_cores(program, conns, core_of, n_cores, pop).indptr)
        for a, b in ranges[pop]:
            fan_in = int(np.count_nonzero(union[:, a:b].getnnz(axis=1))) if b > a else 0
            synapses = int(syn[a:b].sum())
            used = {
                "neurons": b - a,
                "syn_mem_bits": int(mem[a:b].sum()),
                "fan_in_axons": fan_in,
                "fan_out_axons": int(fo_each[a:b].sum()),
            }
            util = {k: used[k] / _limit(target, k) for k in LIMIT_KEYS}
            closest = max(LIMIT_KEYS, key=lambda k: util[k])
            cores.append({
                "id": len(cores), "population": pop, "start": a, "stop": b,
                "neurons": used["neurons"], "synapses": synapses, "mem_bits": used["syn_mem_bits"],
                "fan_in": fan_in, "fan_out": used["fan_out_axons"],
                "closest_limit": closest, "utilisation": round(util[closest], 6),
            })
    chip = target.chip
    mapping = {
        "version": MAPPING_VERSION,
        "target": target.name,
        "weight_bits": wbits,
        "projection_bits": {t: b for t, b in bits.items() if b != wbits},
        "limits": {k: _limit(target, k) for k in LIMIT_KEYS},
        "cores_per_chip": int(chip.cores_per_chip.value),
        "cores_per_tile": int(chip.cores_per_tile.value),
        "mesh": [int(chip.mesh_rows.value), int(chip.mesh_cols.value)],
        "chips": max(1, math.ceil(len(cores) / chip.cores_per_chip.value)),
        "host_port": [-1, 0],
        "cores": cores,
        "nodes": _node_homes(program),
    }
    slots = list(range(len(cores)))
    _set_positions(mapping, slots)
    cost = placement_cost_of(program, mapping, None)
    mapping["placement"] = {"method": "sequential", "rates": "uniform", "cost": cost, "sequential_cost": cost}
    return program.with_graph(program.graph, metadata={**dict(program.metadata), "target": target.name, "mapping": mapping})


def _node_homes(program: Program) -> dict[str, str]:
    """Where every non-population node lives: the population whose cores hold it (a projection
    lives with the population it feeds, a chain with the chain's population) or ``"host"``."""
    order = {name: i for i, name in enumerate(program.graph.nodes)}

    def home(name: str, seen: frozenset[str]) -> str:
        node = program.node(name)
        if isinstance(node, Population):
            return name
        if not isinstance(node, Projection) or name in seen:
            return HOST
        places = [home(c, seen | {name}) for c in program.consumers(name)]
        pops = sorted((p for p in places if p != HOST), key=order.get)
        return pops[0] if pops else HOST

    return {name: home(name, frozenset()) for name, node in program.nodes() if not isinstance(node, Population)}


# ------------------------------------------------------------------------------ placement


def _slot_xy(mapping: Mapping[str, Any], slot: int) -> tuple[int, int, int]:
    """(chip, x, y) of a slot: chip by chip, tiles row-major, ``cores_per_tile`` slots per tile."""
    cpc, cpt = mapping["cores_per_chip"], mapping["cores_per_tile"]
    rows, cols = mapping["mesh"]
    chip, within = divmod(slot, cpc)
    tile = within // cpt
    y, x = divmod(tile, cols)
    return chip, chip * cols + x, y


def _set_positions(mapping: dict[str, Any], slots: Iterable[int]) -> None:
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
        dest = _pattern(sp.csr_matrix((np.ones(len(m.row), _ONE), (m.row, core_of[c.dest][m.col])), shape=(m.shape[0], n)))
        d = dest.tocoo()
        if c.source_on_host:
            np.add.at(host, d.col, r[d.row])
        else:
            np.add.at(w, (core_of[c.source][d.row], d.col), r[d.row])
    return w, host


def _slot_distances(mapping: Mapping[str, Any], n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    xy = np.array([_slot_xy(mapping, s)[1:] for s in range(n_slots)], dtype=np.int64).reshape(-1, 2)
    d = np.abs(xy[:, None, :] - xy[None, :, :]).sum(-1).astype(np.float64)
    hx, hy = mapping["host_port"]
    hd = (np.abs(xy[:, 0] - hx) + np.abs(xy[:, 1] - hy)).astype(np.float64)
    return d, hd


def _cost(w: np.ndarray, host: np.ndarray, d: np.ndarray, hd: np.ndarray, slots: np.ndarray) -> float:
    return float((w * d[np.ix_(slots, slots)]).sum() + (host * hd[slots]).sum())


def placement_cost_of(program: Program, mapping: Mapping[str, Any], rates: Mapping[str, Any] | None) -> float:
    w, host = traffic(program, mapping, rates)
    slots = np.array([c["slot"] for c in mapping["cores"]], dtype=np.int64)
    d, hd = _slot_distances(mapping, int(slots.max()) + 1 if len(slots) else 0)
    return _cost(w, host, d, hd, slots)


def placement_cost(program: Program, rates: Mapping[str, Any] | None = None) -> float:
    """Traffic-weighted hops per step of a mapped program's placement (the quantity placed)."""
    return placement_cost_of(program, _mapping_of(program), rates)


def _snake_slots(mapping: Mapping[str, Any], n_slots: int) -> list[int]:
    """Slots along a snake through the global tile grid (column by column, alternating up and
    down), so consecutive slots are at most one hop apart."""
    by_xy: dict[tuple[int, int], list[int]] = {}
    for s in range(n_slots):
        _, x, y = _slot_xy(mapping, s)
        by_xy.setdefault((x, y), []).append(s)
    xs = sorted({x for x, _ in by_xy})
    order = []
    for i, x in enumerate(xs):
        ys = sorted(y for xx, y in by_xy if xx == x)
        for y in (ys if i % 2 == 0 else ys[::-1]):
            order.extend(by_xy[(x, y)])
    return order


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


def _improve(w: np.ndarray, host: np.ndarray, d: np.ndarray, hd: np.ndarray, slots: np.ndarray, max_passes: int) -> np.ndarray:
    """Hill climbing over swaps (and moves to free slots) with exact cost deltas."""
    n, n_slots = len(slots), len(d)
    sym = w + w.T
    np.fill_diagonal(sym, 0.0)  # traffic within a core never moves
    slots = slots.copy()
    core_at = np.full(n_slots, -1, dtype=np.int64)
    core_at[slots] = np.arange(n)
    c = sym @ d[slots] + host[:, None] * hd[None, :]  # c[u, q]: u's cost if placed at q
    for _ in range(max_passes):
        improved = False
        for u in range(n):
            pu = slots[u]
            delta = c[u] - c[u, pu]
            occ = np.nonzero(core_at >= 0)[0]
            vs = core_at[occ]
            delta[occ] += c[vs, pu] - c[vs, occ] + 2 * sym[u, vs] * d[pu, occ]
            delta[pu] = 0.0
            q = int(np.argmin(delta))
            if delta[q] >= -1e-9 * max(1.0, abs(c[u, pu])):
                continue
            v = core_at[q]
            c += np.outer(sym[:, u], d[q] - d[pu])
            slots[u], core_at[q], core_at[pu] = q, u, v
            if v >= 0:
                c += np.outer(sym[:, v], d[pu] - d[q])
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
    ``max_search`` (the better of the sequential and spectral placements is kept).
    """
    mapping = {**_mapping_of(program)}
    if target is not None:
        from spike.hardware import load_target

        name = load_target(target).name
        if name != mapping["target"]:
            raise MappingError(f"program was partitioned for {mapping['target']!r}, not {name!r}: partition again")
    mapping["cores"] = [dict(c) for c in mapping["cores"]]
    n = len(mapping["cores"])
    n_slots = mapping["chips"] * mapping["cores_per_chip"]
    w, host = traffic(program, mapping, rates)
    d, hd = _slot_distances(mapping, n_slots)
    sequential = np.arange(n, dtype=np.int64)
    snake = np.array(_snake_slots(mapping, n_slots), dtype=np.int64)
    candidates = {
        "sequential": sequential,
        "spectral": snake[np.argsort(_spectral_order(w))] if n else sequential,
    }
    best = min(candidates, key=lambda k: (_cost(w, host, d, hd, candidates[k]), k != "sequential"))
    slots = candidates[best]
    method = best
    if n and n * n_slots <= max_search:
        slots = _improve(w, host, d, hd, slots, max_passes)
        method += "+swap"
    _set_positions(mapping, slots)
    mapping["placement"] = {
        "method": method,
        "rates": "uniform" if rates is None else "calibrated",
        "cost": _cost(w, host, d, hd, slots),
        "sequential_cost": _cost(w, host, d, hd, sequential),
    }
    return program.with_graph(program.graph, metadata={**dict(program.metadata), "mapping": mapping})


def map_program(program: Program, target: Any, rates: Mapping[str, Any] | None = None, weight_bits: int | None = None) -> Program:
    """:func:`partition` then :func:`place` (the compile-time mapping for a target with cores)."""
    return place(partition(program, target, weight_bits=weight_bits), rates=rates)


# ------------------------------------------------------------------------------ report


def _mapping_of(program: Program) -> Mapping[str, Any]:
    mapping = program.metadata.get("mapping")
    if not mapping:
        raise MappingError("program has no mapping: run partition(program, target) first")
    return mapping


@dataclass(frozen=True)
class MappingReport:
    """Per-core use of every limit, per-population summary and placement cost."""

    mapping: Mapping[str, Any]

    @property
    def cores(self) -> list[dict[str, Any]]:
        return list(self.mapping["cores"])

    def per_population(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        limits = self.mapping["limits"]
        for c in self.mapping["cores"]:
            r = rows.setdefault(c["population"], {
                "population": c["population"], "cores": 0, "neurons": 0, "synapses": 0,
                "max_neurons": 0, "max_mem_bits": 0, "max_fan_in": 0, "max_fan_out": 0,
                "chips": set(),
            })
            r["cores"] += 1
            r["neurons"] += c["neurons"]
            r["synapses"] += c["synapses"]
            r["max_neurons"] = max(r["max_neurons"], c["neurons"])
            r["max_mem_bits"] = max(r["max_mem_bits"], c["mem_bits"])
            r["max_fan_in"] = max(r["max_fan_in"], c["fan_in"])
            r["max_fan_out"] = max(r["max_fan_out"], c["fan_out"])
            r["chips"].add(c.get("chip", 0))
        out = []
        for r in rows.values():
            util = {
                "neurons": r["max_neurons"] / limits["neurons"],
                "syn_mem_bits": r["max_mem_bits"] / limits["syn_mem_bits"],
                "fan_in_axons": r["max_fan_in"] / limits["fan_in_axons"],
                "fan_out_axons": r["max_fan_out"] / limits["fan_out_axons"],
            }
            closest = max(util, key=util.get)
            out.append({**r, "chips": sorted(r["chips"]), "closest_limit": closest, "utilisation": util[closest]})
        return out

    def render(self) -> str:
        m = self.mapping
        lim = m["limits"]
        p = m.get("placement", {})
        lines = [
            f"mapping onto {m['target']}: {len(m['cores'])} cores on {m.get('chips_used', m['chips'])} chip(s) "
            f"({m['cores_per_chip']} cores/chip, mesh {m['mesh'][0]}x{m['mesh'][1]} tiles x "
            f"{m['cores_per_tile']} cores), {m['weight_bits']}-bit weights",
            f"limits per core: {lim['neurons']} neurons, {lim['syn_mem_bits']} bits synaptic memory, "
            f"{lim['fan_in_axons']} fan-in axons, {lim['fan_out_axons']} fan-out axons",
            f"{'population':<22} {'cores':>5} {'neurons':>8} {'synapses':>11} | max per core: "
            f"{'neurons':>7} {'memory':>7} {'fan-in':>6} {'fan-out':>7} | closest limit",
        ]
        for r in self.per_population():
            lines.append(
                f"{r['population'][:22]:<22} {r['cores']:>5} {r['neurons']:>8} {r['synapses']:>11} | "
                f"{'':>13} {r['max_neurons']:>7} {100 * r['max_mem_bits'] / lim['syn_mem_bits']:>6.1f}% "
                f"{r['max_fan_in']:>6} {r['max_fan_out']:>7} | {r['closest_limit']} "
                f"{100 * r['utilisation']:.0f}%"
            )
        if p:
            lines.append(
                f"placement {p['method']} (rates {p['rates']}): {p['cost']:.4g} traffic x hops per step "
                f"(sequential {p['sequential_cost']:.4g})"
            )
        host_nodes = sorted(n for n, h in m.get("nodes", {}).items() if h == HOST)
        if host_nodes:
            shown = ", ".join(host_nodes[:8]) + (f", ... ({len(host_nodes)} in all)" if len(host_nodes) > 8 else "")
            lines.append(f"on the host: {shown}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        m = self.mapping
        return {
            "target": m["target"],
            "cores": [dict(c) for c in m["cores"]],
            "chips": m.get("chips_used", m["chips"]),
            "limits": dict(m["limits"]),
            "weight_bits": m["weight_bits"],
            "per_population": self.per_population(),
            "placement": dict(m.get("placement", {})),
            "nodes": dict(m.get("nodes", {})),
        }


def mapping_report(program: Program) -> MappingReport:
    """The mapping report of a mapped program (rebuilt from its metadata, e.g. after loading)."""
    return MappingReport(_mapping_of(program))
