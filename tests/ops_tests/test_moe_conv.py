import pytest
import torch
import torch.nn.functional as F

from automoe.ops import moe_conv2d, moe_conv2d_reference, moe_conv2d_sparse


def _routing(batch: int, num_experts: int, k: int):
    scores = torch.randn(batch, num_experts)
    expert_index = scores.topk(k, dim=1).indices  # distinct experts per sample
    gates = torch.rand(batch, k, dtype=torch.float64, requires_grad=True)
    return expert_index, gates


@pytest.mark.parametrize("num_experts,k", [(1, 1), (3, 1), (3, 2), (3, 3), (5, 2)])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_sparse_matches_reference_outputs_and_gradients(num_experts, k, kernel, stride, padding,
                                                        with_bias):
    batch, cin, cout, h, w = 7, 5, 3, 9, 7  # odd sizes
    x = torch.randn(batch, cin, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(num_experts, cout, cin, kernel, kernel, dtype=torch.float64,
                         requires_grad=True)
    bias = (torch.randn(num_experts, cout, dtype=torch.float64, requires_grad=True)
            if with_bias else None)
    expert_index, gates = _routing(batch, num_experts, k)
    if k > 1:
        expert_index[2, 0] = -1  # an assignment dropped by a capacity limit
    inputs = [x, weight, gates] + ([bias] if with_bias else [])

    y_sparse = moe_conv2d_sparse(x, weight, bias, expert_index, gates, stride, padding)
    y_ref = moe_conv2d_reference(x, weight, bias, expert_index, gates, stride, padding)
    assert y_sparse.shape == y_ref.shape
    torch.testing.assert_close(y_sparse, y_ref)

    grad_out = torch.randn_like(y_ref)
    g_sparse = torch.autograd.grad(y_sparse, inputs, grad_out)
    g_ref = torch.autograd.grad(y_ref, inputs, grad_out)
    for a, b in zip(g_sparse, g_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_single_expert_equals_plain_conv():
    x = torch.randn(4, 3, 8, 8)
    weight = torch.randn(1, 6, 3, 3, 3)
    index = torch.zeros(4, 1, dtype=torch.long)
    gates = torch.ones(4, 1)
    torch.testing.assert_close(moe_conv2d(x, weight, None, index, gates, 1, 1),
                               F.conv2d(x, weight[0], None, 1, 1))


def test_unselected_experts_get_no_gradient_and_are_not_run():
    x = torch.randn(6, 2, 5, 5)
    weight = torch.randn(4, 3, 2, 3, 3, requires_grad=True)
    index = torch.tensor([[0], [2], [0], [2], [2], [0]])
    gates = torch.ones(6, 1)
    calls = []
    orig = F.conv2d

    def counting_conv(inp, *args, **kwargs):
        calls.append(inp.shape[0])
        return orig(inp, *args, **kwargs)

    torch.nn.functional.conv2d = counting_conv
    try:
        y = moe_conv2d_sparse(x, weight, None, index, gates, 1, 1)
    finally:
        torch.nn.functional.conv2d = orig
    assert sorted(calls) == [3, 3]  # two experts, three samples each
    y.sum().backward()
    assert weight.grad[[1, 3]].abs().sum() == 0
    assert weight.grad[[0, 2]].abs().sum() > 0


def test_empty_batch_and_bad_shapes():
    weight = torch.randn(2, 3, 4, 3, 3)
    y = moe_conv2d_sparse(torch.randn(0, 4, 5, 5), weight, None,
                          torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1), 1, 1)
    assert y.shape == (0, 3, 5, 5)
    with pytest.raises(ValueError, match="input channels"):
        moe_conv2d_sparse(torch.randn(2, 5, 5, 5), weight, None,
                          torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1))
    with pytest.raises(ValueError, match="unknown dispatch"):
        moe_conv2d(torch.randn(2, 4, 5, 5), weight, None, torch.zeros(2, 1, dtype=torch.long),
                   torch.ones(2, 1), dispatch="fast")
