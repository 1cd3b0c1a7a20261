import copy

import pytest
import torch
from torch import nn

from automoe.layers import MoEBlock


def _unit():
    return nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU())


def test_one_expert_top1_is_the_block():
    layer = MoEBlock(_unit, 4, 6, 2, num_experts=1, top_k=1).eval()
    x = torch.randn(3, 4, 7, 7)
    torch.testing.assert_close(layer(x), layer.experts[0](x))


@pytest.mark.parametrize("num_experts,k", [(2, 1), (3, 2), (3, 3)])
def test_sparse_equals_reference_in_eval_mode(num_experts, k):
    layer = MoEBlock(_unit, 4, 6, 2, num_experts=num_experts, top_k=k, gate="topk")
    torch.nn.init.normal_(layer.router.scorer[-1].weight)
    layer.train()(torch.randn(16, 4, 7, 7))  # move BN running statistics off their init
    reference = copy.deepcopy(layer)
    reference.dispatch = "reference"
    layer.eval(), reference.eval()
    x = torch.randn(5, 4, 7, 7, requires_grad=True)
    y, y_ref = layer(x), reference(x)
    torch.testing.assert_close(y, y_ref)
    (gx,) = torch.autograd.grad(y.sum(), x)
    (gx_ref,) = torch.autograd.grad(y_ref.sum(), x)
    torch.testing.assert_close(gx, gx_ref)


def test_each_expert_has_its_own_weights():
    layer = MoEBlock(_unit, 4, 6, 1, num_experts=3, top_k=1)
    weights = [e[0].weight for e in layer.experts]
    assert len({w.data_ptr() for w in weights}) == 3
