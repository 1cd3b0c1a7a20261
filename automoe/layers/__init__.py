"""MoE building blocks: routers, balancing losses, MoE conv layers, usage statistics."""

from __future__ import annotations

from automoe.layers.balancing import cv_squared, importance_loss, load_loss, load_probabilities
from automoe.layers.moe_conv import MoEConv2d
from automoe.layers.router import GATE_SOFTMAX_MODES, NoisyTopKRouter, Routing
from automoe.layers.usage import track_expert_usage

__all__ = [
    "GATE_SOFTMAX_MODES",
    "MoEConv2d",
    "NoisyTopKRouter",
    "Routing",
    "cv_squared",
    "importance_loss",
    "load_loss",
    "load_probabilities",
    "track_expert_usage",
]
