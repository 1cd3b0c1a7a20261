"""MoE building blocks: routers, balancing losses, MoE layers, usage statistics."""

from __future__ import annotations

from automoe.layers.balancing import (
    BALANCE_LOSSES,
    cv_squared,
    entropy_loss,
    importance_loss,
    load_loss,
    load_probabilities,
    supervised_router_loss,
    switch_loss,
)
from automoe.layers.base import MoEModule
from automoe.layers.channel import ChannelGatedConv2d, GatingEmbedding
from automoe.layers.moe_block import MoEBlock
from automoe.layers.moe_conv import MoEConv2d
from automoe.layers.router import (
    GATE_SOFTMAX_MODES,
    GATE_TYPES,
    OVERFLOW_MODES,
    SCORER_TYPES,
    Routing,
    TopKRouter,
    balancing_loss,
    make_scorer,
)
from automoe.layers.usage import ExpertUsage, track_expert_usage

__all__ = [
    "BALANCE_LOSSES",
    "GATE_SOFTMAX_MODES",
    "GATE_TYPES",
    "OVERFLOW_MODES",
    "SCORER_TYPES",
    "ChannelGatedConv2d",
    "ExpertUsage",
    "GatingEmbedding",
    "MoEBlock",
    "MoEConv2d",
    "MoEModule",
    "Routing",
    "TopKRouter",
    "balancing_loss",
    "cv_squared",
    "entropy_loss",
    "importance_loss",
    "load_loss",
    "load_probabilities",
    "make_scorer",
    "supervised_router_loss",
    "switch_loss",
    "track_expert_usage",
]
