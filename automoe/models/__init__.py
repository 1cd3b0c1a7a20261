"""Model registry and backbones with MoE placement."""

from __future__ import annotations

from automoe.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from automoe.models import vgg as _vgg  # noqa: F401  (registers VGG and the small CNN)
from automoe.models._base import ImageRouter, MoENet
from automoe.models._registry import (
    create_model,
    default_config,
    list_models,
    register_model,
    register_variant,
)
from automoe.models.config import GRANULARITIES, PLACEMENT_PRESETS, MoENetConfig, resolve_placement
from automoe.models.flops import count_flops, count_params
from automoe.models.latency import measure_latency
from automoe.models.resnet import BasicBlock, PreActBlock, ResNet, ResNetConfig
from automoe.models.upcycle import UPCYCLABLE, check_upcyclable, dense_twin, upcycle
from automoe.models.vgg import VGG, VGGConfig

__all__ = [
    "GRANULARITIES",
    "PLACEMENT_PRESETS",
    "UPCYCLABLE",
    "VGG",
    "BasicBlock",
    "ImageRouter",
    "MoENet",
    "MoENetConfig",
    "PreActBlock",
    "ResNet",
    "ResNetConfig",
    "VGGConfig",
    "check_upcyclable",
    "count_flops",
    "count_params",
    "measure_latency",
    "create_model",
    "default_config",
    "dense_twin",
    "list_models",
    "register_model",
    "register_variant",
    "resolve_placement",
    "upcycle",
]
