"""Per-layer top-k routers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GATE_SOFTMAX_MODES = ("all", "topk")
# Lower bound on the noise std, so the load loss never divides by zero.
_MIN_NOISE_STD = 1e-3


@dataclass
class Routing:
    """What a router decided for a batch."""

    expert_index: torch.Tensor  # (B, k) int64, distinct experts per sample, best first
    gates: torch.Tensor  # (B, k) weight of each selected expert
    clean_logits: torch.Tensor  # (B, E) x W_g
    noisy_logits: torch.Tensor  # (B, E) clean + noise (== clean when no noise)
    noise_std: torch.Tensor | None  # (B, E) softplus(x W_noise + b) + floor; None without noise

    def dense_gates(self, num_experts: int) -> torch.Tensor:
        """``(B, E)`` gate matrix with zeros for unselected experts."""
        batch = self.gates.shape[0]
        return self.gates.new_zeros(batch, num_experts).scatter(1, self.expert_index, self.gates)


class NoisyTopKRouter(nn.Module):
    """Global average pool -> Linear(C -> E) -> (noise) -> top-k (Shazeer et al. 2017).

    ``H(x) = x W_g + eps * softplus(x W_noise + b_noise)``, ``eps ~ N(0, 1)`` while
    training; no noise at eval. ``W_g`` and ``W_noise`` start at zero, so routing starts
    uniform. Shazeer's ``b_noise = 0`` gives an initial std of softplus(0) = 0.69, which on
    zero logits routes every sample at random; on small CNN datasets that starves every
    expert (a ResNet-8 with 8 experts in every block stayed at chance on digits), so
    ``b_noise`` starts where the std is ``noise_init`` and the std is learned from there.

    Args:
        in_channels: channels of the routed feature map.
        num_experts: E.
        top_k: experts per sample, ``1 <= k <= E``.
        noisy: add the learned Gaussian noise while training.
        gate_softmax: ``"topk"`` renormalises the softmax over the k selected logits
            (Shazeer); ``"all"`` keeps the selected experts' probabilities from a softmax
            over all E (Switch / V-MoE), so the router gets task gradients even at k = 1,
            where a top-k softmax is the constant 1.
        noise_init: initial std of the gate noise.
    """

    def __init__(self, in_channels: int, num_experts: int, top_k: int, noisy: bool = True,
                 gate_softmax: str = "all", noise_init: float = 1e-2):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, {num_experts}], got {top_k}")
        if gate_softmax not in GATE_SOFTMAX_MODES:
            raise ValueError(f"gate_softmax must be one of {GATE_SOFTMAX_MODES}, got {gate_softmax!r}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.noisy = noisy
        self.gate_softmax = gate_softmax
        self.w_gate = nn.Linear(in_channels, num_experts, bias=False)
        if noisy and not noise_init > _MIN_NOISE_STD:
            raise ValueError(f"noise_init must be > {_MIN_NOISE_STD}, got {noise_init}")
        self.w_noise = nn.Linear(in_channels, num_experts, bias=True) if noisy else None
        nn.init.zeros_(self.w_gate.weight)
        if self.w_noise is not None:
            nn.init.zeros_(self.w_noise.weight)
            # softplus(b) + floor == noise_init
            nn.init.constant_(self.w_noise.bias, math.log(math.expm1(noise_init - _MIN_NOISE_STD)))

    def forward(self, x: torch.Tensor) -> Routing:
        pooled = x.mean(dim=(2, 3))  # (B, C)
        clean = self.w_gate(pooled)  # (B, E)
        noise_std = None
        noisy = clean
        if self.noisy and self.training:
            noise_std = F.softplus(self.w_noise(pooled)) + _MIN_NOISE_STD  # (B, E)
            noisy = clean + torch.randn_like(clean) * noise_std
        top_values, expert_index = noisy.topk(self.top_k, dim=1)  # (B, k)
        if self.gate_softmax == "topk":
            gates = top_values.softmax(dim=1)
        else:
            gates = noisy.softmax(dim=1).gather(1, expert_index)
        return Routing(expert_index, gates, clean, noisy, noise_std)

    def extra_repr(self) -> str:
        return (f"experts={self.num_experts}, top_k={self.top_k}, noisy={self.noisy}, "
                f"gate_softmax={self.gate_softmax!r}")
