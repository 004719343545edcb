"""Node names come from the module names (``fc1``, ``lif1``); a container index is named by the
layer's class and the index (``linear_0``, ``leaky_1``), never a bare number."""
from __future__ import annotations

import snntorch as snn
import torch
from torch import nn

from spike.compiler import compile as compile_model
from spike.compiler.frontends.torch_fx import layer_kind, node_name
from spike.layers import Delayed, TimeDistributed
from spike.neurons import LIF


class Named(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.lif1 = snn.Leaky(beta=0.5, init_hidden=True)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3), snn.Leaky(beta=0.5, init_hidden=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lif1(self.conv1(x)))


def _names(program) -> list[str]:
    return [name for name, _ in program.nodes()]


def test_attribute_names_are_kept_and_indices_named_by_class() -> None:
    program = compile_model(Named(), torch.zeros(2, 1, 6, 6))
    assert _names(program) == ["x", "conv1", "lif1", "head_linear_1", "head_leaky_2", "output"]


def test_a_plain_sequential_names_every_layer_by_what_it_is() -> None:
    net = nn.Sequential(nn.Linear(4, 6), snn.Leaky(beta=0.5, init_hidden=True), nn.Linear(6, 2),
                        snn.Leaky(beta=0.5, init_hidden=True))
    program = compile_model(net, torch.zeros(3, 4))
    assert [n for n in _names(program) if program.node(n).KIND != "input"] == [
        "linear_0", "leaky_1", "linear_2", "leaky_3", "output"]
    assert not any(n.isdigit() for n in _names(program))


def test_wrappers_are_named_after_the_layer_they_wrap() -> None:
    net = nn.Sequential(Delayed(TimeDistributed(nn.Linear(4, 3)), 1), LIF(beta=0.5),
                        nn.Sequential(nn.Linear(3, 2), LIF(beta=0.5)))
    assert layer_kind(net[0]) == "linear"
    assert node_name(net, "0") == "linear_0"
    assert node_name(net, "0.module.module") == "linear_0"  # wrapped attributes add nothing
    assert node_name(net, "2.1") == "sequential_2_lif_1"
    assert node_name(net, "1.recurrent") == "lif_1_recurrent"  # a part the lowering adds is kept
    assert node_name(net, "x") == "x"  # not a module: as it is
    program = compile_model(net, torch.zeros(5, 2, 4))
    assert _names(program)[1:] == ["linear_0", "lif_1", "sequential_2_linear_0", "sequential_2_lif_1", "output"]
    assert program.node("linear_0").delay == 1


def test_snntorch_tutorial_returns_name_their_populations_by_node_name() -> None:
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 3), snn.Leaky(beta=0.5)])

        def forward(self, x: torch.Tensor):
            mem = self.layers[1].init_leaky()
            spk_rec, mem_rec = [], []
            for step in range(x.shape[0]):
                spk, mem = self.layers[1](self.layers[0](x[step]), mem)
                spk_rec.append(spk)
                mem_rec.append(mem)
            return torch.stack(spk_rec), torch.stack(mem_rec)

    program = compile_model(Loop(), torch.zeros(4, 2, 4))
    returns = program.metadata["snntorch_returns"]
    assert returns[1]["population"] == "layers_leaky_1" and returns[1]["probe"] == "layers_leaky_1.v"
    assert "layers_linear_0" in program.graph
