"""Mixture-of-experts convolution: E conv experts, per-sample top-k routing."""

from __future__ import annotations

import math

import torch
from torch import nn

from automoe.layers.base import TopKMoEModule
from automoe.ops import moe_conv2d, resolve_dispatch


class MoEConv2d(TopKMoEModule):
    """A conv layer replaced by ``num_experts`` copies and a per-sample top-k router.

    Each sample is convolved only with its k selected experts: ``dispatch="sparse"`` runs
    each expert on its samples, ``"grouped"`` mixes each sample's selected filters and runs
    one conv with a group per sample, ``"padded"`` one conv with a group per expert;
    ``"auto"`` picks Triton on CUDA and one of the three on the CPU (see
    :func:`~automoe.ops.resolve_dispatch`); ``"reference"`` computes all experts and masks,
    for testing. The experts' weight ``(E, O, C, kh, kw)`` is also AdvMoE's widened conv of
    ``E * O`` filters, whose pathway e is the slice ``[e * O, (e + 1) * O)``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv2d``
            (square kernels; ``padding=None`` gives "same" padding for odd kernels).
        moe_kwargs: ``num_experts``, ``top_k``, balancing, dispatch, ``global_routing``,
            ``expert_init`` (``"shared"``: every expert starts as the same draw) and the
            router's options; see :class:`~automoe.layers.base.TopKMoEModule`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, **moe_kwargs):
        # the router is built before the expert weight is drawn (in reset_parameters)
        super().__init__(in_channels, **moe_kwargs)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        # (E, O, C, kh, kw): expert e is weight[e].
        self.weight = nn.Parameter(
            torch.empty(self.num_experts, out_channels, in_channels, kernel_size, kernel_size))
        self._last_index: torch.Tensor | None = None  # (B, k) expert ids last run (FLOPs)
        self._last_mode = "sparse"  # path the last forward took, for FLOPs accounting
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
        self._last_index = routing.expert_index
        self._last_mode = resolve_dispatch(self.dispatch, x, self.weight, self.stride,
                                           routing.expert_index)
        return moe_conv2d(x, self.weight, None, routing.expert_index, routing.gates,
                          self.stride, self.padding, self._last_mode)

    def expert_macs(self, out_h: int, out_w: int) -> int:
        """Multiply-accumulates of one expert on one sample with an ``out_h x out_w`` output."""
        return (self.out_channels * self.in_channels * self.kernel_size ** 2) * out_h * out_w

    def last_assignments(self) -> int:
        """Valid (sample, expert) assignments of the last forward (0 before any)."""
        return 0 if self._last_index is None else int((self._last_index >= 0).sum())

    def longest_run(self) -> int:
        """Most assignments one expert got in the last forward (0 before any)."""
        if self._last_index is None:
            return 0
        kept = self._last_index[self._last_index >= 0]
        return int(torch.bincount(kept, minlength=self.num_experts).max()) if kept.numel() else 0

    def mixing_macs(self) -> int:
        """Multiply-adds of mixing the k selected filters into one, per sample (grouped; at
        k = 1 the filter is used as it is and its gate scales the output)."""
        return self.top_k * self.weight[0].numel() if self.top_k > 1 else 0

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dispatch={self.dispatch!r}, "
                f"balance={self.balance_loss}:{self.balance_weight:g}")
