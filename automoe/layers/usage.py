"""Expert-usage statistics: which experts of each MoE layer the samples were routed to."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from automoe.layers.base import MoEModule


class ExpertUsage:
    """Expert ids logged per MoE layer, in forward order."""

    def __init__(self, layers: dict[str, MoEModule]):
        self.num_experts = {name: layer.num_experts for name, layer in layers.items()}
        self.assignments: dict[str, torch.Tensor] = {}  # layer -> (N, k), -1 = dropped

    def counts(self) -> dict[str, list[int]]:
        """``{layer: [samples routed to expert 0, ...]}``."""
        result = {}
        for name, index in self.assignments.items():
            valid = index[index >= 0]
            result[name] = torch.bincount(valid, minlength=self.num_experts[name]).tolist()
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
            usage.assignments[name] = (torch.cat(log) if log
                                       else torch.zeros(0, layer.top_k, dtype=torch.long))
            layer.usage_log = None
