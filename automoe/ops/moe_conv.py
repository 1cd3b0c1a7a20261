"""Sample-level top-k mixture of convolution experts.

``y[b] = sum_j gates[b, j] * conv(x[b], weight[expert_index[b, j]])``

Four implementations with identical results (up to float rounding):

* :func:`moe_conv2d_sparse` groups the samples by expert and runs each expert's conv
  only on the samples routed to it, so the work is ``k/E`` of computing every expert.
* :func:`moe_conv2d_grouped` mixes each sample's k selected filters into one (a conv is
  linear in its filter: ``sum_j g_j conv(x, W_j) = conv(x, sum_j g_j W_j)``) and runs one
  conv with a group per sample: no expert is touched for a sample that did not select it,
  and there is one conv call per layer instead of one per expert (the CPU's small-layer
  path; CondConv's kernel mixing, restricted to the selected experts).
* :func:`moe_conv2d_padded` runs all experts in one conv with a group per expert, each
  expert's samples padded to the busiest expert's count (the CPU's path for layers whose
  filters are larger than their maps).
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

    # one unbind: its backward stacks the experts' gradients once, where indexing weight[e]
    # per expert would add E weight-sized zero-padded gradients
    filters = weight.unbind(0)
    biases = [None] * num_experts if bias is None else bias.unbind(0)

    def run_expert(e: int, rows: torch.Tensor) -> torch.Tensor:  # (n, C, H, W) -> (n, O, ..)
        return F.conv2d(rows, filters[e], biases[e], stride, padding)

    return dispatch_by_expert(x, expert_index, gates, num_experts, run_expert,
                              (out_channels, out_h, out_w))


def per_sample_conv2d(x: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None,
                      stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Convolve each sample with its own kernel: one conv with ``groups = B``.

    Args:
        x: ``(B, C, H, W)``.
        kernels: ``(B, O, C, kh, kw)``; sample b uses ``kernels[b]``.
        bias: ``(B, O)`` or ``None``.

    Returns:
        ``(B, O, OH, OW)``.
    """
    batch, channels = x.shape[:2]
    out_channels = kernels.shape[1]
    if batch == 0:  # groups must be >= 1
        return x.new_zeros(0, out_channels, *conv_out_hw(x, kernels, stride, padding))
    y = F.conv2d(x.reshape(1, batch * channels, *x.shape[2:]),
                 kernels.reshape(batch * out_channels, *kernels.shape[2:]),
                 None if bias is None else bias.reshape(-1), stride, padding,
                 groups=batch)  # (1, B*O, OH, OW)
    return y.view(batch, out_channels, *y.shape[2:])


def moe_conv2d_grouped(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    expert_index: torch.Tensor,
    gates: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """Mix each sample's selected filters, ``sum_j gates[b, j] * weight[expert_index[b, j]]``,
    then one per-sample conv. Arguments and result as :func:`moe_conv2d_sparse`.

    At k = 1 the sample's expert filter is used as it is and the gate scales the output
    (``(B, O, OH, OW)`` values, fewer than the filters' ``(B, O, C, kh, kw)`` on small maps);
    at k > 1 mixing costs ``k * O * C * kh * kw`` multiply-adds per sample, one ``bmm``. No
    shape depends on the routing, so nothing is read back from the device.
    """
    check_moe_conv_args(x, weight, bias, expert_index, gates)
    batch, k = expert_index.shape
    kept = gates * (expert_index >= 0)  # (B, k): a dropped assignment weighs 0
    rows = expert_index.clamp(min=0).reshape(-1)  # (B*k,)
    selected = weight.index_select(0, rows)  # (B*k, O, C, kh, kw)
    selected_bias = None if bias is None else bias.index_select(0, rows)  # (B*k, O)
    if k == 1:
        y = per_sample_conv2d(x, selected, selected_bias, stride, padding)
        return y * kept.to(y.dtype).view(batch, 1, 1, 1)
    mix = kept.to(weight.dtype).unsqueeze(1)  # (B, 1, k)
    kernels = torch.bmm(mix, selected.view(batch, k, -1))  # (B, 1, O*C*kh*kw)
    mixed_bias = None if bias is None else torch.bmm(
        mix.to(bias.dtype), selected_bias.view(batch, k, -1)).view(batch, -1)  # (B, O)
    return per_sample_conv2d(x, kernels.view(batch, *weight.shape[1:]), mixed_bias, stride,
                             padding)


@eager_under_compile
def moe_conv2d_padded(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    expert_index: torch.Tensor,
    gates: torch.Tensor,
    stride: int = 1,
    padding: int = 0,
) -> torch.Tensor:
    """Run every expert in one conv with a group per expert, over a buffer in which each
    expert's samples are padded to the busiest expert's count. Arguments and result as
    :func:`moe_conv2d_sparse`.

    Where a sample's filter is larger than its maps (many channels, small maps) this moves
    the maps instead of per-sample filters (:func:`moe_conv2d_grouped`). The buffer is laid
    out ``(n_max, E, C, H, W)``: viewed as ``(n_max, E*C, H, W)`` its channel group e is
    expert e's, so the grouped conv needs no transpose, and the assignment of the j-th
    sample routed to expert e sits at row ``j * E + e``. The padding rows are zeros and are
    computed too: ``E * n_max`` rows, ``B * k`` when the routing is even. Reads the expert
    counts on the host (one sync), as the sparse path does.
    """
    check_moe_conv_args(x, weight, bias, expert_index, gates)
    batch, k = expert_index.shape
    num_experts, out_channels = weight.shape[:2]
    out_h, out_w = conv_out_hw(x, weight, stride, padding)
    channels, height, width = x.shape[1:]
    flat = expert_index.reshape(-1)  # (A,) A = B*k, -1 = dropped
    # each assignment's rank among the earlier ones of its class (class 0: dropped)
    member = F.one_hot(flat + 1, num_experts + 1)  # (A, E+1)
    seen = member.cumsum(0)  # (A, E+1)
    rank = (seen * member).sum(1) - 1  # (A,)
    counts = seen[-1].tolist() if batch else [0] * (num_experts + 1)  # reads the host
    longest = max(counts[1:])
    if longest == 0:  # an empty batch, or every assignment dropped
        return x.new_zeros(batch, out_channels, out_h, out_w)
    rows = rank * num_experts + flat  # (A,) each assignment's row in the buffer
    read = rows  # (A,) the conv output row each assignment reads
    weights = gates  # (B, k)
    if counts[0]:  # drops: each one reads row 0 and weighs 0, and its input goes to a row
        kept = flat >= 0  # of its own past the conv's rows
        read = torch.where(kept, rows, 0)
        rows = torch.where(kept, rows, longest * num_experts + rank)
        weights = gates * kept.view(batch, k)
    source = x if k == 1 else x.unsqueeze(1).expand(batch, k, channels, height, width
                                                    ).reshape(-1, channels, height, width)
    buffer = x.new_zeros(longest * num_experts + counts[0], channels, height, width
                         ).index_copy(0, rows, source)
    y = F.conv2d(buffer[:longest * num_experts].view(longest, num_experts * channels,
                                                      height, width),
                 weight.reshape(num_experts * out_channels, *weight.shape[2:]),
                 None if bias is None else bias.reshape(-1), stride, padding,
                 groups=num_experts)  # (n_max, E*O, OH, OW)
    # each assignment's output, in sample order (reshape: a channels-last weight gives a
    # channels-last output)
    y = y.reshape(longest * num_experts, out_channels, out_h, out_w).index_select(
        0, read)  # (A, O, OH, OW)
    weights = weights.to(y.dtype)
    if k == 1:
        return y * weights.view(batch, 1, 1, 1)
    # sum_j g_j y_j per sample, in a fixed order (no atomics, as the sparse path's adds)
    y = y.reshape(batch, k, out_channels, out_h, out_w) * weights.view(batch, k, 1, 1, 1)
    return y.sum(1)


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
    dispatch = resolve_dispatch(dispatch, x, weight, stride, expert_index)
    if dispatch == "triton":
        # optional extra: importing the Triton op imports triton (CUDA runs only)
        from automoe.ops.moe_conv_triton import moe_conv2d_triton

        return moe_conv2d_triton(x, weight, bias, expert_index, gates, stride, padding,
                                 allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    if dispatch == "sparse":
        return moe_conv2d_sparse(x, weight, bias, expert_index, gates, stride, padding)
    if dispatch == "grouped":
        return moe_conv2d_grouped(x, weight, bias, expert_index, gates, stride, padding)
    if dispatch == "padded":
        return moe_conv2d_padded(x, weight, bias, expert_index, gates, stride, padding)
    return moe_conv2d_reference(x, weight, bias, expert_index, gates, stride, padding)
