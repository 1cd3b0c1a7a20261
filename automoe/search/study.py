"""Creating, resuming and running studies."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from automoe.errors import ConfigError, StorageError
from automoe.search.objectives import DEFAULT_OBJECTIVES, directions
from automoe.search.space import SAMPLERS, SearchSpace


def make_sampler(name: str, seed: int, population_size: int = 8,
                 space: SearchSpace | None = None) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name, always seeded (Optuna 5's multi-objective default is TPE).

    ``grid`` enumerates the space's grid (every dimension must be categorical or stepped);
    ``nni-*`` asks an NNI tuner (see :mod:`automoe.search.nni_adapter`).
    """
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size)
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=population_size)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name.startswith("nni-"):
        if space is None:
            raise ConfigError(f"the {name} sampler needs the search space")
        from automoe.search.nni_adapter import NNISampler

        return NNISampler(name, space, space.objectives, seed, population_size)
    if name == "grid":
        if space is None:
            raise ConfigError("the grid sampler needs the search space")
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")


def create_or_resume_study(storage: optuna.storages.BaseStorage, study_name: str,
                           space: SearchSpace, sampler: optuna.samplers.BaseSampler,
                           seed: int = 0) -> tuple[optuna.Study, bool]:
    """Create the study, or resume it if it exists with the same space.

    Returns:
        ``(study, resumed)``.

    Raises:
        StorageError: the study exists but was created from a different space (nothing is
            written in that case).
    """
    names = {s.study_name for s in storage.get_all_studies()}
    fingerprint = space.fingerprint()
    if study_name in names:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
        stored = study.user_attrs.get("space_fingerprint")
        if stored != fingerprint:
            raise StorageError(
                f"study {study_name!r} was created from a different search space or dataset "
                f"(fingerprint {stored}, now {fingerprint}); pass a new --study name")
        if study_objectives(study) != space.objectives:
            raise StorageError(f"study {study_name!r} optimises {study_objectives(study)}, "
                               f"the space {space.objectives}")
        return study, True
    study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler,
                                directions=directions(space.objectives))
    with warnings.catch_warnings():  # "experimental since v3.2" is noise in Optuna 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(space.objectives))
    study.set_user_attr("space_fingerprint", fingerprint)
    study.set_user_attr("space", space.to_dict())
    study.set_user_attr("space_raw", space.raw)  # what `automoe worker` rebuilds the space from
    study.set_user_attr("seed", seed)  # base training seed: trial n trains with seed + n
    return study, False


def study_objectives(study: optuna.Study) -> tuple[str, ...]:
    """The metric names a study optimises, in the order of its values."""
    return tuple(study.metric_names or DEFAULT_OBJECTIVES)


def space_of_study(study: optuna.Study) -> SearchSpace:
    """The search space a study was created with (for workers joining it)."""
    raw = study.user_attrs.get("space_raw")
    if not raw:
        raise StorageError(f"study {study.study_name!r} stores no search space; was it created "
                           "by `automoe search`?")
    space = SearchSpace.from_dict(raw, source=f"study {study.study_name}")
    if space.fingerprint() != study.user_attrs.get("space_fingerprint"):
        raise StorageError(f"the space stored with study {study.study_name!r} does not match "
                           "its fingerprint; the study was written by another automoe version")
    return space


def run_trials(study: optuna.Study, objective: Callable, n_trials: int,
               callbacks: list[Callable] | None = None) -> None:
    """Run ``n_trials`` trials; a Ctrl-C marks the running trial failed and re-raises."""
    study.optimize(objective, n_trials=n_trials, callbacks=callbacks or [],
                   gc_after_trial=False, show_progress_bar=False)
