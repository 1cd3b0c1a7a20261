"""Adversarial attacks and robust evaluation."""

from __future__ import annotations

from automoe.robustness.attacks import (
    ATTACKS,
    NORMS,
    AttackConfig,
    Normalized,
    PGDConfig,
    attack_batch,
    dlr_loss,
    pgd_attack,
    robust_accuracy,
)

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackConfig",
    "Normalized",
    "PGDConfig",
    "attack_batch",
    "dlr_loss",
    "pgd_attack",
    "robust_accuracy",
]
