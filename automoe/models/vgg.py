"""VGG with batch norm (Simonyan & Zisserman 2015, CIFAR variant) and a small CNN.

A placement unit is one conv -> BN -> ReLU. Stages are separated by 2x2 max pooling
(``ceil_mode``, so small images never shrink below 1x1); global average pooling and one
linear layer classify. AdvMoE's VGG places experts in every conv but the first
(placement ``all_but_first``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from automoe.errors import ConfigError
from automoe.layers import MoEBlock
from automoe.models._base import MoENet, make_conv, unit_width
from automoe.models._registry import register_variant
from automoe.models.config import MoENetConfig


@dataclass
class VGGConfig(MoENetConfig):
    """A VGG-style plan: conv widths per stage."""

    stages: tuple[tuple[int, ...], ...] = ((64,), (128,), (256, 256), (512, 512), (512, 512))

    def __post_init__(self):
        self.stages = tuple(tuple(int(w) for w in stage) for stage in self.stages)
        if not self.stages or not all(self.stages) or min(min(s) for s in self.stages) < 1:
            raise ConfigError(f"stages must be non-empty lists of positive widths, got {self.stages}")
        super().__post_init__()

    def units_per_stage(self) -> tuple[int, ...]:
        return tuple(len(stage) for stage in self.stages)


class ConvUnit(nn.Module):
    """conv3x3 -> BN -> ReLU."""

    def __init__(self, conv: nn.Module, out_channels: int):
        super().__init__()
        self.conv = conv
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class VGG(MoENet):
    def __init__(self, config: VGGConfig):
        super().__init__(config)
        layers: list[nn.Module] = []
        in_channels, unit = config.in_channels, 0
        for stage in config.stages:
            for width in stage:
                moe = config.units[unit]
                out = unit_width(config, config.scaled(width), moe)
                layers.append(self._unit(in_channels, out, moe))
                in_channels, unit = out, unit + 1
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, config.num_classes)
        self._finish()

    def _unit(self, in_channels: int, out_channels: int, moe: bool) -> nn.Module:
        config = self.config
        if moe and config.granularity == "block":
            return MoEBlock(lambda: ConvUnit(make_conv(config, in_channels, out_channels, 3, 1,
                                                       False), out_channels),
                            in_channels, out_channels, 1, **config.moe_kwargs())
        return ConvUnit(make_conv(config, in_channels, out_channels, 3, 1, moe), out_channels)


def _vgg(name: str, doc: str, **defaults) -> None:
    register_variant(name, doc, VGG, VGGConfig, defaults)


_vgg("vgg11", "VGG-11 with BN: 64 | 128 | 256x2 | 512x2 | 512x2.",
     stages=((64,), (128,), (256, 256), (512, 512), (512, 512)))
_vgg("vgg16", "VGG-16 with BN: 64x2 | 128x2 | 256x3 | 512x3 | 512x3.",
     stages=((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)))
_vgg("small_cnn", "A small CNN: 32 | 64 | 128 conv units with pooling between.",
     stages=((32,), (64,), (128,)))
