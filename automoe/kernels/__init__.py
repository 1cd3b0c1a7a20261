"""Triton kernels with shape-checked launchers.

Importing this package imports triton. On a machine without a GPU, set
``TRITON_INTERPRET=1`` before the import to run the kernels on CPU tensors (slow; for
tests at tiny shapes).
"""

from __future__ import annotations

from automoe.kernels.moe_conv import (
    BLOCK_SIZES,
    CONFIGS,
    SortedAssignments,
    dw_splits,
    expert_conv_dw,
    expert_conv_dx,
    expert_conv_forward,
    sort_assignments,
)

__all__ = ["BLOCK_SIZES", "CONFIGS", "SortedAssignments", "dw_splits", "expert_conv_dw",
           "expert_conv_dx", "expert_conv_forward", "sort_assignments"]
