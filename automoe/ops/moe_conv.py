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


# Each expert's sample count changes every batch: compiled, it would recompile until every
# size had been seen. It runs eagerly inside compiled models (the Triton op compiles).
@torch.compiler.disable
def moe_conv2d_sparse(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    expert_index: torch.Tensor,
    gates: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """Run each expert only on the samples routed to it (gather, conv, scatter-add).

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
    batch, k = expert_index.shape
    num_experts, out_channels = weight.shape[:2]
    kh, kw = weight.shape[-2:]
    out_h = (x.shape[2] + 2 * padding - kh) // stride + 1
    out_w = (x.shape[3] + 2 * padding - kw) // stride + 1
    out = None  # allocated in the experts' output dtype (the autocast one under autocast)
    # Sort the B*k (sample, slot) assignments by expert so each expert's samples form
    # one contiguous run of `order`.
    flat_expert = expert_index.reshape(-1)  # (B*k,)
    order = torch.argsort(flat_expert, stable=True)  # (B*k,), dropped (-1) first
    counts = torch.bincount(flat_expert + 1, minlength=num_experts + 1).tolist()
    flat_gates = gates.reshape(-1)
    start = counts.pop(0)  # skip the dropped assignments
    for e, n in enumerate(counts):
        if n == 0:
            continue
        assignment = order[start:start + n]  # positions in the flat (B*k) list
        start += n
        rows = assignment // k  # (n,) sample ids
        y = F.conv2d(x.index_select(0, rows), weight[e],
                     None if bias is None else bias[e], stride, padding)  # (n, O, OH, OW)
        y = y * flat_gates.index_select(0, assignment).to(y.dtype).view(-1, 1, 1, 1)
        if out is None:
            out = y.new_zeros(batch, out_channels, out_h, out_w)
        out.index_add_(0, rows, y)  # in place: one output buffer for all experts
    return out if out is not None else x.new_zeros(batch, out_channels, out_h, out_w)


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
