"""Load-balancing losses for top-k routers (Shazeer et al. 2017).

Notation: ``B`` samples, ``E`` experts. ``CV(v)^2 = Var(v) / Mean(v)^2`` with the
population variance, so a perfectly even ``v`` gives 0.
"""

from __future__ import annotations

import torch

_EPS = 1e-10


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation of a 1-D tensor; 0 for fewer than 2 entries."""
    if values.numel() < 2:
        return values.new_zeros(())
    values = values.float()
    return values.var(unbiased=False) / (values.mean() ** 2 + _EPS)


def importance_loss(dense_gates: torch.Tensor) -> torch.Tensor:
    """``CV(Imp)^2`` with ``Imp_i = sum_x G(x)_i``; ``dense_gates`` is ``(B, E)``."""
    return cv_squared(dense_gates.sum(0))


def load_probabilities(
    clean_logits: torch.Tensor,
    noisy_logits: torch.Tensor,
    noise_std: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """``P(x, i)``: probability that expert i stays in the top-k under a new noise draw.

    Expert i is selected when its noisy logit beats the k-th largest of the *other*
    experts' noisy logits. For a selected expert that is the (k+1)-th largest overall,
    for an unselected one the k-th largest. All inputs are ``(B, E)``; needs ``k < E``.

    Returns:
        ``(B, E)`` probabilities, differentiable w.r.t. the clean logits and noise std.
    """
    num_experts = clean_logits.shape[1]
    if top_k >= num_experts:
        raise ValueError(f"load needs top_k < experts, got k={top_k}, E={num_experts}")
    top_values = noisy_logits.topk(top_k + 1, dim=1).values  # (B, k+1), descending
    threshold_if_selected = top_values[:, top_k:top_k + 1]  # (B, 1): (k+1)-th largest
    threshold_if_unselected = top_values[:, top_k - 1:top_k]  # (B, 1): k-th largest
    is_selected = noisy_logits > threshold_if_selected  # (B, E)
    normal = torch.distributions.Normal(0.0, 1.0)
    p_selected = normal.cdf((clean_logits - threshold_if_selected) / noise_std)
    p_unselected = normal.cdf((clean_logits - threshold_if_unselected) / noise_std)
    return torch.where(is_selected, p_selected, p_unselected)


def load_loss(
    clean_logits: torch.Tensor,
    noisy_logits: torch.Tensor,
    noise_std: torch.Tensor,
    top_k: int,
) -> torch.Tensor:
    """``CV(Load)^2`` with ``Load_i = sum_x P(x, i)``, a smooth count of routed samples."""
    return cv_squared(load_probabilities(clean_logits, noisy_logits, noise_std, top_k).sum(0))


def switch_loss(probs: torch.Tensor) -> torch.Tensor:
    """Switch Transformer: ``E * sum_i f_i P_i``; ``f_i`` share of items whose top choice is
    i, ``P_i`` mean router probability of i. 1 when perfectly balanced. ``probs`` is (B, E)."""
    num_experts = probs.shape[1]
    top1 = probs.argmax(dim=1)  # (B,)
    fraction = torch.bincount(top1, minlength=num_experts).to(probs.dtype) / probs.shape[0]
    return num_experts * (fraction * probs.mean(0)).sum()


def entropy_loss(probs: torch.Tensor) -> torch.Tensor:
    """``mean_x H(p(x)) - H(mean_x p(x))`` (Pavlitska et al.): confident per-sample routing,
    balanced overall use. ``probs`` is (B, E)."""
    def entropy(p: torch.Tensor) -> torch.Tensor:
        return -(p * torch.log(p.clamp_min(_EPS))).sum(-1)

    return entropy(probs).mean() - entropy(probs.mean(0))


def supervised_router_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AdvMoE: router cross-entropy against the fixed expert ``y mod E``."""
    return torch.nn.functional.cross_entropy(logits, targets % logits.shape[1])


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss, ``mean_x (log sum_i exp z_i(x))^2`` of the (B, E) logits:
    keeps the logits small, so the gates stay off the softmax's flat ends and the
    balancing losses keep a gradient."""
    return torch.logsumexp(logits.float(), dim=1).pow(2).mean()


