"""Mixture-of-experts convolution: E conv experts, per-sample top-k routing."""

from __future__ import annotations

import math

import torch
from torch import nn

from automoe.layers.base import EXPERT_INITS, MoEModule
from automoe.layers.router import TopKRouter
from automoe.ops import moe_conv2d


class MoEConv2d(MoEModule):
    """A conv layer replaced by ``num_experts`` copies and a per-sample top-k router.

    Each sample is convolved only with its k selected experts (``dispatch="sparse"``);
    ``dispatch="reference"`` computes all experts and masks, for testing. The experts'
    weight ``(E, O, C, kh, kw)`` is also AdvMoE's widened conv of ``E * O`` filters, whose
    pathway e is the slice ``[e * O, (e + 1) * O)``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv2d``
            (square kernels; ``padding=None`` gives "same" padding for odd kernels).
        num_experts, top_k: E and k.
        balance_loss, balance_weight, z_loss_weight: see
            :class:`~automoe.layers.base.MoEModule`.
        dispatch: ``"sparse"`` or ``"reference"``.
        expert_init: ``"shared"`` (every expert starts as the same draw) or
            ``"independent"``; see :data:`~automoe.layers.base.EXPERT_INITS`.
        global_routing: routed by a model-level router: the model sets
            :attr:`context` before each forward instead of this layer scoring ``x``.
        router_kwargs: passed to :class:`~automoe.layers.router.TopKRouter` (scorer, gate,
            gate_softmax, noise_init, capacity_factor, overflow, batch_priority, ...).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, *, num_experts: int, top_k: int,
                 balance_loss: str = "importance_load", balance_weight: float = 0.0,
                 dispatch: str = "sparse", global_routing: bool = False,
                 z_loss_weight: float = 0.0, expert_init: str = "shared", **router_kwargs):
        super().__init__(num_experts, top_k, balance_loss, balance_weight,
                         router_kwargs.get("gate", "noisy_topk"), dispatch, z_loss_weight)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        if expert_init not in EXPERT_INITS:
            raise ValueError(f"expert_init must be one of {EXPERT_INITS}, got {expert_init!r}")
        self.expert_init = expert_init
        # (E, O, C, kh, kw): expert e is weight[e].
        self.weight = nn.Parameter(
            torch.empty(num_experts, out_channels, in_channels, kernel_size, kernel_size))
        self.router = TopKRouter(None if global_routing else in_channels, num_experts, top_k,
                                 **router_kwargs)
        self._last_assignments: torch.Tensor | int = 0  # valid (sample, expert) pairs last run
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # He init (fan_out, ReLU) per expert, as torchvision initialises ResNet convs.
        fan_out = self.out_channels * self.kernel_size * self.kernel_size
        with torch.no_grad():
            self.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
            if self.expert_init == "shared":
                self.weight.copy_(self.weight[:1].expand_as(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.route(x)
        self._last_assignments = (routing.expert_index >= 0).sum()  # for FLOPs accounting
        return moe_conv2d(x, self.weight, None, routing.expert_index, routing.gates,
                          self.stride, self.padding, self.dispatch)

    def expert_macs(self, out_h: int, out_w: int) -> int:
        """Multiply-accumulates of one expert on one sample with an ``out_h x out_w`` output."""
        return (self.out_channels * self.in_channels * self.kernel_size ** 2) * out_h * out_w

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dispatch={self.dispatch!r}, "
                f"balance={self.balance_loss}:{self.balance_weight:g}")
