"""Per-sample channel-gated conv on the Triton kernels: ``y[b, o] = g[b, o] * conv(x[b], W[o])``
computing, for each sample, only its open channel groups.

Output channels are split into groups of ``group_size`` (16 or more keeps tensor cores
busy). A group is open for a sample when any of its gates is > 0; the whole group is
computed and multiplied by its gates (closed channels inside an open group give 0). This is
the conv-expert computation with expert = channel group and assignment = (sample, open
group), so it runs on the same kernels; only the combine differs: each group writes its own
channel slice instead of adding to a shared output. Zero input channels (closed in the
previous layer) are still read.
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
from automoe.ops._common import autocast_inputs, conv_out_hw


def _plan(gates: torch.Tensor, group_size: int) -> SortedAssignments:
    """Open (sample, group) pairs sorted by group, closed ones last: groups are the experts
    and each sample has one slot per group."""
    batch, out_channels = gates.shape
    num_groups = out_channels // group_size
    open_groups = (gates.view(batch, num_groups, group_size) > 0).any(dim=2)  # (B, NG)
    group = torch.arange(num_groups, device=gates.device).expand(batch, num_groups)
    return sort_assignments(torch.where(open_groups, group, -1), num_groups)


def _grouped_weight(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    out_channels = weight.shape[0]
    return weight.view(out_channels // group_size, group_size, *weight.shape[1:])


def _check(x, weight, gates, group_size):
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W) and weight (O, C, KH, KW), got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if gates.shape != (x.shape[0], weight.shape[0]):
        raise ValueError(f"gates must be (B, O) = {(x.shape[0], weight.shape[0])}, got "
                         f"{tuple(gates.shape)}")
    if group_size < 1 or weight.shape[0] % group_size:
        raise ValueError(f"{weight.shape[0]} output channels do not split into groups of "
                         f"{group_size}")


@torch.library.custom_op("automoe::channel_gated_conv2d_triton", mutates_args=())
def _forward(x: torch.Tensor, weight: torch.Tensor, gates: torch.Tensor, stride: int,
             padding: int, group_size: int, allow_tf32: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    plan = _plan(gates, group_size)
    grouped = _grouped_weight(weight, group_size)  # (NG, G, C, KH, KW)
    # one (G, OH, OW) row per (sample, group), zero for closed groups: the rows of a sample
    # laid end to end are its ungated (O, OH, OW) output
    y = expert_conv_forward(x, grouped, plan, stride, padding, allow_tf32)
    y = y.view(x.shape[0], weight.shape[0], *y.shape[-2:])
    return y * gates.to(y.dtype)[:, :, None, None], y, plan.positions, plan.offsets


@_forward.register_fake
def _(x, weight, gates, stride, padding, group_size, allow_tf32):
    out_h, out_w = conv_out_hw(x, weight, stride, padding)
    batch, num_groups = x.shape[0], weight.shape[0] // group_size
    out = x.new_empty(batch, weight.shape[0], out_h, out_w)
    return (out, torch.empty_like(out), gates.new_empty(batch * num_groups, dtype=torch.long),
            gates.new_empty(num_groups + 1, dtype=torch.long))


@torch.library.custom_op("automoe::channel_gated_conv2d_triton_backward", mutates_args=())
def _backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
              gates: torch.Tensor, y: torch.Tensor, positions: torch.Tensor,
              offsets: torch.Tensor, stride: int, padding: int, group_size: int,
              allow_tf32: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, out_channels = gates.shape
    num_groups = out_channels // group_size
    plan = SortedAssignments(positions, offsets, num_groups)
    grouped = _grouped_weight(weight, group_size)
    # y is 0 in closed groups, so their gates get no gradient: they were never computed
    grad_gates = (grad_out.float() * y.float()).sum(dim=(2, 3))  # (B, O)
    gated = grad_out * gates.to(grad_out.dtype)[:, :, None, None]  # (B, O, OH, OW)
    gated = gated.reshape(batch * num_groups, group_size, *grad_out.shape[-2:])  # a row each
    dx = expert_conv_dx(gated, grouped, plan, tuple(x.shape[2:]), None, False, stride,
                        padding, allow_tf32)  # (B*NG, C, H, W)
    grad_x = dx.view(batch, num_groups, *x.shape[1:]).sum(1)
    grad_w = expert_conv_dw(gated, x, plan, tuple(weight.shape[-2:]), None, False, stride,
                            padding, allow_tf32)  # (NG, G, C, KH, KW)
    return grad_x, grad_w.view_as(weight).to(weight.dtype), grad_gates.to(gates.dtype)


@_backward.register_fake
def _(grad_out, x, weight, gates, y, positions, offsets, stride, padding, group_size,
      allow_tf32):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(gates)


def _setup_context(ctx, inputs, output):
    x, weight, gates, stride, padding, group_size, allow_tf32 = inputs
    ctx.save_for_backward(x, weight, gates, *output[1:])
    ctx.conv = (stride, padding, group_size, allow_tf32)


def _autograd_backward(ctx, grad_out, grad_y, grad_positions, grad_offsets):
    x, weight, gates, y, positions, offsets = ctx.saved_tensors
    grad_x, grad_w, grad_gates = _backward(grad_out.to(y.dtype), x, weight, gates, y,
                                           positions, offsets, *ctx.conv)
    return grad_x, grad_w, grad_gates, None, None, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


def channel_gated_conv2d_triton(x: torch.Tensor, weight: torch.Tensor, gates: torch.Tensor,
                                stride: int = 1, padding: int = 0, group_size: int = 16,
                                allow_tf32: bool = False) -> torch.Tensor:
    """``g[:, :, None, None] * conv2d(x, weight)``, skipping each sample's closed groups.

    Args:
        x: (B, C, H, W). weight: (O, C, KH, KW). gates: (B, O), >= 0 (0 = closed).
        group_size: channels per group; must divide O.
    """
    _check(x, weight, gates, group_size)
    x, weight = autocast_inputs(x, weight)
    return _forward(x, weight, gates, stride, padding, group_size, allow_tf32)[0]
