"""Per-sample channel gating (DeepMoE): ``y[b, o] = g[b, o] * conv(x[b], W[o])``.

Every output channel is an expert; a gate of 0 closes the channel for that sample. Three
paths with identical results:

* :func:`channel_gated_conv2d_sparse` computes only the channels some sample of the batch
  keeps open (skipping each sample's own closed channels needs a per-sample kernel);
* the Triton path (``automoe.ops.channel_gate_triton``) computes, per sample, only its
  open groups of ``group_size`` channels;
* :func:`channel_gated_conv2d_reference` computes every channel and multiplies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from automoe.ops._common import conv_out_hw, resolve_dispatch


def resolve_channel_dispatch(dispatch: str, x: torch.Tensor, out_channels: int,
                             group_size: int) -> str:
    """The concrete path: like :func:`~automoe.ops._common.resolve_dispatch`, except that
    the Triton kernel needs ``group_size`` to divide ``out_channels`` (else sparse)."""
    mode = resolve_dispatch(dispatch, x)
    if mode == "triton" and out_channels % group_size:
        return "sparse"
    return mode


def channel_gated_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, gates: torch.Tensor,
                                   stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Every channel on every sample, then the gates: ``(B, O, OH, OW)``."""
    return F.conv2d(x, weight, None, stride, padding) * gates[:, :, None, None]


def channel_gated_conv2d_sparse(x: torch.Tensor, weight: torch.Tensor, gates: torch.Tensor,
                                stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Only the channels some sample keeps (``gates > 0``); the others are 0.

    Args:
        x: ``(B, C, H, W)``.
        weight: ``(O, C, kh, kw)``.
        gates: ``(B, O)``, >= 0.
    """
    active = (gates > 0).any(dim=0).nonzero().flatten()  # (A,) channels some sample keeps
    if active.numel() == 0:  # every channel closed for every sample: nothing to compute
        return x.new_zeros(x.shape[0], weight.shape[0], *conv_out_hw(x, weight, stride, padding))
    y_active = F.conv2d(x, weight.index_select(0, active), None, stride, padding)  # (B, A, ..)
    y_active = y_active * gates.index_select(1, active)[:, :, None, None]
    out = y_active.new_zeros(x.shape[0], weight.shape[0], *y_active.shape[-2:])
    return out.index_copy(1, active, y_active)


def channel_gated_conv2d(x: torch.Tensor, weight: torch.Tensor, gates: torch.Tensor,
                         stride: int = 1, padding: int = 0, dispatch: str = "sparse",
                         group_size: int = 16) -> torch.Tensor:
    """Channel-gated conv by ``dispatch`` (see :func:`resolve_channel_dispatch`)."""
    mode = resolve_channel_dispatch(dispatch, x, weight.shape[0], group_size)
    if mode == "triton":
        # optional extra: importing the Triton op imports triton (CUDA runs only)
        from automoe.ops.channel_gate_triton import channel_gated_conv2d_triton

        return channel_gated_conv2d_triton(x, weight, gates, stride, padding, group_size,
                                           allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    if mode == "sparse":
        return channel_gated_conv2d_sparse(x, weight, gates, stride, padding)
    return channel_gated_conv2d_reference(x, weight, gates, stride, padding)
