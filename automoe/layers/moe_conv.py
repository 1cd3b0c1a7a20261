"""Mixture-of-experts convolution: E conv experts, per-sample top-k routing."""

from __future__ import annotations

import math

import torch
from torch import nn

from automoe.layers.balancing import importance_loss, load_loss
from automoe.layers.router import NoisyTopKRouter
from automoe.ops import DISPATCH_MODES, moe_conv2d


class MoEConv2d(nn.Module):
    """A conv layer replaced by ``num_experts`` copies and a per-sample top-k router.

    Each sample is convolved only with its k selected experts (``dispatch="sparse"``);
    ``dispatch="reference"`` computes all experts and masks, for testing.

    While training, :attr:`aux_loss` holds ``balance_weight * (CV(Imp)^2 + CV(Load)^2)``
    of the last forward (the load term needs noisy gating and ``k < E``); it is ``None``
    at eval or when the weight is 0.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv2d``
            (square kernels; ``padding=None`` gives "same" padding for odd kernels).
        num_experts: E.
        top_k: experts per sample.
        noisy_gating: learned Gaussian gate noise while training.
        gate_softmax, noise_init: see :class:`NoisyTopKRouter`.
        balance_weight: weight w of the importance + load loss.
        dispatch: ``"sparse"`` or ``"reference"``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        *,
        num_experts: int,
        top_k: int,
        noisy_gating: bool = True,
        gate_softmax: str = "all",
        noise_init: float = 1e-2,
        balance_weight: float = 0.0,
        dispatch: str = "sparse",
    ):
        super().__init__()
        if dispatch not in DISPATCH_MODES:
            raise ValueError(f"dispatch must be one of {DISPATCH_MODES}, got {dispatch!r}")
        if balance_weight < 0:
            raise ValueError(f"balance_weight must be >= 0, got {balance_weight}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.num_experts = num_experts
        self.top_k = top_k
        self.balance_weight = balance_weight
        self.dispatch = dispatch
        # (E, O, C, kh, kw): expert e is weight[e].
        self.weight = nn.Parameter(
            torch.empty(num_experts, out_channels, in_channels, kernel_size, kernel_size))
        self.router = NoisyTopKRouter(in_channels, num_experts, top_k, noisy=noisy_gating,
                                      gate_softmax=gate_softmax, noise_init=noise_init)
        self.aux_loss: torch.Tensor | None = None
        # Per-expert count of routed samples, only while usage tracking is on.
        self.usage_counts: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He init (fan_out, ReLU) per expert, as torchvision initialises ResNet convs.
        fan_out = self.out_channels * self.kernel_size * self.kernel_size
        std = math.sqrt(2.0 / fan_out)
        with torch.no_grad():
            self.weight.normal_(0.0, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.router(x)
        self.aux_loss = None
        if self.training and self.balance_weight > 0:
            loss = importance_loss(routing.dense_gates(self.num_experts))
            if routing.noise_std is not None and self.top_k < self.num_experts:
                loss = loss + load_loss(routing.clean_logits, routing.noisy_logits,
                                        routing.noise_std, self.top_k)
            self.aux_loss = self.balance_weight * loss
        if self.usage_counts is not None:
            self.usage_counts += torch.bincount(
                routing.expert_index.reshape(-1), minlength=self.num_experts).cpu()
        return moe_conv2d(x, self.weight, None, routing.expert_index, routing.gates,
                          self.stride, self.padding, self.dispatch)

    def expert_macs(self, out_h: int, out_w: int) -> int:
        """Multiply-accumulates of one expert on one sample with an ``out_h x out_w`` output."""
        return (self.out_channels * self.in_channels * self.kernel_size ** 2) * out_h * out_w

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, experts={self.num_experts}, "
                f"top_k={self.top_k}, balance_weight={self.balance_weight}, "
                f"dispatch={self.dispatch!r}")
