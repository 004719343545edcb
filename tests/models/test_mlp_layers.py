"""SpikingMLP's layers have names (``fc1``, ``lif1``, ...), its programs name their nodes after
them, and checkpoints of the old layout (``net.0``, ``net.1``, ...) still load."""
from __future__ import annotations

import pytest
import torch

from spike.compiler import compile as compile_model
from spike.models.mlp import SpikingMLP


@pytest.mark.parametrize("delay", [0, 1])
def test_layers_are_named_and_old_checkpoints_load(delay: int) -> None:
    model = SpikingMLP(8, 3, hidden=(5, 4), dropout=0.1, synaptic_delay=delay)
    assert list(model._modules) == ["flatten", "fc1", "lif1", "dropout1", "fc2", "lif2", "dropout2", "fc3", "lif3"]
    torch.manual_seed(1)
    old = {}  # the same tensors under the keys of the old nn.Sequential layout
    for key, value in SpikingMLP(8, 3, hidden=(5, 4), dropout=0.1, synaptic_delay=delay).state_dict().items():
        layer, _, rest = key.partition(".")
        old[f"net.{list(model._modules).index(layer)}.{rest}"] = value
    assert "net.1.weight" in old or "net.1.module.weight" in old
    assert not model.load_state_dict(old).missing_keys
    for (key, value), old_value in zip(model.state_dict().items(), old.values()):
        assert torch.equal(value, old_value), key


def test_program_nodes_are_the_layer_names() -> None:
    model = SpikingMLP(8, 3, hidden=(5,)).eval()
    x = (torch.rand(4, 2, 8) < 0.5).float()
    program = compile_model(model, x)
    assert [n for n, _ in program.nodes()] == ["x", "fc1", "lif1", "fc2", "lif2", "output"]
    with torch.no_grad():
        assert model(x).shape == (4, 2, 3)
