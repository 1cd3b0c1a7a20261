import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from automoe.layers import (
    BALANCE_LOSSES,
    MoEConv2d,
    TopKRouter,
    balancing_loss,
    global_avg_pool,
    track_expert_usage,
)

ROUTINGS = [
    dict(gate="noisy_topk"),
    dict(gate="topk", scorer="conv"),
    dict(gate="vmoe", scorer="mlp"),
    dict(gate="noisy_topk", capacity_factor=0.75, overflow="reassign"),
    dict(gate="topk", capacity_factor=0.5, overflow="drop", batch_priority=True),
    dict(gate="noisy_topk", gate_softmax="topk", capacity_factor=0.5, overflow="drop"),
]


def _trained_router(layer):
    for m in layer.router.scorer.modules():  # routing that differs between samples
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight)


@pytest.mark.parametrize("num_experts,k", [(2, 1), (3, 2), (4, 4)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("routing", ROUTINGS, ids=lambda r: "-".join(map(str, r.values())))
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("dispatch", ["sparse", "grouped", "padded"])
def test_sparse_layer_equals_reference_layer(num_experts, k, stride, routing, training,
                                             dispatch):
    layer = MoEConv2d(5, 7, 3, stride, num_experts=num_experts, top_k=k, balance_weight=0.1,
                      capacity_at_eval=True, dispatch=dispatch, **routing)
    _trained_router(layer)
    reference = copy.deepcopy(layer)
    reference.dispatch = "reference"
    layer.train(training)
    reference.train(training)
    x = torch.randn(9, 5, 7, 7)
    outputs, grads = [], []
    for module in (layer, reference):
        torch.manual_seed(1)  # same gate noise
        y = module(x)
        aux = module.aux_loss()
        (y.square().sum() + (aux if aux is not None else 0)).backward()
        outputs.append(y)
        grads.append({n: p.grad for n, p in module.named_parameters()})
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-4)
    for name, grad in grads[0].items():
        if grad is None:
            # gate noise is only used (and trained) in training mode; at k = 1 the gate is
            # the softmax of one logit, 1, so the router learns from the aux losses alone
            assert grads[1][name] is None, name
            assert ((not training and "w_noise" in name)
                    or (k == 1 and name.startswith("router."))), name
            continue
        torch.testing.assert_close(grad, grads[1][name], rtol=1e-3, atol=1e-3, msg=name)
    assert (layer.aux_loss() is not None) == training


def test_one_expert_top1_is_the_plain_conv():
    layer = MoEConv2d(3, 4, 3, num_experts=1, top_k=1).eval()
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight[0], None, 1, 1))


def test_router_validation():
    with pytest.raises(ValueError, match="top_k"):
        TopKRouter(4, 2, 3)
    with pytest.raises(ValueError, match="one expert"):
        TopKRouter(4, 3, 2, gate="st_top1")
    with pytest.raises(ValueError, match="global router"):
        TopKRouter(None, 3, 1, gate="noisy_topk")
    with pytest.raises(ValueError, match="needs gate 'noisy_topk'"):
        MoEConv2d(3, 3, 3, num_experts=2, top_k=1, gate="vmoe", balance_loss="load")


def test_noise_only_while_training():
    router = TopKRouter(4, 3, 2)
    x = torch.randn(5, 4, 3, 3)
    r = router.eval()(x)
    assert r.noise_std is None and torch.equal(r.clean_logits, r.noisy_logits)
    assert (r.expert_index[:, 0] != r.expert_index[:, 1]).all()  # distinct experts
    r = router.train()(x)
    torch.testing.assert_close(r.noise_std, torch.full_like(r.noise_std, 1e-2))
    vmoe = TopKRouter(4, 4, 1, gate="vmoe").train()
    r = vmoe(x)
    assert r.noise_std is None and not torch.equal(r.clean_logits, r.noisy_logits)


def test_straight_through_gate_is_one_and_passes_the_gradient_to_the_selected_logit():
    router = TopKRouter(None, 3, 1, gate="st_top1")
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]], requires_grad=True)
    r = router(None, logits=logits)
    assert r.expert_index.flatten().tolist() == [1, 0]
    assert torch.equal(r.gates, torch.ones(2, 1))
    (r.gates * torch.tensor([[2.0], [5.0]])).sum().backward()
    assert logits.grad.tolist() == [[0.0, 2.0, 0.0], [5.0, 0.0, 0.0]]


def _capacity_router(num_experts, k, factor, overflow, priority=False):
    router = TopKRouter(None, num_experts, k, gate="topk", capacity_factor=factor,
                        overflow=overflow, batch_priority=priority)
    return router.train()


def test_capacity_drop_keeps_the_first_samples_of_each_expert():
    # 6 samples all prefer expert 0; capacity = ceil(1 * 6 / 3 * 1.0) = 2
    logits = torch.tensor([[3.0, 2.0, 1.0]] * 6)
    r = _capacity_router(3, 1, 1.0, "drop")(None, logits=logits)
    assert r.expert_index.flatten().tolist() == [0, 0, -1, -1, -1, -1]
    assert r.gates.flatten()[2:].abs().sum() == 0


def test_capacity_reassign_moves_overflow_to_the_next_best_expert():
    logits = torch.tensor([[3.0, 2.0, 1.0]] * 6)
    r = _capacity_router(3, 1, 1.0, "reassign")(None, logits=logits)
    assert r.expert_index.flatten().tolist() == [0, 0, 1, 1, 2, 2]
    # every expert within capacity, all kept
    assert torch.bincount(r.expert_index.flatten(), minlength=3).max() <= 2


def test_batch_priority_routing_serves_confident_samples_first():
    logits = torch.tensor([[1.0, 0.0], [5.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    # capacity = ceil(1 * 4 / 2 * 0.5) = 1: only one sample gets expert 0
    plain = _capacity_router(2, 1, 0.5, "drop")(None, logits=logits).expert_index.flatten()
    bpr = _capacity_router(2, 1, 0.5, "drop", True)(None, logits=logits).expert_index.flatten()
    assert plain.tolist() == [0, -1, -1, -1]
    assert bpr.tolist() == [-1, 0, -1, -1]


def test_capacity_never_exceeded_and_experts_distinct_per_sample():
    torch.manual_seed(0)
    for num_experts, k, factor, overflow in itertools.product((3, 5), (1, 2), (0.5, 1.0, 1.5),
                                                              ("drop", "reassign")):
        if k > num_experts:
            continue
        logits = torch.randn(17, num_experts)
        r = _capacity_router(num_experts, k, factor, overflow)(None, logits=logits)
        capacity = -(-k * 17 * factor // num_experts)
        idx = r.expert_index
        valid = idx[idx >= 0]
        assert torch.bincount(valid, minlength=num_experts).max() <= capacity
        for row in idx.tolist():
            kept = [e for e in row if e >= 0]
            assert len(kept) == len(set(kept))


def test_capacity_is_off_at_eval_by_default():
    logits = torch.tensor([[3.0, 2.0, 1.0]] * 6)
    router = _capacity_router(3, 1, 1.0, "drop").eval()
    assert router(None, logits=logits).expert_index.flatten().tolist() == [0] * 6


@pytest.mark.parametrize("kind", BALANCE_LOSSES)
def test_every_balancing_loss_is_differentiable_w_r_t_the_router(kind):
    # noise on the scale of the standardised logits, so the load estimate is not saturated
    layer = MoEConv2d(4, 4, 3, num_experts=3, top_k=2, balance_loss=kind, balance_weight=1.0,
                      noise_init=1.0)
    _trained_router(layer)
    layer.train()(torch.randn(8, 4, 5, 5))
    loss = layer.aux_loss(torch.arange(8))
    if kind == "none":
        assert loss is None
        return
    loss.backward()
    grad = layer.router.scorer[-1].weight.grad
    assert grad is not None and grad.abs().sum() > 0
    direct = balancing_loss(kind, layer.last_routing, 3, 2, torch.arange(8))
    torch.testing.assert_close(loss, direct)


def test_usage_counts_and_per_class_matrix():
    layer = MoEConv2d(3, 4, 3, num_experts=4, top_k=2).eval()
    _trained_router(layer)
    model = torch.nn.Sequential(layer)
    x1, x2 = torch.randn(10, 3, 5, 5), torch.randn(6, 3, 5, 5)
    labels = torch.randint(0, 3, (16,))
    with track_expert_usage(model) as usage:
        model(x1)
        model(x2)
    counts = usage.counts()["0"]
    assert len(counts) == 4 and sum(counts) == 16 * 2
    matrix = usage.per_class(labels, 3)["0"]
    assert [sum(row) for row in matrix] == counts
    per_label = [sum(matrix[e][c] for e in range(4)) for c in range(3)]
    assert per_label == [2 * int((labels == c).sum()) for c in range(3)]
    assert layer.usage_log is None  # logging off again


def test_global_avg_pool_is_the_spatial_mean_with_its_gradient():
    x = torch.randn(5, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(5, 3, dtype=torch.float64)
    pooled = global_avg_pool(x)
    torch.testing.assert_close(pooled, x.mean(dim=(2, 3)))
    (g_pool,) = torch.autograd.grad(pooled, x, grad)
    (g_mean,) = torch.autograd.grad(x.mean(dim=(2, 3)), x, grad)
    torch.testing.assert_close(g_pool, g_mean)
