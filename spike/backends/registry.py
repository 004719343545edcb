"""Backends register by name; each declares its precisions and its kernels, one per node kind and
variant.

A kernel is registered for ``(kind, variant)``: variant ``"plain"`` runs a node as the IR defines
it, variant ``"gated"`` runs a node that an FTWT gate masks (``Program.gated``, recorded by
``spike.compiler.passes.gates``). :func:`node_variants` says which variant each node needs; the
engine picks every node's kernel from it once per run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from spike.compiler.ir.hostops import HOST_OPS
from spike.compiler.ir.program import Program, ProgramError
from spike.compiler.ir.validate import check_gates
from spike.compiler.passes.gates import gate_record, gated_nodes
from spike.compiler.ir.nodes import Gate, HostOp, Population, Projection
from spike.compiler.ir.precision import check_fixed_point, program_precision

OP_KEYS = ("syn_ops", "macs", "dense_ops", "pool_ops", "neuron_updates", "spikes", "host_flops")
ENGINE_KINDS = ("input", "output")  # handled by the engine itself, not by kernels
PLAIN, GATED = "plain", "gated"  # kernel variants


class BackendError(RuntimeError):
    """A program this backend cannot run; raised before any step executes."""


class Kernel(Protocol):
    def __call__(self, ctx: "Any", t0: int, t1: int) -> None: ...


@dataclass
class Backend:
    """One execution backend: array module hooks plus a kernel per node kind and variant."""

    name: str
    precisions: frozenset[str]
    kernels: dict[tuple[str, str], Kernel] = field(default_factory=dict)  # (kind, variant) -> kernel
    # hooks filled by the backend module
    zeros: Callable[[tuple[int, ...], str], Any] | None = None
    to_numpy: Callable[[Any], Any] | None = None
    from_numpy: Callable[[Any], Any] | None = None
    available: Callable[[], str | None] = lambda: None  # None = usable, else why not
    # A backend that executes the whole program itself (e.g. lava) instead of per-node kernels:
    # ``runner(program, inputs, signal_probes, membrane_probes, current_probes) -> RunResult``,
    # called by ``engine.run`` after its checks, with ``inputs`` validated ``[T, B, *shape]`` arrays.
    runner: Callable[..., Any] | None = None
    host_ops: frozenset[str] = frozenset(HOST_OPS)  # HostOp.op values the kernels execute (host_kernels)
    # ``run_context(batch)``: a context manager the engine holds while the kernels run (e.g. the
    # numba backend runs a batch of one on one thread: its kernels are parallel over samples).
    run_context: Callable[[int], Any] | None = None

    def kernel(self, kind: str, variant: str = PLAIN) -> Callable[[Kernel], Kernel]:
        """Decorator registering the kernel of one node kind and variant (once: a registered kernel
        is never replaced)."""

        def register(fn: Kernel) -> Kernel:
            if (kind, variant) in self.kernels:
                raise ValueError(f"backend {self.name!r} already has a {variant} kernel for {kind!r}")
            self.kernels[kind, variant] = fn
            return fn

        return register

    @property
    def kinds(self) -> list[str]:
        """The node kinds with a plain kernel."""
        return sorted({kind for kind, variant in self.kernels if variant == PLAIN})

    def check(self, program: Program) -> None:
        """Raise BackendError naming every node this backend cannot execute."""
        precision = self.check_usable(program)
        self._check_gates(program)
        variants = node_variants(program)
        bad = [
            f"{n} ({node.KIND})" if variants[n] == PLAIN else f"{n} ({node.KIND}, {variants[n]})"
            for n, node in program.nodes()
            if (node.KIND, variants[n]) not in self.kernels and node.KIND not in ENGINE_KINDS
        ]
        if bad:
            raise BackendError(
                f"backend {self.name!r} cannot execute node(s) {', '.join(bad)}; "
                f"it supports {self.kinds}"
                + "".join(f", {kind} ({variant})" for kind, variant in sorted(self.kernels) if variant != PLAIN)
            )
        if precision == "fixed":
            try:
                check_fixed_point(program)
            except ProgramError as e:
                raise BackendError(f"backend {self.name!r} cannot execute this fixed-point program: {e}") from None
        bad = [f"{name} ({why})" for name, why in self._node_problems(program, precision)]
        if bad:
            raise BackendError(f"backend {self.name!r} cannot execute node(s) {', '.join(bad)}")

    def check_usable(self, program: Program) -> str:
        """The program's precision; BackendError when this backend is not usable here or does not
        support that precision."""
        why = self.available()
        if why:
            raise BackendError(f"backend {self.name!r} is not usable here: {why}")
        precision = program_precision(program)
        if precision not in self.precisions:
            raise BackendError(
                f"backend {self.name!r} supports precisions {sorted(self.precisions)}, "
                f"the program is {precision!r}"
            )
        return precision

    def _check_gates(self, program: Program) -> None:
        """The FTWT gate rules (``validate.check_gates``), and a gate record that fits the graph."""
        if not any(isinstance(node, Gate) for _, node in program.nodes()):
            return
        try:
            check_gates(program)
        except ProgramError as e:
            raise BackendError(f"backend {self.name!r} cannot execute this program: {e}") from None
        if program.gated and dict(program.gated) != gated_nodes(program):
            raise BackendError(f"backend {self.name!r}: the program's gate record (Program.gated) does not match its "
                               "graph; run spike.compiler.passes.gates.record_gates after changing the graph")

    def _node_problems(self, program: Program, precision: str) -> list[tuple[str, str]]:
        """Fields of otherwise supported nodes that no kernel of this backend executes."""

        problems = []
        for name, node in program.nodes():
            if isinstance(node, HostOp) and node.op not in self.host_ops:
                problems.append((name, f"hostop {node.op!r}; supported: {sorted(self.host_ops)}"))
            elif isinstance(node, Population) and node.precision != precision:
                problems.append((name, f"population precision {node.precision!r} in a {precision} program"))
            elif isinstance(node, Projection):
                srcs = program.sources(name)
                if len(srcs) != 1:
                    problems.append((name, f"{node.KIND} needs exactly one source, has {len(srcs)}"))
                elif program.node(srcs[0]).size != node.in_size:
                    problems.append((name, f"{node.KIND} expects {node.in_size} inputs, source "
                                           f"{srcs[0]!r} has {program.node(srcs[0]).size}"))
                if node.delay < 0:
                    problems.append((name, f"negative delay {node.delay}"))
        return problems


def node_variants(program: Program) -> dict[str, str]:
    """The kernel variant of every node: ``GATED`` for the nodes an FTWT gate masks (the program's
    gate record), ``PLAIN`` for the others."""
    gated = gate_record(program)
    return {name: GATED if name in gated else PLAIN for name in program.graph.nodes}


_BACKENDS: dict[str, Backend] = {}
_LOADERS: dict[str, str] = {
    "torch": "spike.backends.torch.backend",
    "numba": "spike.backends.numba.backend",
    "cuda": "spike.backends.cuda.backend",
    "lava": "spike.backends.lava.backend",
}


def register_backend(backend: Backend) -> Backend:
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        if name not in _LOADERS:
            raise BackendError(f"unknown backend {name!r}; choose one of {sorted(_LOADERS)}")
        import importlib

        importlib.import_module(_LOADERS[name])
    return _BACKENDS[name]


def backend_names() -> list[str]:
    return sorted(_LOADERS)
