"""Creating, resuming and running studies."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import TrialState

from automoe.errors import StorageError, exception_chain
from automoe.results import StudyRecord, TrialWriter, check_study_name, study_objectives
from automoe.search._interrupt import hold_interrupts, release_interrupts
from automoe.search._samplers import make_sampler, sampler_spec
from automoe.space import directions

if TYPE_CHECKING:  # a space is passed in; parsing one is not this module's (torch) load
    from automoe.space import SearchSpace

_logger = logging.getLogger(__name__)


def sampler_seed(base_seed: int, trials_so_far: int) -> int:
    """The sampler seed of a run that starts when the study holds ``trials_so_far`` trials.

    A fresh study samples with its own seed. A resumed one must not restart that random
    stream, or its first proposals repeat the first run's; so each start point gets its
    own seed, derived from the study's seed and its trial count (reproducible, and
    different for every resume).
    """
    if trials_so_far == 0:
        return base_seed
    return int(np.random.SeedSequence([base_seed, trials_so_far]).generate_state(1)[0])


def training_seed(study: optuna.Study) -> int:
    """The study's base training seed: trial n trains with ``base + n`` in every run and
    every worker, whatever seed a later run was started with."""
    return StudyRecord(study).seed


def create_or_resume_study(storage: optuna.storages.BaseStorage, study_name: str,
                           space: SearchSpace,
                           sampler: optuna.samplers.BaseSampler | str | dict | None = None,
                           seed: int = 0) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it if it exists with the same space.

    Args:
        sampler: a sampler; or a sampler name (:data:`SAMPLERS`) or spec (``{"name",
            **options}``; None: the space's) to build one seeded by :func:`sampler_seed`
            from the study's stored seed and trial count, so that a resumed run proposes
            new candidates. A name or spec is stored with the study, so that its workers
            build the same sampler.
        seed: the study's seed, stored when it is created; a resumed study keeps the seed
            it was created with.

    Returns:
        ``(study, resumed)``.

    Raises:
        ConfigError: the name is not a valid study name (:func:`check_study_name`).
        StorageError: the study exists but was created from a different space (nothing is
            written in that case).
    """
    check_study_name(study_name)
    names = {s.study_name for s in storage.get_all_studies()}
    fingerprint = space.fingerprint()
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=storage)
        stored = StudyRecord(study).space_fingerprint
        if stored != fingerprint:
            raise StorageError(
                f"study {study_name!r} was created from a different search space or dataset "
                f"(fingerprint {stored}, now {fingerprint}); pass a new --study name")
        if study_objectives(study) != space.objectives:
            raise StorageError(f"study {study_name!r} optimises {study_objectives(study)}, "
                               f"the space {space.objectives}")
        study.sampler = _sampler(sampler, training_seed(study), len(study.trials), space)
        _store_sampler(study, sampler, space)
        return study, True
    built = _sampler(sampler, seed, 0, space)  # an unknown sampler writes no study
    study = optuna.create_study(storage=storage, study_name=study_name, sampler=built,
                                directions=directions(space.objectives))
    with warnings.catch_warnings():  # "experimental since v3.2" is noise in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(space.objectives))
    StudyRecord(study).write_space(fingerprint, space.to_dict(), space.raw, seed)
    _store_sampler(study, sampler, space)
    return study, False


def _sampler(sampler: optuna.samplers.BaseSampler | str | dict | None, base_seed: int,
             trials_so_far: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    if isinstance(sampler, optuna.samplers.BaseSampler):
        return sampler
    return make_sampler(sampler_spec(sampler, space), sampler_seed(base_seed, trials_so_far),
                        space)


def _store_sampler(study: optuna.Study, sampler, space: SearchSpace) -> None:
    """The spec this run samples with, for its workers. A sampler object cannot travel:
    it stores nothing (:func:`run_search` refuses one for workers)."""
    if not isinstance(sampler, optuna.samplers.BaseSampler):
        StudyRecord(study).write_sampler(sampler_spec(sampler, space))


def count_trials(study: optuna.Study) -> tuple[int, list[int]]:
    """``(complete trials, numbers of the running ones, ascending)``."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    return complete, sorted(t.number for t in trials if t.state == TrialState.RUNNING)


def run_trials(study: optuna.Study, objective: Callable, n_trials: int,
               callbacks: list[Callable] | None = None) -> None:
    """Run ``n_trials`` trials, one after another (see :func:`run_one_trial`); a Ctrl-C
    marks the running trial failed and re-raises."""
    for _ in range(n_trials):
        run_one_trial(study, objective, callbacks)


class _FailedElsewhere(Exception):
    """A trial's result came back after another worker had finished the trial."""


def run_one_trial(study: optuna.Study, objective: Callable,
                  callbacks: list[Callable] | None = None) -> bool:
    """One trial through Optuna's loop (heartbeats, retries of dead workers' trials,
    callbacks); returns False when its result was dropped.

    A worker whose heartbeats lapsed (a long pause, a starved CPU) can find that another
    worker has meanwhile judged it dead, failed its trial and queued a retry of it; Optuna
    then refuses the result ("Cannot tell a FAIL trial"). The retry trains the candidate
    again, so this worker drops its result and goes on rather than ending the search.
    """
    started: list[int] = []

    def tracked(trial: optuna.Trial):
        started.append(trial._trial_id)
        try:
            release_interrupts()  # a Ctrl-C held since before the trial existed: raised here
        except KeyboardInterrupt:  # Optuna fails the trial with it; say why
            TrialWriter(trial).failed("interrupted: stopped as the trial was created")
            raise
        result = objective(trial)
        hold_interrupts()  # until Optuna has stored the result
        if study._storage.get_trial(trial._trial_id).state.is_finished():
            # Optuna's tell would refuse the result in a way its loop does not expect
            raise _FailedElsewhere(f"trial {trial.number} was finished by another worker")
        return result

    hold_interrupts()  # a Ctrl-C while Optuna creates the trial must not orphan it
    try:
        try:
            study.optimize(tracked, n_trials=1, callbacks=callbacks or [],
                           gc_after_trial=False, show_progress_bar=False)
        finally:
            release_interrupts()
    except ValueError:
        trial = study._storage.get_trial(started[-1]) if started else None
        if trial is None or trial.state != TrialState.FAIL:
            raise
        _logger.warning("trial %d was failed by another worker (no heartbeat from here for "
                        "3 intervals) and is retried there; its result here is dropped",
                        trial.number)
        return False
    except UnboundLocalError as exc:
        # Optuna's loop, when its final write fails, re-reads the trial in a ``finally``
        # block; if that fails too, the name it reads next is unset and this error hides
        # the real one (a lost database), which is in the exception's context
        lost = _storage_error_in(exc)
        if lost is None:
            raise
        raise lost from None
    return True



def _storage_error_in(exc: BaseException) -> StorageError | None:
    """The StorageError among ``exc``'s causes and contexts, if any."""
    return next((e for e in exception_chain(exc) if isinstance(e, StorageError)), None)
