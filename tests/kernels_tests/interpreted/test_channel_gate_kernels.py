"""Triton channel-group gated conv against PyTorch, run by the Triton CPU interpreter."""

import copy
import os

import pytest
import torch
import torch.nn.functional as F

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/kernels_tests/test_interpreter.py"

from automoe.layers import ChannelGatedConv2d  # noqa: E402
from automoe.ops.channel_gate_triton import _plan, channel_gated_conv2d_triton  # noqa: E402


def _gates(batch, out_channels, group):
    gates = torch.relu(torch.randn(batch, out_channels))
    gates[0] = 0  # a sample with every group closed
    gates[1, : 2 * group] = 0  # a sample with its first two groups closed
    return gates


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
def test_outputs_and_gradients_match_gated_conv(dtype, kernel, stride, padding):
    torch.manual_seed(0)
    batch, cin, out_channels, group = 4, 5, 12, 4
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=3e-2)
    x = torch.randn(batch, cin, 7, 6, dtype=dtype, requires_grad=True)
    weight = torch.randn(out_channels, cin, kernel, kernel, dtype=dtype, requires_grad=True)
    gates = _gates(batch, out_channels, group).to(dtype).requires_grad_()
    y = channel_gated_conv2d_triton(x, weight, gates, stride, padding, group)
    xr, wr, gr = (t.detach().float().requires_grad_() for t in (x, weight, gates))
    y_ref = F.conv2d(xr, wr, None, stride, padding) * gr[:, :, None, None]
    torch.testing.assert_close(y.float(), y_ref, **tol)
    dy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, [x, weight, gates], dy.to(dtype))
    grads_ref = torch.autograd.grad(y_ref, [xr, wr, gr], dy)
    torch.testing.assert_close(grads[0].float(), grads_ref[0], **tol)
    torch.testing.assert_close(grads[1].float(), grads_ref[1], **tol)
    # gates: exact wherever the group is open; closed groups are never computed
    open_groups = (gates.view(batch, -1, group) > 0).any(2).repeat_interleave(group, dim=1)
    torch.testing.assert_close(grads[2].float() * open_groups, grads_ref[2] * open_groups, **tol)
    assert (grads[2][~open_groups] == 0).all()


def test_only_open_groups_are_computed():
    gates = torch.tensor([[0.0, 0, 1, 0, 0, 0], [1.0, 0, 0, 0, 2, 0]])
    plan = _plan(gates, 2)  # 3 groups: a sample's slots are its groups
    assigned = plan.positions[:int(plan.offsets[-1])].tolist()
    assert [divmod(p, 3) for p in assigned] == [(1, 0), (0, 1), (1, 2)]  # sorted by group
    assert plan.offsets.tolist() == [0, 1, 2, 3]


def test_layer_triton_path_equals_reference_through_the_relu():
    torch.manual_seed(1)
    layer = ChannelGatedConv2d(4, 8, 3, 2, embedding_width=6, gate_l1=0.1, dispatch="triton",
                               group_size=4)
    torch.nn.init.normal_(layer.head.weight)
    reference = copy.deepcopy(layer)
    reference.dispatch = "reference"
    x, e = torch.randn(5, 4, 7, 7), torch.rand(5, 6)
    for module in (layer, reference):
        module.train()
        module.context = e
        (module(x).square().sum() + module.aux_loss()).backward()
    assert layer._last_mode == "triton"
    for (name, p), q in zip(layer.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=name)


def test_bad_group_size_and_shapes():
    x, weight = torch.randn(2, 3, 5, 5), torch.randn(6, 3, 3, 3)
    with pytest.raises(ValueError, match="groups of 4"):
        channel_gated_conv2d_triton(x, weight, torch.rand(2, 6), 1, 1, 4)
    with pytest.raises(ValueError, match="gates must be"):
        channel_gated_conv2d_triton(x, weight, torch.rand(2, 5), 1, 1, 3)
