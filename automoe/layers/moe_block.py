"""Block experts (Pavlitska et al. BlockMoE): E copies of a whole block, top-k per sample."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from automoe.layers.base import EXPERT_INITS, MoEModule
from automoe.layers.router import TopKRouter
from automoe.ops import moe_dispatch_reference, moe_dispatch_sparse


class MoEBlock(MoEModule):
    """A block replaced by ``num_experts`` independent copies and a top-k router.

    Args:
        make_block: builds one expert (called E times with ``expert_init="independent"``;
            with ``"shared"``, once, and the other experts are copies of it).
        in_channels: channels the router sees (the block input).
        out_channels, stride: the block's output channels and spatial stride.
        num_experts, top_k, balance_loss, balance_weight, dispatch, global_routing,
        z_loss_weight, expert_init, router_kwargs: as :class:`~automoe.layers.MoEConv2d`.
    """

    def __init__(self, make_block: Callable[[], nn.Module], in_channels: int, out_channels: int,
                 stride: int, *, num_experts: int, top_k: int,
                 balance_loss: str = "importance_load", balance_weight: float = 0.0,
                 dispatch: str = "sparse", global_routing: bool = False,
                 z_loss_weight: float = 0.0, expert_init: str = "shared", **router_kwargs):
        super().__init__(num_experts, top_k, balance_loss, balance_weight,
                         router_kwargs.get("gate", "noisy_topk"), dispatch, z_loss_weight)
        self.out_channels = out_channels
        self.stride = stride
        if expert_init not in EXPERT_INITS:
            raise ValueError(f"expert_init must be one of {EXPERT_INITS}, got {expert_init!r}")
        self.expert_init = expert_init
        if expert_init == "shared":
            first = make_block()
            self.experts = nn.ModuleList([first, *(copy.deepcopy(first)
                                                   for _ in range(num_experts - 1))])
        else:
            self.experts = nn.ModuleList(make_block() for _ in range(num_experts))
        self.router = TopKRouter(None if global_routing else in_channels, num_experts, top_k,
                                 **router_kwargs)

    @torch.no_grad()
    def share_initialisation(self) -> None:
        """Copy expert 0's parameters and buffers into every other expert (for a model
        that re-initialises its convs after building, with ``expert_init="shared"``)."""
        state = self.experts[0].state_dict()
        for expert in self.experts[1:]:
            expert.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.route(x)
        out_h = (x.shape[2] - 1) // self.stride + 1
        out_w = (x.shape[3] - 1) // self.stride + 1
        # No block kernel: every mode but "reference" runs the sparse gather/scatter path.
        dispatch = moe_dispatch_reference if self.dispatch == "reference" else moe_dispatch_sparse
        return dispatch(x, self.experts, routing.expert_index, routing.gates,
                        (self.out_channels, out_h, out_w))
