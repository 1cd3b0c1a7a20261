"""The attacks stop working on a sample once it is fooled, and that changes no result."""

import pytest
import torch
from torch import nn

from automoe.robustness import AttackConfig, attack_batch, robust_accuracy, worst_case_accuracy


class _Counting(nn.Module):
    """Records the batch size of every forward pass of the wrapped model."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []
        self.scoring: list[bool] = []  # whether the pass was a gradient-free check

    def forward(self, x):
        self.sizes.append(x.shape[0])
        self.scoring.append(not torch.is_grad_enabled())
        return self.inner(x)


def _batch(dataset, n=48):
    return (torch.stack([dataset[i][0] for i in range(n)]),
            torch.tensor([dataset[i][1] for i in range(n)]))


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "apgd-dlr", "router-pgd"])
def test_a_sample_attacked_in_a_batch_ends_where_it_ends_alone(trained, attack):
    """Without a random start the attacks are deterministic, and each sample's path depends
    only on its own gradients: so the batch, which drops fooled samples as it goes, must
    give every sample the point it gets when attacked alone. Mixed-up indices would not."""
    model, val_set = trained
    x, y = _batch(val_set)
    cfg = AttackConfig(attack=attack, eps=0.08, step_size=0.02, steps=12, random_start=False)
    together = attack_batch(model, x, y, cfg)
    alone = torch.cat([attack_batch(model, x[i:i + 1], y[i:i + 1], cfg) for i in range(len(y))])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=0)
    with torch.no_grad():
        fooled = model(together).argmax(1) != y
    assert 0 < fooled.sum() < len(y)  # the test needs both kinds of sample


@pytest.mark.parametrize("attack", ["pgd", "apgd-ce", "router-pgd"])
def test_fooled_samples_leave_the_batch(trained, attack):
    model, val_set = trained
    counting = _Counting(model).eval()
    x, y = _batch(val_set)
    cfg = AttackConfig(attack=attack, eps=0.1, step_size=0.03, steps=10)
    adv = attack_batch(counting, x, y, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        fooled = int((model(adv).argmax(1) != y).sum())
    assert fooled > len(y) // 4
    sizes = counting.sizes
    assert sizes[0] == len(y) and min(sizes) <= len(y) - fooled // 2
    assert max(sizes) == len(y)


def test_restarts_attack_only_the_survivors(trained):
    model, val_set = trained
    counting = _Counting(model).eval()
    x, y = _batch(val_set)
    with torch.no_grad():
        right = model(x).argmax(1) == y
    one = AttackConfig(attack="pgd", eps=0.1, step_size=0.03, steps=4)
    single = robust_accuracy(model, torch.utils.data.TensorDataset(x, y), one)
    two = AttackConfig(attack="pgd", eps=0.1, step_size=0.03, steps=4, restarts=2)
    double = robust_accuracy(counting, torch.utils.data.TensorDataset(x, y), two)
    assert double <= single + 1e-9
    # passes: the clean check on all; restart 1's steps on the right ones, then its check;
    # restart 2 from the samples restart 1 left (the same random start as the single run)
    checks = [i for i, scoring in enumerate(counting.scoring) if scoring]
    assert counting.sizes[0] == len(y) and counting.sizes[1] == int(right.sum())
    assert counting.sizes[checks[1]] == int(right.sum())
    assert counting.sizes[checks[1] + 1] == round(single * len(y)) < int(right.sum())


def test_misclassified_samples_count_as_fooled_and_are_not_attacked(trained):
    model, val_set = trained
    counting = _Counting(model).eval()
    data = torch.utils.data.Subset(val_set, range(120))
    no_budget = AttackConfig(attack="apgd-ce", eps=0.0, steps=5)
    report = worst_case_accuracy(counting, data, [no_budget])
    assert report.per_attack[no_budget.describe()] == pytest.approx(report.clean)
    x, y = _batch(val_set, 120)
    with torch.no_grad():
        right = int((model(x).argmax(1) == y).sum())
    assert right < 120  # else the test shows nothing
    assert counting.sizes[0] == 120 and max(counting.sizes[1:]) == right
