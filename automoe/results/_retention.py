"""Checkpoint retention: keep the checkpoints of Pareto-front trials only.

A trial that falls off the feasible front never comes back (the trials that dominate it
stay in the study), so its checkpoint can go as soon as it is dominated. Long studies then
keep a front's worth of checkpoints instead of one per trial.
"""

from __future__ import annotations

import optuna
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from automoe.results._pareto import nondominated, pareto_trials
from automoe.results._record import TrialRecord
from automoe.results._study import study_objectives

# --keep: the checkpoints of the front's trials (removed once dominated), or all
KEEP = ("pareto", "all")


def remove_dominated_checkpoints(study: optuna.Study, artifact_store) -> list[int]:
    """Remove the stored checkpoints of complete trials off the feasible Pareto front.

    Returns the numbers of the trials whose checkpoint was removed now. Safe to run from
    several workers at once: a checkpoint already removed is skipped.
    """
    front = {t.number for t in pareto_trials(study)}
    return _remove_off_front(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                             front, artifact_store)


def _remove_off_front(trials, front: set[int], artifact_store) -> list[int]:
    """Remove the checkpoints of ``trials`` not numbered in ``front``; the numbers of those
    removed now (one already gone, by another worker or an earlier pass, is skipped)."""
    removed = []
    for trial in trials:
        checkpoint = TrialRecord(trial).checkpoint
        if trial.number in front or not checkpoint:
            continue
        try:
            artifact_store.remove(checkpoint["artifact_id"])
        except ArtifactNotFound:
            continue
        removed.append(trial.number)
    return removed


def checkpoint_size(study: optuna.Study, artifact_store) -> tuple[int, int]:
    """``(checkpoints present, bytes)`` of a study's trials in a file-system store."""
    count = size = 0
    base = getattr(artifact_store, "base_path", None)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        checkpoint = TrialRecord(trial).checkpoint
        if checkpoint and base is not None:
            path = base / checkpoint["artifact_id"]
            if path.exists():
                count += 1
                size += path.stat().st_size
    return count, size


def checkpoint_retention(artifact_store):
    """The after-trial callback of ``--keep pareto``: removes the checkpoints of trials
    that fell off the feasible front, at a cost that does not grow with the study.

    It keeps the front it saw last and, after each trial, compares only that front and the
    trials completed since (by any worker) instead of the whole study; so a trial's
    checkpoint is removed once, when it is dominated, and the rest is never looked at
    again. The first call (a new or resumed study) takes the whole study, like
    :func:`remove_dominated_checkpoints`.
    """
    front: list = []
    seen: set[int] = set()
    # every trial numbered below this one is finished and was looked at, so the scan for
    # newly completed trials starts there (trials are listed by number, 0 to n - 1)
    settled = 0
    # read once: the metric names live among the study's system attributes, which NSGA-II
    # grows by one entry per generation, so reading them per trial costs O(study size)
    names: tuple[str, ...] = ()

    def callback(study: optuna.Study, trial) -> None:
        nonlocal front, names, settled
        if trial.state != TrialState.COMPLETE:
            return
        names = names or study_objectives(study)
        trials = study.get_trials(deepcopy=False)
        new = [t for t in trials[settled:]
               if t.state == TrialState.COMPLETE and t.number not in seen]
        seen.update(t.number for t in new)
        while settled < len(trials) and trials[settled].state.is_finished():
            seen.discard(trials[settled].number)  # below the mark: no longer needs a lookup
            settled += 1
        candidates = front + new
        front = nondominated(candidates, names)
        _remove_off_front(candidates, {t.number for t in front}, artifact_store)

    return callback
