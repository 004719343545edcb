"""Lowering one NIR node to IR nodes, for ``nir_import``: the node table and the neuron parameters.

Discretisation: forward Euler with step ``dt`` seconds, as snnTorch's exporter writes it (details
and the exact inversion of rounded parameters in :mod:`spike.compiler.frontends.nir_discretize`):
``beta = 1 - dt/tau``, ``gain = r*dt/tau`` (LIF, LI), ``beta = 1``, ``gain = r*dt`` (IF, I),
CubaLIF ``alpha = 1 - dt/tau_syn``, ``beta = 1 - dt/tau_mem``,
``gain = (r*dt/tau_mem)*(w_in*dt/tau_syn)``. snnTorch writes ``tau = dt/(1-beta)``,
``r = tau/dt``, ``v_leak = 0``: its beta comes back bit for bit and the gain is exactly 1.
The step: a ``dt`` given to the importer (``--dt``) is honoured for every node: NIR's neurons
are continuous-time (tau in seconds), so any step discretises the same graph (the producer's exact
discrete network comes back only at its own step). Without one, a node's ``dt`` metadata (our
exporter writes it), else the graph's ``dt`` metadata, else 1e-4 s. ``discretization="exp"``
(node metadata ``discretization`` wins) integrates LIF and LI exactly instead:
``beta = exp(-dt/tau)``, ``gain = r*(1 - beta)``, as Sinabs computes (CubaLIF is refused in that
mode).

Neuron semantics NIR leaves open (design §3):
- reset mode: node metadata ``reset`` (our exporter writes it), else the ``reset`` argument, else
  ``"zero"`` (NIR's ``v = v_reset``; ``v_reset`` must then be 0). snnTorch's NIR export drops its
  default ``"subtract"``: import its graphs with ``reset="subtract"``.
- ``reset_delay``: metadata, else the ``reset_delay`` argument, default True (snnTorch's default:
  the reset of step t-1's spike lands at step t). With a zero reset both choices give the same
  spikes; with subtract they differ, and True reproduces snnTorch.
- firing: ``v > v_threshold`` (NIR), or ``>=`` when metadata ``fire_ge`` (else the ``fire_ge``
  argument) is true (Sinabs's SingleSpike fires on ``>=``).
- ``v_leak != 0`` becomes a constant current ``(1-beta)*v_leak/gain``, added to the bias of the
  Affine/Linear that feeds the neurons (an error if none does; not for CubaLIF). The membrane
  starts at 0 (NIR leaves the initial state open; Norse starts it at ``v_leak``).
- a per-neuron gain that is not uniform is folded into the weights of the projections feeding
  the neurons (the IR's gain is one number per population).

Nodes: Input, Output, Affine and Linear (Dense), Conv1d (a Conv2d with H = 1), Conv2d, SumPool2d
and AvgPool2d (Pool2d), Flatten (no node: arrays are flat in C order; only shapes change), Scale
(Identity; a Sparse diagonal when the scale varies), LIF, CubaLIF, IF, LI, I (``li`` with
beta 1), Threshold (``lif`` with beta 0 and no reset: spike = input > threshold), Delay (a
projection delay of ``round(delay/dt)`` steps; it must be a whole number of steps, the same for
every element; it goes on the projection before it when that feeds only the Delay, so that
projection's output, bias included, is delayed; else on the projections after it; else it
becomes an Identity projection) and nested NIRGraphs (flattened; inner names become
``outer_inner``: node names lose their dots, which separate a probe's node from its field).
Nested NIRGraphs are flattened before (``nir_read``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spike.compiler.frontends.nir_discretize import (
    decay_exp, decay_from_tau, dt_seconds, gain_exp, gain_from_r, gain_matches,
)
from spike.compiler.frontends.nir_read import (
    FLOAT32_MAX, SHAPE_PARAMS, SUPPORTED_NODES, NIRImportError, PassThrough, as_float32, conv_geometry,
    conv_input_shape, declared_shape, field_array, int_value, meta_value, nir_module, node_failure, node_label,
    node_metadata, per_neuron, pool_geometry, size_of,
)
from spike.compiler.ir.program import MAX_STEPS_DELAY
from spike.compiler.ir.nodes import RESET_MODES, Conv2d, Dense, HostOp, Identity, Input, Output, Pool2d, Population, Sparse

__all__ = ["SUPPORTED_NODES", "DISCRETIZATIONS", "ImportOptions", "DelayMark", "PopExtras", "lower_node"]

DISCRETIZATIONS = ("euler", "exp")


@dataclass
class DelayMark:
    shape: tuple[int, ...]
    steps: int
    into: str = ""  # "consumer": our exporter's Delay in front of a projection


@dataclass
class PopExtras:
    """What a population needs from the projections feeding it (see ``_fold_into_sources``)."""

    gain: np.ndarray | None  # per-neuron gain when not uniform (float64)
    const: np.ndarray | None  # per-neuron constant input (float64), from v_leak


@dataclass
class ImportOptions:
    """``dt``: the step in seconds; ``dt_given``: it was given by the caller (it then wins over
    every ``dt`` metadata)."""

    dt: float
    reset: str | None
    reset_delay: bool
    input_signal: str | None
    fire_ge: bool = False
    discretization: str = "euler"
    dt_given: bool = False


def _node_dt(name: str, node: Any, md: dict, opts: ImportOptions) -> float:
    if opts.dt_given or "dt" not in md:
        return opts.dt
    return dt_seconds(md["dt"], NIRImportError, f"{node_label(name, node)}: metadata ")


def _decay(name: str, node: Any, field: str, n: int, dt: float, exact: bool = False) -> np.ndarray:
    """Per-neuron float32 decay of time constant ``field``: Euler ``1 - dt/tau``, or ``exp(-dt/tau)``
    when ``exact`` (discretization "exp")."""
    tau = per_neuron(name, node, field, field_array(name, node, field), n, np.asarray(getattr(node, field)).dtype)
    if (tau <= 0).any():
        i = int(np.argmax(tau <= 0))
        raise node_failure(name, node, f"field {field} must be > 0 (seconds), got {tau[i]} at neuron {i}")
    if exact:
        return decay_exp(tau, dt)
    d = decay_from_tau(tau, dt)
    if (d < 0).any():
        bad = float(tau[d < 0].min())
        raise NIRImportError(
            f"node {name!r} ({type(node).__name__}): {field} = {bad} s is shorter than the time step "
            f"dt = {dt} s (the decay 1 - dt/{field} would be negative); import with a smaller dt"
        )
    return d.astype(np.float32)


def _gain(name: str, node: Any, field: str, scale: np.ndarray | float, n: int, dt: float, md_gain: Any) -> np.ndarray:
    r = per_neuron(name, node, field, field_array(name, node, field), n, np.asarray(getattr(node, field)).dtype)
    if md_gain is not None and gain_matches(float(md_gain), r, scale, dt):
        return np.full(n, float(md_gain))
    g = gain_from_r(r, scale, dt).astype(np.float64)
    if not (np.abs(g) <= FLOAT32_MAX).all():
        raise node_failure(name, node, f"field {field} gives an input gain beyond float32's range "
                                       f"({np.abs(g).max():g})")
    return g


def _gain_exp(name: str, node: Any, beta: np.ndarray, n: int) -> np.ndarray:
    """Exact integration's input gain ``r*(1 - beta)`` (float32 arithmetic, as Sinabs's)."""
    return gain_exp(per_neuron(name, node, "r", field_array(name, node, "r"), n), beta)


def _population(name: str, node: Any, shape: tuple[int, ...], opts: ImportOptions) -> tuple[Population, PopExtras]:
    nir = nir_module()
    md = node_metadata(node)
    dt = _node_dt(name, node, md, opts)
    n = size_of(shape)
    kind = type(node).__name__
    where = f"{node_label(name, node)}: "
    reset = meta_value(where, md, "reset", "str", opts.reset or "zero")
    if reset not in RESET_MODES:
        raise NIRImportError(f"{where}reset {reset!r} is not one of {', '.join(RESET_MODES)}")
    reset_delay = meta_value(where, md, "reset_delay", "bool", opts.reset_delay)
    fire_ge = meta_value(where, md, "fire_ge", "bool", opts.fire_ge)
    discretization = meta_value(where, md, "discretization", "str", opts.discretization)
    if discretization not in DISCRETIZATIONS:
        raise NIRImportError(f"{where}discretization {discretization!r} is not one of {', '.join(DISCRETIZATIONS)}")
    exact = discretization == "exp"
    md_gain = meta_value(where, md, "gain", "number")
    alpha = None
    const = None
    threshold = None
    if isinstance(node, nir.Threshold):
        model, reset, reset_delay = "lif", "none", False
        beta = np.zeros(n, np.float32)
        gain = np.ones(n)
        threshold = per_neuron(name, node, "threshold", field_array(name, node, "threshold"), n)
    elif isinstance(node, (nir.IF, nir.I)):
        model = "li" if isinstance(node, nir.I) else meta_value(where, md, "model", "str", "if")
        if model not in ("if", "lif", "li") or (model == "li") != isinstance(node, nir.I):
            raise NIRImportError(f"node {name!r} ({kind}): metadata model {model!r} does not fit an {kind} node")
        beta = np.ones(n, np.float32)
        gain = _gain(name, node, "r", 1.0, n, dt, md_gain)
        if isinstance(node, nir.IF):
            threshold = per_neuron(name, node, "v_threshold", field_array(name, node, "v_threshold"), n)
    elif isinstance(node, (nir.LIF, nir.LI)):
        model = "lif" if isinstance(node, nir.LIF) else "li"
        tau = per_neuron(name, node, "tau", field_array(name, node, "tau"), n, np.asarray(node.tau).dtype)
        beta = _decay(name, node, "tau", n, dt, exact)
        gain = _gain_exp(name, node, beta, n) if exact else _gain(name, node, "r", tau, n, dt, md_gain)
        v_leak = per_neuron(name, node, "v_leak", field_array(name, node, "v_leak"), n, np.float64)
        if (v_leak != 0).any():  # the drive (1 - beta)*v_leak, with the decay as recovered (exactly)
            const = (1.0 - beta.astype(np.float64)) * v_leak
        if isinstance(node, nir.LIF):
            threshold = per_neuron(name, node, "v_threshold", field_array(name, node, "v_threshold"), n)
    elif isinstance(node, nir.CubaLIF):
        if exact:
            raise NIRImportError(
                f"node {name!r} (CubaLIF): discretization 'exp' has no CubaLIF form in the IR (its current decays "
                "within the step); import it with discretization='euler'"
            )
        model = "cuba_lif"
        tau_mem = per_neuron(name, node, "tau_mem", field_array(name, node, "tau_mem"), n, np.asarray(node.tau_mem).dtype)
        tau_syn = per_neuron(name, node, "tau_syn", field_array(name, node, "tau_syn"), n, np.asarray(node.tau_syn).dtype)
        beta = _decay(name, node, "tau_mem", n, dt)
        alpha = _decay(name, node, "tau_syn", n, dt)
        gain = _gain(name, node, "r", tau_mem, n, dt, md_gain) * _gain(name, node, "w_in", tau_syn, n, dt, None)
        v_leak = per_neuron(name, node, "v_leak", field_array(name, node, "v_leak"), n, np.float64)
        if (v_leak != 0).any():
            raise NIRImportError(
                f"node {name!r} (CubaLIF): v_leak != 0 is not supported (no constant drive of the membrane in the IR)"
            )
        threshold = per_neuron(name, node, "v_threshold", field_array(name, node, "v_threshold"), n)
    else:  # pragma: no cover - guarded by the caller
        raise NIRImportError(f"node {name!r}: {kind} is not a neuron")
    v_reset = None if getattr(node, "v_reset", None) is None else field_array(name, node, "v_reset")
    if v_reset is not None and reset == "zero" and (v_reset != 0).any():
        raise NIRImportError(
            f"node {name!r} ({kind}): v_reset != 0 is not supported (the IR resets to 0); "
            "use reset='subtract' or 'none' if the graph does not rely on it"
        )
    uniform = bool((gain == gain[0]).all()) if n else True
    pop = Population(
        shape=tuple(shape), model=model, beta=beta, threshold=threshold, alpha=alpha,
        gain=float(gain[0]) if (uniform and n) else 1.0, reset=reset, reset_delay=reset_delay,
        fire_ge=fire_ge,
    )
    return pop, PopExtras(gain=None if uniform else gain, const=const)


def lower_node(name: str, node: Any, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...], opts: ImportOptions):
    """The IR node (or DelayMark / PassThrough) for one NIR node, plus population extras."""
    nir = nir_module()
    md = node_metadata(node)
    kind = type(node).__name__
    where = f"{node_label(name, node)}: "
    src = in_shapes[0] if in_shapes else None
    for s in in_shapes[1:]:
        if size_of(s) != size_of(src):
            raise NIRImportError(f"{where}its inputs have different sizes {in_shapes} (they are summed)")
    if isinstance(node, PassThrough):
        if src is not None and size_of(src) != size_of(out_shape):
            raise NIRImportError(f"{where}its input has size {size_of(src)}, but its shape is {out_shape}")
        return node, None
    if isinstance(node, nir.Input):
        signal = meta_value(where, md, "signal", "str", opts.input_signal or "spike")
        if signal not in ("spike", "real"):
            raise NIRImportError(f"node {name!r} (Input): signal {signal!r} is not 'spike' or 'real'")
        return Input(shape=out_shape, signal=signal), None
    if isinstance(node, nir.Output):
        declared = declared_shape(node.output_type, "output", where)  # kept when its size fits the input's
        shape = declared if (declared and src is not None and size_of(declared) == size_of(src)) else out_shape
        return Output(shape=tuple(shape)), None
    if src is None:
        raise NIRImportError(f"node {name!r} ({kind}): has no input edge")
    delay = meta_value(where, md, "implicit_delay", "int", 0)
    if delay < 0:
        raise NIRImportError(f"{where}metadata implicit_delay must be >= 0, got {delay}")
    ir_kind = meta_value(where, md, "ir_kind", "str", "")
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = as_float32(name, node, "weight", field_array(name, node, "weight"))
        if size_of(src) != w.shape[1]:
            raise NIRImportError(
                f"node {name!r} ({kind}): weight {tuple(w.shape)} expects {w.shape[1]} inputs, its input has "
                f"shape {src} ({size_of(src)} values)"
            )
        bias = None
        if isinstance(node, nir.Affine):
            b = as_float32(name, node, "bias", field_array(name, node, "bias"))
            if b.size not in (1, w.shape[0]):
                raise NIRImportError(f"node {name!r} (Affine): bias has {b.size} values, weight has {w.shape[0]} rows")
            bias = np.ascontiguousarray(np.broadcast_to(b.reshape(-1), (w.shape[0],)), dtype=np.float32)
        if ir_kind == "sparse":
            rows, cols = np.nonzero(w.T)  # CSR over source neurons
            indptr = np.zeros(w.shape[1] + 1, np.int64)
            np.add.at(indptr, rows + 1, 1)
            return Sparse(
                shape=(int(w.shape[0]),), in_shape=(int(w.shape[1]),), delay=delay, indptr=np.cumsum(indptr),
                indices=cols.astype(np.int64), data=w.T[rows, cols].astype(np.float32), bias=bias,
            ), None
        return Dense(shape=(int(w.shape[0]),), in_shape=(int(w.shape[1]),), delay=delay, weight=w, bias=bias), None
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        dims = 1 if isinstance(node, nir.Conv1d) else 2
        in_shape = conv_input_shape(name, node, src, dims)
        if size_of(in_shape) != size_of(src):
            raise NIRImportError(f"node {name!r} ({kind}): expects input {in_shape}, its input has shape {src}")
        in3, _, stride, padding, out3 = conv_geometry(name, node, in_shape, dims)
        w = as_float32(name, node, "weight", field_array(name, node, "weight"))
        if dims == 1:
            w = w[:, :, None, :]
        bias = None
        if meta_value(where, md, "has_bias", "bool", True) and getattr(node, "bias", None) is not None:
            b = as_float32(name, node, "bias", field_array(name, node, "bias")).reshape(-1)
            if b.size not in (1, w.shape[0]):
                raise NIRImportError(f"node {name!r} ({kind}): bias has {b.size} values for {w.shape[0]} output channels")
            bias = np.ascontiguousarray(np.broadcast_to(b, (w.shape[0],)), dtype=np.float32)
        return Conv2d(
            shape=out3, in_shape=in3, delay=delay, weight=np.ascontiguousarray(w), bias=bias,
            stride=stride, padding=padding, groups=int_value(name, node, "groups"),
        ), None
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        kernel, stride, padding, out3 = pool_geometry(name, node, src)
        mode = "sum" if isinstance(node, nir.SumPool2d) else "avg"
        return Pool2d(shape=out3, in_shape=src, delay=delay, mode=mode, kernel=kernel, stride=stride, padding=padding), None
    if isinstance(node, nir.Scale):
        scale = as_float32(name, node, "scale", field_array(name, node, "scale")).astype(np.float64).reshape(-1)
        n = size_of(src)
        shape = out_shape
        if scale.size not in (1, n):
            raise NIRImportError(f"node {name!r} (Scale): scale has {scale.size} values, its input has {n}")
        if ir_kind == "hostop":
            if not (scale == 1).all():
                raise NIRImportError(f"node {name!r} (Scale): a host add must have scale 1")
            return HostOp(shape=shape, op=meta_value(where, md, "op", "str", "add")), None
        if ir_kind != "sparse" and (scale == scale[0]).all():
            return Identity(shape=shape, in_shape=shape, delay=delay, scale=float(scale[0])), None
        data = np.broadcast_to(scale, (n,)).astype(np.float32)
        return Sparse(
            shape=shape, in_shape=shape, delay=delay, indptr=np.arange(n + 1, dtype=np.int64),
            indices=np.arange(n, dtype=np.int64), data=data,
        ), None
    if isinstance(node, nir.Delay):
        d = field_array(name, node, "delay").astype(np.float64).reshape(-1)
        if d.size not in (1, size_of(src)):
            raise NIRImportError(f"{where}delay has {d.size} values, its input has {size_of(src)}")
        dt = _node_dt(name, node, md, opts)
        steps = d / dt
        k = np.round(steps)
        if (np.abs(steps - k) > 1e-6 * np.maximum(1.0, np.abs(k))).any() or (k < 0).any():
            bad = float(d[(np.abs(steps - k) > 1e-6 * np.maximum(1.0, np.abs(k))) | (k < 0)][0])
            raise NIRImportError(
                f"node {name!r} (Delay): delay {bad} s is not a whole non-negative number of time steps of dt = {dt} s"
            )
        if not (k == k[0]).all():
            raise NIRImportError(
                f"node {name!r} (Delay): delays differ between elements ({sorted(set(k.astype(int)))} steps); "
                "the IR has one delay per projection"
            )
        if k[0] > MAX_STEPS_DELAY:
            raise NIRImportError(f"{where}delay {d[0]} s is {k[0]:g} steps of dt = {dt} s; at most "
                                 f"{MAX_STEPS_DELAY} steps")
        return DelayMark(shape=out_shape, steps=int(k[0]), into=meta_value(where, md, "into", "str", "")), None
    if isinstance(node, (nir.LIF, nir.CubaLIF, nir.IF, nir.LI, nir.I, nir.Threshold)):
        shape = src
        arr = np.asarray(getattr(node, SHAPE_PARAMS[kind]))
        if arr.ndim >= 1 and arr.size == size_of(src) and tuple(arr.shape) != tuple(src):
            shape = tuple(int(x) for x in arr.shape)
        return _population(name, node, shape, opts)
    raise NIRImportError(
        f"node {name!r}: NIR node type {kind} is not supported (supported: {', '.join(SUPPORTED_NODES)})"
    )
