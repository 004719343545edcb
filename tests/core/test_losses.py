import pytest
import torch
import torch.nn.functional as F
import snntorch.functional as SF

from spike.losses import (
    accuracy_from_logits,
    accuracy_from_spikes,
    count_mse,
    membrane_cross_entropy,
    rate_cross_entropy,
)

T, B, C = 10, 6, 5


def _spikes(seed=0, t=T):
    g = torch.Generator().manual_seed(seed)
    # a differentiable leaf with binary values, as surrogate-gradient spikes look in the forward pass
    return (torch.rand(t, B, C, generator=g) < 0.4).float().requires_grad_(True)


def _targets(seed=0):
    return torch.randint(0, C, (B,), generator=torch.Generator().manual_seed(seed))


def _value_and_grad(fn, spikes, targets):
    s = spikes.detach().clone().requires_grad_(True)
    loss = fn(s, targets)
    loss.sum().backward()
    return loss.detach(), s.grad


def test_rate_cross_entropy_equals_snntorch_ce_count_loss():
    for seed in range(3):
        s, y = _spikes(seed), _targets(seed)
        ours, g_ours = _value_and_grad(rate_cross_entropy, s, y)
        theirs, g_theirs = _value_and_grad(SF.ce_count_loss(), s, y)
        assert ours.shape == () and torch.allclose(ours, theirs.reshape(()), rtol=1e-6, atol=0)
        assert torch.allclose(g_ours, g_theirs, rtol=1e-6, atol=1e-8)
    s, y = _spikes(1), _targets(1)
    per_sample = rate_cross_entropy(s, y, reduction="none")
    assert torch.allclose(per_sample, SF.ce_count_loss(reduction="none")(s, y))


@pytest.mark.parametrize("rates", [(0.8, 0.2), (1.0, 0.0), (0.75, 0.25), (0.7, 0.3)])
@pytest.mark.parametrize("t", [10, 25])
def test_count_mse_equals_snntorch(rates, t):
    correct, incorrect = rates
    s, y = _spikes(2, t), _targets(2)
    ours, g_ours = _value_and_grad(lambda a, b: count_mse(a, b, correct, incorrect), s, y)
    theirs, g_theirs = _value_and_grad(SF.mse_count_loss(correct_rate=correct, incorrect_rate=incorrect), s, y)
    assert torch.allclose(ours, theirs.reshape(()), rtol=1e-6, atol=0)
    assert torch.allclose(g_ours, g_theirs, rtol=1e-6, atol=1e-9)


def test_count_mse_zero_at_target_counts():
    y = torch.tensor([0, 3])
    s = torch.zeros(10, 2, 4)
    s[:8, 0, 0] = 1
    s[:2, 0, 1:] = 1
    s[:8, 1, 3] = 1
    s[:2, 1, :3] = 1
    assert count_mse(s, y) == 0
    with pytest.raises(ValueError):
        count_mse(s, y, correct_rate=0.2, incorrect_rate=0.8)


def test_membrane_cross_entropy():
    mem = torch.randn(T, B, C, generator=torch.Generator().manual_seed(0), requires_grad=True)
    y = _targets()
    assert torch.equal(membrane_cross_entropy(mem, y), F.cross_entropy(mem[-1], y))
    assert torch.equal(membrane_cross_entropy(mem, y, over_time="mean"), F.cross_entropy(mem.mean(0), y))
    ours = membrane_cross_entropy(mem, y, over_time="max")
    assert torch.allclose(ours, SF.ce_max_membrane_loss()(mem, y))
    ours.backward()
    assert mem.grad is not None and mem.grad[:-1].abs().sum() > 0
    with pytest.raises(ValueError, match="over_time"):
        membrane_cross_entropy(mem, y, over_time="first")


def test_accuracies():
    y = torch.tensor([0, 1, 2, 2])
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [1, 0, 0], [0, 0, 5]])
    assert accuracy_from_logits(logits, y) == 0.75
    spikes = torch.zeros(4, 4, 3)
    spikes[:, 0, 0] = 1
    spikes[:3, 1, 1] = 1
    spikes[:, 2, 0] = 1  # wrong
    spikes[:2, 3, 2] = 1
    spikes[0, 3, 1] = 1
    assert accuracy_from_spikes(spikes, y) == 0.75
    s, t = _spikes(4), _targets(4)
    assert accuracy_from_spikes(s, t) == pytest.approx(SF.accuracy_rate(s.detach(), t))


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\[T, B, C\]"):
        rate_cross_entropy(torch.zeros(B, C), torch.zeros(B, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        count_mse(torch.zeros(T, B, C), torch.zeros(B + 1, dtype=torch.long))
