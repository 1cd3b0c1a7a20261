"""Memory layouts of the layers' weights."""

from __future__ import annotations

import torch
from torch import nn


def to_channels_last(model: nn.Module) -> None:
    """NHWC conv weights: 4-D ``(O, C, KH, KW)`` ones, and each expert of a 5-D
    ``(E, O, C, KH, KW)`` expert weight (``Module.to`` would take those for 3-D convs)."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:  # stored as (E, O, KH, KW, C)
            param.data = param.data.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
