"""Adversarial attacks and robust evaluation."""

from __future__ import annotations

from automoe.robustness.attacks import (
    ATTACKS,
    BLACK_BOX_ATTACKS,
    NORMS,
    STRONG_ATTACKS,
    AttackConfig,
    Normalized,
    attack_batch,
    dlr_loss,
    pgd_step,
    strong_attacks,
)
from automoe.robustness.evaluate import (
    WorstCase,
    robust_accuracy,
    transfer_examples,
    worst_case_accuracy,
)
from automoe.robustness.square import square_attack

__all__ = [
    "ATTACKS",
    "BLACK_BOX_ATTACKS",
    "NORMS",
    "STRONG_ATTACKS",
    "AttackConfig",
    "Normalized",
    "WorstCase",
    "attack_batch",
    "dlr_loss",
    "pgd_step",
    "robust_accuracy",
    "square_attack",
    "strong_attacks",
    "transfer_examples",
    "worst_case_accuracy",
]
