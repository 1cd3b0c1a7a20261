"""Creating and resuming studies: seeds of the sampler and of training."""

import optuna
import pytest

from automoe.search import create_or_resume_study, sampler_seed, training_seed
from automoe.space import SearchSpace

SPACE = {"name": "s", "sampler": {"name": "nsga2", "population_size": 8},
         "params": {"placement": {"choices": ["none", "last_stage", "all"]},
                    "experts": {"low": 2, "high": 8, "step": 2}, "top_k": {"low": 1, "high": 2},
                    "lr": {"low": 0.01, "high": 0.2, "log": True}, "epochs": 1}}


def _run(storage, sampler: str, n: int, seed: int) -> list[dict]:
    space = SearchSpace.from_dict(SPACE)
    study, _ = create_or_resume_study(storage, "s", space, sampler, seed)

    def objective(trial):
        model = space.suggest(trial).model
        return trial.params["lr"], model["num_experts"], float(model["top_k"])

    before = len(study.trials)
    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials[before:]]


@pytest.mark.parametrize("sampler,per_run", [("random", 12), ("tpe", 4), ("nsga2", 3)])
def test_a_resumed_run_proposes_new_candidates(tmp_path, sampler, per_run):
    # each run opens the study afresh, as `automoe search` does, with the same --seed
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    first = _run(storage, sampler, per_run, seed=0)
    second = _run(storage, sampler, per_run, seed=0)
    third = _run(storage, sampler, per_run, seed=3)
    assert not [p for p in second if p in first]
    assert not [p for p in third if p in first + second]


def test_sampler_seeds_are_reproducible_and_distinct_per_start_point():
    assert sampler_seed(5, 0) == 5  # a fresh study samples with its own seed
    assert sampler_seed(5, 12) == sampler_seed(5, 12)
    assert len({sampler_seed(5, n) for n in range(1, 50)} | {sampler_seed(6, 12)}) == 50


def test_a_resumed_study_keeps_its_training_seed():
    storage = optuna.storages.InMemoryStorage()
    space = SearchSpace.from_dict(SPACE)
    study, resumed = create_or_resume_study(storage, "s", space, "random", seed=11)
    assert not resumed and training_seed(study) == 11
    study, resumed = create_or_resume_study(storage, "s", space, "random", seed=99)
    assert resumed and training_seed(study) == 11


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "", "x" * 129, "a\\b"])
def test_study_names_that_would_leave_their_folder_are_refused(name):
    from automoe.errors import ConfigError
    from automoe.results import check_study_name, study_folder_name

    with pytest.raises(ConfigError, match="study name"):
        check_study_name(name)
    with pytest.raises(ConfigError, match="study name"):
        create_or_resume_study(optuna.storages.InMemoryStorage(), name,
                               SearchSpace.from_dict(SPACE), "random")
    # a study created by other tools under such a name still gets a plain folder
    folder = study_folder_name(name)
    assert folder.startswith("study-") and "/" not in folder and ".." not in folder
    assert study_folder_name("cifar10_resnet18-v2.1") == "cifar10_resnet18-v2.1"


def test_a_trial_failed_by_another_worker_is_dropped_not_fatal(tmp_path):
    # A worker whose heartbeats lapsed finds its trial failed (and retried) by another
    # worker: Optuna refuses its result; the worker drops it and runs the next trial.
    from automoe.search._study import run_one_trial
    from automoe.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'w.db'}", heartbeat_interval=1)
    study = optuna.create_study(storage=storage, directions=["maximize"])

    def judged_dead_meanwhile(trial):
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        return 1.0

    assert run_one_trial(study, judged_dead_meanwhile) is False
    assert run_one_trial(study, lambda trial: 2.0) is True
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    with pytest.raises(ZeroDivisionError):  # the objective's own errors still fail the trial
        run_one_trial(study, lambda trial: 1 / 0)
