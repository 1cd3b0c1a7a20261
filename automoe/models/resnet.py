"""ResNet backbones for small images (He et al. 2016, CIFAR variant) with MoE blocks.

A block chosen by the placement has both of its 3x3 convs replaced by
:class:`~automoe.layers.MoEConv2d` (each with its own router); the stem, the 1x1
shortcuts and the classifier stay dense, as in AdvMoE.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from automoe.errors import ConfigError
from automoe.layers import GATE_SOFTMAX_MODES, MoEConv2d
from automoe.models._registry import register_model
from automoe.ops import DISPATCH_MODES

PLACEMENT_PRESETS = ("none", "all", "last_stage", "last_two", "every_other")


@dataclass
class MoEResNetConfig:
    """Everything needed to rebuild a :class:`MoEResNet`; round-trips through JSON."""

    # --- data
    in_channels: int = 3  # image channels
    num_classes: int = 10  # classifier outputs
    image_size: int = 32  # input side, used for FLOPs accounting (the net is size-agnostic)
    input_mean: tuple[float, ...] = (0.0,)  # per-channel mean of [0, 1] inputs, normalised inside
    input_std: tuple[float, ...] = (1.0,)  # per-channel std of [0, 1] inputs
    # --- backbone
    stem_width: int = 16  # channels of the 3x3 stem conv
    widths: tuple[int, ...] = (16, 32, 64)  # channels of each stage; stages after the first halve H, W
    blocks_per_stage: tuple[int, ...] = (1, 1, 1)  # basic blocks per stage
    width_multiplier: float = 1.0  # scales stem_width and widths (rounded, at least 1)
    # --- mixture of experts
    placement: str = "none"  # preset in PLACEMENT_PRESETS or a 0/1 string, one bit per block
    num_experts: int = 4  # E, experts per MoE conv
    top_k: int = 1  # experts per sample, 1 <= k <= E
    noisy_gating: bool = True  # learned gate noise while training (needed by the load loss)
    gate_softmax: str = "all"  # "all" (Switch/V-MoE) or "topk" (Shazeer), see NoisyTopKRouter
    gate_noise_init: float = 1e-2  # initial std of the gate noise; 0.69 (Shazeer) stalls small nets
    balance_weight: float = 0.01  # weight of the importance + load balancing loss
    dispatch: str = "sparse"  # "sparse" (only selected experts run) or "reference"
    blocks: tuple[bool, ...] = field(init=False, repr=False)  # resolved placement per block

    def __post_init__(self):
        # JSON gives lists; keep tuples so configs compare equal after a round trip.
        self.widths = tuple(int(w) for w in self.widths)
        self.blocks_per_stage = tuple(int(b) for b in self.blocks_per_stage)
        self.input_mean = tuple(float(v) for v in self.input_mean)
        self.input_std = tuple(float(v) for v in self.input_std)
        if len(self.widths) != len(self.blocks_per_stage) or not self.widths:
            raise ConfigError(f"widths {self.widths} and blocks_per_stage "
                              f"{self.blocks_per_stage} must be non-empty and of equal length")
        if min(self.widths) < 1 or min(self.blocks_per_stage) < 1 or self.stem_width < 1:
            raise ConfigError("widths, stem_width and blocks_per_stage must be positive")
        if len(self.input_mean) not in (1, self.in_channels) or len(self.input_std) != len(
                self.input_mean):
            raise ConfigError(f"input_mean/input_std need 1 or {self.in_channels} values")
        if not self.width_multiplier > 0:
            raise ConfigError(f"width_multiplier must be > 0, got {self.width_multiplier}")
        if min(self.input_std) <= 0:
            raise ConfigError(f"input_std must be positive, got {self.input_std}")
        if self.num_experts < 1:
            raise ConfigError(f"num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ConfigError(f"top_k must be between 1 and num_experts={self.num_experts}, "
                              f"got {self.top_k}")
        if self.balance_weight < 0:
            raise ConfigError(f"balance_weight must be >= 0, got {self.balance_weight}")
        if self.noisy_gating and not 1e-3 < self.gate_noise_init:
            raise ConfigError(f"gate_noise_init must be > 1e-3, got {self.gate_noise_init}")
        if self.gate_softmax not in GATE_SOFTMAX_MODES:
            raise ConfigError(f"gate_softmax must be one of {GATE_SOFTMAX_MODES}")
        if self.dispatch not in DISPATCH_MODES:
            raise ConfigError(f"dispatch must be one of {DISPATCH_MODES}")
        self.blocks = resolve_placement(self.placement, self.blocks_per_stage)

    def scaled(self, width: int) -> int:
        """A channel count after the width multiplier."""
        return max(1, round(width * self.width_multiplier))

    def to_dict(self) -> dict:
        """JSON-ready dict of the init fields."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.init}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def resolve_placement(placement: str, blocks_per_stage: tuple[int, ...]) -> tuple[bool, ...]:
    """Which blocks are MoE: a preset name or an explicit 0/1 string, one bit per block.

    Presets: ``none``; ``all``; ``last_stage`` (every block of the last stage);
    ``last_two`` (the last two stages); ``every_other`` (blocks 1, 3, 5, ... counted from 0).
    """
    per_stage = [[stage] * n for stage, n in enumerate(blocks_per_stage)]
    stage_of_block = [s for blocks in per_stage for s in blocks]
    n_blocks, n_stages = len(stage_of_block), len(blocks_per_stage)
    if placement == "none":
        return (False,) * n_blocks
    if placement == "all":
        return (True,) * n_blocks
    if placement == "last_stage":
        return tuple(s == n_stages - 1 for s in stage_of_block)
    if placement == "last_two":
        return tuple(s >= n_stages - 2 for s in stage_of_block)
    if placement == "every_other":
        return tuple(i % 2 == 1 for i in range(n_blocks))
    if set(placement) <= {"0", "1"} and len(placement) == n_blocks:
        return tuple(c == "1" for c in placement)
    raise ConfigError(f"placement {placement!r} is neither a preset ({', '.join(PLACEMENT_PRESETS)}) "
                      f"nor a 0/1 string of length {n_blocks} (one bit per block)")


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, moe: dict | None):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride, moe)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels, 1, moe)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _conv3x3(in_channels: int, out_channels: int, stride: int, moe: dict | None) -> nn.Module:
    if moe is None:
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
    return MoEConv2d(in_channels, out_channels, 3, stride=stride, padding=1, **moe)


class MoEResNet(nn.Module):
    """CIFAR-style ResNet whose placement-selected blocks are mixtures of conv experts.

    Takes images in ``[0, 1]`` and normalises them inside, so attacks work in pixel units.
    """

    def __init__(self, config: MoEResNetConfig):
        super().__init__()
        self.config = config
        channels = len(config.input_mean)
        self.register_buffer("input_mean", torch.tensor(config.input_mean).view(1, channels, 1, 1))
        self.register_buffer("input_std", torch.tensor(config.input_std).view(1, channels, 1, 1))
        moe = dict(num_experts=config.num_experts, top_k=config.top_k,
                   noisy_gating=config.noisy_gating, gate_softmax=config.gate_softmax,
                   noise_init=config.gate_noise_init,
                   balance_weight=config.balance_weight, dispatch=config.dispatch)
        stem_width = config.scaled(config.stem_width)
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        widths = [config.scaled(w) for w in config.widths]
        stages, in_channels, block_id = [], stem_width, 0
        for stage, (width, n_blocks) in enumerate(zip(widths, config.blocks_per_stage, strict=True)):
            blocks = []
            for i in range(n_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                is_moe = config.blocks[block_id]
                blocks.append(BasicBlock(in_channels, width, stride, moe if is_moe else None))
                in_channels, block_id = width, block_id + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_channels, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_mean) / self.input_std  # (B, C, H, W), normalised
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(dim=(2, 3)))  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def moe_layers(self) -> list[MoEConv2d]:
        return [m for m in self.modules() if isinstance(m, MoEConv2d)]

    def aux_loss(self) -> torch.Tensor:
        """Sum of the balancing losses of the last training forward (0 if none)."""
        losses = [m.aux_loss for m in self.moe_layers() if m.aux_loss is not None]
        return torch.stack(losses).sum() if losses else self.input_mean.new_zeros(())


def _build(defaults: dict, overrides: dict) -> MoEResNet:
    return MoEResNet(MoEResNetConfig(**{**defaults, **overrides}))


@register_model
def resnet8(**config) -> MoEResNet:
    """ResNet-8: one basic block per stage, widths 16/32/64. Small enough for CPU search."""
    return _build(dict(widths=(16, 32, 64), blocks_per_stage=(1, 1, 1)), config)


@register_model
def resnet20(**config) -> MoEResNet:
    """CIFAR ResNet-20: three basic blocks per stage, widths 16/32/64."""
    return _build(dict(widths=(16, 32, 64), blocks_per_stage=(3, 3, 3)), config)


@register_model
def resnet18(**config) -> MoEResNet:
    """CIFAR ResNet-18: 2/2/2/2 basic blocks, widths 64/128/256/512, 3x3 stem."""
    return _build(dict(stem_width=64, widths=(64, 128, 256, 512),
                       blocks_per_stage=(2, 2, 2, 2)), config)
