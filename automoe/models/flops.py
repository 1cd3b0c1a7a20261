"""Multiply-accumulates (MACs) per sample, counted on a real forward pass."""

from __future__ import annotations

import torch
from torch import nn

from automoe.layers import MoEConv2d


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """MACs per sample of convs and linear layers (BN, ReLU, pooling are not counted).

    Returns:
        ``{"active": ..., "all_experts": ...}``: ``active`` counts k experts per MoE
        layer plus its router (what sparse dispatch executes at inference); ``all_experts``
        counts every expert (what computing all experts and masking executes).
    """
    totals = {"active": 0, "all_experts": 0}
    hooks = []

    def conv_hook(module: nn.Conv2d, inputs, output):
        kh, kw = module.kernel_size
        macs = output[0].numel() * (module.in_channels // module.groups) * kh * kw
        totals["active"] += macs
        totals["all_experts"] += macs

    def linear_hook(module: nn.Linear, inputs, output):
        macs = output[0].numel() * module.in_features
        totals["active"] += macs
        totals["all_experts"] += macs

    def moe_hook(module: MoEConv2d, inputs, output):
        per_expert = module.expert_macs(output.shape[-2], output.shape[-1])
        totals["active"] += module.top_k * per_expert
        totals["all_experts"] += module.num_experts * per_expert

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, MoEConv2d):
            hooks.append(m.register_forward_hook(moe_hook))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return totals


def count_params(model: nn.Module) -> int:
    """Number of parameters (all experts included)."""
    return sum(p.numel() for p in model.parameters())
