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


def _plan(gates: torch.Tensor, group_size: int):
    """Open (sample, group) pairs sorted by group: sample ids, group ids, (NG + 1,) offsets."""
    batch, out_channels = gates.shape
    num_groups = out_channels // group_size
    open_groups = (gates.view(batch, num_groups, group_size) > 0).any(dim=2)  # (B, NG)
    sample_ids, group_ids = open_groups.t().nonzero(as_tuple=True)  # sorted by group
    group_ids, sample_ids = sample_ids, group_ids  # nonzero of the transpose: (group, sample)
    offsets = torch.zeros(num_groups + 1, dtype=torch.long, device=gates.device)
    offsets[1:] = torch.bincount(group_ids, minlength=num_groups).cumsum(0)
    return sample_ids, group_ids, offsets


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
             padding: int, group_size: int,
             allow_tf32: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from automoe.kernels import expert_conv_forward

    sample_ids, group_ids, _ = _plan(gates, group_size)
    grouped = _grouped_weight(weight, group_size)  # (NG, G, C, KH, KW)
    y_open = expert_conv_forward(x, grouped, sample_ids, group_ids, stride, padding,
                                 allow_tf32)  # (A, G, OH, OW), ungated
    batch, num_groups = x.shape[0], grouped.shape[0]
    gate_open = gates.view(batch, num_groups, group_size)[sample_ids, group_ids]  # (A, G)
    out = x.new_zeros(batch, num_groups, group_size, *y_open.shape[-2:])
    out[sample_ids, group_ids] = y_open * gate_open.to(y_open.dtype)[:, :, None, None]
    return out.view(batch, weight.shape[0], *y_open.shape[-2:]), y_open


@_forward.register_fake
def _(x, weight, gates, stride, padding, group_size, allow_tf32):
    kh, kw = weight.shape[-2:]
    out_h = (x.shape[2] + 2 * padding - kh) // stride + 1
    out_w = (x.shape[3] + 2 * padding - kw) // stride + 1
    num_open = torch.library.get_ctx().new_dynamic_size()
    return (x.new_empty(x.shape[0], weight.shape[0], out_h, out_w),
            x.new_empty(num_open, group_size, out_h, out_w))


@torch.library.custom_op("automoe::channel_gated_conv2d_triton_backward", mutates_args=())
def _backward(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
              gates: torch.Tensor, y_open: torch.Tensor, stride: int, padding: int,
              group_size: int,
              allow_tf32: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from automoe.kernels import expert_conv_dw, expert_conv_dx

    sample_ids, group_ids, offsets = _plan(gates, group_size)
    grouped = _grouped_weight(weight, group_size)
    batch, num_groups = x.shape[0], grouped.shape[0]
    dy = grad_out.view(batch, num_groups, group_size,
                       *grad_out.shape[-2:])[sample_ids, group_ids]  # (A, G, OH, OW)
    gate_open = gates.view(batch, num_groups, group_size)[sample_ids, group_ids]  # (A, G)
    grad_gates = torch.zeros(batch, num_groups, group_size, device=gates.device,
                             dtype=torch.float32)
    grad_gates[sample_ids, group_ids] = (dy.float() * y_open.float()).sum(dim=(2, 3))
    gated = (dy * gate_open.to(dy.dtype)[:, :, None, None]).contiguous()
    dx_open = expert_conv_dx(gated, grouped, group_ids, tuple(x.shape[2:]), stride, padding,
                             allow_tf32)
    grad_x = torch.zeros_like(x).index_add_(0, sample_ids, dx_open)
    grad_w = expert_conv_dw(gated, x, sample_ids, offsets, tuple(weight.shape[-2:]), stride,
                            padding, allow_tf32)  # (NG, G, C, KH, KW)
    return (grad_x, grad_w.view_as(weight).to(weight.dtype),
            grad_gates.view_as(gates).to(gates.dtype))


@_backward.register_fake
def _(grad_out, x, weight, gates, y_open, stride, padding, group_size, allow_tf32):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(gates)


def _setup_context(ctx, inputs, output):
    x, weight, gates, stride, padding, group_size, allow_tf32 = inputs
    ctx.save_for_backward(x, weight, gates, output[1])
    ctx.conv = (stride, padding, group_size, allow_tf32)


def _autograd_backward(ctx, grad_out, grad_y_open):
    x, weight, gates, y_open = ctx.saved_tensors
    grad_x, grad_w, grad_gates = _backward(grad_out.contiguous(), x, weight, gates, y_open,
                                           *ctx.conv)
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
    return _forward(x, weight, gates, stride, padding, group_size, allow_tf32)[0]
