"""Triton conv-expert kernels and op against PyTorch, run by the Triton CPU interpreter."""

import os

import pytest
import torch
import torch.nn.functional as F

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/kernels_tests/test_interpreter.py"

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from automoe.kernels import (  # noqa: E402
    SortedAssignments,
    expert_conv_dw,
    expert_conv_dx,
    expert_conv_forward,
    sort_assignments,
)
from automoe.layers import MoEConv2d  # noqa: E402
from automoe.ops import moe_conv2d_reference  # noqa: E402
from automoe.ops import moe_conv_triton as triton_op  # noqa: E402
from automoe.ops.moe_conv_triton import moe_conv2d_triton  # noqa: E402

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
    batch, cin, cout, h, w, experts, k = 3, 5, 7, 7, 5, 3, 2  # odd sizes
    x = torch.randn(batch, cin, h, w, dtype=dtype)
    weight = torch.randn(experts, cout, cin, kernel, kernel, dtype=dtype)
    index = _routing(batch, experts, k, drop=True)
    plan = sort_assignments(index, experts)
    x32, w32 = x.float().requires_grad_(), weight.float().requires_grad_()
    # one row per flat (sample, slot) position; the dropped one stays zero
    ref = torch.stack([
        F.conv2d(x32[p // k:p // k + 1], w32[max(e, 0)], None, stride, padding)[0] * (e >= 0)
        for p, e in enumerate(index.reshape(-1).tolist())])
    y = expert_conv_forward(x, weight, plan, stride, padding)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), ref, **TOL[dtype])
    assert (y[index.reshape(-1) < 0] == 0).all()

    gates = torch.rand(batch * k)
    dy = torch.randn(batch, *ref.shape[1:])  # one output gradient per sample, shared by slots
    loss = (ref * gates[:, None, None, None] * dy.repeat_interleave(k, 0)).sum()
    grad_x, grad_w = torch.autograd.grad(loss, [x32, w32])
    dx = expert_conv_dx(dy.to(dtype), weight, plan, (h, w), gates, True, stride, padding)
    assert (dx[index.reshape(-1) < 0] == 0).all()
    torch.testing.assert_close(dx.view(batch, k, cin, h, w).sum(1).float(), grad_x,
                               **TOL[dtype])
    for splits in (1, 3):  # split-K: each chunk of an expert's rows reduced on its own
        dw = expert_conv_dw(dy.to(dtype), x, plan, (kernel, kernel), gates, True, stride,
                            padding, splits=splits)
        torch.testing.assert_close(dw, grad_w, **TOL[dtype])


def test_plan_is_sorted_by_expert_with_unassigned_last():
    index = torch.tensor([[2, 0], [0, -1], [1, 2]])
    plan = sort_assignments(index, 4)
    assert plan.positions.tolist() == [1, 2, 4, 0, 5, 3]
    assert plan.offsets.tolist() == [0, 2, 3, 5, 5]
    assert plan.slots == 2


class _DataDependentOps(TorchDispatchMode):
    """Records every op whose output size or value must be read back by the host."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if {torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape} & set(func.tags):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("k,drop", [(1, False), (2, True)])
def test_plan_and_launches_never_wait_for_the_device(k, drop):
    torch.manual_seed(6)
    x = torch.randn(4, 3, 5, 5)
    weight = torch.randn(3, 4, 3, 3, 3)
    index = _routing(4, 3, k, drop=drop)
    gates = torch.rand(4, k)
    with _DataDependentOps() as ops:
        out, y, plan = triton_op.forward_launch(x, weight, index, gates, 1, 1, False)
        grads = triton_op.backward_launch(torch.randn_like(out), x, weight, gates, y, plan, 1,
                                          1, False)
    assert ops.seen == []
    assert [g.shape for g in grads] == [x.shape, weight.shape, gates.shape]
    # the same check sees a data-dependent op when there is one
    with _DataDependentOps() as ops:
        index.nonzero()
    assert ops.seen == ["aten.nonzero.default"]


def test_backward_reuses_the_forward_plan(monkeypatch):
    calls = []

    def counted(*args):
        calls.append(args)
        return sort_assignments(*args)

    monkeypatch.setattr(triton_op, "sort_assignments", counted)
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    weight = torch.randn(2, 3, 2, 3, 3, requires_grad=True)
    moe_conv2d_triton(x, weight, None, _routing(3, 2, 1), torch.rand(3, 1), 1, 1).sum().backward()
    assert len(calls) == 1 and x.grad is not None


def test_results_are_deterministic():
    torch.manual_seed(7)
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    weight = torch.randn(3, 5, 3, 3, 3, requires_grad=True)
    index, gates = _routing(6, 3, 2), torch.rand(6, 2, requires_grad=True)
    runs = []
    for _ in range(2):
        y = moe_conv2d_triton(x, weight, None, index, gates, 1, 1)
        runs.append([y, *torch.autograd.grad(y.square().sum(), [x, weight, gates])])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


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
    plan = sort_assignments(torch.tensor([[0], [1]]), 2)
    with pytest.raises(ValueError, match="input channels"):
        expert_conv_forward(torch.randn(2, 5, 5, 5), weight, plan)
    with pytest.raises(ValueError, match="share a dtype"):
        expert_conv_forward(x.double(), weight.double(), plan)
    with pytest.raises(ValueError, match="positions has 1 entries, expected 2"):
        expert_conv_forward(x, weight, plan._replace(positions=plan.positions[:1]))
    with pytest.raises(ValueError, match="offsets has 2 entries, expected 3"):
        expert_conv_forward(x, weight, plan._replace(offsets=plan.offsets[:2]))
    with pytest.raises(ValueError, match="1-D int32/int64"):
        expert_conv_forward(x, weight, SortedAssignments(plan.positions.float(), plan.offsets, 1))
    with pytest.raises(ValueError, match=r"dy must be \(A, 4, 5, 5\)"):
        expert_conv_dx(torch.randn(2, 4, 4, 4), weight, plan, (5, 5), None, True, 1, 1)
    with pytest.raises(ValueError, match="gates must be"):
        expert_conv_dw(torch.randn(2, 4, 5, 5), x, plan, (3, 3), torch.rand(3), True, 1, 1)


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


def test_fp16_autocast_runs_the_kernels_in_fp16():
    # bf16 dots are wrong in the interpreter, so autocast is checked with fp16 here
    torch.manual_seed(8)
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    weight = (0.3 * torch.randn(3, 4, 3, 3, 3)).requires_grad_()
    index, gates = _routing(4, 3, 2, drop=True), torch.rand(4, 2, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.float16):
        y = moe_conv2d_triton(x, weight, None, index, gates, 1, 1)
    assert y.dtype == torch.float16
    y_ref = moe_conv2d_reference(x, weight, None, index, gates, 1, 1)
    torch.testing.assert_close(y.float(), y_ref, rtol=2e-2, atol=2e-2)
    grads = torch.autograd.grad(y.float().sum(), [x, weight, gates])
    grads_ref = torch.autograd.grad(y_ref.sum(), [x, weight, gates])
    for got, want in zip(grads, grads_ref, strict=True):
        assert got.dtype == torch.float32  # the fp32 leaves get fp32 gradients
        torch.testing.assert_close(got, want, rtol=3e-2, atol=3e-2)
