"""Expert-usage statistics: which experts of each MoE layer the samples were routed to,
and the router health that follows from it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import nn

from automoe.layers.base import MoEModule


@dataclass(frozen=True)
class RouterHealth:
    """How one MoE layer spread a split's assignments over its experts.

    ``s_i`` is the share of the valid assignments that went to expert i. A router that
    sends every sample to one expert has 1 effective expert, whatever its E.
    """

    num_experts: int  # E
    effective_experts: float  # exp(-sum_i s_i log s_i): 1 = collapsed, E = even
    max_share: float  # the largest s_i
    dropped_share: float  # assignments dropped by a capacity limit, of all assignments

    @property
    def expert_use(self) -> float:
        """Effective experts as a fraction of E (1/E when collapsed, 1 when even)."""
        return self.effective_experts / self.num_experts

    def to_dict(self) -> dict:
        return {**asdict(self), "expert_use": self.expert_use}

    @classmethod
    def from_shares(cls, shares: torch.Tensor, dropped_share: float = 0.0) -> RouterHealth:
        """From the (E,) assignment shares (or any non-negative load that sums to > 0)."""
        shares = shares.double()
        total = float(shares.sum())
        num_experts = shares.numel()
        if total <= 0:  # nothing was routed: no expert was used
            return cls(num_experts, 0.0, 0.0, dropped_share)
        p = shares / total
        nonzero = p[p > 0]
        entropy = float(-(nonzero * nonzero.log()).sum())
        return cls(num_experts, math.exp(entropy), float(p.max()), dropped_share)

    @classmethod
    def from_assignments(cls, index: torch.Tensor, num_experts: int) -> RouterHealth:
        """From the ``(N, k)`` expert ids of a split, ``-1`` where dropped."""
        routed = int((index >= 0).sum())
        dropped = 1.0 - routed / index.numel() if index.numel() else 0.0
        return cls.from_shares(_expert_counts(index, num_experts), dropped)


def _expert_counts(index: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(E,) assignments per expert of ``(N, k)`` expert ids, ``-1`` (dropped) left out."""
    return torch.bincount(index[index >= 0], minlength=num_experts)


def specialisation(matrix: torch.Tensor | list) -> float:
    """Normalised mutual information between expert choice and class, in [0, 1].

    ``matrix`` is an ``E x C`` count of assignments (expert e, class c); with k > 1 each
    sample counts once per expert it was sent to. ``I(expert; class) / mean(H(expert),
    H(class))`` (the arithmetic normalisation, as scikit-learn's default): 0 when the
    choice says nothing about the class (a collapsed router, or one that routes at
    random), 1 when each expert takes exactly the samples of its own classes.
    """
    joint = torch.as_tensor(matrix, dtype=torch.float64)
    total = float(joint.sum())
    if total <= 0:
        return 0.0
    joint = joint / total  # (E, C)
    p_expert, p_class = joint.sum(1), joint.sum(0)  # (E,), (C,)
    mask = joint > 0
    outer = p_expert[:, None] * p_class[None, :]
    mutual = float((joint[mask] * (joint[mask] / outer[mask]).log()).sum())

    def entropy(p: torch.Tensor) -> float:
        p = p[p > 0]
        return float(-(p * p.log()).sum())

    norm = (entropy(p_expert) + entropy(p_class)) / 2
    return min(1.0, max(0.0, mutual / norm)) if norm > 0 else 0.0


def expert_use(health: dict[str, RouterHealth]) -> float | None:
    """The fewest effective experts of any layer as a fraction of its E; None without
    routed layers. A trial's router-health summary: 1/E means some layer collapsed."""
    return min((h.expert_use for h in health.values()), default=None)


class ExpertUsage:
    """Expert ids logged per MoE layer, in forward order."""

    def __init__(self, layers: dict[str, MoEModule]):
        self.num_experts = {name: layer.num_experts for name, layer in layers.items()}
        self.assignments: dict[str, torch.Tensor] = {}  # layer -> (N, k), -1 = dropped
        self.mixtures: dict[str, torch.Tensor] = {}  # soft-mixture layer -> (E,) summed weights
        # DeepMoE layers: their "experts" are channels, closed by design, not routed
        self.channel_layers = {name for name, layer in layers.items()
                               if layer.usage_kind == "channel"}

    def counts(self) -> dict[str, list[int]]:
        """``{layer: [samples routed to expert 0, ...]}``."""
        return {name: _expert_counts(index, self.num_experts[name]).tolist()
                for name, index in self.assignments.items()}

    def health(self) -> dict[str, RouterHealth]:
        """``{layer: RouterHealth}`` of every layer that routed something (top-k layers by
        their assignments, soft mixtures by their mean mixture weights)."""
        result = {}
        for name, index in self.assignments.items():
            if index.numel() and name not in self.channel_layers:
                result[name] = RouterHealth.from_assignments(index, self.num_experts[name])
        for name, mass in self.mixtures.items():
            result[name] = RouterHealth.from_shares(mass)
        return result

    def per_class(self, targets: torch.Tensor, num_classes: int) -> dict[str, list[list[int]]]:
        """``{layer: E x C matrix}``: how often samples of class c went to expert e.

        ``targets`` are the labels of the logged samples, in the order they were routed.
        """
        result = {}
        for name, index in self.assignments.items():
            if index.shape[0] != targets.shape[0]:
                raise ValueError(f"{targets.shape[0]} labels for {index.shape[0]} routed samples")
            num_experts = self.num_experts[name]
            labels = targets.view(-1, 1).expand_as(index)
            valid = index >= 0
            flat = index[valid] * num_classes + labels[valid]
            matrix = torch.bincount(flat, minlength=num_experts * num_classes)
            result[name] = matrix.view(num_experts, num_classes).tolist()
        return result


@contextmanager
def track_expert_usage(model: nn.Module) -> Iterator[ExpertUsage]:
    """Log the routing of every MoE layer while the block runs.

    Yields an :class:`ExpertUsage` that is complete on exit. Logging is off outside the
    block, so it costs nothing during training.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MoEModule)}
    usage = ExpertUsage(layers)
    for layer in layers.values():
        layer.usage_log = []
    try:
        yield usage
    finally:
        for name, layer in layers.items():
            log = layer.usage_log or []
            # the logs stay on the model's device while it runs (a copy to the host per
            # step would wait for the GPU); they come to the host once, here
            if layer.usage_kind == "soft":  # (E,) summed mixture weights per forward
                usage.mixtures[name] = (torch.stack(log).sum(0).cpu() if log
                                        else torch.zeros(layer.num_experts))
            else:
                usage.assignments[name] = (torch.cat(log).cpu() if log
                                           else torch.zeros(0, layer.top_k, dtype=torch.long))
            layer.usage_log = None
