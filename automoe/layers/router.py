"""Routers: scorers (per-layer or global), gates, capacity limits, balancing losses."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from automoe.layers.balancing import (
    entropy_loss,
    importance_load_loss,
    importance_loss,
    load_loss,
    supervised_router_loss,
    switch_loss,
)
from automoe.layers.rules import MIN_NOISE_STD, SCORER_TYPES, check_routing
from automoe.ops import dense_gate_matrix

# Dimension of the cosine scorer's hypersphere (X-MoE routes on a low-dimensional one).
COSINE_DIM = 16


@dataclass
class Routing:
    """What a router decided for a batch."""

    # A model's layers' routings stacked (see stack_routings) carry a leading (L,) dim.
    expert_index: torch.Tensor  # (B, k) int64, best first; -1 = dropped by the capacity limit
    gates: torch.Tensor  # (B, k) weight of each selected expert (0 where dropped)
    clean_logits: torch.Tensor  # (B, E) scores before noise
    noisy_logits: torch.Tensor  # (B, E) scores the selection used (== clean at eval)
    noise_std: torch.Tensor | None  # (B, E) learned noise std (noisy_topk, training only)

    @property
    def probs(self) -> torch.Tensor:
        """(B, E) router softmax."""
        return self.noisy_logits.softmax(dim=-1)

    def dense_gates(self, num_experts: int) -> torch.Tensor:
        """``(B, E)`` gate matrix with zeros for unselected or dropped experts."""
        return dense_gate_matrix(self.expert_index, self.gates, num_experts)


def stack_routings(routings: list[Routing]) -> Routing:
    """The routings of one batch by several layers of equal E and k as one ``(L, B, ...)``
    routing (all with noise std or all without)."""
    def stack(name: str) -> torch.Tensor | None:
        parts = [getattr(r, name) for r in routings]
        return None if parts[0] is None else torch.stack(parts)

    return Routing(*(stack(f.name) for f in fields(Routing)))


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C)`` spatial mean, as ``x.mean(dim=(2, 3))``.

    Summed, then scaled: the backward of a sum hands back a broadcast view of the
    ``(B, C)`` gradient, where the mean's divides it out to a full ``(B, C, H, W)`` tensor;
    routers pool every MoE layer's input, so that is one map-sized op per layer per step.
    """
    return x.sum(dim=(2, 3)) * (1.0 / (x.shape[2] * x.shape[3]))


class RouterNorm(nn.BatchNorm1d):
    """Standardises the router's pooled features per channel over the batch (no affine).

    Pooled post-ReLU features share a large component common to every image, so a linear
    router on them gives every sample nearly the same logits and routes them all to one
    expert. Removing the batch mean leaves the part of the features that tells images
    apart. A batch of one sample (nothing to standardise over) uses the running
    statistics."""

    def __init__(self, channels: int):
        super().__init__(channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.batch_norm directly: BatchNorm's own forward spends more Python on checks than
        # the (B, C) op itself takes, once per MoE layer per step
        training = self.training and x.shape[0] > 1
        momentum = self.momentum
        if training:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # a cumulative average, as BatchNorm's
                momentum = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean, self.running_var, None, None, training,
                            momentum or 0.0, self.eps)


class CosineLinear(nn.Linear):
    """X-MoE's cosine scorer head: ``cos(h, w_e) / tau`` of an L2-normalised input ``h``
    (B, D) and each expert's L2-normalised embedding ``w_e`` (row e of the weight, (E, D)),
    with a learned temperature ``tau`` (kept in [0.01, 1])."""

    def __init__(self, dim: int, num_experts: int, tau_init: float = 0.2):
        super().__init__(dim, num_experts, bias=False)
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cosine = F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))  # (B, E)
        return cosine / self.log_tau.clamp(math.log(0.01), 0.0).exp()


class _L2Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1)


def make_scorer(kind: str, in_channels: int, num_experts: int, *, norm: str = "batch",
                init_std: float = 1.0) -> nn.Module:
    """Maps a feature map (B, C, H, W) to router logits (B, E).

    Args:
        kind: ``"linear"`` (GAP -> Linear, no bias, as V-MoE), ``"conv"`` (conv3x3 -> GAP:
            routing sees local structure), ``"mlp"`` (GAP -> Linear -> ReLU -> Linear) or
            ``"cosine"`` (X-MoE: GAP -> Linear to a low dimension -> cosine similarity with
            each expert's embedding / learned temperature).
        norm: ``"batch"`` standardises the router's input per channel over the batch
            (:class:`RouterNorm`; BatchNorm2d before the conv scorer), ``"none"`` leaves it.
        init_std: std of the initial logits on standardised inputs: the last layer's
            weights are ``N(0, init_std^2 / fan_in)``. 0 starts every expert at the same
            score, which ``topk`` resolves towards expert 0 for every sample.
    """
    check_routing(router_norm=norm)
    if init_std < 0:
        raise ValueError(f"router init std must be >= 0, got {init_std}")
    pooled: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if norm == "batch":
        pooled.append(RouterNorm(in_channels))
    if kind == "linear":
        layers = [*pooled, nn.Linear(in_channels, num_experts, bias=False)]
    elif kind == "conv":
        layers = ([nn.BatchNorm2d(in_channels, affine=False)] if norm == "batch" else []) + [
            nn.Conv2d(in_channels, num_experts, 3, padding=1, bias=False),
            nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    elif kind == "mlp":
        hidden = max(num_experts, in_channels // 4)
        layers = [*pooled, nn.Linear(in_channels, hidden), nn.ReLU(inplace=True),
                  nn.Linear(hidden, num_experts, bias=False)]
    elif kind == "cosine":
        dim = min(in_channels, COSINE_DIM)
        layers = [*pooled, nn.Linear(in_channels, dim, bias=False), _L2Normalize(),
                  CosineLinear(dim, num_experts)]
    else:
        raise ValueError(f"router must be one of {SCORER_TYPES}, got {kind!r}")
    scorer = nn.Sequential(*layers)
    last = [m for m in scorer if isinstance(m, nn.Linear | nn.Conv2d)][-1]
    if isinstance(last, CosineLinear):  # its rows are normalised: any spread works
        nn.init.normal_(last.weight)
    elif init_std == 0:
        nn.init.zeros_(last.weight)
    else:
        fan_in = last.weight[0].numel()
        nn.init.normal_(last.weight, std=init_std / math.sqrt(fan_in))
    return scorer


class TopKRouter(nn.Module):
    """Scores experts for each sample and picks k of them.

    Args:
        in_channels: channels of the routed feature map; ``None`` for a layer driven by a
            global router (its logits are passed to :meth:`forward`).
        num_experts, top_k: E and k, ``1 <= k <= E``.
        scorer, norm, init_std: the scorer (``"linear"``, ``"conv"``, ``"mlp"``,
            ``"cosine"``), its input normalisation and the spread of its initial logits;
            see :func:`make_scorer`.
        gate: ``"noisy_topk"`` (Shazeer: learned noise ``softplus(x W_noise + b)`` while
            training), ``"topk"`` (no noise), ``"vmoe"`` (fixed noise std 1/E while
            training) or ``"st_top1"``
            (AdvMoE: k = 1, gate value 1 forward, straight-through gradient to the selected
            logit; with sparse dispatch the unselected experts are never computed, so they
            get no gradient).
        gate_softmax: ``"topk"`` (the default, Shazeer) gives the selected experts the
            softmax over their k logits (1 at k = 1), so an expert's output keeps its
            scale; at k = 1 the router then learns only from the balancing and z-losses.
            ``"topk_st"`` adds the gradient of the softmax over all E, passed straight
            through (value 0), so the router also learns from the task at k = 1 (on digits
            and cluttered digits it trained worse: routes that keep moving). ``"all"``
            keeps the selected experts' probabilities from a softmax over all E (Switch /
            V-MoE), which scales each sample's expert output by about 1/E at first.
        noise_init: initial std of the learned noise (noisy_topk). Shazeer's softplus(0) =
            0.69 routes every sample at random while the logits are still zero; on small CNN
            datasets that starves every expert (a ResNet-8 with 8 experts per block stayed at
            chance on digits), so the std starts at this value and is learned from there.
        capacity_factor: each expert takes at most ``ceil(k * B / E * factor)`` assignments
            per batch; ``None`` for no limit.
        overflow: ``"reassign"`` moves an over-capacity assignment to the sample's next-best
            expert with room; ``"drop"`` skips it (V-MoE).
        batch_priority: serve samples in order of their top gate value (Batch Priority
            Routing) instead of batch order; every sample's first choice before any second.
        capacity_at_eval: apply the capacity limit at eval too (off by default).
        input_grad: let the router's gradients (its balancing and z-losses, and the task's
            through the gates) flow into the layer input, so into the backbone. Off, the
            router scores a detached input while training: it learns, the features are the
            task's alone. In eval mode the input gradient always flows (attacks need it).
    """

    def __init__(self, in_channels: int | None, num_experts: int, top_k: int, *,
                 scorer: str = "linear", norm: str = "batch", init_std: float = 1.0,
                 gate: str = "noisy_topk", gate_softmax: str = "topk",
                 noise_init: float = 1e-2, capacity_factor: float | None = None,
                 overflow: str = "reassign", batch_priority: bool = False,
                 capacity_at_eval: bool = False, input_grad: bool = True):
        super().__init__()
        check_routing(num_experts=num_experts, top_k=top_k, gate=gate,
                      global_routing=in_channels is None, gate_noise_init=noise_init,
                      gate_softmax=gate_softmax, overflow=overflow,
                      capacity_factor=capacity_factor)
        self.num_experts = num_experts
        self.top_k = top_k
        self.gate = gate
        self.gate_softmax = gate_softmax
        self.capacity_factor = capacity_factor
        self.overflow = overflow
        self.batch_priority = batch_priority
        self.capacity_at_eval = capacity_at_eval
        self.input_grad = input_grad
        # set by an attack for its forwards: the routing is computed as usual, but from
        # detached inputs, so the gradient treats it as a constant (BPDA)
        self.fixed_routing = False
        self.scorer = None if in_channels is None else make_scorer(
            scorer, in_channels, num_experts, norm=norm, init_std=init_std)
        # a scorer that pools first (GAP, Flatten, head...): its head, run on the features
        # pooled once for it and the noise net (looked up once: indexing a Sequential on
        # every forward costs more than some of the router's ops)
        self._pooled_head = (tuple(self.scorer)[2:] if self.scorer is not None
                             and isinstance(self.scorer[0], nn.AdaptiveAvgPool2d) else None)
        self.w_noise = None
        if gate == "noisy_topk":
            self.w_noise = nn.Linear(in_channels, num_experts, bias=True)
            nn.init.zeros_(self.w_noise.weight)
            # softplus(b) + floor == noise_init
            nn.init.constant_(self.w_noise.bias, math.log(math.expm1(noise_init - MIN_NOISE_STD)))

    def forward(self, x: torch.Tensor | None, logits: torch.Tensor | None = None) -> Routing:
        """Route a batch: from the feature map ``x`` (B, C, H, W), or from ``logits`` (B, E)
        computed by a global router."""
        pooled = None  # (B, C) the pooled features, computed once for scorer and noise
        if x is not None and (self.fixed_routing or self.training and not self.input_grad):
            # a view: the router's losses stop at its input. In eval mode the gradient
            # flows, so a router-aware attack can still move the routing
            x = x.detach()
        if logits is not None and self.fixed_routing:
            logits = logits.detach()  # a global router's, (B, E)
        if logits is not None:
            clean = logits
        elif self._pooled_head is not None:
            pooled = clean = global_avg_pool(x)
            for layer in self._pooled_head:
                clean = layer(clean)
        else:
            clean = self.scorer(x)  # (B, E)
        noise_std = None
        noisy = clean
        if self.training and self.gate == "noisy_topk":
            if pooled is None:
                pooled = global_avg_pool(x)
            noise_std = F.softplus(self.w_noise(pooled)) + MIN_NOISE_STD  # (B, E)
            noisy = torch.addcmul(clean, torch.randn_like(clean), noise_std)  # one op
        elif self.training and self.gate == "vmoe":
            noisy = clean + torch.randn_like(clean) / self.num_experts
        if self.capacity_factor is not None and (self.training or self.capacity_at_eval):
            expert_index = self._assign_with_capacity(noisy.detach())
        else:
            expert_index = noisy.topk(self.top_k, dim=1).indices  # (B, k)
        gates = self._gate_values(noisy, expert_index)
        return Routing(expert_index, gates, clean, noisy, noise_std)

    @property
    def gates_carry_gradient(self) -> bool:
        """Whether the gate values pass a gradient to the router's logits (and so to its
        input). Not for top-1 under the top-k softmax: the softmax of one logit is 1."""
        return not (self.top_k == 1 and self.gate_softmax == "topk" and self.gate != "st_top1")

    def _gate_values(self, noisy: torch.Tensor, expert_index: torch.Tensor) -> torch.Tensor:
        valid = expert_index >= 0
        if not self.gates_carry_gradient:
            # the softmax of one logit: 1, with a gradient of exactly 0; no graph to build
            return valid.to(noisy.dtype)
        safe_index = expert_index.clamp(min=0)
        selected = noisy.gather(1, safe_index)  # (B, k)
        if self.gate == "st_top1":
            gates = 1.0 + selected - selected.detach()  # 1 forward, identity backward
        elif self.gate_softmax in ("topk", "topk_st"):
            gates = selected.masked_fill(~valid, float("-inf")).softmax(dim=1)
            gates = torch.nan_to_num(gates, nan=0.0)  # every slot dropped -> 0/0
            if self.gate_softmax == "topk_st":  # + the all-E softmax's gradient, value 0
                probs = noisy.softmax(dim=1).gather(1, safe_index)  # (B, k)
                gates = gates + probs - probs.detach()
        else:
            gates = noisy.softmax(dim=1).gather(1, safe_index)
        return gates * valid

    @torch.no_grad()
    def _assign_with_capacity(self, scores: torch.Tensor) -> torch.Tensor:
        """Top-k under a per-expert capacity. Slot j of every sample is served before slot
        j + 1; within a slot, samples go in batch order or by top score (BPR)."""
        batch, num_experts = scores.shape
        capacity = math.ceil(self.top_k * batch / num_experts * self.capacity_factor)
        preference = scores.argsort(dim=1, descending=True)  # (B, E)
        if self.batch_priority:
            priority = scores.max(dim=1).values.argsort(descending=True)  # (B,)
        else:
            priority = torch.arange(batch, device=scores.device)
        load = torch.zeros(num_experts, dtype=torch.long, device=scores.device)
        tried = torch.zeros(batch, num_experts, dtype=torch.bool, device=scores.device)
        expert_index = torch.full((batch, self.top_k), -1, dtype=torch.long, device=scores.device)
        for slot in range(self.top_k):
            pending = priority.clone()  # samples still looking for an expert for this slot
            rounds = num_experts if self.overflow == "reassign" else 1
            for _ in range(rounds):
                if pending.numel() == 0:
                    break
                # best expert this sample has not tried yet
                untried = ~tried[pending].gather(1, preference[pending])  # (P, E) by rank
                has_option = untried.any(dim=1)
                pending = pending[has_option]
                rank = untried[has_option].float().argmax(dim=1)  # first untried rank
                choice = preference[pending, rank]  # (P,)
                # position of each sample in its expert's queue, in priority order
                one_hot = F.one_hot(choice, num_experts)  # (P, E)
                position = (one_hot.cumsum(0) * one_hot).sum(1) - 1  # (P,)
                accepted = load[choice] + position < capacity
                expert_index[pending[accepted], slot] = choice[accepted]
                load += torch.bincount(choice[accepted], minlength=num_experts)
                tried[pending, choice] = True
                pending = pending[~accepted]
        return expert_index

    def extra_repr(self) -> str:
        return (f"experts={self.num_experts}, top_k={self.top_k}, gate={self.gate!r}, "
                f"capacity_factor={self.capacity_factor}")


def balancing_loss(kind: str, routing: Routing, num_experts: int, top_k: int,
                   targets: torch.Tensor | None = None) -> torch.Tensor | None:
    """The unweighted balancing loss ``kind`` of one routing decision, or one per layer of
    stacked routings (None if it does not apply: ``"none"``, a load term without noise or
    with k = E, no targets)."""
    check_routing(balance_loss=kind)
    has_load = routing.noise_std is not None and top_k < num_experts
    if kind == "none":
        return None
    if kind == "importance":
        return importance_loss(routing.dense_gates(num_experts))
    if kind == "load":
        return load_loss(routing.clean_logits, routing.noisy_logits, routing.noise_std,
                         top_k) if has_load else None
    if kind == "importance_load":
        if not has_load:
            return importance_loss(routing.dense_gates(num_experts))
        return importance_load_loss(routing.dense_gates(num_experts), routing.clean_logits,
                                    routing.noisy_logits, routing.noise_std, top_k)
    if kind == "switch":
        return switch_loss(routing.probs)
    if kind == "entropy":
        return entropy_loss(routing.probs)
    return None if targets is None else supervised_router_loss(routing.clean_logits, targets)
