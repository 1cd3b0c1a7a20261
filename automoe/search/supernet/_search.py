"""Searching a trained supernet and retraining its best sub-networks stand-alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna

from automoe.errors import AutomoeError, ConfigError
from automoe.search._pareto import pareto_trials
from automoe.search._record import StudyRecord, TrialRecord, enqueue_finalist
from automoe.search._study import (
    create_or_resume_study,
    run_trials,
    space_of_study,
    study_objectives,
    training_seed,
)
from automoe.search._trial import TrialRunner
from automoe.search.supernet._net import Supernet


def screen_subnets(net: Supernet, storage: optuna.storages.BaseStorage, study_name: str,
                   n_trials: int, artifact_store, *, seed: int = 0, device: str = "cpu",
                   data_root: str | None = None, download: bool = False,
                   recalibration_batches: int = 4, attack_samples: int | None = None,
                   callbacks: list[Callable] | None = None) -> optuna.Study:
    """Evaluate ``n_trials`` sub-networks of ``net`` with inherited weights (BatchNorm
    recalibrated on ``recalibration_batches`` training batches), each a trial of
    ``study_name`` marked ``fidelity = "supernet"``.

    ``attack_samples`` attacks only the first N val samples, a cheaper screen of many
    candidates; the study records it, so that :func:`finalize_front` can say that the
    finalists' robust accuracy (on the space's samples) was measured on other samples.
    """
    space = net.space
    screen = space  # what the trials measure with; the study keeps the space as written
    if attack_samples is not None:
        screen = replace(space, attack=replace(space.attack, max_samples=attack_samples))
    study, _ = create_or_resume_study(storage, study_name, space, space.sampler["name"], seed)
    StudyRecord(study).write_supernet_screen(screen.attack.max_samples)
    runner = TrialRunner(screen, artifact_store, device=device, seed=training_seed(study),
                         data_root=data_root, download=download, supernet=net,
                         recalibration_batches=recalibration_batches, usage_plots=False)
    run_trials(study, runner, n_trials, callbacks=callbacks)
    return study


@dataclass
class Finalist:
    """A front sub-network of the screen, retrained stand-alone."""

    subnet_trial: int | None  # its trial in the screen study
    trial: int  # its trial in the target study
    inherited: dict[str, float]  # objective -> value with the supernet's weights
    standalone: dict[str, float] | None  # objective -> value trained alone (None: failed)


@dataclass
class Finalists:
    """What :func:`finalize_front` did."""

    target: optuna.Study
    objectives: tuple[str, ...]
    finalists: list[Finalist]
    screened_samples: int | None  # val samples the screen attacked (None: all)
    full_samples: int | None  # val samples the stand-alone trials attacked (None: all)


def finalize_front(source: optuna.Study, storage: optuna.storages.BaseStorage,
                   target_name: str | None, top: int, artifact_store, *, seed: int = 0,
                   device: str = "cpu", data_root: str | None = None, download: bool = False,
                   resume_dir=None, callbacks: list[Callable] | None = None) -> Finalists:
    """Retrain the first ``top`` sub-networks of ``source``'s front stand-alone, as normal
    trials of ``target_name`` (default: the space's name) that record their supernet trial
    and its values beside their own.

    Raises:
        ConfigError: ``top`` < 1.
        AutomoeError: the screen has no complete sub-network yet.
    """
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    space = space_of_study(source)
    names = study_objectives(source)
    front = pareto_trials(source)[:top]
    if not front:
        raise AutomoeError(f"study {source.study_name!r} has no complete sub-network yet")
    target, _ = create_or_resume_study(storage, target_name or space.name, space,
                                       space.sampler["name"], seed)
    before = len(target.trials)
    for trial in front:
        enqueue_finalist(target, trial.params, source.study_name, trial.number,
                         dict(zip(names, trial.values, strict=True)))
    runner = TrialRunner(space, artifact_store, device=device, seed=training_seed(target),
                         data_root=data_root, download=download, resume_dir=resume_dir)
    run_trials(target, runner, len(front), callbacks=callbacks)
    finalists = []
    for trial in target.get_trials(deepcopy=False)[before:]:
        origin = TrialRecord(trial).supernet_origin
        finalists.append(Finalist(
            subnet_trial=origin.get("trial"), trial=trial.number,
            inherited=origin.get("values", {}),
            standalone=dict(zip(names, trial.values, strict=True)) if trial.values else None))
    return Finalists(target, names, finalists, StudyRecord(source).screen_attack_samples,
                     space.attack.max_samples)
