import pytest
import torch
from torch import nn

from automoe.ops import moe_dispatch_reference, moe_dispatch_sparse


def _experts(num_experts):
    return nn.ModuleList(
        nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        for _ in range(num_experts)).double()


@pytest.mark.parametrize("num_experts,k", [(1, 1), (3, 1), (3, 2), (4, 4)])
def test_sparse_matches_reference_outputs_and_gradients(num_experts, k):
    experts = _experts(num_experts).eval()  # BN on running statistics: same in both paths
    x = torch.randn(7, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    index = torch.randn(7, num_experts).topk(k, 1).indices
    index[0, -1] = -1  # one dropped assignment
    gates = torch.rand(7, k, dtype=torch.float64, requires_grad=True)
    out_shape = (4, 5, 5)
    params = [x, gates, *experts.parameters()]
    y_s = moe_dispatch_sparse(x, experts, index, gates, out_shape)
    y_r = moe_dispatch_reference(x, experts, index, gates, out_shape)
    torch.testing.assert_close(y_s, y_r)
    grad = torch.randn_like(y_r)
    for a, b in zip(torch.autograd.grad(y_s, params, grad, allow_unused=True),
                    torch.autograd.grad(y_r, params, grad, allow_unused=True), strict=True):
        if a is None:
            assert b is None or b.abs().sum() == 0
        else:
            torch.testing.assert_close(a, b)


def test_each_expert_runs_once_on_its_samples_only():
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(x.shape[0])
            return x

    experts = [Spy(), Spy(), Spy()]
    index = torch.tensor([[0], [2], [0], [-1]])
    moe_dispatch_sparse(torch.randn(4, 2, 3, 3), experts, index, torch.ones(4, 1), (2, 3, 3))
    assert sorted(seen) == [1, 2]
    with pytest.raises(ValueError, match="expert id 5"):
        moe_dispatch_sparse(torch.randn(1, 2, 3, 3), experts, torch.tensor([[5]]),
                            torch.ones(1, 1), (2, 3, 3))
