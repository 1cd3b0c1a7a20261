"""ResNets for small images with MoE units.

* ResNet (He et al. 2016, CIFAR variant): 3x3 stem, basic blocks.
* Pre-activation ResNet (He et al. 2016b) and Wide ResNet (Zagoruyko & Komodakis 2016):
  BN-ReLU-conv blocks, a final BN-ReLU before pooling, optional dropout between convs.

A placement unit is one residual block. In an MoE block, granularity ``conv`` turns both
3x3 convs into :class:`~automoe.layers.MoEConv2d` (each with its own router), ``pathway``
does the same with experts ``expert_ratio`` as wide (the block then runs at that width,
as in AdvMoE), ``channel`` gates each output channel (DeepMoE), ``block`` makes E copies
of the whole block. The stem, 1x1 shortcuts and classifier stay dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from automoe.errors import ConfigError
from automoe.layers import MoEBlock
from automoe.models._base import MoENet, make_conv, unit_width
from automoe.models._blocks import BasicBlock, ConvFactory, conv3x3
from automoe.models._registry import register_variant
from automoe.models.config import MoENetConfig


@dataclass
class ResNetConfig(MoENetConfig):
    """A ResNet / pre-activation ResNet / Wide ResNet with MoE units."""

    block: str = "basic"  # "basic" (post-activation) or "preact" (pre-activation, WRN)
    stem_width: int = 16  # channels of the 3x3 stem conv
    widths: tuple[int, ...] = (16, 32, 64)  # channels per stage; later stages halve H and W
    blocks_per_stage: tuple[int, ...] = (1, 1, 1)  # residual blocks per stage
    dropout: float = 0.0  # dropout between a block's two convs (WRN uses 0.3)

    def __post_init__(self):
        self.widths = tuple(int(w) for w in self.widths)
        self.blocks_per_stage = tuple(int(b) for b in self.blocks_per_stage)
        if self.block not in ("basic", "preact"):
            raise ConfigError(f"block must be 'basic' or 'preact', got {self.block!r}")
        if len(self.widths) != len(self.blocks_per_stage) or not self.widths:
            raise ConfigError(f"widths {self.widths} and blocks_per_stage "
                              f"{self.blocks_per_stage} must be non-empty and of equal length")
        if min(self.widths) < 1 or min(self.blocks_per_stage) < 1 or self.stem_width < 1:
            raise ConfigError("widths, stem_width and blocks_per_stage must be positive")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        super().__post_init__()

    def units_per_stage(self) -> tuple[int, ...]:
        return self.blocks_per_stage


class PreActBlock(nn.Module):
    """BN -> ReLU -> conv3x3 -> BN -> ReLU -> (dropout) -> conv3x3, plus a shortcut that is
    the identity or a 1x1 conv of the pre-activated input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 conv: ConvFactory = conv3x3, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv(out_channels, out_channels, 1)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + residual


class ResNet(MoENet):
    """ResNet / pre-activation ResNet / WRN; see the module docstring for the MoE units."""

    def __init__(self, config: ResNetConfig):
        super().__init__(config)
        block_cls = BasicBlock if config.block == "basic" else PreActBlock
        stem_width = config.scaled(config.stem_width)
        stem: list[nn.Module] = [conv3x3(config.in_channels, stem_width)]
        if config.block == "basic":
            stem += [nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True)]
        layers: list[nn.Module] = [nn.Sequential(*stem)]
        in_channels, unit = stem_width, 0
        for stage, (width, n_blocks) in enumerate(zip(config.widths, config.blocks_per_stage,
                                                      strict=True)):
            blocks = []
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                moe = config.units[unit]
                out = unit_width(config, config.scaled(width), moe)
                blocks.append(self._block(block_cls, in_channels, out, stride, moe))
                in_channels, unit = out, unit + 1
            layers.append(nn.Sequential(*blocks))
        if config.block == "preact":
            layers.append(nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, config.num_classes)
        self._finish()

    def _block(self, block_cls, in_channels: int, out_channels: int, stride: int,
               moe: bool) -> nn.Module:
        config = self.config
        if moe and config.granularity == "block":
            return MoEBlock(lambda: block_cls(in_channels, out_channels, stride,
                                              dropout=config.dropout),
                            in_channels, out_channels, stride, **config.moe_kwargs())

        def conv(i: int, o: int, s: int) -> nn.Module:
            return make_conv(config, i, o, 3, s, moe)

        return block_cls(in_channels, out_channels, stride, conv=conv, dropout=config.dropout)


def _resnet(name: str, doc: str, **defaults) -> None:
    register_variant(name, doc, ResNet, ResNetConfig, defaults)


_resnet("resnet8", "ResNet-8: one basic block per stage, 16/32/64. Small enough for CPU search.",
        widths=(16, 32, 64), blocks_per_stage=(1, 1, 1))
_resnet("resnet20", "CIFAR ResNet-20: three basic blocks per stage, 16/32/64.",
        widths=(16, 32, 64), blocks_per_stage=(3, 3, 3))
_resnet("resnet18", "CIFAR ResNet-18: 2/2/2/2 basic blocks, 64..512, 3x3 stem.",
        stem_width=64, widths=(64, 128, 256, 512), blocks_per_stage=(2, 2, 2, 2))
_resnet("resnet34", "CIFAR ResNet-34: 3/4/6/3 basic blocks, 64..512, 3x3 stem.",
        stem_width=64, widths=(64, 128, 256, 512), blocks_per_stage=(3, 4, 6, 3))
_resnet("preact_resnet18", "Pre-activation ResNet-18 (CIFAR): 2/2/2/2 blocks, 64..512.",
        block="preact", stem_width=64, widths=(64, 128, 256, 512),
        blocks_per_stage=(2, 2, 2, 2))
_resnet("wrn16_4", "WRN-16-4: pre-activation, 2 blocks per stage, 64/128/256.",
        block="preact", stem_width=16, widths=(64, 128, 256), blocks_per_stage=(2, 2, 2))
_resnet("wrn28_10", "WRN-28-10: pre-activation, 4 blocks per stage, 160/320/640.",
        block="preact", stem_width=16, widths=(160, 320, 640), blocks_per_stage=(4, 4, 4))
