"""Picking one model off a study's Pareto front."""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial

from automoe.errors import AutomoeError
from automoe.results import (
    TrialRecord,
    knee_order,
    pareto_trials,
    study_objectives,
    verified_results,
)
from automoe.space import minimised

PICKS = ("accuracy", "flops", "robust", "knee")


def pick_trial(study: optuna.Study, how: str, *, max_mmacs: float | None = None,
               min_robust: float | None = None) -> FrozenTrial:
    """One trial of the feasible Pareto front.

    Args:
        how: ``accuracy`` (best val accuracy), ``flops`` (fewest active MACs), ``robust``
            (best robust accuracy), or ``knee``: the front point nearest the ideal point
            once each objective is scaled to [0, 1] over the front, a balanced choice.
        max_mmacs, min_robust: only front trials within these bounds are considered.

    Robust accuracy is the verified worst case (:mod:`automoe.results._verify`) where the
    front was verified, else the search-time proxy. Ties go to the better val accuracy,
    then the lower trial number.

    Raises:
        AutomoeError: unknown ``how``, or no front trial meets the bounds.
    """
    if how not in PICKS:
        raise AutomoeError(f"unknown pick {how!r}; expected one of {', '.join(PICKS)}")
    front = pareto_trials(study)
    if not front:
        raise AutomoeError(f"study {study.study_name!r} has no complete feasible trial yet")
    if how == "robust" or min_robust is not None:
        if not any(TrialRecord(t).metric("robust_accuracy") is not None for t in front):
            raise AutomoeError(f"study {study.study_name!r} does not measure robust accuracy")
    verified = verified_results(study)

    def robust(t: FrozenTrial) -> float:
        record = verified.get(t.number)
        if record is not None:
            return record["robust_accuracy_verified"]
        value = TrialRecord(t).metric("robust_accuracy")
        return -1 if value is None else value

    candidates = [t for t in front
                  if (max_mmacs is None or TrialRecord(t).metric("mmacs") <= max_mmacs)
                  and (min_robust is None or robust(t) >= min_robust)]
    if not candidates:
        bounds = " and ".join(b for b in (
            f"<= {max_mmacs:g} MMACs" if max_mmacs is not None else "",
            f">= {min_robust:g} % robust accuracy" if min_robust is not None else "") if b)
        raise AutomoeError(f"no trial of the Pareto front of {study.study_name!r} has {bounds}")

    def tie(t: FrozenTrial):
        value = TrialRecord(t).metric("val_accuracy")
        return (math.inf if value is None else -value, t.number)

    if how == "accuracy":
        return min(candidates, key=tie)
    if how == "flops":
        return min(candidates, key=lambda t: (TrialRecord(t).metric("mmacs"), *tie(t)))
    if how == "robust":
        return min(candidates, key=lambda t: (-robust(t), *tie(t)))
    # knee: nearest the ideal point on the study's objectives, scaled over the front
    names = study_objectives(study)

    def values(t: FrozenTrial) -> list[float]:
        return [robust(t) if name == "robust_accuracy" else value
                for name, value in zip(names, t.values, strict=True)]

    # ties in distance go to the better val accuracy, then the lower trial number
    ordered = sorted(candidates, key=tie)
    return ordered[knee_order([minimised(values(t), names) for t in ordered])[0]]
