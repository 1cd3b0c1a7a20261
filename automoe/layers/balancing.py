"""Load-balancing losses for top-k routers (Shazeer et al. 2017).

Notation: ``B`` samples, ``E`` experts. ``CV(v)^2 = Var(v) / Mean(v)^2`` with the
population variance, so a perfectly even ``v`` gives 0.

Every loss takes its router tensors as ``(..., B, E)`` and returns one loss per leading
index (a scalar for ``(B, E)``): a model stacks the routings of its MoE layers along a
leading dim and computes all their losses at once, in the ops of one layer's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-10


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation along the last dim (a 1-D tensor gives a scalar);
    0 for fewer than 2 entries."""
    if values.shape[-1] < 2:
        return values.new_zeros(values.shape[:-1])
    values = values.float()
    return values.var(dim=-1, unbiased=False) / (values.mean(dim=-1) ** 2 + _EPS)


def importance_loss(dense_gates: torch.Tensor) -> torch.Tensor:
    """``CV(Imp)^2`` with ``Imp_i = sum_x G(x)_i``; ``dense_gates`` is ``(..., B, E)``."""
    return cv_squared(dense_gates.sum(-2))


def load_probabilities(
    clean_logits: torch.Tensor,
    noisy_logits: torch.Tensor,
    noise_std: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """``P(x, i)``: probability that expert i stays in the top-k under a new noise draw.

    Expert i is selected when its noisy logit beats the k-th largest of the *other*
    experts' noisy logits. For a selected expert that is the (k+1)-th largest overall,
    for an unselected one the k-th largest. All inputs are ``(..., B, E)``; needs
    ``k < E``.

    Returns:
        ``(..., B, E)`` probabilities, differentiable w.r.t. the clean logits and noise std.
    """
    num_experts = clean_logits.shape[-1]
    if top_k >= num_experts:
        raise ValueError(f"load needs top_k < experts, got k={top_k}, E={num_experts}")
    top_values = noisy_logits.topk(top_k + 1, dim=-1).values  # (..., B, k+1), descending
    threshold_if_selected = top_values[..., top_k:top_k + 1]  # (k+1)-th largest
    threshold_if_unselected = top_values[..., top_k - 1:top_k]  # k-th largest
    is_selected = noisy_logits > threshold_if_selected  # (..., B, E)
    # the threshold each expert must beat, then one standard normal CDF (ndtr: one op,
    # where building a Normal distribution per call costs more than the loss itself)
    threshold = torch.where(is_selected, threshold_if_selected, threshold_if_unselected)
    return torch.special.ndtr((clean_logits - threshold) / noise_std)


def load_loss(
    clean_logits: torch.Tensor,
    noisy_logits: torch.Tensor,
    noise_std: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """``CV(Load)^2`` with ``Load_i = sum_x P(x, i)``, a smooth count of routed samples."""
    return cv_squared(load_probabilities(clean_logits, noisy_logits, noise_std, top_k).sum(-2))


def importance_load_loss(
    dense_gates: torch.Tensor,
    clean_logits: torch.Tensor,
    noisy_logits: torch.Tensor,
    noise_std: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """:func:`importance_loss` + :func:`load_loss`, with both CVs in one pass."""
    load = load_probabilities(clean_logits, noisy_logits, noise_std, top_k).sum(-2)  # (..., E)
    importance = dense_gates.sum(-2).to(load.dtype)  # (..., E)
    return cv_squared(torch.stack([importance, load])).sum(0)


def switch_loss(probs: torch.Tensor) -> torch.Tensor:
    """Switch Transformer: ``E * sum_i f_i P_i``; ``f_i`` share of items whose top choice is
    i, ``P_i`` mean router probability of i. 1 when perfectly balanced. ``probs`` is
    ``(..., B, E)``."""
    num_experts = probs.shape[-1]
    fraction = F.one_hot(probs.argmax(dim=-1), num_experts).to(probs.dtype).mean(-2)  # (.., E)
    return num_experts * (fraction * probs.mean(-2)).sum(-1)


def entropy_loss(probs: torch.Tensor) -> torch.Tensor:
    """``mean_x H(p(x)) - H(mean_x p(x))`` (Pavlitska et al.): confident per-sample routing,
    balanced overall use. ``probs`` is ``(..., B, E)``."""
    def entropy(p: torch.Tensor) -> torch.Tensor:
        return -(p * torch.log(p.clamp_min(_EPS))).sum(-1)

    return entropy(probs).mean(-1) - entropy(probs.mean(-2))


def supervised_router_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AdvMoE: router cross-entropy against the fixed expert ``y mod E``; ``logits`` is
    ``(..., B, E)``, ``targets`` ``(B,)``."""
    num_experts = logits.shape[-1]
    experts = (targets % num_experts).expand(logits.shape[:-1])  # (..., B)
    loss = F.cross_entropy(logits.reshape(-1, num_experts), experts.reshape(-1),
                           reduction="none")
    return loss.view(logits.shape[:-1]).mean(-1)


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss, ``mean_x (log sum_i exp z_i(x))^2`` of the ``(..., B, E)``
    logits: keeps the logits small, so the gates stay off the softmax's flat ends and the
    balancing losses keep a gradient."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean(-1)
