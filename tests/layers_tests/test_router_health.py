"""Router health on hand-made routings, the scorer's normalisation and initialisation,
the z-loss, and CondConv soft mixtures."""

import math

import pytest
import torch

from automoe.layers import (
    CondConv2d,
    MoEConv2d,
    RouterHealth,
    RouterNorm,
    expert_use,
    make_scorer,
    router_z_loss,
    track_expert_usage,
)


def test_every_sample_on_one_expert_is_one_effective_expert():
    health = RouterHealth.from_assignments(torch.zeros(10, 1, dtype=torch.long), 4)
    assert health.effective_experts == pytest.approx(1.0)
    assert health.max_share == 1.0 and health.dropped_share == 0.0
    assert health.expert_use == pytest.approx(0.25)


def test_an_even_spread_uses_every_expert():
    index = torch.arange(12).remainder(4).view(6, 2)  # top-2, each expert 3 times
    health = RouterHealth.from_assignments(index, 4)
    assert health.effective_experts == pytest.approx(4.0)
    assert health.max_share == pytest.approx(0.25)
    assert health.expert_use == pytest.approx(1.0)


def test_shares_and_dropped_assignments():
    # 3 assignments to expert 0, 1 to expert 1, 2 dropped; expert 2 unused
    index = torch.tensor([[0], [0], [0], [1], [-1], [-1]])
    health = RouterHealth.from_assignments(index, 3)
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert health.effective_experts == pytest.approx(math.exp(entropy))
    assert health.max_share == pytest.approx(0.75)
    assert health.dropped_share == pytest.approx(2 / 6)
    assert health.to_dict()["expert_use"] == pytest.approx(math.exp(entropy) / 3)


def test_expert_use_is_the_worst_layer():
    even = RouterHealth.from_shares(torch.ones(4))
    collapsed = RouterHealth.from_shares(torch.tensor([0.0, 5.0]))
    assert expert_use({"a": even, "b": collapsed}) == pytest.approx(0.5)
    assert expert_use({}) is None
    assert RouterHealth.from_shares(torch.zeros(3)).effective_experts == 0.0


def _layer(**kwargs):
    return MoEConv2d(6, 6, 3, num_experts=4, top_k=1, gate="topk", **kwargs)


def test_a_zero_router_on_raw_features_is_reported_collapsed():
    # Zero logits tie every expert for every sample: each goes to the same one.
    layer = _layer(norm="none", init_std=0.0).eval()
    with track_expert_usage(layer) as usage:
        layer(torch.rand(32, 6, 5, 5))
    health = usage.health()[""]
    assert health.effective_experts == pytest.approx(1.0)
    assert health.expert_use == pytest.approx(0.25)


def test_a_standardised_random_router_spreads_samples_at_init():
    torch.manual_seed(0)
    layer = _layer().train()  # default: standardised input, small random logits
    x = torch.rand(64, 6, 5, 5) + 5.0  # a large component common to every sample
    with track_expert_usage(layer) as usage:
        layer(x)
    assert usage.health()[""].expert_use > 0.5
    # the same features without standardisation: the common component decides
    raw = _layer(norm="none", init_std=0.1).train()
    with torch.no_grad():
        raw.router.scorer[-1].weight.copy_(layer.router.scorer[-1].weight)
    with track_expert_usage(raw) as usage:
        raw(x)
    assert usage.health()[""].expert_use < 0.5


@pytest.mark.parametrize("kind", ["linear", "conv", "mlp", "cosine"])
def test_scorer_init_spread(kind):
    torch.manual_seed(0)
    x = torch.rand(128, 8, 4, 4)
    zero = make_scorer(kind, 8, 4, init_std=0.0).train()
    if kind != "cosine":  # a cosine head normalises its rows: any init spreads
        assert zero(x).abs().max() == 0
    spread = make_scorer(kind, 8, 4, init_std=1.0).train()(x)  # (B, E)
    assert spread.std(0).min() > 0.05  # logits differ between samples


def test_router_norm_handles_a_batch_of_one():
    scorer = make_scorer("linear", 8, 4).train()
    assert scorer(torch.rand(1, 8, 3, 3)).shape == (1, 4)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_router_norm_is_batch_norm_without_affine(momentum):
    # RouterNorm calls the functional op itself; it must stay BatchNorm1d(affine=False):
    # outputs, gradients, running statistics and the batch count, in both modes
    torch.manual_seed(0)
    ours, theirs = RouterNorm(6), torch.nn.BatchNorm1d(6, affine=False)
    ours.momentum = theirs.momentum = momentum
    for step in range(3):
        x = torch.randn(16, 6) * 3 + step
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ours.train()(x1), theirs.train()(x2)
        grad = torch.randn_like(y1)
        y1.backward(grad)
        y2.backward(grad)
        torch.testing.assert_close(y1, y2)
        torch.testing.assert_close(x1.grad, x2.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(theirs, name))
    x = torch.randn(5, 6)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
    # a training batch of one sample is standardised with the running statistics, uncounted
    one = torch.randn(1, 6)
    torch.testing.assert_close(ours.train()(one), theirs.eval()(one))
    assert int(ours.num_batches_tracked) == 3


def test_z_loss():
    assert router_z_loss(torch.zeros(5, 4)) == pytest.approx(math.log(4) ** 2)
    big = router_z_loss(torch.full((5, 4), 10.0))
    assert big > router_z_loss(torch.zeros(5, 4))


def test_z_loss_enters_the_aux_loss():
    torch.manual_seed(0)
    layer = _layer(balance_weight=0.0, z_loss_weight=0.5).train()
    layer(torch.rand(8, 6, 5, 5))
    expected = 0.5 * router_z_loss(layer.last_routing.clean_logits)
    torch.testing.assert_close(layer.aux_loss(), expected)
    assert _layer(balance_weight=0.0).train().aux_loss() is None


def test_shared_expert_init_starts_every_expert_equal():
    shared = _layer()
    assert all(torch.equal(shared.weight[0], w) for w in shared.weight[1:])
    independent = _layer(expert_init="independent")
    assert not torch.equal(independent.weight[0], independent.weight[1])


# --- CondConv / DynamicConv


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("experts", [1, 3])
def test_condconv_grouped_path_equals_mixing_the_outputs(stride, experts):
    torch.manual_seed(0)
    layer = CondConv2d(5, 7, 3, stride, num_experts=experts, temperature=2.0).train()
    reference = CondConv2d(5, 7, 3, stride, num_experts=experts, temperature=2.0,
                           dispatch="reference").train()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(6, 5, 9, 9, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = layer(x), reference(x_ref)
    torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad), out_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(layer.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_condconv_temperature_anneals_to_one_and_is_saved():
    layer = CondConv2d(4, 4, 3, num_experts=4, temperature=30.0, anneal=0.5)
    assert float(layer.temperature) == 30.0
    layer.set_training_progress(0.25)
    assert float(layer.temperature) == pytest.approx(15.5)
    layer.set_training_progress(0.5)
    assert float(layer.temperature) == 1.0
    layer.set_training_progress(1.0)
    assert "temperature" in layer.state_dict()
    fresh = CondConv2d(4, 4, 3, num_experts=4, temperature=30.0, anneal=0.5)
    fresh.load_state_dict(layer.state_dict())
    assert float(fresh.temperature) == 1.0


def test_condconv_health_is_its_mean_mixture():
    torch.manual_seed(0)
    layer = CondConv2d(4, 4, 3, num_experts=4, temperature=30.0).eval()
    with track_expert_usage(layer) as usage:  # a hot softmax mixes every kernel evenly
        layer(torch.rand(16, 4, 5, 5))
    assert usage.health()[""].expert_use > 0.99


def test_specialisation_is_the_normalised_mutual_information():
    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score

    from automoe.layers import specialisation

    rng = np.random.default_rng(0)
    for noise in (0, 2, 5, 10):  # from one expert per class pair to nearly random
        experts = rng.integers(0, 4, 600)
        classes = (experts * 2 + rng.integers(0, noise + 1, 600)) % 10
        matrix = np.zeros((4, 10))
        np.add.at(matrix, (experts, classes), 1)
        assert specialisation(matrix) == pytest.approx(
            normalized_mutual_info_score(classes, experts), abs=1e-9)
    assert specialisation(np.eye(5) * 7) == pytest.approx(1.0)  # an expert per class
    assert specialisation(np.ones((4, 10))) == pytest.approx(0.0)  # choice ignores class
    assert specialisation([[5, 5, 5]]) == 0.0  # one expert: collapsed
    assert specialisation(np.zeros((2, 3))) == 0.0  # nothing routed


def test_the_router_input_is_detached_in_training_only():
    """Training: the router's losses must not reach the backbone. Eval: a router-aware
    attack needs the router's gradient with respect to the input."""
    from automoe.layers import TopKRouter

    router = TopKRouter(8, 4, 1, input_grad=False)
    x = torch.randn(16, 8, 5, 5, requires_grad=True)
    router.train()
    assert not router(x).clean_logits.requires_grad or torch.autograd.grad(
        router(x).clean_logits.sum(), x, allow_unused=True)[0] is None
    router.eval()
    (grad,) = torch.autograd.grad(router(x).clean_logits.square().sum(), x)
    assert grad.abs().sum() > 0
    on = TopKRouter(8, 4, 1, input_grad=True).train()
    (grad,) = torch.autograd.grad(on(x).clean_logits.square().sum(), x)
    assert grad.abs().sum() > 0
