"""Searching a trained supernet and retraining its best sub-networks stand-alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import optuna

from automoe.errors import AutomoeError, ConfigError
from automoe.results import (
    StudyRecord,
    TrialRecord,
    enqueue_finalist,
    pareto_trials,
    space_of_study,
    study_objectives,
)
from automoe.search._run import run_search
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
    return run_search(
        space, storage, study_name=study_name, trials=n_trials, seed=seed,
        artifact_store=artifact_store, device=device, data_root=data_root, download=download,
        callbacks=callbacks,
        on_start=lambda study, resumed, complete: StudyRecord(study).write_supernet_screen(
            screen.attack.max_samples),
        trial_options={"space": screen, "supernet": net, "usage_plots": False,
                       "recalibration_batches": recalibration_batches})


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
    before = {}

    def enqueue(target: optuna.Study, resumed: bool, complete: int) -> None:
        before["trials"] = len(target.trials)
        for trial in front:
            enqueue_finalist(target, trial.params, source.study_name, trial.number,
                             dict(zip(names, trial.values, strict=True)))

    target = run_search(space, storage, study_name=target_name or space.name,
                        trials=len(front), seed=seed, artifact_store=artifact_store,
                        device=device, data_root=data_root, download=download,
                        callbacks=callbacks, on_start=enqueue,
                        trial_options={"resume_dir": resume_dir})
    finalists = []
    for trial in target.get_trials(deepcopy=False)[before["trials"]:]:
        origin = TrialRecord(trial).supernet_origin
        finalists.append(Finalist(
            subnet_trial=origin.get("trial"), trial=trial.number,
            inherited=origin.get("values", {}),
            standalone=dict(zip(names, trial.values, strict=True)) if trial.values else None))
    return Finalists(target, names, finalists, StudyRecord(source).screen_attack_samples,
                     space.attack.max_samples)
