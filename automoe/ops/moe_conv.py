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

from automoe.ops._eager import eager_under_compile
from automoe.ops._sorted import dispatch_by_expert

# "sparse": gather/conv/scatter in PyTorch; "reference": compute all, mask; "triton": the
# Triton kernels (CUDA); "auto": "triton" for CUDA tensors, else "sparse".
DISPATCH_MODES = ("sparse", "reference", "triton", "auto")


def check_moe_conv_args(x, weight, bias, expert_index, gates) -> None:
    """Shapes only (no values are read, so nothing waits for the device)."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 5:
        raise ValueError(f"weight must be (E, O, C, kh, kw), got shape {tuple(weight.shape)}")
    if weight.shape[2] != x.shape[1]:
        raise ValueError(f"weight has {weight.shape[2]} input channels, x has {x.shape[1]}")
    if expert_index.shape != gates.shape or expert_index.dim() != 2:
        raise ValueError(
            f"expert_index {tuple(expert_index.shape)} and gates {tuple(gates.shape)} "
            "must both be (B, k)"
        )
    if expert_index.shape[0] != x.shape[0]:
        raise ValueError(f"routing is for {expert_index.shape[0]} samples, x has {x.shape[0]}")
    if bias is not None and bias.shape != weight.shape[:2]:
        raise ValueError(f"bias must be (E, O) = {tuple(weight.shape[:2])}, got {tuple(bias.shape)}")


def dense_gate_matrix(expert_index: torch.Tensor, gates: torch.Tensor,
                      num_experts: int) -> torch.Tensor:
    """``(B, E)`` gates with zeros for unselected experts; ``-1`` (dropped) ids add nothing."""
    valid = expert_index >= 0
    return gates.new_zeros(gates.shape[0], num_experts).scatter_add(
        1, expert_index.clamp(min=0), gates * valid)


def conv_out_hw(x: torch.Tensor, weight: torch.Tensor, stride: int,
                padding: int) -> tuple[int, int]:
    """Output map (OH, OW) of a conv of ``x`` with ``weight``'s last two (kh, kw) dims."""
    kh, kw = weight.shape[-2:]
    return ((x.shape[2] + 2 * padding - kh) // stride + 1,
            (x.shape[3] + 2 * padding - kw) // stride + 1)


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
    if dispatch == "auto":
        dispatch = "triton" if x.is_cuda else "sparse"
    if dispatch == "triton":
        from automoe.ops.moe_conv_triton import moe_conv2d_triton

        return moe_conv2d_triton(x, weight, bias, expert_index, gates, stride, padding,
                                 allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    if dispatch == "sparse":
        return moe_conv2d_sparse(x, weight, bias, expert_index, gates, stride, padding)
    if dispatch == "reference":
        return moe_conv2d_reference(x, weight, bias, expert_index, gates, stride, padding)
    raise ValueError(f"unknown dispatch {dispatch!r}; expected one of {DISPATCH_MODES}")
