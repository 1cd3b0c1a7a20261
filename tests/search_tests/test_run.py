"""run_search: the one way to run a study, its executor and sampler tables."""

import optuna
import pytest

from automoe.errors import ConfigError
from automoe.search import (
    EXECUTORS,
    SAMPLERS,
    ClusterConfig,
    register_executor,
    register_sampler,
    run_search,
)
from automoe.space import SearchSpace

SPACE = {"name": "s", "params": {"experts": {"low": 2, "high": 8, "step": 2},
                                 "lr": {"low": 0.01, "high": 0.2, "log": True}, "epochs": 1}}


def _objective(trial):
    return trial.suggest_float("lr", 0.01, 0.2, log=True) * 100, 1.0, 0.0


def test_local_runs_the_trials_and_a_resume_runs_more(tmp_path):
    space = SearchSpace.from_dict(SPACE)
    url = f"sqlite:///{tmp_path / 's.db'}"
    seen = []
    study = run_search(space, url, trials=3, artifact_dir=tmp_path / "a", objective=_objective,
                       on_start=lambda study, resumed, complete: seen.append((resumed, complete)))
    again = run_search(space, url, trials=2, artifact_dir=tmp_path / "a", objective=_objective,
                       on_start=lambda study, resumed, complete: seen.append((resumed, complete)))
    assert len(again.trials) == 5 and study.study_name == again.study_name == "s"
    assert seen == [(False, 0), (True, 3)]


def test_an_unknown_sampler_named_by_the_space_writes_nothing(tmp_path):
    space = SearchSpace.from_dict({**SPACE, "sampler": {"name": "annealing"}})
    storage = optuna.storages.InMemoryStorage()
    with pytest.raises(ConfigError, match="sampler.name: unknown sampler 'annealing'"):
        run_search(space, storage, trials=1, artifact_dir=tmp_path, objective=_objective)
    assert storage.get_all_studies() == []


def test_a_registered_sampler_is_accepted_by_spaces_and_used(tmp_path):
    made = []

    def annealing(seed, space):
        made.append(seed)
        return optuna.samplers.RandomSampler(seed=seed)

    register_sampler("annealing", annealing)
    try:
        with pytest.raises(ConfigError, match="already registered"):
            register_sampler("annealing", annealing)
        space = SearchSpace.from_dict({**SPACE, "sampler": {"name": "annealing"}})
        study = run_search(space, optuna.storages.InMemoryStorage(), trials=2, seed=7,
                           artifact_dir=tmp_path, objective=_objective)
        assert made == [7] and len(study.trials) == 2
        assert isinstance(study.sampler, optuna.samplers.RandomSampler)
    finally:
        del SAMPLERS["annealing"]


def test_a_registered_executor_gets_the_open_study(tmp_path):
    runs = []
    register_executor("recording", runs.append)
    try:
        cluster = ClusterConfig(executor="recording")
        study = run_search(SearchSpace.from_dict(SPACE), optuna.storages.InMemoryStorage(),
                           trials=4, cluster=cluster, artifact_dir=tmp_path, objective=_objective)
        assert len(runs) == 1 and runs[0].study is study and runs[0].trials == 4
        assert study.trials == []  # the executor ran nothing
    finally:
        del EXECUTORS["recording"]
    with pytest.raises(ConfigError, match="--executor must be one of"):
        ClusterConfig(executor="recording")


def test_workers_elsewhere_need_a_storage_they_can_open(tmp_path):
    with pytest.raises(ConfigError, match="needs a storage URL"):
        run_search(SearchSpace.from_dict(SPACE), optuna.storages.InMemoryStorage(), trials=1,
                   cluster=ClusterConfig(executor="processes", workers=2),
                   artifact_dir=tmp_path)
