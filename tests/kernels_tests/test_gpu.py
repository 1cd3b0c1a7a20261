"""GPU tests at real shapes (deselected by default; run with ``pytest -m gpu`` on CUDA)."""

import copy

import pytest
import torch

from automoe.models import create_model
from automoe.ops import moe_conv2d_reference

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# What the interpreter cannot show (tests/kernels_tests/interpreted covers fp32 and fp16 at
# small shapes, every k, odd sizes): the autotuned configs' tiles at real shapes, bf16 dots,
# a stride-2 layer and maps smaller than a tile. Each case is an autotune session and its
# compiles on a GPU (bench/gpu_compiles.py counts them), so the matrix stays this small.
OP_CASES = [(dtype, tol, size, stride, num_experts, k)
            for dtype, tol in ((torch.float32, 1e-3), (torch.bfloat16, 5e-2))
            for size, stride in ((32, 1), (16, 2), (4, 1))
            for num_experts, k in ((4, 1), (8, 2))]
OP_BATCH, OP_IN, OP_OUT = 128, 64, 128


@pytest.mark.parametrize("dtype,tol,size,stride,num_experts,k", OP_CASES)
def test_op_matches_reference_on_gpu(dtype, tol, size, stride, num_experts, k):
    from automoe.ops.moe_conv_triton import moe_conv2d_triton

    torch.manual_seed(0)
    x = torch.randn(OP_BATCH, OP_IN, size, size, device="cuda", dtype=dtype,
                    requires_grad=True)
    weight = (0.05 * torch.randn(num_experts, OP_OUT, OP_IN, 3, 3, device="cuda", dtype=dtype)
              ).requires_grad_()
    index = torch.randn(OP_BATCH, num_experts, device="cuda").topk(k, 1).indices
    gates = torch.rand(OP_BATCH, k, device="cuda", dtype=dtype, requires_grad=True)
    y = moe_conv2d_triton(x, weight, None, index, gates, stride, 1)
    y_ref = moe_conv2d_reference(x, weight, None, index, gates, stride, 1)
    scale = y_ref.abs().max()
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol * scale)
    dy = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [x, weight, gates], dy),
                    torch.autograd.grad(y_ref, [x, weight, gates], dy), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max())


def test_torch_compile_runs_the_custom_op():
    from automoe.ops.moe_conv_triton import moe_conv2d_triton

    x = torch.randn(16, 8, 16, 16, device="cuda")
    weight = torch.randn(4, 8, 8, 3, 3, device="cuda")
    index = torch.randn(16, 4, device="cuda").topk(2, 1).indices
    gates = torch.rand(16, 2, device="cuda")
    compiled = torch.compile(moe_conv2d_triton, fullgraph=False)
    torch.testing.assert_close(compiled(x, weight, None, index, gates, 1, 1),
                               moe_conv2d_triton(x, weight, None, index, gates, 1, 1))


def test_moe_resnet18_training_step_equals_torch_path():
    torch.manual_seed(0)
    model = create_model("resnet18", placement="all", num_experts=4, top_k=2, gate="topk",
                         dispatch="triton").cuda()
    reference = copy.deepcopy(model)
    for layer in reference.moe_layers():
        layer.dispatch = "sparse"
    x = torch.rand(64, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (64,), device="cuda")
    for m in (model, reference):
        m.train()
        loss = torch.nn.functional.cross_entropy(m(x), y) + m.aux_loss(y)
        loss.backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-2, atol=1e-3 * q.grad.abs().max(),
                                   msg=name)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-3), (torch.float16, 2e-2)])
def test_channel_group_kernel_matches_gated_conv_on_gpu(dtype, tol):
    from automoe.ops.channel_gate_triton import channel_gated_conv2d_triton

    torch.manual_seed(0)
    x = torch.randn(128, 64, 16, 16, device="cuda", dtype=dtype, requires_grad=True)
    weight = (0.05 * torch.randn(128, 64, 3, 3, device="cuda", dtype=dtype)).requires_grad_()
    gates = torch.relu(torch.randn(128, 128, device="cuda", dtype=dtype)).requires_grad_()
    y = channel_gated_conv2d_triton(x, weight, gates, 1, 1, 16)
    y_ref = torch.nn.functional.conv2d(x, weight, None, 1, 1) * gates[:, :, None, None]
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol * y_ref.abs().max())
    dy = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, [x, weight], dy),
                    torch.autograd.grad(y_ref, [x, weight], dy), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max())
