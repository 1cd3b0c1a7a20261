"""Adversarial attacks and robust evaluation."""

from __future__ import annotations

from automoe._lazy import lazy_front

_EXPORTS = {
    "ATTACKS": ".config", "BLACK_BOX_ATTACKS": ".config", "NORMS": ".config",
    "STRONG_ATTACKS": ".config", "AttackConfig": ".config", "Normalized": ".attacks",
    "attack_batch": ".attacks", "dlr_loss": ".attacks", "pgd_step": ".attacks",
    "routing_held_fixed": ".attacks", "routing_passes_gradient": ".attacks",
    "strong_attacks": ".config",
    "WorstCase": ".evaluate", "robust_accuracy": ".evaluate", "transfer_examples": ".evaluate",
    "worst_case_accuracy": ".evaluate",
    "square_attack": ".square",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
