"""What every MoE op shares: the dispatch modes and how "auto" resolves, argument checks,
the dense gate matrix, the conv output size, and the autocast of custom ops' inputs."""

from __future__ import annotations

import torch

# "sparse": gather/conv/scatter in PyTorch, a conv call per expert; "grouped": each sample's
# selected filters mixed into one, then one conv with a group per sample; "padded": one
# conv with a group per expert over its samples padded to the busiest expert's count
# (grouped and padded are conv-expert paths; other layers run "sparse" for them);
# "reference": compute all, mask; "triton": the Triton kernels (CUDA); "auto": see
# resolve_dispatch.
DISPATCH_MODES = ("sparse", "grouped", "padded", "reference", "triton", "auto")

# How "auto" picks a conv-expert path on the CPU. A conv call has a fixed cost that E calls
# on a few samples each pay E times; grouped and padded pay it once. Measured forward +
# backward, k = 1, on 2 cores (bench/layers.py --cpu-paths: B 64 and 128, E 4 and 8, C
# 8-128, maps 4x4-32x32): up to B x max(C, O) = 2048 grouped was 2.1x faster than a conv
# per expert (median of 40 shapes; 0.85x-7.0x), above it 0.73x (down to 0.08x at C 128:
# wide groups are slow). Per-sample filters much larger than the maps (late, small-map
# layers) make B large filter buffers that can cost more than the conv (1.5-4x, depending
# on the allocator's state); padded moves the maps instead and was 1.6-4x faster than
# grouped on the two such layers of a digits ResNet-8. Padded pads every expert to the
# busiest one, so an uneven routing weighs its maps up: on a digits ResNet-8 at
# initialisation (19 of 64 samples on one of 8 experts, 2.4x the rows) grouped was faster.
# Above the grouped limit, a conv per expert whose run is small (the busiest expert's
# samples x filter x output map <= 32M MACs: small maps) loses to padded's one call: in
# the same table 10 such shapes ran 1.0-2.9x faster padded, and none slower.
GROUPED_MAX_CHANNELS = 2048
PADDED_FILTER_TO_MAPS = 2
PADDED_MAX_RUN_MACS = 32_000_000


def resolve_dispatch(dispatch: str, x: torch.Tensor, weight: torch.Tensor | None = None,
                     stride: int = 1, expert_index: torch.Tensor | None = None) -> str:
    """The concrete path for ``dispatch``.

    ``"auto"`` means Triton on CUDA. On the CPU, for conv experts ``weight``
    (E, O, C, kh, kw) on ``x`` (B, C, H, W), with ``n_max`` the busiest expert's count in
    ``expert_index`` (B, k) (one small host read; ``B / E`` without it) and ``OH =
    ceil(H / stride)``:

    * if ``B * max(O, C) >`` :data:`GROUPED_MAX_CHANNELS`: ``"padded"`` if the busiest
      expert's run, ``n_max * O*C*kh*kw * OH*OW`` multiply-adds, is at most
      :data:`PADDED_MAX_RUN_MACS`, else ``"sparse"``;
    * else ``"padded"`` if a sample's filter ``O*C*kh*kw`` is more than
      :data:`PADDED_FILTER_TO_MAPS` times its maps ``C*H*W + O*OH*OW`` times the padding's
      overhead ``E * n_max / (B * k)`` (at least 1; the routing is read only when it can
      change the answer), else ``"grouped"``;
    * ``"sparse"`` while ``torch.compile`` traces.

    Without ``weight`` (other layers) ``"auto"``, ``"grouped"`` and ``"padded"`` mean
    ``"sparse"`` on the CPU.
    """
    if dispatch not in DISPATCH_MODES:
        raise ValueError(f"unknown dispatch {dispatch!r}; expected one of {DISPATCH_MODES}")
    if dispatch == "auto":
        if x.is_cuda:
            return "triton"
        # under torch.compile the CPU keeps the eager per-expert path: Inductor failed to
        # lower the grouped conv once batch and map sizes turned symbolic (a second model or
        # batch size in one process), and compiled MoE steps were slower than eager ones
        if weight is None or torch.compiler.is_compiling():
            return "sparse"
        batch = x.shape[0]
        num_experts, out_channels, channels = weight.shape[:3]
        out_hw = -(-x.shape[2] // stride) * -(-x.shape[3] // stride)  # of a "same" conv
        filter_size = weight[0].numel()
        maps = channels * x.shape[2] * x.shape[3] + out_channels * out_hw
        wide = batch * max(out_channels, channels) > GROUPED_MAX_CHANNELS
        if not wide and filter_size <= PADDED_FILTER_TO_MAPS * maps:
            return "grouped"  # whatever the routing: padding only adds rows
        assignments, busiest = batch, batch / num_experts  # k = 1, even: without a routing
        if expert_index is not None and expert_index.numel():
            assignments = expert_index.numel()
            counts = torch.bincount(expert_index.reshape(-1) + 1, minlength=num_experts + 1)
            busiest = int(counts[1:].max())
        if wide:
            small_runs = busiest * filter_size * out_hw <= PADDED_MAX_RUN_MACS
            return "padded" if small_runs else "sparse"
        overhead = max(1.0, num_experts * busiest / assignments)  # padded rows per needed row
        return "padded" if filter_size > PADDED_FILTER_TO_MAPS * maps * overhead else "grouped"
    if dispatch in ("grouped", "padded") and weight is None:
        return "sparse"
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
    """``(..., B, E)`` gates of ``(..., B, k)`` ones, with zeros for unselected experts;
    ``-1`` (dropped) ids add nothing."""
    valid = expert_index >= 0
    return gates.new_zeros(*gates.shape[:-1], num_experts).scatter_add(
        -1, expert_index.clamp(min=0), gates * valid)


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
