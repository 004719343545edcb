"""Large random sparse spiking networks built from Python, as a Brian2 or NEST user writes them.

A :class:`Network` collects populations of LIF neurons (design §3: ``v' = beta*v + gain*I + bias``,
spike on ``v' > threshold``, reset to ``v_reset`` in the step it fires, by default), generated
Poisson (Bernoulli) spike sources, external inputs and random connections, then :meth:`Network.build`
emits an IR :class:`~spike.compiler.ir.program.Program` that every backend runs::

    net = Network(seed=1)
    net.poisson("ext", 1000, p=0.02)                      # spikes with probability 0.02 per step
    net.population("exc", 800, beta=0.9, threshold=1.0, bias=0.05)
    net.connect("ext", "exc", fixed_fan_out(50), weight=0.1, delay=1)
    net.connect("exc", "exc", probability(0.05), weight=lambda rng, n: rng.uniform(0, 0.05, n), delay=2)
    net.record("exc", "counts", "spikes")
    result = simulate(net.build(), steps=1000)            # result.spike_counts["exc"]: [1, 800]

Connectivity rules: :func:`fixed_fan_out` (every source neuron has exactly ``k`` targets: NEST's
``fixed_outdegree``), :func:`fixed_fan_in` (every target exactly ``k`` sources: ``fixed_indegree``),
:func:`probability` (each pair independently with ``p``: NEST's ``pairwise_bernoulli``, Brian2's
``connect(p=...)``) and :func:`one_to_one`. By default there are no autapses (a neuron never
connects to itself when source and target are one population) and no multapses (a pair at most
once); both can be allowed.

Weights and delays: a constant, an array with one value per synapse (in the synapses' order:
by source neuron, then target neuron; :func:`synapse_count` gives the number a rule makes when it
is fixed), or a callable ``f(rng, n) -> array`` drawing ``n`` values. Delays are whole steps >= 0;
a connection with several delays becomes one ``Sparse`` projection per delay (named ``name@dD``).

Randomness: a network's ``seed`` (an int or a ``numpy.random.SeedSequence``) gives every random
draw site its own generator (PCG64): connection ``i`` (0, 1, ... in declaration order) draws from
``numpy.random.default_rng(numpy.random.SeedSequence(seed, spawn_key=(1, i)))``, its structure
first, then its weights, then its delays, when the network is built; a declaration that draws
(a parameter given as a callable, a source without its own seed) uses ``spawn_key=(0, j)``, ``j``
counting such declarations. The same seed and declarations give the same network, bit for bit, on
any machine; building twice gives the same program; a connection does not change when another is
added after it.

What a run returns: :meth:`Network.record` puts ``{node: modes}`` in ``program.metadata["record"]``;
:func:`simulate` runs the program with it (``spike.backends.recording``: spike counts per neuron,
spike lists, or dense arrays). Exporting the connectivity: :func:`synapses` gives each connection
as ``(pre, post, weight, delay)`` arrays (a :class:`Synapses`), from the built program itself, so the
same network can be built in Brian2 (``S.connect(i=pre, j=post)``) or NEST (``nest.Connect(pre_ids,
post_ids, "one_to_one", ...)``). :func:`feed_forward` and :func:`brunel` build the two standard
benchmark networks. Guide: ``docs/sparse_networks.md``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from spike.backends import RunResult, run
from spike.backends.recording import RECORD_MODES
from spike.compiler.ir.nodes import Bernoulli, Input, Population, Sparse
from spike.compiler.ir.program import Program, ProgramBuilder

__all__ = [
    "Network", "Rule", "Synapses", "fixed_fan_out", "fixed_fan_in", "probability", "one_to_one", "synapse_count",
    "synapses", "simulate", "feed_forward", "brunel", "beta_from_tau", "rate_to_p",
]

Values = Any  # a constant, an array with one value per item, or a callable f(rng, n) -> array


# ---------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """A connectivity rule: ``kind`` is "fan_out", "fan_in", "probability" or "one_to_one";
    ``k`` the fixed degree, ``p`` the pair probability; ``autapses``/``multapses`` allow a neuron
    to connect to itself (one population) and a pair to connect more than once."""

    kind: str
    k: int = 0
    p: float = 0.0
    autapses: bool = False
    multapses: bool = False


def fixed_fan_out(k: int, autapses: bool = False, multapses: bool = False) -> Rule:
    """Every source neuron connects to exactly ``k`` target neurons drawn uniformly (NEST's
    ``fixed_outdegree``)."""
    return _checked(Rule("fan_out", k=k, autapses=autapses, multapses=multapses))


def fixed_fan_in(k: int, autapses: bool = False, multapses: bool = False) -> Rule:
    """Every target neuron receives from exactly ``k`` source neurons drawn uniformly (NEST's
    ``fixed_indegree``, Brunel's ``C_E``/``C_I``)."""
    return _checked(Rule("fan_in", k=k, autapses=autapses, multapses=multapses))


def probability(p: float, autapses: bool = False) -> Rule:
    """Each (source, target) pair connects independently with probability ``p`` (NEST's
    ``pairwise_bernoulli``, Brian2's ``connect(p=p)``)."""
    return _checked(Rule("probability", p=float(p), autapses=autapses))


def one_to_one() -> Rule:
    """Source neuron ``i`` to target neuron ``i`` (populations of one size)."""
    return Rule("one_to_one")


def _checked(rule: Rule) -> Rule:
    if rule.kind in ("fan_out", "fan_in") and (isinstance(rule.k, bool) or not isinstance(rule.k, (int, np.integer))
                                               or rule.k < 0):
        raise ValueError(f"{rule.kind} rule: k must be a whole number >= 0, got {rule.k!r}")
    if rule.kind == "probability" and not 0.0 <= rule.p <= 1.0:
        raise ValueError(f"probability rule: p must lie in [0, 1], got {rule.p!r}")
    return rule


def synapse_count(rule: Rule, n_pre: int, n_post: int) -> int | None:
    """The number of synapses ``rule`` makes between populations of ``n_pre`` and ``n_post``
    neurons (None for :func:`probability`, which draws it): the length of a per-synapse array."""
    return {"fan_out": n_pre * rule.k, "fan_in": n_post * rule.k, "one_to_one": n_pre}.get(rule.kind)


_BLOCK = 1 << 20  # synapses drawn at a time (bounds the temporaries of a large draw)


def _distinct(rng: np.random.Generator, counts: np.ndarray, n: int, exclude: bool, multapses: bool) -> np.ndarray:
    """Row after row, ``counts[r]`` values in ``[0, n)`` drawn uniformly, sorted per row (int32),
    each row ``r`` without the value ``r`` when ``exclude`` and, unless ``multapses``, without
    repeats (a uniform subset: duplicates are redrawn until none is left, which treats every value
    alike). Rows are drawn in blocks of about :data:`_BLOCK` values, one block after another."""
    m = n - int(exclude)
    counts = np.asarray(counts, np.int64)
    most = int(counts.max()) if counts.size else 0
    if most and (m < 1 or (not multapses and most > m)):
        raise ValueError(f"cannot draw {most} {'' if multapses else 'distinct '}neurons out of {max(m, 0)}")
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty(int(starts[-1]), np.int32 if n < 2**31 else np.int64)
    r0 = 0
    while r0 < counts.size:
        r1 = max(r0 + 1, int(np.searchsorted(starts, starts[r0] + _BLOCK, side="right")) - 1)
        r1 = min(r1, counts.size)
        out[starts[r0]:starts[r1]] = _distinct_rows(rng, counts[r0:r1], m, r0, exclude, multapses)
        r0 = r1
    return out


def _distinct_rows(rng: np.random.Generator, counts: np.ndarray, m: int, first: int, exclude: bool,
                   multapses: bool) -> np.ndarray:
    """:func:`_distinct` for the rows ``first ..`` with these ``counts`` (values in ``[0, m)`` before
    the exclusion shift)."""
    rows = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    if rows.size == 0:
        return rows
    vals = rng.integers(0, m, size=rows.size, dtype=np.int64)
    if not multapses:
        starts = np.concatenate([[0], np.cumsum(counts)])
        for r in np.flatnonzero(counts > m // 2):  # rows taking most of the neurons: a permutation each
            vals[starts[r]:starts[r + 1]] = rng.permutation(m)[:counts[r]]
    key = rows * m + vals
    key.sort()
    while not multapses:
        dup = np.zeros(key.size, bool)
        dup[1:] = key[1:] == key[:-1]
        if not dup.any():
            break
        key[dup] = rows[dup] * m + rng.integers(0, m, size=int(dup.sum()), dtype=np.int64)
        key.sort()
    vals = key - rows * m
    if exclude:  # [0, m) onto [0, m] without the row's own index, order kept
        vals += vals >= rows + first
    return vals


def _draw(rule: Rule, rng: np.random.Generator, n_pre: int, n_post: int, same: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(pre, post)`` (int32 below 2^31 neurons) of the synapses ``rule`` draws, sorted by pre,
    then post."""
    no_self = same and not rule.autapses
    idx = np.int32 if max(n_pre, n_post) < 2**31 else np.int64
    if rule.kind == "one_to_one":
        if n_pre != n_post:
            raise ValueError(f"one_to_one: the populations differ in size ({n_pre} vs {n_post})")
        i = np.arange(n_pre, dtype=idx)
        return i, i.copy()
    if rule.kind in ("fan_out", "probability"):
        m = n_post - no_self
        counts = (np.full(n_pre, rule.k, np.int64) if rule.kind == "fan_out"
                  else rng.binomial(max(m, 0), rule.p, size=n_pre).astype(np.int64))
        post = _distinct(rng, counts, n_post, no_self, rule.multapses)
        return np.repeat(np.arange(n_pre, dtype=idx), counts), post.astype(idx, copy=False)
    counts = np.full(n_post, rule.k, np.int64)  # fan_in: rows are targets, ascending
    pre = _distinct(rng, counts, n_pre, no_self, rule.multapses).astype(idx, copy=False)
    order = np.argsort(pre, kind="stable")  # by pre; posts stay ascending within each pre
    return pre[order], np.repeat(np.arange(n_post, dtype=idx), counts)[order]


def _values(spec: Values, rng: np.random.Generator, n: int, what: str, dtype: Any) -> np.ndarray:
    """``spec`` (constant, array of ``n`` or callable) as ``n`` values."""
    if callable(spec):
        out = np.asarray(spec(rng, n))
    else:
        out = np.asarray(spec)
    if out.ndim == 0:
        out = np.full(n, out.item())
    if out.shape != (n,):
        raise ValueError(f"{what}: expected one value or {n} (one per item), got shape {out.shape}")
    if np.issubdtype(np.dtype(dtype), np.integer):
        if out.dtype.kind == "f" and not np.array_equal(out, np.round(out)):
            raise ValueError(f"{what}: expected whole numbers of steps")
        if out.size and out.min() < 0:
            raise ValueError(f"{what}: must be >= 0, got {out.min()}")
    elif out.size and not np.isfinite(out.astype(np.float64)).all():
        raise ValueError(f"{what}: contains NaN or inf")
    return out.astype(dtype)


# ---------------------------------------------------------------------------- the network
@dataclass
class _Connection:
    name: str
    source: str
    target: str
    rule: Rule
    weight: Values
    delay: Values


@dataclass
class Network:
    """A random network under construction (module docstring); ``seed``: see "Randomness"."""

    seed: int | np.random.SeedSequence = 0
    nodes: dict[str, Any] = field(default_factory=dict)  # name -> Population, Bernoulli or Input (in order)
    connections: list[_Connection] = field(default_factory=list)
    records: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _draws: int = 0

    def _rng(self, kind: int, index: int | None = None) -> np.random.Generator:
        """The generator of a random draw site (module docstring, "Randomness"): ``kind`` 0 for
        declarations (numbered as they draw), 1 for connection ``index``."""
        if index is None:
            index = self._draws
            self._draws += 1
        ss = self.seed if isinstance(self.seed, np.random.SeedSequence) else np.random.SeedSequence(int(self.seed))
        return np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, kind, index)))

    def _new(self, name: str, node: Any) -> str:
        if not isinstance(name, str) or not name or "/" in name or "@" in name or "->" in name:
            raise ValueError(f"name {name!r}: expected a non-empty string without '/', '@' or '->'")
        if name in self.nodes or any(c.name == name for c in self.connections):
            raise ValueError(f"name {name!r} is taken")
        self.nodes[name] = node
        return name

    def size(self, name: str) -> int:
        if name not in self.nodes:
            raise ValueError(f"no population or source {name!r}; known: {list(self.nodes)}")
        return self.nodes[name].size

    def population(self, name: str, n: int, *, beta: Values = 0.9, threshold: Values = 1.0, bias: Values = None,
                   v_init: Values = None, model: str = "lif", reset: str = "zero", reset_delay: bool = False,
                   fire_ge: bool = False, v_reset: float = 0.0, gain: float = 1.0, alpha: Values = None) -> str:
        """Add ``n`` neurons (``model`` "lif", "if", "cuba_lif" or "li"): per-population or per-neuron
        ``beta`` (membrane decay per step, :func:`beta_from_tau`), ``threshold``, ``bias`` (constant
        input per step), ``v_init`` (initial membrane; a callable draws it, e.g. ``lambda rng, n:
        rng.uniform(0, 1, n)``), ``alpha`` (``cuba_lif``'s synaptic decay). Defaults: the reset of
        Brian2's ``reset='v = v_reset'`` and NEST's ``iaf_psc_delta`` (to ``v_reset`` in the step
        it fires), firing on ``v > threshold`` (NEST fires on ``>=``: ``fire_ge=True``), no
        refractory period (NEST: ``t_ref = 0``)."""
        n = _count(n, "population size")
        arrays: dict[str, Any] = {}
        for f, spec in (("beta", beta), ("threshold", threshold), ("bias", bias), ("v_init", v_init), ("alpha", alpha)):
            if spec is None or (f == "beta" and model == "if"):
                continue
            arrays[f] = self._param(spec, n, f"population {name!r}, {f}")
        node = Population(shape=(n,), model=model, reset=reset, reset_delay=reset_delay, fire_ge=fire_ge,
                          v_reset=float(v_reset), gain=float(gain), **arrays)
        return self._new(name, node)

    def _param(self, spec: Values, n: int, what: str) -> np.ndarray:
        """A population parameter: one value, ``n`` values, or drawn by a callable ``f(rng, n)``."""
        if callable(spec):
            return _values(spec, self._rng(0), n, what, np.float32)
        arr = np.asarray(spec, np.float32)
        if arr.shape not in ((), (1,), (n,)):
            raise ValueError(f"{what}: expected one value or {n} (one per neuron), got shape {arr.shape}")
        return arr.reshape(-1) if arr.ndim else arr.reshape(1)

    def poisson(self, name: str, n: int, p: Values, seed: int | None = None) -> str:
        """Add ``n`` generated spike sources, each spiking with probability ``p`` per step (one value
        or one per neuron; :func:`rate_to_p` from a rate): NEST's ``poisson_generator`` one per
        target, Brian2's ``PoissonGroup``. The spikes come from the IR's counter-based hash
        (``Bernoulli``), the same on every backend; ``seed`` (0 .. 2^63 - 1): by default drawn
        from the network's seed."""
        n = _count(n, "source size")
        pa = np.asarray(p, np.float64)
        pa = pa.reshape(1) if pa.ndim == 0 else _values(pa, None, n, f"source {name!r}, p", np.float64)  # type: ignore[arg-type]
        if seed is None:
            seed = int(self._rng(0).integers(0, 2**63, dtype=np.int64))
        return self._new(name, Bernoulli(shape=(n,), p=pa, seed=int(seed)))

    def input(self, name: str, n: int) -> str:
        """Add ``n`` external spike inputs, fed ``[T, B, n]`` at run time."""
        return self._new(name, Input(shape=(_count(n, "input size"),)))

    def connect(self, source: str, target: str, rule: Rule, weight: Values = 1.0, delay: Values = 1,
                name: str | None = None) -> str:
        """Connect ``source`` (a population, source or input) to population ``target`` by ``rule``,
        with ``weight`` (added to the target's input current, scaled by its ``gain``) and ``delay``
        (steps) per synapse; the connection's name defaults to ``"source->target"``. The synapses
        are drawn when the network is built."""
        self.size(source)
        if not isinstance(self.nodes.get(target), Population):
            raise ValueError(f"connect: target {target!r} is not a population")
        name = name or f"{source}->{target}"
        if name in self.nodes or any(c.name == name for c in self.connections) or "/" in name or "@" in name:
            raise ValueError(f"connection name {name!r} is taken or invalid")
        self.connections.append(_Connection(name, source, target, rule, weight, delay))
        return name

    def record(self, name: str, *modes: str) -> None:
        """Return ``modes`` of node ``name`` from :func:`simulate`: "counts" (spikes per neuron),
        "spikes" (a spike list) and/or "dense" (``[T, B, n]``)."""
        self.size(name)
        bad = [m for m in modes if m not in RECORD_MODES]
        if bad or not modes:
            raise ValueError(f"record {name!r}: modes {list(modes)}; expected one or more of {RECORD_MODES}")
        self.records[name] = tuple(modes)

    def build(self) -> Program:
        """The program: every population, source and input, then every connection's synapses as
        ``Sparse`` projections (one per delay value). Draws the connections now (each from its own
        generator, in declaration order after the populations' draws: module docstring)."""
        b = ProgramBuilder()
        for name, node in self.nodes.items():
            b.add(name, node)
        sources: dict[str, list[str]] = {n: [] for n, node in self.nodes.items() if isinstance(node, Population)}
        groups: dict[str, list[str]] = {}
        for i, c in enumerate(self.connections):
            rng = self._rng(1, i)
            n_pre, n_post = self.size(c.source), self.size(c.target)
            pre, post = _draw(c.rule, rng, n_pre, n_post, c.source == c.target)
            weight = _values(c.weight, rng, pre.size, f"connection {c.name!r}, weight", np.float32)
            if callable(c.delay) or np.ndim(c.delay):
                delay = _values(c.delay, rng, pre.size, f"connection {c.name!r}, delay", np.int64)
                ds = np.unique(delay)
            else:  # one delay for all: no per-synapse array
                ds = _values(c.delay, rng, 1, f"connection {c.name!r}, delay", np.int64)
            if ds.size <= 1:  # one delay: one projection named as the connection
                d = int(ds[0]) if ds.size else 1
                b.add(c.name, _sparse(pre, post, weight, n_pre, n_post, d), c.source)
                names = [c.name]
            else:  # one projection per delay value
                names = []
                for d in ds:
                    keep = delay == d
                    names.append(b.add(f"{c.name}@d{int(d)}", _sparse(pre[keep], post[keep], weight[keep], n_pre,
                                                                       n_post, int(d)), c.source))
            sources[c.target] += names
            groups[c.name] = names
        for target, projs in sources.items():
            for proj in projs:
                b.connect(proj, target)
        meta = {"builder": "spike.models.random_net", "connections": groups,
                "record": {k: list(v) for k, v in self.records.items()}}
        return b.build(meta)


def _count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{what} must be a whole number >= 1, got {n!r}")
    return int(n)


def _sparse(pre: np.ndarray, post: np.ndarray, weight: np.ndarray, n_pre: int, n_post: int, delay: int) -> Sparse:
    """A ``Sparse`` projection of synapses sorted by pre (CSR over the source)."""
    indptr = np.zeros(n_pre + 1, np.int64)
    np.cumsum(np.bincount(pre, minlength=n_pre), out=indptr[1:])
    return Sparse(shape=(n_post,), in_shape=(n_pre,), indptr=indptr, indices=np.ascontiguousarray(post),
                  data=np.ascontiguousarray(weight, np.float32), delay=delay)


# ---------------------------------------------------------------------------- export, run
@dataclass(frozen=True)
class Synapses:
    """One connection's synapses as parallel arrays sorted by ``pre``, then ``post``: ``pre`` and
    ``post`` (neuron indices in ``source`` and ``target``, int64), ``weight`` (float32), ``delay``
    (steps, int64). In Brian2: ``S.connect(i=pre, j=post); S.w = weight; S.delay = delay * dt``; in
    NEST: ``nest.Connect(src[pre], tgt[post], "one_to_one", {"weight": weight, "delay": delay *
    dt})`` (NEST node collections index from 0 in Python)."""

    name: str
    source: str
    target: str
    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    delay: np.ndarray

    def __len__(self) -> int:
        return int(self.pre.shape[0])


def synapses(program: Program) -> dict[str, Synapses]:
    """Every connection of a program (a :meth:`Network.build` one: its ``metadata["connections"]``
    groups the projections of one connection; otherwise each ``Sparse`` projection is one) as
    :class:`Synapses`, read from the program's own CSR arrays."""
    groups = program.metadata.get("connections") or {
        n: [n] for n, node in program.nodes() if isinstance(node, Sparse)}
    out = {}
    for name, projs in groups.items():
        parts = []
        for proj in projs:
            node = program.node(proj)
            if not isinstance(node, Sparse):
                raise ValueError(f"connection {name!r}: {proj!r} is a {node.KIND}, not a sparse projection")
            pre = np.repeat(np.arange(node.in_size, dtype=np.int64), np.diff(np.asarray(node.indptr, np.int64)))
            parts.append((pre, np.asarray(node.indices, np.int64), np.asarray(node.data, np.float32),
                          np.full(pre.size, int(node.delay), np.int64)))
        pre, post, weight, delay = (np.concatenate([p[i] for p in parts]) for i in range(4))
        order = np.lexsort((delay, post, pre))
        (src,) = program.sources(projs[0])
        (tgt,) = program.consumers(projs[0])
        out[name] = Synapses(name, src, tgt, pre[order], post[order], weight[order], delay[order])
    return out


def simulate(program: Program, steps: int | None = None, batch: int = 1, backend: str = "numba", inputs: Any = None,
             record: Mapping[str, Any] | None = None, probes: Iterable[str] = ()) -> RunResult:
    """Run ``program`` for ``steps`` steps and ``batch`` samples (a program with inputs: their
    ``[T, B, ...]``) on ``backend``, returning what ``record`` asks (default: the program's
    ``metadata["record"]``, from :meth:`Network.record`)."""
    rec = dict(program.metadata.get("record") or {}) if record is None else dict(record)
    if inputs is not None:
        return run(program, inputs, backend, probes=probes, record=rec)
    return run(program, backend=backend, probes=probes, steps=steps, batch=batch, record=rec)


# ---------------------------------------------------------------------------- conversions
def beta_from_tau(tau_m: float, dt: float) -> float:
    """The membrane decay per step ``exp(-dt / tau_m)`` (exact integration of ``tau dv/dt = -v``, as
    NEST's ``iaf_psc_delta`` and Brian2's ``method='exact'``)."""
    return math.exp(-dt / tau_m)


def rate_to_p(rate_hz: Values, dt_ms: float) -> Any:
    """Spike probability per step of a Poisson rate: ``rate * dt`` (``dt`` in ms), at most 1."""
    p = np.asarray(rate_hz, np.float64) * dt_ms * 1e-3
    if np.any(p > 1) or np.any(p < 0):
        raise ValueError(f"rate {rate_hz} Hz at dt {dt_ms} ms gives a probability per step outside [0, 1]")
    return p


# ---------------------------------------------------------------------------- standard networks
def feed_forward(n: int, fan_out: int, *, layers: int = 1, p_in: float = 0.02, weight: Values = 0.1,
                 delay: Values = 1, beta: Values = 0.9, threshold: Values = 1.0, bias: Values = None,
                 v_init: Values = None, seed: int = 0, record: str | tuple[str, ...] = "counts") -> Program:
    """A Poisson source ``"in"`` of ``n`` neurons (probability ``p_in`` per step) driving ``layers``
    LIF populations ``"l1"``, ``"l2"``, ... of ``n`` neurons, each layer connected to the next by
    :func:`fixed_fan_out` ``(fan_out)`` with ``weight`` and ``delay``; every layer recorded as
    ``record``. Brian2: ``PoissonGroup(n, rate) -> NeuronGroup(n) ... Synapses.connect(j='k for k
    in sample(N_post, size=fan_out)')``; NEST: ``Connect(a, b, {"rule": "fixed_outdegree",
    "outdegree": fan_out})``."""
    net = Network(seed=seed)
    prev = net.poisson("in", n, p_in)
    modes = (record,) if isinstance(record, str) else tuple(record)
    for i in range(1, layers + 1):
        layer = net.population(f"l{i}", n, beta=beta, threshold=threshold, bias=bias, v_init=v_init)
        net.connect(prev, layer, fixed_fan_out(fan_out), weight=weight, delay=delay)
        net.record(layer, *modes)
        prev = layer
    return net.build()


def brunel(n: int, exc_frac: float = 0.8, fan_out: int = 100, g: float = 5.0, J: float = 0.1, *,
           delay: Values = 2, beta: Values = 0.95, threshold: float = 1.0, eta: float = 2.0, J_ext: float = 0.25,
           p_ext: float | None = None, drive: str = "poisson", v_init: Values = None, seed: int = 0,
           record: str | tuple[str, ...] = "counts") -> Program:
    """Brunel's (2000) sparse network of excitatory and inhibitory LIF neurons with delta synapses:
    ``"exc"`` (``round(exc_frac * n)`` neurons) and ``"inh"`` (the rest). Every neuron has exactly
    ``fan_out`` targets, split between the populations in proportion to their sizes
    (:func:`fixed_fan_out`: excitatory weight ``J``, inhibitory ``-g * J``, ``delay`` steps, no
    autapses), both populations recorded as ``record``.

    External drive, ``eta`` times what holds the mean membrane at ``threshold`` (Brunel's
    ``nu_ext / nu_thr``): ``"poisson"``, one generated source per neuron (``"ext_exc"``,
    ``"ext_inh"``, :func:`one_to_one` of weight ``J_ext``, delay 1) spiking with probability
    ``p_ext = eta * threshold * (1 - beta) / J_ext`` per step (the sum of Brunel's ``C_E``
    external inputs as one train: at most one spike per step, so ``p_ext <= 1``), or ``"bias"``, the
    constant input ``eta * threshold * (1 - beta)`` per step. NEST's ``brunel_delta_nest`` example
    with ``fixed_outdegree`` in place of ``fixed_indegree``, ``t_ref = 0`` and ``V_reset = 0``."""
    if not 0 < exc_frac < 1:
        raise ValueError(f"brunel: exc_frac must lie in (0, 1), got {exc_frac}")
    if drive not in ("poisson", "bias"):
        raise ValueError(f"brunel: drive must be 'poisson' or 'bias', got {drive!r}")
    n = _count(n, "brunel: n")
    n_exc = int(round(exc_frac * n))
    n_inh = n - n_exc
    if n_exc < 1 or n_inh < 1:
        raise ValueError(f"brunel: n={n} with exc_frac={exc_frac} leaves an empty population")
    k_exc = int(round(fan_out * n_exc / n))  # targets of each neuron in exc; the rest in inh
    k_inh = fan_out - k_exc
    leak = float(threshold) * (1.0 - float(np.mean(beta)))
    if p_ext is None:
        p_ext = eta * leak / J_ext
    if drive == "poisson" and not 0 <= p_ext <= 1:
        raise ValueError(f"brunel: the external drive needs p_ext = {p_ext:.3g} spikes per step (eta * threshold * "
                         "(1 - beta) / J_ext); at most one fits a step: raise J_ext or lower eta")
    net = Network(seed=seed)
    pops = {"exc": n_exc, "inh": n_inh}
    for name, size in pops.items():
        net.population(name, size, beta=beta, threshold=threshold, v_init=v_init,
                       bias=eta * leak if drive == "bias" else None)
    if drive == "poisson":
        for name, size in pops.items():
            net.poisson(f"ext_{name}", size, p_ext)
            net.connect(f"ext_{name}", name, one_to_one(), weight=J_ext, delay=1)
    for src, w in (("exc", J), ("inh", -g * J)):
        net.connect(src, "exc", fixed_fan_out(k_exc), weight=w, delay=delay)
        net.connect(src, "inh", fixed_fan_out(k_inh), weight=w, delay=delay)
    modes = (record,) if isinstance(record, str) else tuple(record)
    for name in pops:
        net.record(name, *modes)
    return net.build()
