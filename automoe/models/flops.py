"""Multiply-accumulates (MACs) per sample, counted on real forward passes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from automoe.layers import ChannelGatedConv2d, CondConv2d, MoEConv2d, MoEModule


@contextmanager
def _dispatch(model: nn.Module, mode: str | None) -> Iterator[None]:
    """Temporarily run every MoE layer with ``mode`` dispatch (None: leave as is)."""
    layers = [m for m in model.modules() if isinstance(m, MoEModule)]
    saved = [m.dispatch for m in layers]
    if mode is not None:
        for m in layers:
            m.dispatch = mode
    try:
        yield
    finally:
        for m, dispatch in zip(layers, saved, strict=True):
            m.dispatch = dispatch


def _count(model: nn.Module, x: torch.Tensor, per_sample_channels: bool) -> float:
    """MACs per sample of one eval forward of ``x``, of what each layer executes.

    ``per_sample_channels``: count a channel-gated conv's channels per sample (its
    *active* cost) rather than the batch union its sparse path runs.
    """
    total = 0.0
    hooks = []

    def conv_hook(module: nn.Conv2d, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    def moe_conv_hook(module: MoEConv2d, inputs, output):
        nonlocal total
        per_expert = module.expert_macs(output.shape[-2], output.shape[-1])
        if module._last_mode == "reference":
            total += output.shape[0] * module.num_experts * per_expert
        elif module._last_mode == "grouped":  # mix the selected filters, one conv per sample
            total += output.shape[0] * (per_expert + module.mixing_macs())
        elif module._last_mode == "padded":  # every expert's run padded to the longest
            total += module.num_experts * module.longest_run() * per_expert
        else:  # sparse: only the valid assignments run
            total += module.last_assignments() * per_expert

    def channel_hook(module: ChannelGatedConv2d, inputs, output):
        nonlocal total
        per_channel = module.channel_macs(output.shape[-2], output.shape[-1])
        open_ = module._last_open  # (B, O) bool
        if module._last_mode == "reference":
            channels = open_.numel()
        elif per_sample_channels:
            channels = int(open_.sum())
        elif module._last_mode == "triton":  # each sample's open groups, whole
            groups = open_.view(open_.shape[0], -1, module.group_size).any(dim=2)
            channels = int(groups.sum()) * module.group_size
        else:  # the union of the batch's open channels, for every sample
            channels = int(open_.any(0).sum()) * open_.shape[0]
        total += channels * per_channel

    def condconv_hook(module: CondConv2d, inputs, output):
        nonlocal total
        conv = module.conv_macs(output.shape[-2], output.shape[-1])
        if module.dispatch == "reference":  # every kernel, then the mix of the outputs
            total += output.shape[0] * module.num_experts * conv
        else:  # mix the kernels, then one conv
            total += output.shape[0] * (conv + module.mixing_macs())

    for m in model.modules():
        if type(m) is nn.Conv2d:
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, MoEConv2d):
            hooks.append(m.register_forward_hook(moe_conv_hook))
        elif isinstance(m, ChannelGatedConv2d):
            hooks.append(m.register_forward_hook(channel_hook))
        elif isinstance(m, CondConv2d):
            hooks.append(m.register_forward_hook(condconv_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return total / x.shape[0]


def count_flops(model: nn.Module, input_shape: tuple[int, int, int],
                inputs: torch.Tensor | None = None) -> dict[str, float]:
    """MACs per sample of convs and linear layers (BN, ReLU, pooling are not counted).

    Args:
        model: a registry model.
        input_shape: ``(C, H, W)`` of one image.
        inputs: images to average over; channel gates depend on the image, so pass real
            data for ``granularity="channel"``. Default: one all-zero image.

    Returns:
        ``{"dense", "active", "executed"}``: ``dense`` computes every expert (and every
        channel) as compute-all-then-mask would; ``active`` counts the k selected experts
        (or each sample's open channels) plus routers and gating networks, the cost that
        sparse execution can reach; ``executed`` is what the model's own dispatch runs
        (for channel gates, the union of the batch's open channels).
    """
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        x = (torch.zeros(1, *input_shape) if inputs is None else inputs).to(param.device,
                                                                            param.dtype)
        with _dispatch(model, "reference"):
            dense = _count(model, x, per_sample_channels=False)
        with _dispatch(model, "sparse"):
            active = _count(model, x, per_sample_channels=True)
        executed = _count(model, x, per_sample_channels=False)
    finally:
        model.train(was_training)
    return {"dense": dense, "active": active, "executed": executed}


def count_params(model: nn.Module) -> int:
    """Number of parameters (all experts included)."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["count_flops", "count_params"]
