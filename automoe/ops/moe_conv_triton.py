"""Conv experts on CUDA through the Triton kernels, as a ``torch.library`` custom op.

``automoe::moe_conv2d_triton`` computes the same mixture as
:func:`automoe.ops.moe_conv2d_reference`; forward and backward are each one opaque op with
a fake (shape-only) implementation, so ``torch.compile`` traces around them.

The kernels run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set
before triton was imported (for tests).
"""

from __future__ import annotations

import torch


def _plan(expert_index: torch.Tensor, num_experts: int):
    """Valid assignments sorted by expert: their flat (B*k) positions, sample ids, expert
    ids, and the (E + 1,) run boundaries of each expert."""
    k = expert_index.shape[1]
    flat = expert_index.reshape(-1)
    valid = (flat >= 0).nonzero().flatten()  # (A,)
    experts = flat[valid]
    order = torch.argsort(experts, stable=True)
    positions = valid[order]  # (A,) into the flat (B*k) list
    expert_ids = experts[order]
    offsets = torch.zeros(num_experts + 1, dtype=torch.long, device=flat.device)
    offsets[1:] = torch.bincount(expert_ids, minlength=num_experts).cumsum(0)
    return positions, positions // k, expert_ids, offsets


def _out_hw(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int):
    kh, kw = weight.shape[-2:]
    return ((x.shape[2] + 2 * padding - kh) // stride + 1,
            (x.shape[3] + 2 * padding - kw) // stride + 1)


@torch.library.custom_op("automoe::moe_conv2d_triton", mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, expert_index: torch.Tensor,
             gates: torch.Tensor, stride: int, padding: int,
             allow_tf32: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from automoe.kernels import expert_conv_forward

    positions, sample_ids, expert_ids, _ = _plan(expert_index, weight.shape[0])
    y_assign = expert_conv_forward(x, weight, sample_ids, expert_ids, stride, padding,
                                   allow_tf32)  # (A, O, OH, OW)
    gate = gates.reshape(-1)[positions].to(y_assign.dtype).view(-1, 1, 1, 1)
    out = x.new_zeros(x.shape[0], weight.shape[1], *y_assign.shape[-2:])
    out.index_add_(0, sample_ids, y_assign * gate)
    return out, y_assign


@_forward.register_fake
def _(x, weight, expert_index, gates, stride, padding, allow_tf32):
    out_h, out_w = _out_hw(x, weight, stride, padding)
    num_assign = torch.library.get_ctx().new_dynamic_size()
    return (x.new_empty(x.shape[0], weight.shape[1], out_h, out_w),
            x.new_empty(num_assign, weight.shape[1], out_h, out_w))


@torch.library.custom_op("automoe::moe_conv2d_triton_backward", mutates_args=())
def _backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
              expert_index: torch.Tensor, gates: torch.Tensor, y_assign: torch.Tensor,
              stride: int, padding: int,
              allow_tf32: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from automoe.kernels import expert_conv_dw, expert_conv_dx

    positions, sample_ids, expert_ids, offsets = _plan(expert_index, weight.shape[0])
    dy = grad_out.index_select(0, sample_ids)  # (A, O, OH, OW)
    # d gate = <dy, y_e>, in fp32
    d_gate = (dy.float() * y_assign.float()).sum(dim=(1, 2, 3))
    grad_gates = torch.zeros(gates.numel(), device=gates.device, dtype=torch.float32)
    grad_gates[positions] = d_gate
    gated = (dy * gates.reshape(-1)[positions].to(dy.dtype).view(-1, 1, 1, 1)).contiguous()
    dx_assign = expert_conv_dx(gated, weight, expert_ids, tuple(x.shape[2:]), stride, padding,
                               allow_tf32)
    grad_x = torch.zeros_like(x).index_add_(0, sample_ids, dx_assign)
    grad_w = expert_conv_dw(gated, x, sample_ids, offsets, tuple(weight.shape[-2:]), stride,
                            padding, allow_tf32)
    return grad_x, grad_w.to(weight.dtype), grad_gates.view_as(gates).to(gates.dtype)


@_backward.register_fake
def _(grad_out, x, weight, expert_index, gates, y_assign, stride, padding, allow_tf32):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(gates)


def _setup_context(ctx, inputs, output):
    x, weight, expert_index, gates, stride, padding, allow_tf32 = inputs
    ctx.save_for_backward(x, weight, expert_index, gates, output[1])
    ctx.conv = (stride, padding, allow_tf32)


def _autograd_backward(ctx, grad_out, grad_y_assign):
    x, weight, expert_index, gates, y_assign = ctx.saved_tensors
    grad_x, grad_w, grad_gates = _backward(grad_out.contiguous(), x, weight, expert_index,
                                           gates, y_assign, *ctx.conv)
    return grad_x, grad_w, None, grad_gates, None, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def moe_conv2d_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      expert_index: torch.Tensor, gates: torch.Tensor, stride: int = 1,
                      padding: int = 0, allow_tf32: bool = False) -> torch.Tensor:
    """Mixture of conv experts with the Triton kernels; see :func:`moe_conv2d_sparse`.

    ``allow_tf32``: fp32 inputs use TF32 tensor cores (faster, ~1e-3 relative error).
    """
    from automoe.ops.moe_conv import _check_args

    _check_args(x, weight, bias, expert_index, gates)
    out, _ = _forward(x, weight, expert_index, gates, stride, padding, allow_tf32)
    if bias is not None:  # per-expert bias, gate-weighted, like the conv
        from automoe.ops.moe_conv import dense_gate_matrix

        out = out + (dense_gate_matrix(expert_index, gates, weight.shape[0]) @ bias)[:, :, None, None]
    return out
