"""What every MoE op shares: the dispatch modes and how "auto" resolves, argument checks,
the dense gate matrix, the conv output size, and the autocast of custom ops' inputs."""

from __future__ import annotations

import torch

# "sparse": gather/conv/scatter in PyTorch; "reference": compute all, mask; "triton": the
# Triton kernels (CUDA); "auto": "triton" for CUDA tensors, else "sparse".
DISPATCH_MODES = ("sparse", "reference", "triton", "auto")


def resolve_dispatch(dispatch: str, x: torch.Tensor) -> str:
    """The concrete path for ``dispatch``: ``"auto"`` means Triton on CUDA, else sparse."""
    if dispatch not in DISPATCH_MODES:
        raise ValueError(f"unknown dispatch {dispatch!r}; expected one of {DISPATCH_MODES}")
    if dispatch == "auto":
        return "triton" if x.is_cuda else "sparse"
    return dispatch


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


def autocast_inputs(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors in the autocast dtype when autocast is on for their device (as cuDNN
    convs would see them), else unchanged. Custom ops get no autocast rule of their own."""
    device_type = tensors[0].device.type
    if not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if t.is_floating_point() else t for t in tensors)
