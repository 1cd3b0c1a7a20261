"""Conv experts on CUDA through the Triton kernels, as a ``torch.library`` custom op.

``automoe::moe_conv2d_triton`` computes the same mixture as
:func:`automoe.ops.moe_conv2d_reference`; forward and backward are each one opaque op with
a fake (shape-only) implementation, so ``torch.compile`` traces around them.

Nothing between the router and the kernels makes the host wait for the device: the routing
plan (:func:`automoe.kernels.sort_assignments`) has sizes known from the shapes, is computed
once in forward and saved for backward, and each sample's k expert outputs are combined by
a fixed-order sum over its slots (no ``index_add_``, so results do not depend on atomics).

The kernels run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set
before triton was imported (for tests).
"""

from __future__ import annotations

import torch

from automoe.kernels import (
    SortedAssignments,
    expert_conv_dw,
    expert_conv_dx,
    expert_conv_forward,
    sort_assignments,
)
from automoe.ops._common import (
    autocast_inputs,
    check_moe_conv_args,
    conv_out_hw,
    dense_gate_matrix,
)


def forward_launch(x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor,
                   gates: torch.Tensor, stride: int, padding: int, allow_tf32: bool):
    """Plan, kernel and combine: (out (B, O, OH, OW), per-slot y (B*k, O, OH, OW), plan)."""
    batch, k = expert_index.shape
    plan = sort_assignments(expert_index, weight.shape[0])
    y = expert_conv_forward(x, weight, plan, stride, padding, allow_tf32)  # (B*k, O, OH, OW)
    # unassigned slots have zero rows, so their gates need no mask
    out = (y.view(batch, k, *y.shape[1:]) * gates.to(y.dtype).view(batch, k, 1, 1, 1)).sum(1)
    return out, y, plan


def backward_launch(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                    gates: torch.Tensor, y: torch.Tensor, plan: SortedAssignments, stride: int,
                    padding: int, allow_tf32: bool):
    """Gradients of x, weight and gates from the saved per-slot outputs and plan."""
    batch, k = gates.shape
    # d gate[b, j] = <dy[b], y[b, j]> in fp32; zero for unassigned slots (zero rows of y)
    grad_gates = torch.bmm(y.reshape(batch, k, -1).float(),
                           grad_out.reshape(batch, -1, 1).float()).view(batch, k)
    gate_per_slot = gates.reshape(-1).float().contiguous()  # (B*k,)
    dx = expert_conv_dx(grad_out, weight, plan, tuple(x.shape[2:]), gate_per_slot, True,
                        stride, padding, allow_tf32)  # (B*k, C, H, W)
    grad_x = dx.view(batch, k, *x.shape[1:]).sum(1)
    grad_w = expert_conv_dw(grad_out, x, plan, tuple(weight.shape[-2:]), gate_per_slot, True,
                            stride, padding, allow_tf32)
    return grad_x, grad_w.to(weight.dtype), grad_gates.to(gates.dtype)


@torch.library.custom_op("automoe::moe_conv2d_triton", mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor,
             gates: torch.Tensor, stride: int, padding: int, allow_tf32: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    out, y, plan = forward_launch(x, weight, expert_index, gates, stride, padding, allow_tf32)
    return out, y, plan.positions, plan.offsets


@_forward.register_fake
def _(x, weight, expert_index, gates, stride, padding, allow_tf32):
    out_h, out_w = conv_out_hw(x, weight, stride, padding)
    batch, k = expert_index.shape
    return (x.new_empty(batch, weight.shape[1], out_h, out_w),
            x.new_empty(batch * k, weight.shape[1], out_h, out_w),
            expert_index.new_empty(batch * k, dtype=torch.long),
            expert_index.new_empty(weight.shape[0] + 1, dtype=torch.long))


@torch.library.custom_op("automoe::moe_conv2d_triton_backward", mutates_args=())
def _backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
              gates: torch.Tensor, y: torch.Tensor, positions: torch.Tensor,
              offsets: torch.Tensor, stride: int, padding: int,
              allow_tf32: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    plan = SortedAssignments(positions, offsets, gates.shape[1])
    return backward_launch(grad_out, x, weight, gates, y, plan, stride, padding, allow_tf32)


@_backward.register_fake
def _(grad_out, x, weight, gates, y, positions, offsets, stride, padding, allow_tf32):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(gates)


def _setup_context(ctx, inputs, output):
    x, weight, expert_index, gates, stride, padding, allow_tf32 = inputs
    _, y, positions, offsets = output
    ctx.save_for_backward(x, weight, gates, y, positions, offsets)  # the plan is not redone
    ctx.conv = (stride, padding, allow_tf32)


def _autograd_backward(ctx, grad_out, grad_y, grad_positions, grad_offsets):
    x, weight, gates, y, positions, offsets = ctx.saved_tensors
    grad_x, grad_w, grad_gates = _backward(grad_out.to(y.dtype), x, weight, gates, y,
                                           positions, offsets, *ctx.conv)
    return grad_x, grad_w, None, grad_gates, None, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def moe_conv2d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      expert_index: torch.Tensor, gates: torch.Tensor, stride: int = 1,
                      padding: int = 0, allow_tf32: bool = False) -> torch.Tensor:
    """Mixture of conv experts with the Triton kernels; see :func:`moe_conv2d_sparse`.

    ``allow_tf32``: fp32 inputs use TF32 tensor cores (faster, ~1e-3 relative error).
    Under autocast, x and the weights run in the autocast dtype.
    """
    check_moe_conv_args(x, weight, bias, expert_index, gates)
    x, weight = autocast_inputs(x, weight)
    out = _forward(x, weight, expert_index, gates, stride, padding, allow_tf32)[0]
    if bias is not None:  # per-expert bias, gate-weighted, like the conv
        out = out + (dense_gate_matrix(expert_index, gates, weight.shape[0])
                     @ bias.to(out.dtype))[:, :, None, None]
    return out
