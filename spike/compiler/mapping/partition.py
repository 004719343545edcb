"""Partition populations onto neuromorphic cores (design §5); :func:`map_program` partitions and
places (``place``).

Both passes are pure: they return a new :class:`Program` (same graph, same node objects) whose
``metadata["mapping"]`` (plain JSON, saved with the program) describes the mapping, and whose
``metadata["target"]`` names the target; ``report`` reads it back.

Model of the hardware (what the numbers mean)
---------------------------------------------
- **Where nodes live**: ``connectivity``'s docstring.
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
- **Mesh**: ``place``'s docstring.

Partitioning is greedy over neurons in order: a core is closed when the next neuron would break
neurons, synaptic memory or fan-in (greedy maximal ranges are optimal for contiguous ranges under
monotone limits). Fan-out depends on how the destinations were split, so ranges are then refined
(split further, never merged) until every core's fan-out fits -- repeated to a fixed point, since
splitting a population can raise the fan-out of the populations feeding it.

The cores start in sequential placement (``place.set_positions``) with its cost.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from spike.compiler.ir.nodes import Population, Projection
from spike.compiler.ir.program import Program
from spike.compiler.mapping.connectivity import (
    HOST, ONES_DTYPE, Connection, MappingError, boolean_pattern, connections,
)
from spike.compiler.mapping.place import place, placement_cost_of, set_positions
from spike.compiler.ir.precision import program_precision
from spike.hardware import load_target

MAPPING_VERSION = 1
LIMIT_KEYS = ("neurons", "syn_mem_bits", "fan_in_axons", "fan_out_axons")

__all__ = ["partition", "map_program", "MAPPING_VERSION", "LIMIT_KEYS"]


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
    fixed = program_precision(program) == "fixed"
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
    union = sp.csc_matrix((np.ones(len(r), ONES_DTYPE), (r, k)), shape=(total, n))
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
    acc = sp.csr_matrix((n, n_cores + 1), dtype=ONES_DTYPE)
    for c in conns:
        if c.source != pop:
            continue
        m = c.matrix.tocoo()
        cols = core_of[c.dest][m.col] if c.dest is not None else np.full(len(m.col), n_cores)
        acc = acc + sp.csr_matrix((np.ones(len(m.row), ONES_DTYPE), (m.row, cols)), shape=(n, n_cores + 1))
    return boolean_pattern(acc)


def partition(program: Program, target: Any, weight_bits: int | None = None) -> Program:
    """Split every population into contiguous neuron ranges on cores under ``target``'s limits.

    Returns a new Program with ``metadata["mapping"]`` (cores placed sequentially; run
    :func:`place` to optimise) and ``metadata["target"]``. Raises :class:`MappingError` when a
    layer cannot fit even one neuron per core, naming the layer, the limit and the numbers.
    """

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
    set_positions(mapping, slots)
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


def map_program(program: Program, target: Any, rates: Mapping[str, Any] | None = None, weight_bits: int | None = None) -> Program:
    """:func:`partition` then :func:`place` (the compile-time mapping for a target with cores)."""
    return place(partition(program, target, weight_bits=weight_bits), rates=rates)
