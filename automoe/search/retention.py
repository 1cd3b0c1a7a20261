"""Checkpoint retention: keep the checkpoints of Pareto-front trials only.

A trial that falls off the feasible front never comes back (the trials that dominate it
stay in the study), so its checkpoint can go as soon as it is dominated. Long studies then
keep a front's worth of checkpoints instead of one per trial.
"""

from __future__ import annotations

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from automoe.search.pareto import pareto_trials

RETENTION = ("pareto", "all")


def remove_dominated_checkpoints(study: optuna.Study, artifact_store) -> list[int]:
    """Remove the stored checkpoints of complete trials off the feasible Pareto front.

    Returns the numbers of the trials whose checkpoint was removed now. Safe to run from
    several workers at once: a checkpoint already removed is skipped.
    """
    front = {t.number for t in pareto_trials(study)}
    removed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        checkpoint = trial.user_attrs.get("checkpoint")
        if trial.number in front or not checkpoint:
            continue
        try:
            artifact_store.remove(checkpoint["artifact_id"])
        except ArtifactNotFound:  # already removed (by another worker or an earlier pass)
            continue
        removed.append(trial.number)
    return removed


def checkpoint_size(study: optuna.Study, artifact_store) -> tuple[int, int]:
    """``(checkpoints present, bytes)`` of a study's trials in a file-system store."""
    count = size = 0
    base = getattr(artifact_store, "base_path", None)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        checkpoint = trial.user_attrs.get("checkpoint")
        if checkpoint and base is not None:
            path = base / checkpoint["artifact_id"]
            if path.exists():
                count += 1
                size += path.stat().st_size
    return count, size
