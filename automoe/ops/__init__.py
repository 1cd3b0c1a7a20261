"""Differentiable MoE operations, each with a pure-PyTorch reference to test against."""

from __future__ import annotations

from automoe.ops.moe_conv import (
    DISPATCH_MODES,
    moe_conv2d,
    moe_conv2d_reference,
    moe_conv2d_sparse,
)

__all__ = ["DISPATCH_MODES", "moe_conv2d", "moe_conv2d_reference", "moe_conv2d_sparse"]
