"""The top-k router's gradient paths: which gates pass one, and fixed routing."""

import itertools

import pytest
import torch

from automoe.layers import TopKRouter
from automoe.layers.rules import GATE_SOFTMAX_MODES


def _input_gradient(router, x):
    """``(B, C, H, W)`` gradient of the gate values' sum with respect to the input."""
    x = x.clone().requires_grad_(True)
    routing = router(x)
    weights = torch.randn_like(routing.gates, generator=torch.Generator().manual_seed(1))
    if not routing.gates.requires_grad:
        return routing, torch.zeros_like(x)
    (grad,) = torch.autograd.grad((routing.gates * weights).sum(), x, allow_unused=True)
    return routing, torch.zeros_like(x) if grad is None else grad


@pytest.mark.parametrize(("gate", "gate_softmax", "top_k"), [
    (gate, softmax, k) for gate, softmax, k
    in itertools.product(("noisy_topk", "topk", "st_top1"), GATE_SOFTMAX_MODES, (1, 2, 3))
    if gate != "st_top1" or k == 1])
def test_gates_carry_gradient_says_whether_the_gates_pass_one(gate, gate_softmax, top_k):
    torch.manual_seed(0)
    router = TopKRouter(5, 4, top_k, gate=gate, gate_softmax=gate_softmax,
                        init_std=1.0).eval()
    x = torch.randn(6, 5, 3, 3)
    routing, grad = _input_gradient(router, x)
    assert router.gates_carry_gradient == bool(grad.abs().sum() > 0)
    # fixed routing: the same decision and gate values, and never a gradient to the input
    router.fixed_routing = True
    fixed, fixed_grad = _input_gradient(router, x)
    assert torch.equal(fixed.expert_index, routing.expert_index)
    torch.testing.assert_close(fixed.gates, routing.gates)
    assert fixed_grad.abs().sum() == 0


def test_fixed_routing_also_holds_a_global_routers_logits():
    router = TopKRouter(None, 4, 2, gate="topk").eval()
    logits = torch.randn(6, 4, requires_grad=True)
    assert router(None, logits).gates.requires_grad
    router.fixed_routing = True
    assert not router(None, logits).gates.requires_grad
