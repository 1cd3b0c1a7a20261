import math

import pytest
import torch

from automoe.layers import cv_squared, importance_loss, load_loss, load_probabilities


def test_cv_squared_matches_definition():
    v = torch.tensor([1.0, 2.0, 3.0, 6.0])
    mean = 3.0
    var = ((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 4
    assert cv_squared(v).item() == pytest.approx(var / mean**2)
    assert cv_squared(torch.ones(5)).item() == pytest.approx(0.0)
    assert cv_squared(torch.tensor([4.0])).item() == 0.0


def test_importance_loss_on_hand_made_batch():
    # 3 samples, 2 experts: importance = (0.9 + 0.2 + 0.5, 0.1 + 0.8 + 0.5) = (1.6, 1.4)
    gates = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    expected = ((0.1**2 + 0.1**2) / 2) / 1.5**2
    assert importance_loss(gates).item() == pytest.approx(expected, rel=1e-5)


def test_load_probabilities_match_direct_computation():
    clean = torch.tensor([[1.0, 0.0, -1.0]])
    noisy = torch.tensor([[1.2, 0.3, -0.5]])
    std = torch.tensor([[0.5, 1.0, 2.0]])
    p = load_probabilities(clean, noisy, std, top_k=1)

    def phi(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    # expert 0 is selected: it must beat the best other noisy logit, 0.3
    # experts 1, 2 are not: they must beat the current k-th largest, 1.2
    expected = [phi((1.0 - 0.3) / 0.5), phi((0.0 - 1.2) / 1.0), phi((-1.0 - 1.2) / 2.0)]
    torch.testing.assert_close(p, torch.tensor([expected]))
    loss = load_loss(clean, noisy, std, top_k=1)
    torch.testing.assert_close(loss, cv_squared(torch.tensor(expected)))


def test_load_needs_k_below_experts():
    with pytest.raises(ValueError):
        load_probabilities(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), top_k=2)


def test_switch_loss_on_hand_made_batch():
    from automoe.layers import switch_loss

    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.2, 0.8]])
    # top choices: 0, 0, 1 -> f = (2/3, 1/3); P = (0.5, 0.5)
    expected = 2 * (2 / 3 * 0.5 + 1 / 3 * 0.5)
    assert switch_loss(probs).item() == pytest.approx(expected)


def test_entropy_loss_on_hand_made_batch():
    from automoe.layers import entropy_loss

    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # confident and balanced: -log 2
    assert entropy_loss(probs).item() == pytest.approx(-math.log(2))
    uniform = torch.full((3, 4), 0.25)  # unconfident: H(p) - H(mean) = 0
    assert entropy_loss(uniform).item() == pytest.approx(0.0, abs=1e-6)


def test_supervised_router_loss_targets_y_mod_e():
    from automoe.layers import supervised_router_loss

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    targets = torch.tensor([3, 5])  # -> experts 0 and 2
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2]))
    torch.testing.assert_close(supervised_router_loss(logits, targets), expected)
