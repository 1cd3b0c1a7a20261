"""Soft mixtures of conv kernels: CondConv (Yang et al. 2019) / DynamicConv (Chen et al.
2020).

Each sample is convolved once, with its own mixture ``sum_e r_e W_e`` of the E kernels.
The mixture weights come from the pooled input: GAP -> (standardised) -> Linear(C -> E)
-> softmax(z / T). DynamicConv anneals the temperature T from about 30 to 1 over the first
part of training, so that early on every kernel gets a share of every sample's gradient;
nothing is skipped, so nothing can collapse onto one kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from automoe.layers.base import MoEModule
from automoe.layers.router import RouterNorm
from automoe.layers.rules import check_routing
from automoe.ops import per_sample_conv2d


class CondConv2d(MoEModule):
    """A conv whose kernel is a per-sample softmax mixture of ``num_experts`` kernels.

    ``dispatch="reference"`` convolves with every kernel and mixes the outputs (the same
    result, E times the work), for testing; every other mode mixes the kernels first and
    runs one grouped conv (one group per sample).

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv2d``.
        num_experts: E kernels.
        temperature: softmax temperature at the start of training (DynamicConv: 30).
        anneal: fraction of the training steps over which the temperature falls linearly
            to 1 (set by the model's ``set_training_progress``); 0 keeps it at 1.
        router_norm: ``"batch"`` standardises the pooled input of the mixture router.
        dispatch: ``"reference"`` or any other mode (the grouped conv).
    """

    usage_kind = "soft"  # usage statistics are mixture weights, not expert ids

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, *, num_experts: int, temperature: float = 30.0,
                 anneal: float = 0.3, router_norm: str = "batch", dispatch: str = "sparse"):
        super().__init__(num_experts, num_experts, balance_loss="none", balance_weight=0.0,
                         gate="topk", dispatch=dispatch)
        if not temperature >= 1:
            raise ValueError(f"temperature must be >= 1, got {temperature}")
        if not 0 <= anneal <= 1:
            raise ValueError(f"anneal must be in [0, 1], got {anneal}")
        check_routing(router_norm=router_norm)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.initial_temperature = float(temperature)
        self.anneal = anneal
        # (E, O, C, kh, kw): kernel e is weight[e]; independent draws, because a mixture of
        # equal kernels gives every kernel the same gradient direction.
        self.weight = nn.Parameter(
            torch.empty(num_experts, out_channels, in_channels, kernel_size, kernel_size))
        fan_out = out_channels * kernel_size * kernel_size
        nn.init.normal_(self.weight, 0.0, math.sqrt(2.0 / fan_out))
        self.mixer = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            *([RouterNorm(in_channels)] if router_norm == "batch" else []),
            nn.Linear(in_channels, num_experts))
        # kept in the checkpoint: a trained model mixes at the temperature it ended with
        self.register_buffer("temperature", torch.tensor(self.initial_temperature))
        self.last_mixture: torch.Tensor | None = None  # (B, E) of the last forward

    def set_training_progress(self, fraction: float) -> None:
        """Temperature for ``fraction`` of the training steps done: linear from the
        initial temperature to 1 over the first ``anneal`` of them, then 1."""
        left = 0.0 if self.anneal == 0 else max(0.0, 1.0 - fraction / self.anneal)
        self.temperature.fill_(1.0 + (self.initial_temperature - 1.0) * left)

    def mixture(self, x: torch.Tensor) -> torch.Tensor:
        """(B, E) mixture weights of the batch ``x`` (B, C, H, W)."""
        return (self.mixer(x) / self.temperature).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix = self.mixture(x)  # (B, E)
        if self.usage_log is not None:
            self.usage_log.append(mix.detach().float().sum(0))  # (E,), stays on device
        if self.dispatch == "reference":  # every kernel on every sample, then mix
            outs = torch.stack([F.conv2d(x, w, None, self.stride, self.padding)
                                for w in self.weight], dim=1)  # (B, E, O, H', W')
            return (mix[:, :, None, None, None] * outs).sum(1)
        kernels = torch.einsum("be,eocij->bocij", mix, self.weight)  # (B, O, C, kh, kw)
        return per_sample_conv2d(x, kernels, None, self.stride, self.padding)

    def conv_macs(self, out_h: int, out_w: int) -> int:
        """MACs of the one mixed conv on one sample."""
        return self.out_channels * self.in_channels * self.kernel_size ** 2 * out_h * out_w

    def mixing_macs(self) -> int:
        """MACs of mixing the E kernels into one, per sample."""
        return self.weight.numel()

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, experts={self.num_experts}, "
                f"temperature={self.initial_temperature:g}->1 over {self.anneal:g}")
