"""Block experts (Pavlitska et al. BlockMoE): E copies of a whole block, top-k per sample."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from automoe.layers.base import TopKMoEModule
from automoe.ops import moe_dispatch_reference, moe_dispatch_sparse


class MoEBlock(TopKMoEModule):
    """A block replaced by ``num_experts`` independent copies and a top-k router.

    Args:
        make_block: builds one expert (called E times with ``expert_init="independent"``;
            with ``"shared"``, once, and the other experts are copies of it).
        in_channels: channels the router sees (the block input).
        out_channels, stride: the block's output channels and spatial stride.
        num_experts, expert_init, moe_kwargs: as :class:`~automoe.layers.base.TopKMoEModule`.
    """

    def __init__(self, make_block: Callable[[], nn.Module], in_channels: int, out_channels: int,
                 stride: int, *, num_experts: int, expert_init: str = "shared", **moe_kwargs):
        # experts are drawn before the router, as the random streams of saved seeds expect
        if expert_init == "shared":
            first = make_block()
            experts = [first, *(copy.deepcopy(first) for _ in range(num_experts - 1))]
        else:
            experts = [make_block() for _ in range(num_experts)]
        super().__init__(in_channels, num_experts=num_experts, expert_init=expert_init,
                         **moe_kwargs)
        self.out_channels = out_channels
        self.stride = stride
        self.experts = nn.ModuleList(experts)

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
