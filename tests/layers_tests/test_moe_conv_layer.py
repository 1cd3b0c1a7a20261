import copy

import pytest
import torch
import torch.nn.functional as F

from automoe.layers import MoEConv2d, NoisyTopKRouter, track_expert_usage


@pytest.mark.parametrize("num_experts,k", [(2, 1), (3, 2), (4, 4)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_sparse_layer_equals_reference_layer(num_experts, k, stride, training):
    layer = MoEConv2d(5, 7, 3, stride, num_experts=num_experts, top_k=k, balance_weight=0.1)
    # a trained-looking router, so routing differs between samples
    torch.nn.init.normal_(layer.router.w_gate.weight)
    reference = copy.deepcopy(layer)
    reference.dispatch = "reference"
    layer.train(training)
    reference.train(training)
    x = torch.randn(9, 5, 7, 7)
    torch.manual_seed(1)
    y = layer(x)
    loss = y.square().sum() + (layer.aux_loss if layer.aux_loss is not None else 0)
    loss.backward()
    torch.manual_seed(1)  # same gate noise
    y_ref = reference(x)
    loss_ref = y_ref.square().sum() + (reference.aux_loss if reference.aux_loss is not None else 0)
    loss_ref.backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for (name, p), p_ref in zip(layer.named_parameters(), reference.parameters(), strict=True):
        if p.grad is None:  # gate noise is only used (and trained) in training mode
            assert not training and "w_noise" in name and p_ref.grad is None, name
            continue
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-3, msg=name)
    assert (layer.aux_loss is not None) == training


def test_one_expert_top1_is_the_plain_conv():
    layer = MoEConv2d(3, 4, 3, num_experts=1, top_k=1).eval()
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight[0], None, 1, 1))


def test_router_validates_k_and_noise_only_while_training():
    with pytest.raises(ValueError):
        NoisyTopKRouter(4, 2, 3)
    router = NoisyTopKRouter(4, 3, 2)
    x = torch.randn(5, 4, 3, 3)
    router.eval()
    r = router(x)
    assert r.noise_std is None and torch.equal(r.clean_logits, r.noisy_logits)
    assert r.expert_index.shape == (5, 2)
    # distinct experts per sample
    assert (r.expert_index[:, 0] != r.expert_index[:, 1]).all()
    router.train()
    r = router(x)
    assert r.noise_std is not None
    torch.testing.assert_close(r.noise_std, torch.full_like(r.noise_std, 1e-2))


def test_usage_tracking_counts_every_routed_sample():
    layer = MoEConv2d(3, 4, 3, num_experts=4, top_k=2).eval()
    torch.nn.init.normal_(layer.router.w_gate.weight)
    model = torch.nn.Sequential(layer)
    with track_expert_usage(model) as usage:
        model(torch.randn(10, 3, 5, 5))
        model(torch.randn(6, 3, 5, 5))
    counts = usage["0"]
    assert len(counts) == 4 and sum(counts) == (10 + 6) * 2
    assert layer.usage_counts is None  # tracking off again
