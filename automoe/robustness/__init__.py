"""Adversarial attacks and robust evaluation."""

from __future__ import annotations

from automoe.robustness.pgd import PGDConfig, pgd_attack, robust_accuracy

__all__ = ["PGDConfig", "pgd_attack", "robust_accuracy"]
