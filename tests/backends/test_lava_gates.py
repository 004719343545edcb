"""FTWT gates on the lava backend: gated spiking CNNs compiled for Loihi run on Lava in stages
(gate depth + 1 runs per sample) and equal the numba backend exactly (spikes of every population,
masks, conv currents, outputs, operation counts); the plan, the op counting from recordings and
the refusals are checked without Lava."""
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch

from spike.backends import BackendError, run
from spike.backends.lava.backend import lower
from spike.backends.op_counting import count_ops
from spike.backends.routing import add_routing_counts
from spike.compiler import compile as compile_model
from spike.compiler.ir.nodes import Conv2d, Gate, Population
from spike.compiler.ir.program import rebuild_graph
from spike.models.cnn.model import SpikingCNN

from helpers.lava import needs_lava
from helpers.models import digits_like, dyadic_cnn  # dyadic weights: float32 (numba) and Lava's float64 agree

LOIHI_NEURON = dict(synaptic_delay=1, reset="zero", reset_delay=False)  # what Lava's LIF computes


def gated_program(kind: str, T: int = 8, B: int = 2, target: str = "loihi1", trained_delay: int | None = None):
    """``vgg``: conv(gate on the input) -> max pool -> conv(gate on the pool) -> max pool -> fc (gate
    depth 2); ``resnet``: four gated blocks in a chain, window 3 (depth 4). Trained with synaptic
    delay ``trained_delay`` (default: 1 for a Loihi target, else 0; 0 for Loihi: compiled with the
    delays compensated)."""
    if trained_delay is None:
        trained_delay = 1 if target.startswith("loihi") else 0
    neuron = dict(LOIHI_NEURON, synaptic_delay=trained_delay)
    if kind == "vgg":
        model = SpikingCNN("digits", layers=[6, "M", 8, "M"], ftwt=dict(ratio=0.9), **neuron)
    else:
        model = SpikingCNN("digits_resnet", widths=[4, 6, 8], ftwt=dict(ratio=0.9, window=3), **neuron)
    seed, x_seed = ((3, 2) if trained_delay else (2, 1)) if kind == "vgg" else (0, 10)  # vgg: the samples' masks differ
    x = digits_like(T, B, x_seed).numpy()
    program = compile_model(dyadic_cnn(model, seed), torch.from_numpy(x), target=target)
    return program, x


def _gates(program) -> list[str]:
    return [n for n, node in program.nodes() if isinstance(node, Gate)]


# ---------------------------------------------------------------- without Lava
def test_plan_orders_gates_into_stages() -> None:
    for kind, depth in (("vgg", 2), ("resnet", 4)):
        program, _ = gated_program(kind)
        plan = lower(program)
        gates = _gates(program)
        assert [plan.procs[g].kind for g in gates] == ["gate"] * len(gates)
        assert sorted(plan.gate_level.values()) == list(range(depth)) and plan.stages == depth + 1
        for g in gates:
            (pop,) = program.consumers(g)
            assert plan.gated_pops[pop] == g and g not in plan.procs[pop].inputs  # the LIF gets currents only
            convs = [s for s in program.sources(pop) if isinstance(program.node(s), Conv2d)]
            assert convs and all(plan.gated_convs[c] == g for c in convs)


def test_counts_from_recordings_equal_numba_for_gated_programs() -> None:
    for kind, target in (("vgg", "loihi1"), ("resnet", "generic")):
        program, x = gated_program(kind, T=6, B=3, target=target)
        names = [n for n, node in program.nodes() if node.KIND not in ("input", "output")]
        res = run(program, x, backend="numba", probes=names)
        T, B = x.shape[:2]
        values = {n: res.probes[n].reshape(T, B, -1) for n in names}
        values.update({n: x.reshape(T, B, -1) for n in program.inputs})
        masks = {g: res.probes[g][0] for g in _gates(program)}
        assert any((m == 0).any() for m in masks.values())  # the gated counts differ from the plain ones
        for given in (None, masks):  # recomputed with gate_common, or as the lava backend passes them
            counts = count_ops(program, values, T, B, masks=given)
            if program.metadata.get("mapping"):  # compile() maps for a target with cores: routing, as lava adds it
                add_routing_counts(program, values.__getitem__, counts)
            assert list(counts.per_node) == list(res.ops.per_node)
            for name, c in res.ops.per_node.items():
                for key, value in c.items():
                    np.testing.assert_array_equal(counts.per_node[name][key], value, err_msg=f"{kind} {name} {key}")
        assert res.ops.total()["host_flops"] > 0


def test_what_lava_cannot_do_with_gates_is_refused_by_name() -> None:
    program, _ = gated_program("vgg", target="generic")  # delay 0: not for a Loihi target
    with pytest.raises(BackendError, match=r"features_gatedconv_0_conv \(conv2d\): delay 0: .*delay >= 1 on every projection"):
        lower(program)
    program, _ = gated_program("vgg")
    (pop,) = program.consumers(_gates(program)[0])
    node = program.node(pop)
    bad = program.with_graph(rebuild_graph(program, nodes={pop: node.replace(threshold=np.float32(-0.5))}))
    with pytest.raises(BackendError, match=rf"{pop} \(population\): gated by .* negative threshold"):
        lower(bad)
    (conv,) = [s for s in program.sources(pop) if isinstance(program.node(s), Conv2d)]
    late = program.with_graph(rebuild_graph(program, nodes={conv: program.node(conv).replace(delay=2)}))
    with pytest.raises(BackendError, match=rf"{conv} \(conv2d\): delay 2 into a population gated by .*DelaySparse"):
        lower(late)


# ---------------------------------------------------------------- on Lava
@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_gated_cnn_on_lava_equals_numba(kind: str) -> None:
    program, x = gated_program(kind, T=8 if kind == "vgg" else 6, B=2)
    gates = _gates(program)
    pops = [n for n, node in program.nodes() if isinstance(node, Population)]
    convs = [s for g in gates for s in program.sources(program.consumers(g)[0]) if s not in gates]
    probes = pops + gates + convs
    res = {be: run(program, x, backend=be, probes=probes) for be in ("numba", "lava")}
    nb, lv = res["numba"], res["lava"]
    masks = np.concatenate([nb.probes[g][0] for g in gates], axis=1)  # [B, all gated channels]
    assert (masks == 0).any() and (masks == 1).any()  # some channel masked, some kept: not vacuous
    if kind == "vgg":  # and the masks differ between the samples (applied per sample)
        assert (masks[0] != masks[1]).any()
    for name in nb.outputs:
        np.testing.assert_array_equal(lv.outputs[name], nb.outputs[name], err_msg=name)
    for key in probes:  # spikes of every population, the masks at every step, the gated currents
        np.testing.assert_array_equal(lv.probes[key], nb.probes[key], err_msg=key)
    assert list(lv.ops.per_node) == list(nb.ops.per_node) and lv.ops.kinds == nb.ops.kinds
    for name, counts in nb.ops.per_node.items():
        for key, value in counts.items():
            np.testing.assert_array_equal(lv.ops.per_node[name][key], value, err_msg=f"{name} {key}")
    total = nb.ops.total()
    assert total["syn_ops"] > 0 and total["spikes"] > 0 and total["host_flops"] > 0
    plan = lower(program)
    assert lv.timing["stages"] == plan.stages == max(plan.gate_level.values()) + 2
    assert lv.timing["run_s"] > lv.timing["final_stage_run_s"] > 0  # every stage's runs are timed
    assert multiprocessing.active_children() == []  # every Lava process was stopped


@pytest.mark.lava
@needs_lava
@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_gated_cnn_with_compensated_delays_on_lava_equals_numba_and_the_model(kind: str) -> None:
    """Trained without delays, compiled for Loihi: latency > 0, delay-2 shortcuts (resnet), biases from
    their onsets, and each gate reads its source's window from the source's latency on, as numba."""
    program, x = gated_program(kind, T=6, B=2, trained_delay=0)
    assert program.metadata["target_delays"]["mode"] == "compensated" and program.total_latency > 0
    gates = _gates(program)
    assert any(program.latency_of(program.sources(g)[0]) > 0 for g in gates)
    if kind == "resnet":
        assert any(node.delay == 2 for _, node in program.nodes() if hasattr(node, "delay"))
    pops = [n for n, node in program.nodes() if isinstance(node, Population)]
    # spikes and masks; not v: BatchNorm's folded 1/sqrt(var + eps) is not exactly dyadic, so numba's float32
    # and Lava's float64 membranes may differ in the last bit
    probes = pops + gates
    nb = run(program, x, backend="numba", probes=probes)
    lv = run(program, x, backend="lava", probes=probes)
    masks = np.concatenate([nb.probes[g][0] for g in gates], axis=1)
    assert (masks == 0).any() and (masks == 1).any()
    for key in probes:
        np.testing.assert_array_equal(lv.probes[key], nb.probes[key], err_msg=key)
    np.testing.assert_array_equal(lv.output, nb.output)
    generic, _ = gated_program(kind, T=6, B=2, target="generic")
    np.testing.assert_array_equal(lv.output, run(generic, x, backend="numba").output)  # the trained network
    for name, counts in nb.ops.per_node.items():
        for key, value in counts.items():
            np.testing.assert_array_equal(lv.ops.per_node[name][key], value, err_msg=f"{name} {key}")
    assert multiprocessing.active_children() == []
