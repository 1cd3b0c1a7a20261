"""Model registry and backbones with MoE placement."""

from __future__ import annotations

from automoe.models import resnet as _resnet  # noqa: F401  (registers the ResNets)
from automoe.models._registry import create_model, list_models, register_model
from automoe.models.flops import count_flops, count_params
from automoe.models.resnet import PLACEMENT_PRESETS, MoEResNet, MoEResNetConfig, resolve_placement

__all__ = [
    "PLACEMENT_PRESETS",
    "MoEResNet",
    "MoEResNetConfig",
    "count_flops",
    "count_params",
    "create_model",
    "list_models",
    "register_model",
    "resolve_placement",
]
