"""Warm start: a new study runs an earlier study's front first, as the space allows."""

import optuna
import pytest

from automoe.errors import ConfigError
from automoe.results import TrialRecord, pareto_trials
from automoe.search import run_search, warm_start_configs
from automoe.space import SearchSpace

SOURCE = {"name": "src", "params": {"experts": {"low": 2, "high": 8, "step": 2},
                                    "placement": {"choices": ["none", "last_stage", "all"]},
                                    "lr": {"low": 0.01, "high": 0.2, "log": True},
                                    "epochs": 1}}


def _objective(space):
    def objective(trial):
        space.suggest(trial)
        params = trial.params
        # more experts buy accuracy at a cost: a front along experts
        return (params["lr"] * 100 + 5 * params["experts"], params["experts"],
                params["lr"] * 50)
    return objective


def _source(storage, tmp_path, trials=12):
    space = SearchSpace.from_dict(SOURCE)
    return run_search(space, storage, trials=trials, artifact_dir=tmp_path / "a",
                      objective=_objective(space), sampler="random")


def test_a_new_study_runs_the_front_first_and_a_resume_adds_nothing(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    source = _source(storage, tmp_path)
    front = {t.number: t.params for t in pareto_trials(source)}
    assert len(front) >= 2
    target = SearchSpace.from_dict({**SOURCE, "name": "dst"})
    study = run_search(target, storage, trials=len(front) + 2, artifact_dir=tmp_path / "a",
                       objective=_objective(target), warm_start=source, seed=1)
    first = study.trials[:len(front)]
    assert [TrialRecord(t).warm_start for t in first] == [
        {"study": "src", "trial": number} for number in front]
    assert [t.params for t in first] == list(front.values())
    assert all(TrialRecord(t).warm_start is None for t in study.trials[len(front):])
    again = run_search(target, storage, trials=1, artifact_dir=tmp_path / "a",
                       objective=_objective(target), warm_start=source)
    assert len(again.trials) == len(front) + 3  # nothing enqueued on resume


def test_parameters_the_space_cannot_propose_are_left_to_the_sampler(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    source = _source(storage, tmp_path)
    # experts only up to 4, no "last_stage", and lr not searched
    narrow = SearchSpace.from_dict({"name": "n", "params": {
        "experts": {"low": 2, "high": 4, "step": 2},
        "placement": {"choices": ["none", "all"]}, "lr": 0.05, "epochs": 1}})
    configs = warm_start_configs(source, narrow)
    assert configs
    for _, params in configs:
        assert set(params) <= {"experts", "placement"}
        assert params.get("experts", 2) in (2, 4)
        assert params.get("placement", "none") in ("none", "all")
    assert len({tuple(sorted(p.items())) for _, p in configs}) == len(configs)  # no repeats


def test_a_source_without_trials_is_refused_before_anything_is_written(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    empty = optuna.create_study(storage=storage, study_name="empty",
                                directions=["maximize", "minimize", "maximize"])
    space = SearchSpace.from_dict({**SOURCE, "name": "dst"})
    with pytest.raises(ConfigError, match="'empty' has no complete trial"):
        run_search(space, storage, trials=1, artifact_dir=tmp_path / "a",
                   objective=_objective(space), warm_start=empty)
    assert "dst" not in {s.study_name for s in storage.get_all_studies()}


def test_each_dimension_is_drawn_from_the_distribution_the_space_states():
    space = SearchSpace.from_dict({"name": "d", "params": {
        **SOURCE["params"], "top_k": {"low": 1, "high": 2},
        "balance_weight": {"low": 1.0e-3, "high": 1.0, "log": True},
        "width_multiplier": {"low": 0.25, "high": 1.0, "step": 0.25}}})
    trial = optuna.create_study(directions=["maximize"] * 3).ask()
    space.suggest(trial)
    assert trial.distributions == space.distributions()
