"""Triton conv-expert kernels and op against PyTorch, run by the Triton CPU interpreter."""

import os

import pytest
import torch
import torch.nn.functional as F

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/kernels_tests/test_interpreter.py"

from automoe.kernels import expert_conv_dw, expert_conv_dx, expert_conv_forward  # noqa: E402
from automoe.layers import MoEConv2d  # noqa: E402
from automoe.ops import moe_conv2d_reference  # noqa: E402
from automoe.ops.moe_conv_triton import _plan, moe_conv2d_triton  # noqa: E402

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=2e-2, atol=2e-2)}


def _routing(batch, num_experts, k, drop=False):
    index = torch.randn(batch, num_experts).topk(k, dim=1).indices
    if drop:
        index[0, -1] = -1
    return index


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (1, 2, 0)])
def test_each_kernel_matches_per_assignment_convs(dtype, kernel, stride, padding):
    torch.manual_seed(0)
    batch, cin, cout, h, w, experts = 3, 5, 7, 7, 5, 3  # odd sizes
    x = torch.randn(batch, cin, h, w, dtype=dtype)
    weight = torch.randn(experts, cout, cin, kernel, kernel, dtype=dtype)
    index = _routing(batch, experts, 2, drop=True)
    positions, sample_ids, expert_ids, offsets = _plan(index, experts)
    x32, w32 = x.float().requires_grad_(), weight.float().requires_grad_()
    ref = torch.stack([F.conv2d(x32[s:s + 1], w32[e], None, stride, padding)[0]
                       for s, e in zip(sample_ids.tolist(), expert_ids.tolist(), strict=True)])
    y = expert_conv_forward(x, weight, sample_ids, expert_ids, stride, padding)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), ref, **TOL[dtype])

    dy = torch.randn_like(ref)
    grad_x, grad_w = torch.autograd.grad(ref, [x32, w32], dy)
    dx = expert_conv_dx(dy.to(dtype), weight, expert_ids, (h, w), stride, padding)
    dx_sum = torch.zeros_like(x32).index_add_(0, sample_ids, dx.float())
    torch.testing.assert_close(dx_sum, grad_x, **TOL[dtype])
    dw = expert_conv_dw(dy.to(dtype), x, sample_ids, offsets, (kernel, kernel), stride, padding)
    torch.testing.assert_close(dw, grad_w, **TOL[dtype])


@pytest.mark.parametrize("num_experts,k", [(1, 1), (3, 1), (3, 2), (3, 3)])
@pytest.mark.parametrize("stride", [1, 2])
def test_op_matches_reference_outputs_and_gradients(num_experts, k, stride):
    torch.manual_seed(1)
    x = torch.randn(5, 3, 7, 6, requires_grad=True)
    weight = torch.randn(num_experts, 4, 3, 3, 3, requires_grad=True)
    index = _routing(5, num_experts, k, drop=k > 1)
    gates = torch.rand(5, k, requires_grad=True)
    y = moe_conv2d_triton(x, weight, None, index, gates, stride, 1)
    y_ref = moe_conv2d_reference(x, weight, None, index, gates, stride, 1)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    dy = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, weight, gates], dy)
    grads_ref = torch.autograd.grad(y_ref, [x, weight, gates], dy)
    for name, a, b in zip(("x", "weight", "gates"), grads, grads_ref, strict=True):
        if name == "gates":  # a dropped slot has no gradient in either path that matters
            a, b = a * (index >= 0), b * (index >= 0)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("size,stride", [(4, 1), (2, 1), (5, 2)])
def test_small_maps_tiles_span_several_samples(size, stride):
    # 4x4 -> 16 rows per assignment: one 32-row tile covers two samples of one expert
    torch.manual_seed(5)
    x = torch.randn(9, 3, size, size, requires_grad=True)
    weight = torch.randn(2, 4, 3, 3, 3, requires_grad=True)
    index, gates = _routing(9, 2, 1), torch.rand(9, 1, requires_grad=True)
    y = moe_conv2d_triton(x, weight, None, index, gates, stride, 1)
    y_ref = moe_conv2d_reference(x, weight, None, index, gates, stride, 1)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    dy = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [x, weight, gates], dy),
                    torch.autograd.grad(y_ref, [x, weight, gates], dy), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_channels_last_inputs_need_no_copy():
    torch.manual_seed(2)
    x = torch.randn(2, 4, 6, 6).to(memory_format=torch.channels_last)
    weight = torch.randn(2, 5, 4, 3, 3)
    index, gates = _routing(2, 2, 1), torch.rand(2, 1)
    torch.testing.assert_close(moe_conv2d_triton(x, weight, None, index, gates, 1, 1),
                               moe_conv2d_reference(x, weight, None, index, gates, 1, 1),
                               rtol=1e-4, atol=1e-4)


def test_layer_with_triton_dispatch_equals_sparse_layer():
    import copy

    torch.manual_seed(3)
    layer = MoEConv2d(4, 6, 3, 2, num_experts=3, top_k=2, gate="topk", balance_weight=0.1,
                      dispatch="triton")
    torch.nn.init.normal_(layer.router.scorer[-1].weight)
    sparse = copy.deepcopy(layer)
    sparse.dispatch = "sparse"
    x = torch.randn(4, 4, 7, 7)
    for module in (layer, sparse):
        module.train()
        (module(x).square().sum() + module.aux_loss()).backward()
    torch.testing.assert_close(layer(x), sparse(x), rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(layer.named_parameters(), sparse.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=name)


def test_launchers_reject_bad_shapes_and_types():
    x = torch.randn(2, 3, 5, 5)
    weight = torch.randn(2, 4, 3, 3, 3)
    ids = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="input channels"):
        expert_conv_forward(torch.randn(2, 5, 5, 5), weight, ids, ids)
    with pytest.raises(ValueError, match="share a dtype"):
        expert_conv_forward(x.double(), weight.double(), ids, ids)
    with pytest.raises(ValueError, match="expert_ids has 1 entries, expected 2"):
        expert_conv_forward(x, weight, ids, ids[:1])
    with pytest.raises(ValueError, match="1-D int32/int64"):
        expert_conv_forward(x, weight, ids.float(), ids)
    with pytest.raises(ValueError, match="sorted by expert"):
        expert_conv_forward(x, weight, ids, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=r"dy must be \(A, 4, 5, 5\)"):
        expert_conv_dx(torch.randn(2, 4, 4, 4), weight, ids, (5, 5), 1, 1)


def test_torch_compile_traces_the_custom_ops_in_one_graph():
    torch.manual_seed(4)
    x = torch.randn(4, 3, 6, 6, requires_grad=True)
    weight = torch.randn(3, 5, 3, 3, 3, requires_grad=True)
    index, gates = _routing(4, 3, 2), torch.rand(4, 2, requires_grad=True)

    def loss_fn(fn):
        return lambda *args: (fn(*args).relu() * 2).sum()

    args = (x, weight, None, index, gates, 1, 1)
    # aot_eager: traces forward and backward (fake kernels, dynamic sizes), no C++ codegen
    compiled = torch.compile(loss_fn(moe_conv2d_triton), backend="aot_eager", fullgraph=True)
    loss = compiled(*args)
    grads = torch.autograd.grad(loss, [x, weight, gates])
    loss_ref = loss_fn(moe_conv2d_reference)(*args)
    grads_ref = torch.autograd.grad(loss_ref, [x, weight, gates])
    torch.testing.assert_close(loss, loss_ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
