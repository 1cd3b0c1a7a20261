"""Pareto-front selection and rows for tables and JSON."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Non-dominated complete trials, best validation accuracy first."""
    return sorted(study.best_trials, key=lambda t: (-t.values[0], t.values[1], t.number))


def trial_row(trial: FrozenTrial) -> dict:
    """A machine-readable summary of a complete trial."""
    attrs = trial.user_attrs
    config = attrs.get("config", {})
    model = config.get("model", {})
    return {
        "trial": trial.number,
        "values": {
            "val_accuracy": trial.values[0],
            "mmacs": trial.values[1],
            "robust_accuracy": trial.values[2],
        },
        "test_accuracy": attrs.get("test_accuracy"),
        "params": attrs.get("params"),
        "placement": model.get("placement"),
        "experts": model.get("num_experts"),
        "top_k": model.get("top_k"),
        "config": config,
        "has_checkpoint": "checkpoint" in attrs,
    }

