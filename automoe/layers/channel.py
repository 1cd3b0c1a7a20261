"""DeepMoE channel gating (Wang et al. 2019): every output channel is an expert.

A shallow embedding network maps the image to ``e``; each gated conv has its own head
``g = ReLU(W_g e)`` (no bias) of one gate per output channel, which both selects (0 means
skipped) and scales: ``y = g * conv(x)``. The training loss adds ``lambda * ||g||_1`` per
layer (sparsity, so fewer channels run) and ``mu * CE(h(e), y)`` for the embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from automoe.layers.base import MoEModule
from automoe.layers.router import Routing
from automoe.ops import channel_gated_conv2d, resolve_channel_dispatch


class GatingEmbedding(nn.Module):
    """DeepMoE's shallow embedding: four stride-2 3x3 convs with ReLU, GAP -> e (B, D);
    ``classify`` is the auxiliary classifier h(e)."""

    def __init__(self, in_channels: int, width: int, num_classes: int, depth: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.classify = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))  # (B, D), >= 0


class ChannelGatedConv2d(MoEModule):
    """A conv whose output channels are gated per sample by ``ReLU(W_g e)``.

    The model sets :attr:`context` (the embedding ``e``, (B, D)) before each forward. With
    ``dispatch="sparse"`` only the output channels that some sample of the batch keeps are
    computed (skipping each sample's own zero channels needs a per-sample kernel);
    ``"reference"`` computes all channels and multiplies by the gates.

    ``dispatch="triton"`` (or ``"auto"`` on CUDA) runs the Triton channel-group kernel,
    which computes for each sample only its own open groups of ``group_size`` channels; if
    ``group_size`` does not divide ``out_channels`` it uses the sparse path instead. The
    gates of channels that are not computed get no gradient: they come from a ReLU that is
    0 there, so the gradient of everything upstream is exact.

    Args:
        in_channels, out_channels, kernel_size, stride, padding: as ``nn.Conv2d``.
        embedding_width: D.
        gate_l1: lambda, weight of the mean L1 norm of the gates.
        dispatch: ``"auto"``, ``"sparse"``, ``"triton"`` or ``"reference"``.
        group_size: channels per group for the Triton kernel.
    """

    usage_kind = "channel"  # usage logs the open channels of each sample

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, *, embedding_width: int, gate_l1: float = 1e-3,
                 dispatch: str = "auto", group_size: int = 16):
        super().__init__(out_channels, out_channels, balance_loss="none",
                         balance_weight=gate_l1, gate="topk", dispatch=dispatch)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.gate_l1 = gate_l1
        self.group_size = group_size
        self._last_mode = "sparse"  # path the last forward took, for FLOPs accounting
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.head = nn.Linear(embedding_width, out_channels, bias=False)  # W_g
        # Start with every channel open (gates ~ mean of e > 0), spread a little so the L1
        # penalty closes channels one by one rather than all at once.
        with torch.no_grad():
            self.head.weight.copy_((1 + 0.1 * torch.randn_like(self.head.weight)) / embedding_width)
        self.last_gates: torch.Tensor | None = None  # (B, O), kept while training
        self._last_open: torch.Tensor | None = None  # (B, O) open channels of the last forward

    def gates(self) -> torch.Tensor:
        if self.context is None:
            raise RuntimeError("a channel-gated conv needs its embedding context set by its model")
        return F.relu(self.head(self.context))  # (B, O)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.gates()  # (B, O)
        self.last_gates = gates if self.training and self.gate_l1 > 0 else None
        self._last_open = (gates > 0).detach()  # (B, O), for FLOPs accounting
        if self.usage_log is not None:  # channel ids, -1 where closed
            ids = torch.arange(self.out_channels, device=gates.device).expand_as(gates)
            self.usage_log.append(torch.where(gates > 0, ids, -1).detach())
        self._last_mode = resolve_channel_dispatch(self.dispatch, x, self.out_channels,
                                                   self.group_size)
        return channel_gated_conv2d(x, self.weight, gates, self.stride, self.padding,
                                    self._last_mode, self.group_size)

    def record(self, routing: Routing) -> None:  # routing is by gates, not top-k
        raise TypeError("ChannelGatedConv2d does not take a top-k routing")

    def aux_loss(self, targets: torch.Tensor | None = None) -> torch.Tensor | None:
        """``lambda * mean_b ||g_b||_1`` of the last training forward."""
        if self.last_gates is None:
            return None
        return self.gate_l1 * self.last_gates.abs().sum(dim=1).mean()

    def channel_macs(self, out_h: int, out_w: int) -> int:
        """MACs of one output channel on one sample."""
        return self.in_channels * self.kernel_size ** 2 * out_h * out_w
