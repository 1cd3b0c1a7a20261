"""Adversarial attacks and robust evaluation."""

from __future__ import annotations

from automoe.robustness.attacks import (
    ATTACKS,
    NORMS,
    STRONG_ATTACKS,
    AttackConfig,
    Normalized,
    WorstCase,
    attack_batch,
    dlr_loss,
    pgd_step,
    robust_accuracy,
    strong_attacks,
    worst_case_accuracy,
)

__all__ = [
    "ATTACKS",
    "NORMS",
    "STRONG_ATTACKS",
    "AttackConfig",
    "Normalized",
    "WorstCase",
    "attack_batch",
    "dlr_loss",
    "pgd_step",
    "robust_accuracy",
    "strong_attacks",
    "worst_case_accuracy",
]
