"""What every backbone shares: input normalisation, MoE unit construction, model-level
routers (global image router, DeepMoE embedding) and the auxiliary losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from automoe.errors import InputShapeError
from automoe.layers import (
    ChannelGatedConv2d,
    CondConv2d,
    GatingEmbedding,
    MoEBlock,
    MoEConv2d,
    MoEModule,
    RouterNorm,
    TopKRouter,
    global_avg_pool,
    routing_losses,
)
from automoe.models._blocks import BasicBlock
from automoe.models.config import MoENetConfig


def make_conv(config: MoENetConfig, in_channels: int, out_channels: int, kernel_size: int,
              stride: int, moe: bool) -> nn.Module:
    """A conv of a unit: dense, or the MoE form its granularity asks for (conv, pathway:
    E experts; channel: DeepMoE gates; condconv: a per-sample mixture of E kernels).
    Block granularity wraps whole units instead."""
    padding = kernel_size // 2
    if not moe or config.granularity == "block":
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         bias=False)
    if config.granularity == "condconv":
        return CondConv2d(in_channels, out_channels, kernel_size, stride, padding,
                          num_experts=config.num_experts,
                          temperature=config.condconv_temperature,
                          anneal=config.condconv_anneal, router_norm=config.router_norm,
                          dispatch=config.dispatch)
    if config.granularity == "channel":
        return ChannelGatedConv2d(in_channels, out_channels, kernel_size, stride, padding,
                                  embedding_width=config.embedding_width,
                                  gate_l1=config.gate_l1, dispatch=config.dispatch,
                                  group_size=config.channel_group)
    return MoEConv2d(in_channels, out_channels, kernel_size, stride, padding,
                     **config.moe_kwargs())


def unit_width(config: MoENetConfig, width: int, moe: bool) -> int:
    """Output width of a unit: pathway experts are ``expert_ratio`` of the unit's width."""
    return config.expert_width(width) if moe and config.granularity == "pathway" else width


class ImageRouter(nn.Module):
    """AdvMoE's global router: a small ResNet (16/32/64 channels, ``blocks_per_stage``
    basic blocks per stage; 3 is ResNet-20-like) on the normalised image, GAP, then the
    per-layer routers' head: standardised pooled features (``norm="batch"``) -> Linear ->
    E logits, with initial logits of std ``init_std`` (see
    :func:`~automoe.layers.make_scorer`)."""

    def __init__(self, in_channels: int, num_experts: int, blocks_per_stage: int = 3, *,
                 norm: str = "batch", init_std: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
        width = 16
        for stage, out in enumerate((16, 32, 64)):
            for i in range(blocks_per_stage):
                layers.append(BasicBlock(width, out, 2 if stage > 0 and i == 0 else 1))
                width = out
        self.features = nn.Sequential(*layers)
        self.norm = RouterNorm(width) if norm == "batch" else nn.Identity()
        self.head = nn.Linear(width, num_experts)
        nn.init.normal_(self.head.weight, std=init_std / width ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(global_avg_pool(self.features(x))))  # (B, E)


class MoENet(nn.Module):
    """Base of the backbones. Subclasses build ``self.features`` (stem + stages, taking the
    normalised image) and ``self.head``, then call :meth:`_finish`.

    Models take ``[0, 1]`` images and normalise inside, so attacks work in pixel units.
    """

    def __init__(self, config: MoENetConfig):
        super().__init__()
        self.config = config
        channels = len(config.input_mean)
        self.register_buffer("input_mean", torch.tensor(config.input_mean).view(1, channels, 1, 1))
        self.register_buffer("input_std", torch.tensor(config.input_std).view(1, channels, 1, 1))
        self.global_router: ImageRouter | None = None
        self.embedding: GatingEmbedding | None = None
        self._embedding_logits: torch.Tensor | None = None  # h(e) of the last training forward
        # the MoE layers, found on first use: every training step asks for them twice, and
        # one walk of the module tree took 0.2 ms under cProfile (a digits step: 9 ms)
        self._moe_layers: tuple[MoEModule, ...] | None = None

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        # a graph tensor of the last forward; the layer list, found again in the copy
        return {**state, "_embedding_logits": None, "_moe_layers": None}

    def _finish(self) -> None:
        """Add model-level routers if some unit needs them, then initialise convs."""
        config = self.config
        has_moe = any(config.units)
        if has_moe and config.granularity == "channel":
            self.embedding = GatingEmbedding(config.in_channels, config.embedding_width,
                                             config.num_classes)
        elif has_moe and config.router == "global":
            self.global_router = ImageRouter(config.in_channels, config.num_experts,
                                             config.global_router_blocks,
                                             norm=config.router_norm,
                                             init_std=config.router_init)
        routers = {id(m) for r in self.modules() if isinstance(r, TopKRouter)
                   for m in r.modules()}  # routers keep their own initialisation
        for m in self.modules():
            if type(m) is nn.Conv2d and id(m) not in routers:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, MoEBlock) and m.expert_init == "shared":
                m.share_initialisation()

    def check_input(self, x: torch.Tensor) -> None:
        """Refuses an input the model was not built for: a model trained at 16x16 answers
        an 8x8 batch at chance, without any error, since global pooling takes any size."""
        size = self.config.image_size
        if x.dim() != 4 or x.shape[1] != self.config.in_channels or tuple(x.shape[2:]) != (
                size, size):
            raise InputShapeError(
                f"input of shape {tuple(x.shape)}, but the model was built for (B, "
                f"{self.config.in_channels}, {size}, {size}) images: resize the data to "
                f"{size}x{size} with {self.config.in_channels} channel(s)")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # traced and compiled graphs are specialised to the shapes they were built with
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(x)
        x = (x - self.input_mean) / self.input_std  # (B, C, H, W), normalised
        context = None
        self._embedding_logits = None
        if self.global_router is not None:
            context = self.global_router(x)  # (B, E) logits shared by every MoE layer
        elif self.embedding is not None:
            context = self.embedding(x)  # (B, D) DeepMoE embedding e
            if self.training and self.config.embedding_ce > 0:
                self._embedding_logits = self.embedding.classify(context)
        if context is None:
            return self.features(x)
        layers = self.moe_layers()
        for layer in layers:
            layer.context = context
        try:
            return self.features(x)
        finally:
            for layer in layers:
                layer.context = None

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(global_avg_pool(x))  # (B, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def set_training_progress(self, fraction: float) -> None:
        """Tell the layers with a training schedule (CondConv's temperature) that
        ``fraction`` of the training steps are done; the trainer calls it every step."""
        for m in self.moe_layers():
            if isinstance(m, CondConv2d):
                m.set_training_progress(fraction)

    def moe_layers(self) -> tuple[MoEModule, ...]:
        """The model's MoE layers in module order (the architecture is fixed once built)."""
        if self._moe_layers is None:
            self._moe_layers = tuple(m for m in self.modules() if isinstance(m, MoEModule))
        return self._moe_layers

    def aux_loss(self, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Balancing (or gate-L1) losses of the last training forward, plus DeepMoE's
        embedding cross-entropy; 0 if none. ``targets`` are the batch labels."""
        losses = routing_losses(self.moe_layers(), targets)
        if self._embedding_logits is not None and targets is not None:
            losses.append(self.config.embedding_ce * F.cross_entropy(self._embedding_logits,
                                                                     targets))
        return torch.stack(losses).sum() if losses else self.input_mean.new_zeros(())
