"""Hand-made counts and a small program for the energy and plot tests."""
from __future__ import annotations

import numpy as np

from spike.backends import OpCounts
from spike.compiler.ir.nodes import Dense, HostOp, Input, Output, Population
from spike.compiler.ir.program import ProgramBuilder


def small_program():
    b = ProgramBuilder()
    b.add("x", Input(shape=(4,)))
    b.add("fc", Dense(shape=(6,), in_shape=(4,), weight=np.ones((6, 4), np.float32)), "x")
    b.add("h", Population(shape=(6,), beta=np.full(6, 0.9, np.float32), threshold=np.ones(6, np.float32)), "fc")
    b.add("add", HostOp(shape=(6,), op="add"), ["h"])
    b.add("out", Output(shape=(6,)), "add")
    return b.build()


def counts(routing=True):
    """Two samples of hand-made counts (per sample, summed over steps)."""
    ops = OpCounts()
    zero = np.zeros(2, np.int64)
    base = {k: zero.copy() for k in ("syn_ops", "macs", "dense_ops", "neuron_updates", "spikes", "host_flops")}
    ops.per_node["fc"] = {**base, "syn_ops": np.array([30, 50]), "macs": np.array([4, 0]), "dense_ops": np.array([240, 240])}
    ops.per_node["h"] = {**base, "neuron_updates": np.array([60, 60]), "spikes": np.array([10, 20])}
    ops.per_node["add"] = {**base, "host_flops": np.array([12, 12])}
    if routing:
        for name, (hops, mem) in {"fc": ([7, 9], [30.0, 50.0]), "h": ([0, 0], [0.0, 0.0]), "add": ([5, 3], [0.0, 0.0])}.items():
            ops.per_node[name].update(spikes_routed_local=np.array([1, 1]), spikes_routed_hops=np.array(hops),
                                      syn_mem_reads_bytes=np.array(mem))
    ops.kinds.update(fc="dense", h="population", add="hostop")
    return ops
