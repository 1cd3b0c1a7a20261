"""Differentiable MoE operations, each with a pure-PyTorch reference to test against."""

from __future__ import annotations

from automoe.ops._common import (
    DISPATCH_MODES,
    GROUPED_MAX_CHANNELS,
    PADDED_FILTER_TO_MAPS,
    PADDED_MAX_RUN_MACS,
    dense_gate_matrix,
    resolve_dispatch,
)
from automoe.ops.channel_gate import (
    channel_gated_conv2d,
    channel_gated_conv2d_reference,
    channel_gated_conv2d_sparse,
    resolve_channel_dispatch,
)
from automoe.ops.moe_conv import (
    moe_conv2d,
    moe_conv2d_grouped,
    moe_conv2d_padded,
    moe_conv2d_reference,
    moe_conv2d_sparse,
    per_sample_conv2d,
)
from automoe.ops.moe_dispatch import moe_dispatch_reference, moe_dispatch_sparse

# The Triton ops live in automoe.ops.moe_conv_triton and automoe.ops.channel_gate_triton;
# importing them imports triton.

__all__ = [
    "DISPATCH_MODES",
    "GROUPED_MAX_CHANNELS",
    "PADDED_FILTER_TO_MAPS",
    "PADDED_MAX_RUN_MACS",
    "channel_gated_conv2d",
    "channel_gated_conv2d_reference",
    "channel_gated_conv2d_sparse",
    "dense_gate_matrix",
    "moe_conv2d",
    "moe_conv2d_grouped",
    "moe_conv2d_padded",
    "moe_conv2d_reference",
    "moe_conv2d_sparse",
    "moe_dispatch_reference",
    "moe_dispatch_sparse",
    "per_sample_conv2d",
    "resolve_channel_dispatch",
    "resolve_dispatch",
]
