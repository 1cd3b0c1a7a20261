"""What every MoE layer shares: its last routing, its balancing loss, usage logging."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automoe.layers.balancing import router_z_loss
from automoe.layers.router import Routing, TopKRouter, balancing_loss, stack_routings
from automoe.layers.rules import check_routing


class MoEModule(nn.Module):
    """Base of the MoE layers.

    A layer calls :meth:`record` with each routing decision. While training, the last one
    is kept so :meth:`aux_loss` can compute ``balance_weight * loss`` (after the forward, so
    a supervised router loss can use the labels). While usage logging is on, the expert ids
    are appended to :attr:`usage_log`.

    Args:
        num_experts, top_k: E and k.
        balance_loss: one of :data:`~automoe.layers.rules.BALANCE_LOSSES`.
        balance_weight: its weight w.
        gate: the router's gate, to check the loss can be computed.
        z_loss_weight: weight of the router z-loss (ST-MoE) on the router's clean logits.
    """

    def __init__(self, num_experts: int, top_k: int, balance_loss: str = "importance_load",
                 balance_weight: float = 0.0, gate: str = "noisy_topk",
                 dispatch: str = "sparse", z_loss_weight: float = 0.0):
        super().__init__()
        check_routing(dispatch=dispatch, balance_loss=balance_loss, gate=gate,
                      balance_weight=balance_weight, router_z_loss=z_loss_weight)
        self.num_experts = num_experts
        self.top_k = top_k
        self.dispatch = dispatch
        # Set by the model before each forward: global router logits (B, E) for globally
        # routed layers, the gating embedding (B, D) for channel-gated ones.
        self.context: torch.Tensor | None = None
        self.router: TopKRouter | None = None  # top-k layers build one
        self.balance_loss = balance_loss
        self.balance_weight = balance_weight
        self.z_loss_weight = z_loss_weight
        self.last_routing: Routing | None = None
        self.keep_routing = False  # keep the last routing in eval mode too (router-aware attacks)
        self.usage_log: list[torch.Tensor] | None = None  # (B, k) expert ids per forward

    # What usage logging records: "topk" expert ids (B, k), "soft" mixture weights (B, E),
    # "channel" open-channel ids (B, O) of DeepMoE gating.
    usage_kind = "topk"

    # Per-forward state: graph tensors that must not travel with copies or pickles.
    _TRANSIENT = ("last_routing", "usage_log", "context", "last_gates", "_last_open",
                  "_last_index")

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        return {k: (None if k in self._TRANSIENT else v) for k, v in state.items()}

    def route(self, x: torch.Tensor) -> Routing:
        """Route ``x`` with this layer's router (or the model-set global logits) and record
        the decision."""
        if self.router.scorer is None:
            if self.context is None:
                raise RuntimeError("a globally routed layer needs the model to set its context "
                                   "(the global router's logits)")
            routing = self.router(x, logits=self.context)
        else:
            routing = self.router(x)
        self.record(routing)
        return routing

    def record(self, routing: Routing) -> None:
        keep = self.training and ((self.balance_weight > 0 and self.balance_loss != "none")
                                  or self.z_loss_weight > 0)
        self.last_routing = routing if keep or self.keep_routing else None
        if self.usage_log is not None:
            self.usage_log.append(routing.expert_index.detach())  # stays on device: no sync

    def aux_loss(self, targets: torch.Tensor | None = None) -> torch.Tensor | None:
        """``balance_weight * loss + z_loss_weight * z_loss`` of the last training forward,
        or None."""
        if self.last_routing is None or not self.training:
            return None
        return self.routing_loss(self.last_routing, targets)

    def routing_loss(self, routing: Routing,
                     targets: torch.Tensor | None = None) -> torch.Tensor | None:
        """This layer's weighted balancing and z-losses of ``routing``: one routing, or
        several layers' stacked (summed over the layers); None if there are none."""
        terms = []
        if self.balance_weight > 0:
            loss = balancing_loss(self.balance_loss, routing, self.num_experts, self.top_k,
                                  targets)
            if loss is not None:
                terms.append(self.balance_weight * loss.sum())
        if self.z_loss_weight > 0:
            terms.append(self.z_loss_weight * router_z_loss(routing.clean_logits).sum())
        return sum(terms) if terms else None


def routing_losses(layers: Sequence[MoEModule],
                   targets: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The aux losses of ``layers``' last training forward (as each one's ``aux_loss``).

    Layers whose routing losses have the same settings get their routings stacked and
    their losses computed at once: a router's losses are some fifty small ops with their
    gradients, which the layers of a model would otherwise each pay.
    """
    losses, groups = [], {}
    for layer in layers:
        routing = layer.last_routing
        if type(layer).aux_loss is not MoEModule.aux_loss:  # a loss of its own
            if (loss := layer.aux_loss(targets)) is not None:
                losses.append(loss)
        elif routing is not None and layer.training:
            key = (layer.balance_loss, layer.balance_weight, layer.z_loss_weight,
                   layer.num_experts, layer.top_k, routing.noise_std is None,
                   routing.expert_index.shape, routing.clean_logits.dtype)
            groups.setdefault(key, []).append(layer)
    for group in groups.values():
        routing = (group[0].last_routing if len(group) == 1
                   else stack_routings([layer.last_routing for layer in group]))
        if (loss := group[0].routing_loss(routing, targets)) is not None:
            losses.append(loss)
    return losses


class TopKMoEModule(MoEModule):
    """Base of the layers routed by a :class:`~automoe.layers.router.TopKRouter` (conv and
    block experts): checks ``expert_init`` and builds the router in one place.

    Args:
        router_in_channels: channels the router scores (ignored with ``global_routing``).
        num_experts, top_k, balance_loss, balance_weight, dispatch, z_loss_weight: as
            :class:`MoEModule`.
        global_routing: routed by a model-level router: the model sets :attr:`context`
            before each forward instead of this layer scoring its input.
        expert_init: one of :data:`~automoe.layers.rules.EXPERT_INITS`.
        router_kwargs: passed to the router (scorer, gate, gate_softmax, noise_init,
            capacity_factor, overflow, batch_priority, ...).
    """

    def __init__(self, router_in_channels: int, *, num_experts: int, top_k: int,
                 balance_loss: str = "importance_load", balance_weight: float = 0.0,
                 dispatch: str = "sparse", global_routing: bool = False,
                 z_loss_weight: float = 0.0, expert_init: str = "shared", **router_kwargs):
        super().__init__(num_experts, top_k, balance_loss, balance_weight,
                         router_kwargs.get("gate", "noisy_topk"), dispatch, z_loss_weight)
        check_routing(expert_init=expert_init)
        self.expert_init = expert_init
        self.router = TopKRouter(None if global_routing else router_in_channels, num_experts,
                                 top_k, **router_kwargs)
