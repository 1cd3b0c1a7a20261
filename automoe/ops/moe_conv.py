"""Sample-level top-k mixture of convolution experts.

``y[b] = sum_j gates[b, j] * conv(x[b], weight[expert_index[b, j]])``

Two implementations with identical results:

* :func:`moe_conv2d_sparse` groups the samples by expert and runs each expert's conv
  only on the samples routed to it, so the work is ``k/E`` of computing every expert.
* :func:`moe_conv2d_reference` computes every expert on every sample and masks: the
  AdvMoE way, kept as the ground truth for tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from automoe.ops._common import (
    check_moe_conv_args,
    conv_out_hw,
    dense_gate_matrix,
    resolve_dispatch,
)
from automoe.ops._eager import eager_under_compile
from automoe.ops._sorted import dispatch_by_expert


@eager_under_compile
def moe_conv2d_sparse(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    expert_index: torch.Tensor,
    gates: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """Run each expert only on the samples routed to it (one gather, a conv per expert).

    Args:
        x: ``(B, C, H, W)`` input.
        weight: ``(E, O, C, kh, kw)`` expert filters.
        bias: ``(E, O)`` or ``None``.
        expert_index: ``(B, k)`` int64 expert ids; the k ids of a sample are distinct.
            ``-1`` marks an assignment dropped by a capacity limit (skipped).
        gates: ``(B, k)`` weights of the selected experts.

    Returns:
        ``(B, O, OH, OW)``.
    """
    check_moe_conv_args(x, weight, bias, expert_index, gates)
    num_experts, out_channels = weight.shape[:2]
    out_h, out_w = conv_out_hw(x, weight, stride, padding)

    def run_expert(e: int, rows: torch.Tensor) -> torch.Tensor:  # (n, C, H, W) -> (n, O, ..)
        return F.conv2d(rows, weight[e], None if bias is None else bias[e], stride, padding)

    return dispatch_by_expert(x, expert_index, gates, num_experts, run_expert,
                              (out_channels, out_h, out_w))


def moe_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    expert_index: torch.Tensor,
    gates: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """Compute every expert on every sample, then combine with a dense gate matrix."""
    check_moe_conv_args(x, weight, bias, expert_index, gates)
    batch = x.shape[0]
    num_experts, out_channels = weight.shape[:2]
    all_weight = weight.reshape(num_experts * out_channels, *weight.shape[2:])
    all_bias = None if bias is None else bias.reshape(-1)
    y = F.conv2d(x, all_weight, all_bias, stride, padding)  # (B, E*O, OH, OW)
    y = y.view(batch, num_experts, out_channels, *y.shape[-2:])  # (B, E, O, OH, OW)
    dense_gates = dense_gate_matrix(expert_index, gates, num_experts)  # (B, E)
    return torch.einsum("be,beohw->bohw", dense_gates, y)


def moe_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    expert_index: torch.Tensor,
    gates: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
    dispatch: str = "sparse",
) -> torch.Tensor:
    """Mixture of conv experts; ``dispatch`` is one of :data:`DISPATCH_MODES`."""
    dispatch = resolve_dispatch(dispatch, x)
    if dispatch == "triton":
        # optional extra: importing the Triton op imports triton (CUDA runs only)
        from automoe.ops.moe_conv_triton import moe_conv2d_triton

        return moe_conv2d_triton(x, weight, bias, expert_index, gates, stride, padding,
                                 allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    if dispatch == "sparse":
        return moe_conv2d_sparse(x, weight, bias, expert_index, gates, stride, padding)
    return moe_conv2d_reference(x, weight, bias, expert_index, gates, stride, padding)
