"""White-box attacks on models that take ``[0, 1]`` images.

All budgets (``eps``, ``step_size``) are in ``[0, 1]`` pixel units. A model that expects
normalised inputs is wrapped with :class:`Normalized` so the attack still works in pixels.

* FGSM (Goodfellow et al. 2015), PGD with random start and restarts under L-inf or L2
  (Madry et al. 2018).
* APGD with cross-entropy or DLR loss (Croce & Hein 2020, the two white-box attacks of
  AutoAttack): step-size halving at checkpoints, momentum 0.75, best point kept.
* Square (Andriushchenko et al. 2020, :mod:`automoe.robustness.square`): score-based
  black-box, ``steps`` queries; the check that white-box numbers are not gradient masking.
* Router-aware PGD: the loss adds ``router_weight`` x the routers' cross-entropy against
  their decision on the clean input (or ``y mod E``, AdvMoE's expert labels), so the attack
  also moves the routing. Hard top-k routing passes gradient only through the gate values,
  which can hide weaknesses from a plain attack.
* APGD-CE through fixed routing (``apgd-fixed-routing``, BPDA after Athalye et al. 2018):
  the forward routes as usual, the backward treats the routing as a constant. A
  straight-through top-1 gate's gradient misleads the attacks above (they score far above
  Square on such models); this one does not follow it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from automoe.layers import MoEModule, TopKRouter
from automoe.robustness.config import (
    AttackConfig,
)
from automoe.robustness.square import square_attack


class Normalized(nn.Module):
    """Wraps a model that expects ``(x - mean) / std`` so that it takes [0, 1] pixels."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


# ------------------------------------------------------------------------------ helpers


def _project(adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Back into the eps-ball around x and the [0, 1] box."""
    if norm == "linf":
        adv = torch.min(torch.max(adv, x - eps), x + eps)
    else:
        delta = adv - x
        norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        adv = x + delta * torch.clamp(eps / norms, max=1.0)
    return adv.clamp(0.0, 1.0)


def _random_start(x: torch.Tensor, eps: float, norm: str, generator) -> torch.Tensor:
    if norm == "linf":
        noise = 2 * torch.rand(x.shape, generator=generator, device=x.device) - 1
        return _project(x + eps * noise, x, eps, norm)
    direction = torch.randn(x.shape, generator=generator, device=x.device)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    radius = torch.rand(x.shape[0], generator=generator, device=x.device).view(-1, 1, 1, 1)
    return _project(x + eps * radius * direction, x, eps, norm)


def _step(grad: torch.Tensor, size: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return size * grad.sign()
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return size * grad / norms


def pgd_step(adv: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, eps: float,
             step_size: float, norm: str = "linf") -> torch.Tensor:
    """One projected gradient ascent step: move ``adv`` by ``step_size`` along the sign
    (L-inf) or the unit direction (L2) of ``grad``, then back into the eps-ball around
    ``x`` and the ``[0, 1]`` box. Shared by the attacks and adversarial training."""
    return _project(adv.detach() + _step(grad, step_size, norm), x, eps, norm)


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020), per sample; needs >= 3 classes."""
    sorted_logits, order = logits.sort(dim=1)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    top_is_true = (order[:, -1] == labels).float()
    best_other = sorted_logits[:, -2] * top_is_true + sorted_logits[:, -1] * (1 - top_is_true)
    return -(true - best_other) / (sorted_logits[:, -1] - sorted_logits[:, -3] + 1e-12)


@contextmanager
def _routing_kept(model: nn.Module):
    """Keep every MoE layer's last routing, also in eval mode (for router-aware losses)."""
    layers = [m for m in model.modules() if isinstance(m, MoEModule)]
    for layer in layers:
        layer.keep_routing = True
    try:
        yield layers
    finally:
        for layer in layers:
            layer.keep_routing = False
            layer.last_routing = None


@contextmanager
def routing_held_fixed(model: nn.Module, fixed: bool = True):
    """While on, every top-k router routes as usual but from detached inputs: the attack's
    gradient treats the routing as a constant (BPDA through the routing)."""
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)] if fixed else []
    for router in routers:
        router.fixed_routing = True
    try:
        yield
    finally:
        for router in routers:
            router.fixed_routing = False


def routing_passes_gradient(model: nn.Module) -> bool:
    """Whether some router's gates pass a gradient to the model's input. If none does,
    holding the routing fixed changes no gradient: ``apgd-fixed-routing`` is APGD-CE."""
    return any(m.gates_carry_gradient for m in model.modules() if isinstance(m, TopKRouter))


def _router_loss(layers: list[MoEModule], targets: list[torch.Tensor]) -> torch.Tensor:
    losses = [F.cross_entropy(layer.last_routing.clean_logits, target, reduction="none")
              for layer, target in zip(layers, targets, strict=True)
              if layer.last_routing is not None]
    return torch.stack(losses).mean(0) if losses else torch.zeros(())


def _loss_fn(model: nn.Module, labels: torch.Tensor, kind: str, router_layers=None,
             router_targets=None, router_weight: float = 0.0) -> Callable:
    """Per-sample loss the attack maximises: ``loss(adv, index)`` scores the samples
    ``index`` of the batch (all when None), so an attack can drop the ones it has fooled."""
    def loss(adv: torch.Tensor, index: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(adv)
        y = labels if index is None else labels[index]
        value = (dlr_loss(logits, y) if kind == "dlr"
                 else F.cross_entropy(logits, y, reduction="none"))
        if router_layers:
            targets = (router_targets if index is None
                       else [target[index] for target in router_targets])
            value = value + router_weight * _router_loss(router_layers, targets)
        return value, logits

    return loss


# ------------------------------------------------------------------------------ attacks


# Both attacks below return, for a sample they fool, the first point that fools it, so
# they stop attacking it there: each step runs the model on the samples still unfooled
# (the ``active`` index), which is exact and, on a front that loses half its samples in
# the first steps, about halves the cost of an evaluation.


def _pgd(loss, x, labels, cfg: AttackConfig, generator, steps: int, step_size: float):
    adv = _random_start(x, cfg.eps, cfg.norm, generator) if cfg.random_start else x.clone()
    fooled = torch.zeros_like(labels, dtype=torch.bool)
    best = adv.clone()
    for _ in range(steps):
        active = (~fooled).nonzero().squeeze(1)
        if active.numel() == 0:
            return best
        point = adv[active].requires_grad_(True)  # (n, C, H, W)
        with torch.enable_grad():
            value, logits = loss(point, active)
            (grad,) = torch.autograd.grad(value.sum(), point)
        point = point.detach()
        wrong = logits.argmax(1) != labels[active]
        best[active[wrong]] = point[wrong]  # the first fooling point
        fooled[active[wrong]] = True
        adv[active] = pgd_step(point, grad, x[active], cfg.eps, step_size, cfg.norm)
    active = (~fooled).nonzero().squeeze(1)
    best[active] = adv[active]  # fooling or not, the last point
    return best


def _apgd(loss, x, labels, cfg: AttackConfig, generator):
    """APGD (L-inf), per-sample step sizes; returns the best (fooling if any) points."""
    n_iter = max(cfg.steps, 1)
    checkpoints, p, p_prev = [0], 0.22, 0.0
    while math.ceil(p * n_iter) < n_iter:
        checkpoints.append(math.ceil(p * n_iter))
        p, p_prev = p + max(p - p_prev - 0.03, 0.06), p
    batch = x.shape[0]
    view = (-1, 1, 1, 1)
    step = torch.full((batch,), 2 * cfg.eps, device=x.device)
    adv = _random_start(x, cfg.eps, "linf", generator) if cfg.random_start else x.clone()

    def value_grad(point, index):
        point = point.clone().requires_grad_(True)
        with torch.enable_grad():
            value, logits = loss(point, index)
            (grad,) = torch.autograd.grad(value.sum(), point)
        return value.detach(), logits.detach(), grad

    value, logits, grad = value_grad(adv, None)
    best_value, best_point = value.clone(), adv.clone()
    fooled = logits.argmax(1) != labels
    fooling_point = adv.clone()
    prev = adv.clone()
    successes = torch.zeros(batch, device=x.device)
    value_at_checkpoint = best_value.clone()
    step_reduced = torch.ones(batch, dtype=torch.bool, device=x.device)
    for k in range(n_iter):
        active = (~fooled).nonzero().squeeze(1)  # a fooled sample keeps its fooling point
        if active.numel() == 0:
            break
        here, base = adv[active], x[active]  # (n, C, H, W)
        z = _project(here + step[active].view(view) * grad[active].sign(), base, cfg.eps,
                     "linf")
        momentum = 0.75 if k > 0 else 1.0
        new = _project(here + momentum * (z - here) + (1 - momentum) * (here - prev[active]),
                       base, cfg.eps, "linf")
        prev[active], adv[active] = here, new
        value, logits, grad[active] = value_grad(new, active)
        wrong = logits.argmax(1) != labels[active]
        fooling_point[active[wrong]] = new[wrong]
        fooled[active[wrong]] = True
        improved = value > best_value[active]
        successes[active] += improved.float()
        best_value[active] = torch.where(improved, value, best_value[active])
        best_point[active[improved]] = new[improved]
        if k + 1 in checkpoints[1:]:
            j = checkpoints.index(k + 1)
            window = checkpoints[j] - checkpoints[j - 1]
            too_few = successes < 0.75 * window
            stalled = (~step_reduced) & (best_value <= value_at_checkpoint)
            reduce = too_few | stalled
            step = torch.where(reduce, step / 2, step)
            adv[reduce] = best_point[reduce]  # restart from the best point
            restarted = (reduce & ~fooled).nonzero().squeeze(1)
            if restarted.numel():
                grad[restarted] = value_grad(adv[restarted], restarted)[2]
            step_reduced = reduce
            successes.zero_()
            value_at_checkpoint = best_value.clone()
    return torch.where(fooled.view(view), fooling_point, best_point)


def attack_batch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 config: AttackConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial images within ``eps`` of ``images`` (one restart; see
    :func:`robust_accuracy` for restarts). The model should be in eval mode."""
    x = images.detach()
    if config.eps == 0 or config.steps == 0 and config.attack != "fgsm":
        return x.clone()
    if config.attack == "fgsm":
        loss = _loss_fn(model, labels, "ce")
        adv = x.clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(loss(adv)[0].sum(), adv)
        return _project(x + config.eps * grad.sign(), x, config.eps, "linf").detach()
    if config.attack == "square":
        return square_attack(model, x, labels, config.eps, config.steps, generator)
    if config.attack in ("apgd-ce", "apgd-dlr", "apgd-fixed-routing"):
        kind = "dlr" if config.attack == "apgd-dlr" else "ce"
        with routing_held_fixed(model, config.attack == "apgd-fixed-routing"):
            return _apgd(_loss_fn(model, labels, kind), x, labels, config,
                         generator).detach()
    if config.attack == "pgd":
        return _pgd(_loss_fn(model, labels, "ce"), x, labels, config, generator, config.steps,
                    config.step_size).detach()
    with _routing_kept(model) as layers:  # router-pgd
        with torch.no_grad():
            model(x)
        if config.router_target == "label":
            targets = [labels % layer.num_experts for layer in layers]
        else:
            targets = [layer.last_routing.expert_index[:, 0].clamp_min(0) for layer in layers
                       if layer.last_routing is not None]
        layers = [layer for layer in layers if layer.last_routing is not None]
        loss = _loss_fn(model, labels, "ce", layers, targets, config.router_weight)
        return _pgd(loss, x, labels, config, generator, config.steps, config.step_size).detach()


