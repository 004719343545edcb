"""What a run records of a node instead of (or besides) its dense ``[T, B, *shape]`` output.

``run(program, ..., record={"exc": "counts", "inh": ("counts", "spikes"), "out": "dense"})``
asks, per node, for any of :data:`RECORD_MODES`:

- ``"dense"``: the output ``[T, B, *shape]`` (in ``RunResult.outputs`` for a program output, else in
  ``RunResult.probes``), as without ``record``;
- ``"counts"``: ``RunResult.spike_counts[name]``, int64 ``[B, *shape]``: spikes per neuron summed over
  the run's aligned steps;
- ``"spikes"``: ``RunResult.spike_lists[name]``, a :class:`SpikeList` (step, sample, neuron index).

A program output named in ``record`` without ``"dense"`` is not returned densely. Counts and spike
lists cover the steps a dense output would (``engine.aligned``: from the node's latency on, as many
steps as the input), and need a spike signal (``spike.compiler.ir.signals``). The engine feeds a
:class:`Recorder` the node's output chunk by chunk where it runs a program in chunks (the numba
backend: no ``[T, B, n]`` buffer for a node that is only counted), else once with the whole run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from numba import njit

from spike.compiler.ir.program import Program
from spike.compiler.ir.signals import output_signal

__all__ = ["RECORD_MODES", "SpikeList", "Recorder", "parse_record"]

RECORD_MODES = ("dense", "counts", "spikes")


@dataclass(frozen=True)
class SpikeList:
    """The spikes of one node as parallel int32 arrays, sorted by step, then sample, then neuron:
    ``times`` (aligned step, 0 .. ``steps`` - 1), ``samples`` (0 .. ``batch`` - 1) and ``neurons``
    (flat C-order index into ``shape``)."""

    times: np.ndarray
    samples: np.ndarray
    neurons: np.ndarray
    shape: tuple[int, ...]
    steps: int
    batch: int

    def __len__(self) -> int:
        return int(self.times.shape[0])

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def counts(self) -> np.ndarray:
        """Spikes per neuron, int64 ``[batch, *shape]`` (what ``record="counts"`` returns)."""
        flat = self.samples.astype(np.int64) * self.size + self.neurons
        return np.bincount(flat, minlength=self.batch * self.size).reshape(self.batch, *self.shape)

    def dense(self) -> np.ndarray:
        """The spikes as a bool array ``[steps, batch, *shape]``."""
        out = np.zeros((self.steps, self.batch, self.size), bool)
        out[self.times, self.samples, self.neurons] = True
        return out.reshape(self.steps, self.batch, *self.shape)

    def of_sample(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """``(times, neurons)`` of sample ``b``: Brian2's ``SpikeMonitor.t / dt, .i`` and NEST's
        ``times, senders`` (0-based) in form."""
        keep = self.samples == b
        return self.times[keep], self.neurons[keep]


def parse_record(program: Program, record: Mapping[str, Any] | None) -> dict[str, frozenset[str]]:
    """``record`` as node name -> modes, checked: existing nodes, known modes, a spike signal for
    ``counts`` and ``spikes`` (ValueError naming the node)."""
    if record is None:
        return {}
    if not isinstance(record, Mapping):
        raise ValueError(f"record: expected a mapping node -> mode(s) {RECORD_MODES}, got {type(record).__name__}")
    out: dict[str, frozenset[str]] = {}
    for name, modes in record.items():
        if name not in program.graph:
            raise ValueError(f"record: the program has no node {name!r}")
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
        bad = [m for m in modes if m not in RECORD_MODES]
        if bad or not modes:
            raise ValueError(f"record {name!r}: modes {list(modes)}; expected one or more of {RECORD_MODES}")
        signal = output_signal(program, name)
        if signal != "spike" and set(modes) - {"dense"}:
            raise ValueError(f"record {name!r}: counts and spike lists need spikes, the node's output is a {signal} "
                             "signal (record it 'dense')")
        out[name] = frozenset(modes)
    return out


class Recorder:
    """Counts and spike lists of one node over the global steps ``[start, start + steps)``, fed
    with consecutive pieces of its output (:meth:`add`)."""

    def __init__(self, name: str, modes: frozenset[str], shape: tuple[int, ...], batch: int, start: int,
                 steps: int) -> None:
        self.name, self.shape, self.batch, self.start, self.steps = name, tuple(shape), batch, start, steps
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.count = np.zeros((batch, self.size), np.int64) if "counts" in modes else None
        self.lists: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = [] if "spikes" in modes else None

    def add(self, values: Any, t0: int) -> None:
        """``values`` ``[c, batch, ...]`` (numpy; any non-zero is a spike): the node's output at
        global steps ``t0 .. t0 + c - 1``."""
        values = np.asarray(values)
        c = values.shape[0]
        lo, hi = max(self.start, t0), min(self.start + self.steps, t0 + c)
        if hi <= lo:
            return
        seg = np.ascontiguousarray(values[lo - t0:hi - t0]).reshape(hi - lo, self.batch * self.size)
        count = self.count.reshape(-1) if self.count is not None else _NO_COUNT
        if self.lists is None:
            _scan(*_words(seg), seg, count, True, _NO_INDEX, 0)
            return
        words = _words(seg)
        found = np.empty(_scan(*words, seg, count, self.count is not None, _NO_INDEX, 0), np.int64)
        _scan(*words, seg, _NO_COUNT, False, found, found.shape[0])
        t, rest = np.divmod(found, self.batch * self.size)
        b, k = np.divmod(rest, self.size)
        self.lists.append(((t + (lo - self.start)).astype(np.int32), b.astype(np.int32), k.astype(np.int32)))

    def add_listed(self, index: np.ndarray, count: np.ndarray, r0: int, r1: int, t0: int) -> None:
        """The node's spikes as its kernel listed them (``Backend.lists_spikes``): rows ``r0 .. r1-1``
        of ``index [rows, batch, size]`` / ``count [rows, batch]``, row ``r0`` being global step
        ``t0``; the same records as :meth:`add` of the dense rows."""
        lo, hi = max(self.start, t0), min(self.start + self.steps, t0 + r1 - r0)
        if hi <= lo:
            return
        rows = slice(r0 + lo - t0, r0 + hi - t0)
        index, count = index[rows], count[rows]
        counts = self.count.reshape(-1) if self.count is not None else _NO_COUNT
        n = int(count.sum()) if self.lists is not None else 0
        t, b, k = (np.empty(n, np.int32) for _ in range(3))
        _unlist(index, count, counts, self.count is not None, self.size, t, b, k, self.lists is not None)
        if self.lists is not None:
            self.lists.append((t + np.int32(lo - self.start), b, k))

    def counts(self) -> np.ndarray:
        return self.count.reshape(self.batch, *self.shape)

    def spikes(self) -> SpikeList:
        parts = self.lists or [(np.zeros(0, np.int32),) * 3]
        t, b, k = (np.concatenate([p[i] for p in parts]) for i in range(3))
        return SpikeList(t, b, k, self.shape, self.steps, self.batch)


_NO_COUNT = np.zeros(0, np.int64)
_NO_INDEX = np.zeros(0, np.int64)


def _words(values: np.ndarray) -> tuple[np.ndarray, int]:
    """``values [c, m]`` seen as 64-bit words ``[c, m / per]`` of ``per`` elements each when the
    rows split evenly (a silent word is skipped in one test), else as itself (``per`` 1)."""
    per = 8 // values.itemsize if values.itemsize in (1, 2, 4) else 1
    if per > 1 and values.shape[1] % per == 0 and values.flags.c_contiguous:
        return values.view(np.uint64), per
    return values, 1


@njit(cache=True)
def _scan(words, per, values, count, counting, found, listing):
    """One pass over ``values [c, m]`` (``words``, ``per``: :func:`_words`; a word without a set
    bit holds no non-zero): ``count[j] += 1`` per non-zero ``values[t, j]`` when ``counting``; the
    flat index ``t*m + j`` of each non-zero into ``found`` (C order) when ``listing`` > 0 (its
    length); returns the number of non-zeros."""
    c, m = values.shape
    n = 0
    for t in range(c):
        wrow = words[t]
        row = values[t]
        for w in range(wrow.shape[0]):
            if wrow[w] != 0:
                for j in range(w * per, w * per + per):
                    if row[j] != 0:
                        if counting:
                            count[j] += 1
                        if listing:
                            found[n] = t * m + j
                        n += 1
    return n


@njit(cache=True)
def _unlist(index, count, counts, counting, size, t_out, b_out, k_out, listing):
    """Per row ``r`` and sample ``b`` the ``count[r, b]`` positions ``index[r, b, :count[r, b]]``:
    ``counts[b * size + k] += 1`` when ``counting``; ``(r, b, k)`` appended to the outputs (in
    step, sample, neuron order) when ``listing``."""
    n = 0
    for r in range(count.shape[0]):
        for b in range(count.shape[1]):
            row = index[r, b]
            for e in range(count[r, b]):
                k = row[e]
                if counting:
                    counts[b * size + k] += 1
                if listing:
                    t_out[n] = r
                    b_out[n] = b
                    k_out[n] = k
                    n += 1
