"""MoE building blocks: routers, balancing losses, MoE layers, usage statistics."""

from __future__ import annotations

from automoe.layers.balancing import (
    cv_squared,
    entropy_loss,
    importance_load_loss,
    importance_loss,
    load_loss,
    load_probabilities,
    router_z_loss,
    supervised_router_loss,
    switch_loss,
)
from automoe.layers.base import MoEModule, TopKMoEModule, routing_losses
from automoe.layers.channel import ChannelGatedConv2d, GatingEmbedding
from automoe.layers.condconv import CondConv2d
from automoe.layers.layout import to_channels_last
from automoe.layers.moe_block import MoEBlock
from automoe.layers.moe_conv import MoEConv2d
from automoe.layers.router import (
    CosineLinear,
    RouterNorm,
    Routing,
    TopKRouter,
    balancing_loss,
    global_avg_pool,
    make_scorer,
    stack_routings,
)
from automoe.layers.rules import (
    BALANCE_LOSSES,
    EXPERT_INITS,
    GATE_SOFTMAX_MODES,
    GATE_TYPES,
    NEEDS_NOISE,
    OVERFLOW_MODES,
    ROUTER_NORMS,
    ROUTING_RULES,
    SCORER_TYPES,
    check_routing,
)
from automoe.layers.usage import (
    ExpertUsage,
    RouterHealth,
    expert_use,
    specialisation,
    track_expert_usage,
)

__all__ = [
    "BALANCE_LOSSES",
    "EXPERT_INITS",
    "GATE_SOFTMAX_MODES",
    "GATE_TYPES",
    "NEEDS_NOISE",
    "OVERFLOW_MODES",
    "ROUTER_NORMS",
    "ROUTING_RULES",
    "SCORER_TYPES",
    "ChannelGatedConv2d",
    "CondConv2d",
    "CosineLinear",
    "ExpertUsage",
    "GatingEmbedding",
    "MoEBlock",
    "MoEConv2d",
    "MoEModule",
    "RouterNorm",
    "RouterHealth",
    "Routing",
    "TopKMoEModule",
    "TopKRouter",
    "balancing_loss",
    "check_routing",
    "cv_squared",
    "entropy_loss",
    "expert_use",
    "specialisation",
    "global_avg_pool",
    "importance_load_loss",
    "importance_loss",
    "load_loss",
    "load_probabilities",
    "make_scorer",
    "router_z_loss",
    "routing_losses",
    "stack_routings",
    "supervised_router_loss",
    "switch_loss",
    "to_channels_last",
    "track_expert_usage",
]
