"""Square attack, L-inf (Andriushchenko et al. 2020): a score-based black-box attack.

It reads only the model's logits, never a gradient, so a model whose gradients are
obfuscated (hard routing, saturated gates) cannot hide from it the way it can from PGD.
That makes it the masking check of a robustness claim: a black-box attack that beats the
white-box worst case means the white-box gradients were misleading (Athalye et al. 2018).

Each query replaces the perturbation inside one random square window of each image with a
fresh ``+-eps`` per channel, and keeps the change where it lowers the margin loss
``logit_y - max_{j != y} logit_j``. The window's area starts at ``p_init`` of the image and
halves on a fixed schedule, as in the paper.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Query indices (per 10,000 queries) at which the window's area halves (the paper's).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) true-class logit minus the best other logit: < 0 once fooled."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.max(dim=1).values


def _window_area(p_init: float, query: int, queries: int) -> float:
    """Fraction of the image a window covers at ``query`` (of ``queries``)."""
    scaled = int(query / queries * 10_000)
    return p_init / 2 ** sum(scaled > h for h in _HALVINGS)


def _uniform_int(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(B,) integers in ``[0, high]``."""
    draw = torch.rand(high.shape, generator=generator, device=high.device)
    return (draw * (high + 1).to(draw.dtype)).long().clamp_max(high)


@torch.no_grad()
def square_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
                  queries: int, generator: torch.Generator | None = None,
                  p_init: float = 0.8) -> torch.Tensor:
    """Adversarial images within ``eps`` (L-inf) of ``images`` in ``[0, 1]``, found with at
    most ``queries`` forward passes after the first. The model should be in eval mode.

    ``p_init`` is the first window's share of the image (AutoAttack's 0.8 for L-inf).
    """
    batch, channels, height, width = images.shape
    device = images.device
    x = images.detach()
    # start: vertical stripes of +-eps, one sign per (sample, channel, column)
    stripes = torch.randint(0, 2, (batch, channels, 1, width), generator=generator,
                            device=device).to(x.dtype) * 2 - 1
    adv = (x + eps * stripes).clamp(0, 1)
    margin = _margin(model(adv), labels)
    rows = torch.arange(height, device=device).view(1, 1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, width)
    for query in range(queries):
        active = (margin > 0).nonzero().squeeze(1)  # samples not fooled yet
        if active.numel() == 0:
            break
        n = active.numel()
        side = max(1, min(height, width,
                          round(math.sqrt(_window_area(p_init, query, queries) * height * width))))
        top = _uniform_int(torch.full((n,), height - side, device=device), generator)
        left = _uniform_int(torch.full((n,), width - side, device=device), generator)
        inside = ((rows >= top.view(n, 1, 1, 1)) & (rows < (top + side).view(n, 1, 1, 1))
                  & (cols >= left.view(n, 1, 1, 1)) & (cols < (left + side).view(n, 1, 1, 1)))
        signs = torch.randint(0, 2, (n, channels, 1, 1), generator=generator,
                              device=device).to(x.dtype) * 2 - 1
        base = x[active]
        delta = torch.where(inside, eps * signs, adv[active] - base)  # (n, C, H, W)
        candidate = (base + delta).clamp(0, 1)
        new_margin = _margin(model(candidate), labels[active])
        better = new_margin < margin[active]
        adv[active[better]] = candidate[better]
        margin[active[better]] = new_margin[better]
    return adv
