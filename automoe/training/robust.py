"""Adversarial training steps: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019) and
AdvMoE's router/expert alternation (Zhang et al. 2023).

Adversarial examples are generated with the model in eval mode (so BatchNorm statistics
are not updated by them), and in ``[0, 1]`` pixel units.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from automoe.errors import ConfigError
from automoe.layers import MoEModule
from automoe.robustness import AttackConfig, attack_batch, pgd_step, routing_held_fixed

SCHEMES = ("standard", "pgd_at", "trades", "advmoe")


def _kl(adv_logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || p_adv) summed over classes, mean over the batch (TRADES' term)."""
    return F.kl_div(F.log_softmax(adv_logits, dim=1), F.softmax(clean_logits, dim=1),
                    reduction="batchmean")


def _pgd_on(loss_fn, x: torch.Tensor, eps: float, step_size: float, steps: int,
            start_noise: float) -> torch.Tensor:
    """Maximise ``loss_fn(x_adv)`` by L-inf PGD from ``x + start_noise * N(0, 1)``."""
    adv = (x + start_noise * torch.randn_like(x)).clamp(0, 1).detach()
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(loss_fn(adv), adv)
        adv = pgd_step(adv, grad, x, eps, step_size)
    return adv.detach()


@contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode inside the block (BatchNorm statistics untouched), the old mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def pgd_at_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                step_size: float, steps: int, fixed_routing: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Madry: cross-entropy on PGD examples. Returns (loss, logits on the examples).
    ``fixed_routing``: craft them through fixed routing (BPDA, see
    :func:`~automoe.robustness.routing_held_fixed`)."""
    with _eval_mode(model), routing_held_fixed(model, fixed_routing):
        adv = attack_batch(model, x, y, AttackConfig(eps=eps, step_size=step_size, steps=steps))
    logits = model(adv)
    return F.cross_entropy(logits, y), logits


def trades_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                step_size: float, steps: int, beta: float, fixed_routing: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """TRADES: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL
    (through fixed routing with ``fixed_routing``)."""
    with _eval_mode(model), routing_held_fixed(model, fixed_routing):
        with torch.no_grad():
            clean_ref = model(x)
        adv = _pgd_on(lambda a: _kl(model(a), clean_ref), x, eps, step_size, steps, 0.001)
    logits = model(x)
    return F.cross_entropy(logits, y) + beta * _kl(model(adv), logits), logits


def router_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of the routers (per-layer scorers and noise, the global router, CondConv's
    mixers)."""
    return [p for name, p in model.named_parameters()
            if ".router." in f".{name}" or ".mixer." in f".{name}"
            or name.startswith("global_router.")]


def router_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Model logits and every MoE layer's router logits (clean) for ``x``."""
    layers = [m for m in model.modules() if isinstance(m, MoEModule)]
    for layer in layers:
        layer.keep_routing = True
    try:
        logits = model(x)
        routed = [layer.last_routing.clean_logits for layer in layers
                  if layer.last_routing is not None]
    finally:
        for layer in layers:
            layer.keep_routing = False
    return logits, routed


def _router_kl(adv: list[torch.Tensor], clean: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([_kl(a, c) for a, c in zip(adv, clean, strict=True)]).mean()


class AdvMoEStep:
    """One AdvMoE minibatch (METHODS.md §5), two optimiser steps.

    Step A (experts and backbone, routers frozen): x_adv by 2-step PGD (step 5/255, start
    x + 0.001 N(0, 1)) maximising KL(model) + KL(routers); loss = CE(model(x), y) +
    beta * KL(model(x_adv) || model(x)).
    Step B (routers only): regenerate x_adv; loss = alpha * CE(router(x), y mod E) +
    beta * KL(router(x_adv) || router(x)), averaged over the MoE layers.
    """

    def __init__(self, model: nn.Module, main_optimizer, router_optimizer, eps: float,
                 alpha: float, beta: float, steps: int = 2, step_size: float = 5 / 255,
                 grad_clip: float = 0.0):
        if not router_parameters(model):
            raise ConfigError("the advmoe scheme needs a model with routed experts (placement "
                              "with MoE units, granularity conv, pathway or block)")
        self.model = model
        self.main_optimizer = main_optimizer
        self.router_optimizer = router_optimizer
        self.router_params = router_parameters(model)
        self.eps, self.alpha, self.beta = eps, alpha, beta
        self.steps, self.step_size = steps, step_size
        self.grad_clip = grad_clip  # largest gradient norm of each of the two steps; 0: off
        self.main_params = [p for group in main_optimizer.param_groups for p in group["params"]]

    def _adversarial(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        with _eval_mode(model):
            with torch.no_grad():
                clean_logits, clean_routes = router_logits(model, x)

            def objective(adv):
                logits, routes = router_logits(model, adv)
                return _kl(logits, clean_logits) + _router_kl(routes, clean_routes)

            return _pgd_on(objective, x, self.eps, self.step_size, self.steps, 0.001)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, aux_loss_fn) -> tuple[torch.Tensor,
                                                                                torch.Tensor]:
        model = self.model
        # Step A: experts and backbone
        adv = self._adversarial(x)
        for p in self.router_params:
            p.requires_grad_(False)
        try:
            logits = model(x)
            loss = F.cross_entropy(logits, y) + self.beta * _kl(model(adv), logits)
            if aux_loss_fn is not None:
                loss = loss + aux_loss_fn(y)
            self.main_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.main_params, self.grad_clip)
            self.main_optimizer.step()
        finally:
            for p in self.router_params:
                p.requires_grad_(True)
        # Step B: routers only
        adv = self._adversarial(x)
        _, clean_routes = router_logits(model, x)
        _, adv_routes = router_logits(model, adv)
        router_loss = (self.alpha * torch.stack([F.cross_entropy(r, y % r.shape[1])
                                                 for r in clean_routes]).mean()
                       + self.beta * _router_kl(adv_routes, clean_routes))
        self.router_optimizer.zero_grad(set_to_none=True)
        router_loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.router_params, self.grad_clip)
        self.router_optimizer.step()
        return loss.detach(), logits.detach()
