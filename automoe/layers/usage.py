"""Expert-usage statistics: how many samples each expert of each MoE layer received."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from automoe.layers.moe_conv import MoEConv2d


@contextmanager
def track_expert_usage(model: nn.Module) -> Iterator[dict[str, list[int]]]:
    """Count routed samples per expert while the block runs.

    Yields a dict that is filled on exit: ``{layer name: [count of expert 0, ...]}``.
    Counting is off outside the block, so it costs nothing during training.
    """
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MoEConv2d)}
    usage: dict[str, list[int]] = {}
    for layer in layers.values():
        layer.usage_counts = torch.zeros(layer.num_experts, dtype=torch.long)
    try:
        yield usage
    finally:
        for name, layer in layers.items():
            usage[name] = [int(c) for c in layer.usage_counts]
            layer.usage_counts = None
