import math

import pytest
import torch

from automoe.layers import (
    BALANCE_LOSSES,
    NEEDS_NOISE,
    MoEConv2d,
    Routing,
    cv_squared,
    importance_loss,
    load_loss,
    load_probabilities,
    routing_losses,
    stack_routings,
)


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


@pytest.mark.parametrize("balance_loss", BALANCE_LOSSES)
@pytest.mark.parametrize("gate", ["noisy_topk", "topk"])
def test_stacked_layers_give_the_sum_of_their_own_losses(balance_loss, gate):
    # routing_losses stacks layers of equal settings: the same losses and gradients as
    # each layer's aux_loss, summed; a layer of other settings is computed on its own
    if balance_loss in NEEDS_NOISE and gate != "noisy_topk":
        pytest.skip("that loss needs the noisy gate")
    torch.manual_seed(0)
    common = dict(top_k=2, balance_loss=balance_loss, balance_weight=0.3, gate=gate,
                  z_loss_weight=0.01, init_std=1.0)
    layers = [MoEConv2d(3, 3, 3, num_experts=4, **common) for _ in range(3)]
    layers.append(MoEConv2d(3, 3, 3, num_experts=3, **common))  # a group of its own
    x = torch.randn(6, 3, 5, 5)
    targets = torch.randint(0, 10, (6,))

    def run(total_loss):
        for layer in layers:
            layer.zero_grad()
        torch.manual_seed(1)  # the same gate noise in both runs
        h = x
        for layer in layers:
            h = layer(h)
        loss = total_loss(targets)
        loss.backward()
        return loss.detach(), [p.grad.clone() for layer in layers for p in layer.parameters()
                               if p.grad is not None]

    def each(targets):
        return sum(loss for layer in layers if (loss := layer.aux_loss(targets)) is not None)

    def stacked(targets):
        return sum(routing_losses(layers, targets))

    loss_each, grads_each = run(each)
    loss_stacked, grads_stacked = run(stacked)
    assert loss_each != 0
    torch.testing.assert_close(loss_stacked, loss_each)
    assert len(grads_stacked) == len(grads_each) > 0
    for a, b in zip(grads_stacked, grads_each, strict=True):
        torch.testing.assert_close(a, b)


def test_stack_routings_adds_a_leading_layer_dim():
    def make(std):
        return Routing(torch.zeros(5, 2, dtype=torch.long), torch.ones(5, 2),
                       torch.randn(5, 4), torch.randn(5, 4), std)

    stacked = stack_routings([make(torch.ones(5, 4)), make(torch.ones(5, 4))])
    assert stacked.expert_index.shape == (2, 5, 2) and stacked.noise_std.shape == (2, 5, 4)
    assert stack_routings([make(None), make(None)]).noise_std is None
