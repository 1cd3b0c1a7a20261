"""Differentiable MoE operations, each with a pure-PyTorch reference to test against."""

from __future__ import annotations

from automoe.ops.moe_conv import (
    DISPATCH_MODES,
    dense_gate_matrix,
    moe_conv2d,
    moe_conv2d_reference,
    moe_conv2d_sparse,
)
from automoe.ops.moe_dispatch import moe_dispatch_reference, moe_dispatch_sparse

# moe_conv2d_triton lives in automoe.ops.moe_conv_triton; importing it imports triton.

__all__ = [
    "DISPATCH_MODES",
    "dense_gate_matrix",
    "moe_conv2d",
    "moe_conv2d_reference",
    "moe_conv2d_sparse",
    "moe_dispatch_reference",
    "moe_dispatch_sparse",
]
