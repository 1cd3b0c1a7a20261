"""Pareto-front selection and rows for tables and JSON."""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from automoe.results._hypervolume import study_hypervolume
from automoe.results._record import TrialRecord
from automoe.results._study import study_objectives
from automoe.space._metrics import default_reference, minimised


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether every constraint of the trial holds (Optuna 5: a dict of values, feasible
    when each is <= 0; a trial of an unconstrained study is feasible)."""
    return all(value <= 0 for value in trial.constraints.values())


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Non-dominated feasible complete trials, best in the first objective first.

    The same set as Optuna's ``study.best_trials``, without its deep copy of every trial
    (which made a study's per-trial bookkeeping grow with its size).
    """
    trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return nondominated(trials, study_objectives(study))


def nondominated(trials, names) -> list[FrozenTrial]:
    """The feasible trials of ``trials`` that no other feasible one dominates (equal
    points all stay), sorted by their minimised values, then number.

    Sorted lexicographically, a point can only be dominated by one before it, so each is
    checked against the front so far: O(n * front size).
    """
    points = sorted(((minimised(t.values, names), t.number, t) for t in trials
                     if t.values is not None and is_feasible(t)), key=lambda p: p[:2])
    front: list[tuple[tuple[float, ...], int, FrozenTrial]] = []
    for values, number, trial in points:
        if not any(_dominates(other, values) for other, _, _ in front):
            front.append((values, number, trial))
    return [trial for _, _, trial in front]


def _dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True))


def trial_row(trial: FrozenTrial, names, verified: dict | None = None) -> dict:
    """A machine-readable summary of a complete trial (``names``: the study's objectives;
    ``verified``: its record from :func:`automoe.search.verified_results`)."""
    record = TrialRecord(trial)
    arch = record.architecture
    return {
        "trial": trial.number,
        "values": dict(zip(names, trial.values, strict=True)),
        # every measured metric, objective or not
        "metrics": record.metrics,
        "test_accuracy": record.metric("test_accuracy"),
        "params": record.params,
        # the model as built: a dense placement has 1 expert, top-1
        "moe": record.is_moe,
        "placement": arch.get("placement"),
        "granularity": arch.get("granularity"),
        "experts": arch.get("experts"),
        "top_k": arch.get("top_k"),
        "width_multiplier": arch.get("width_multiplier"),
        "config": record.config,
        "router_health": record.router_health,
        # the strong worst-case attack's robust accuracy, once the front is verified
        "robust_accuracy_verified": (verified or {}).get("robust_accuracy_verified"),
        # a gradient-free attack (Square, transfer) beat the white-box worst case; None
        # until verified
        "masking_suspected": (verified or {}).get("masking_suspected"),
        # with evaluation.repeats > 1: values are means over seeds; their std and each seed's
        "std": record.objective_std,
        "repeats": record.repeats,
        "feasible": record.feasible,
        "has_checkpoint": record.checkpoint is not None,
        # "supernet": evaluated with inherited weights, never trained with its own recipe
        "fidelity": record.fidelity,
    }


def front_hypervolume(study: optuna.Study, reference: tuple[float, ...] | None = None
                      ) -> tuple[float, tuple[float, ...]]:
    """``(hypervolume of the feasible front, reference point used)``; the default reference
    is :func:`~automoe.space._metrics.default_reference` over the complete trials."""
    names = study_objectives(study)
    if reference is None:
        complete = [tuple(t.values) for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.values is not None]
        reference = default_reference(names, complete)
    front = [tuple(t.values) for t in pareto_trials(study)]
    return study_hypervolume(front, reference, names), tuple(reference)


def knee_order(points) -> list[int]:
    """Indices of ``points`` (minimised objective vectors) from the knee outwards: by
    distance to the ideal point once each objective is scaled to [0, 1] over the points.
    Ties keep the points' order."""
    points = np.asarray(points, dtype=float)
    low, high = points.min(axis=0), points.max(axis=0)
    scaled = (points - low) / np.where(high > low, high - low, 1.0)
    distance = np.linalg.norm(scaled, axis=1)
    return sorted(range(len(points)), key=lambda i: (round(float(distance[i]), 12), i))
