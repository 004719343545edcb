"""The Lava process graph of a plan: every ``LavaProc`` built as a lava-nc process and connected.

One :class:`LavaGraph` per run of a batch: ``lava.proc.io.source.RingBuffer`` sources holding the
whole batch (every sample once per stage, module ``gates``), Dense/Sparse (and their Delay forms),
Conv, LIF, and our processes (``procs``: ``HostAdd``, ``FTWTGate``, ``FusedBlock``), connected as
the IR's edges, with reshape/transpose ports between the flat layout and Lava's ``(W, H, C)``
image layout. The batch runs one sample at a time through one process graph, whose state (``u``,
``v``, the synapses' buffered currents: ``LavaGraph.resets``) is reset between samples (host mode:
all samples side by side, ``lanes`` wide, in one run: synapses repeated once per sample as a
``Sparse``, LIF parameters tiled). Lava is imported only here and in ``run`` and ``procs``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from spike.backends.lava.fusion import FusedSpec
from spike.backends.lava.plan import LavaPlan
from spike.backends.registry import BackendError
from spike.compiler.ir.program import Program

__all__ = ["LavaGraph"]


class LavaGraph:
    """The Lava processes of one plan, for one batch: built, run sample by sample, read."""

    def __init__(self, program: Program, plan: LavaPlan, arrays: dict[str, np.ndarray], steps: int, batch: int,
                 reps: int = 1, record: frozenset[str] = frozenset(), record_v: frozenset[str] = frozenset()) -> None:
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import DelayDense, Dense
        from lava.proc.io.source import RingBuffer as Source
        from lava.proc.lif.process import LIF
        from lava.proc.sparse.process import DelaySparse, Sparse
        from lava.utils.weightutils import SignMode

        from spike.backends.lava.procs import FTWTGate, FusedBlock, HostAdd, PyFTWTGateFloat, fused_model, host_model

        self.program, self.plan, self.T, self.B = program, plan, steps, batch
        self.fixed = plan.precision == "fixed"
        # samples side by side (host mode: ``lanes`` = B, one pass) or one after another (``passes`` = B)
        self.lanes, self.passes = (batch, 1) if plan.batched else (1, batch)
        lanes = self.lanes
        span = steps * self.passes * reps  # every pass runs ``reps`` times (one run per stage)
        self.span = span
        self.procs: dict[str, Any] = {}
        self.model_map: dict[Any, type] = {}
        # (process, var name, value) set between samples: zeros, a LIF's v its initial v (``v_init``)
        self.resets: list[tuple[Any, str, Any]] = []
        self.records: dict[str, list[tuple[str, str, int]]] = {}  # fused block -> (IR node, "out"/"v", rows)
        dt = np.int32 if self.fixed else np.float64
        for key, p in plan.procs.items():
            a = dict(p.args)
            if a.get("sign_mode") == "mixed":
                a["sign_mode"] = SignMode.MIXED
            if p.kind == "source":  # [T, B, n] -> [lanes*n, passes*reps*T]: sample = pass*lanes + lane
                x = arrays[key].reshape(steps, self.passes, lanes, -1).transpose(2, 3, 1, 0)
                x = np.broadcast_to(x[:, :, :, None, :], (*x.shape[:3], reps, steps))
                data = np.ascontiguousarray(x.reshape(-1, span)).astype(dt)
                proc = Source(data=data)
            elif p.kind in ("dense", "sparse", "delay_dense", "delay_sparse"):
                if lanes > 1:  # the same synapses once per lane
                    import scipy.sparse as sp

                    a["weights"] = sp.kron(sp.identity(lanes, format="csr"), sp.csr_matrix(a["weights"]), format="csr")
                    kind = "delay_sparse" if p.kind.startswith("delay_") else "sparse"
                else:
                    kind = p.kind
                if kind == "delay_dense":  # every synapse ``delays`` steps beyond Dense's one
                    a["delays"] = np.full(np.shape(a["weights"]), int(a["delays"]), dtype=int)
                elif kind == "delay_sparse":  # the weights' sparsity pattern, each entry ``delays``
                    import scipy.sparse as sp

                    w = sp.csr_matrix(a["weights"])
                    w.eliminate_zeros()
                    d = w.copy().astype(int)
                    d.data[:] = int(a["delays"])
                    a["weights"], a["delays"] = w, d
                proc = {"dense": Dense, "sparse": Sparse, "delay_dense": DelayDense, "delay_sparse": DelaySparse}[kind](**a)
                self.resets.append((proc, "a_buff", 0))
            elif p.kind == "conv":
                proc = Conv(**a)
                self.resets.append((proc, "a_buf", 0))
            elif p.kind == "lif":
                a.pop("spiking", None)
                n = self._size_of(key)
                a = {k: (v.flat[0].item() if isinstance(v, np.ndarray) and v.size and (v == v.flat[0]).all()
                         and k in ("du", "dv", "vth") else v) for k, v in a.items()}
                a = {k: (np.tile(v, lanes) if isinstance(v, np.ndarray) and v.ndim == 1 and v.size == n else v)
                     for k, v in a.items()}
                proc = LIF(shape=(n * lanes,), **a)
                self.resets += [(proc, "u", 0), (proc, "v", a.get("v", 0))]
            elif p.kind == "host":
                proc = HostAdd(shape=(self._size_of(key),), buffer=span)
                self.model_map[proc] = host_model(a["op"], plan.precision)
            elif p.kind == "fused":
                spec: FusedSpec = a["spec"]
                rec = [(j, m.name, what) for j, m in enumerate(spec.members) for what, wanted in
                       (("out", record), ("v", record_v)) if m.name in wanted
                       and (what == "out" or (m.kind == "population" and m.node.model != "li"))]
                self.records[key] = [(name, what, lanes * spec.members[j].node.size) for j, name, what in rec]
                proc = FusedBlock(spec=spec, lanes=lanes, record=[(j, what) for j, _, what in rec], period=steps,
                                  buffer=span, in_sizes=[program.node(s).size * lanes for s in spec.inputs],
                                  out_sizes=[spec.members[j].node.size * lanes for j in spec.outputs],
                                  name=f"fused {key}")
                self.model_map[proc] = fused_model(len(spec.inputs), len(spec.outputs))
            elif p.kind == "gate":  # the source's window from its latency on (gate_common._window_values)
                (src,) = p.inputs
                trained = steps - program.total_latency
                window = trained if a["window"] <= 0 else min(a["window"], trained)
                proc = FTWTGate(n_in=program.node(src).size, weight=a["weight"], bias=a["bias"], window=window,
                                period=steps, start=program.latency_of(src))
                self.model_map[proc] = PyFTWTGateFloat
            else:  # pragma: no cover - the planner makes only these kinds
                raise BackendError(f"internal: unknown Lava process kind {p.kind!r}")
            self.procs[key] = proc
        for key, p in plan.procs.items():
            if not p.inputs:
                continue
            proc = self.procs[key]
            if p.kind == "fused":  # one port per source
                for i, src in enumerate(p.inputs):
                    self._port(src, "flat", None).connect(getattr(proc, f"in{i}"))
                continue
            dst = proc.a_in if p.kind in ("lif", "host", "gate") else proc.s_in
            for src in p.inputs:
                self._port(src, p.in_layout, p.chw_in).connect(dst)

    def _size_of(self, key: str) -> int:
        return self.program.node(key).size  # neurons and host ops are keyed by their IR node

    def _native(self, name: str) -> tuple[Any, str, tuple[int, int, int] | None]:
        key = self.plan.output_proc[name]
        p = self.plan.procs[key]
        proc = self.procs[key]
        if p.kind == "fused":
            spec = p.args["spec"]
            return getattr(proc, f"out{spec.outputs.index(spec.index(name))}"), "flat", None
        port = proc.a_out if p.kind in ("dense", "sparse", "conv", "delay_dense", "delay_sparse") else proc.s_out
        return port, p.out_layout, p.chw_out

    def _port(self, name: str, layout: str, chw: tuple[int, int, int] | None) -> Any:
        """The output port of IR node (or process key) ``name`` in ``layout``."""
        if name not in self.plan.output_proc:  # an internal process key (max pool's sum)
            p = self.plan.procs[name]
            port, native, chw_native = self.procs[name].a_out, p.out_layout, p.chw_out
        else:
            port, native, chw_native = self._native(name)
        if native == layout:
            return port
        if native == "whc":  # (W, H, C) -> flat C-order (C, H, W)
            C, H, W = chw_native
            return port.transpose([2, 1, 0]).reshape((C * H * W,))
        C, H, W = chw
        return port.reshape((C, H, W)).transpose([2, 1, 0])
