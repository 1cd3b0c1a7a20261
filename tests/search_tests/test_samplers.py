"""Samplers: one contract every registered sampler passes, options from the space file, the
spec stored with the study (so every worker builds the same sampler), and plug-ins found
through their package's entry point."""

import subprocess
import sys
import textwrap

import optuna
import pytest

from automoe.errors import ConfigError
from automoe.results import StudyRecord
from automoe.search import available_samplers, make_sampler, run_search, sampler_spec
from automoe.space import SearchSpace
from automoe.space._sampling import suggest

# every dimension discrete, so that the grid sampler can enumerate it too
SPACE = {"name": "contract", "params": {
    "placement": {"choices": ["none", "last_stage", "all"]},
    "experts": {"low": 2, "high": 8, "step": 2},
    "lr": {"choices": [0.02, 0.05, 0.1, 0.2]}, "epochs": 1}}
TRIALS = 6


def _objective(space):
    def objective(trial):
        params = suggest(space.dimensions, trial)
        # any deterministic function of the params, one value per objective
        score = params["experts"] * params["lr"] + len(params["placement"])
        return tuple(score * (i + 1) for i in range(len(space.objectives)))
    return objective


def _within(space, params) -> bool:
    for name, value in params.items():
        dimension = space.dimensions[name]
        if dimension.kind == "categorical":
            if value not in dimension.choices:
                return False
        elif not dimension.low <= value <= dimension.high:
            return False
    return True


def _run(name, seed, tmp_path):
    space = SearchSpace.from_dict(SPACE)
    study = run_search(space, optuna.storages.InMemoryStorage(), trials=TRIALS, sampler=name,
                       seed=seed, artifact_dir=tmp_path, objective=_objective(space))
    return space, study


@pytest.mark.parametrize("name", available_samplers())
def test_every_registered_sampler_keeps_the_contract(name, tmp_path):
    if name.startswith("nni-"):
        pytest.importorskip("nni")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space, study = _run(name, 3, tmp_path)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * TRIALS
    assert all(_within(space, t.params) and set(t.params) == set(space.dimensions)
               for t in trials)
    # what workers would build: the name, with the space's options if it names the same
    assert StudyRecord(study).sampler == sampler_spec(name, space)
    # seeded: the same seed proposes the same candidates
    _, again = _run(name, 3, tmp_path)
    assert [t.params for t in again.get_trials()] == [t.params for t in trials]


def test_options_in_the_space_file_reach_the_sampler_and_the_study(tmp_path):
    raw = {**SPACE, "sampler": {"name": "tpe", "multivariate": True, "n_startup_trials": 3}}
    space = SearchSpace.from_dict(raw)
    study = run_search(space, optuna.storages.InMemoryStorage(), trials=4,
                       artifact_dir=tmp_path, objective=_objective(space))
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert study.sampler._multivariate and study.sampler._n_startup_trials == 3
    assert StudyRecord(study).sampler == {"name": "tpe", "multivariate": True,
                                          "n_startup_trials": 3}
    # --sampler naming the space's own sampler keeps its options; another drops them
    assert sampler_spec("tpe", space) == raw["sampler"]
    assert sampler_spec("random", space) == {"name": "random"}


def test_an_option_the_sampler_does_not_take_writes_nothing(tmp_path):
    space = SearchSpace.from_dict({**SPACE, "sampler": {"name": "tpe", "populaton": 4}})
    storage = optuna.storages.InMemoryStorage()
    with pytest.raises(ConfigError, match="sampler 'tpe' does not take these options"):
        run_search(space, storage, trials=1, artifact_dir=tmp_path,
                   objective=_objective(space))
    assert storage.get_all_studies() == []


def test_a_sampler_object_cannot_go_to_workers(tmp_path):
    from automoe.search import ClusterConfig

    space = SearchSpace.from_dict(SPACE)
    with pytest.raises(ConfigError, match="cannot travel to workers"):
        run_search(space, f"sqlite:///{tmp_path / 's.db'}", trials=1,
                   sampler=optuna.samplers.RandomSampler(), artifact_dir=tmp_path,
                   cluster=ClusterConfig(executor="processes", workers=2))


def test_a_bare_name_has_no_options():
    assert isinstance(make_sampler("nsga2", 0), optuna.samplers.NSGAIISampler)
    assert make_sampler({"name": "nsga2", "population_size": 4}, 0)._population_size == 4


PLUGIN = '''
import optuna

def factory(seed, space, *, temperature=1.0):
    sampler = optuna.samplers.RandomSampler(seed=seed)
    sampler.temperature = temperature
    return sampler
'''


def test_a_plugin_sampler_is_found_through_its_entry_point(tmp_path):
    # an installed package as pip leaves it: a module and its dist-info with the entry point
    (tmp_path / "annealing_plugin.py").write_text(PLUGIN)
    info = tmp_path / "annealing_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: annealing-plugin\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[automoe.samplers]\nannealing = annealing_plugin:factory\n")
    code = textwrap.dedent("""
        from automoe.search import available_samplers, make_sampler
        assert "annealing" in available_samplers()
        sampler = make_sampler({"name": "annealing", "temperature": 0.5}, 0)
        print(type(sampler).__name__, sampler.temperature)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path), "PATH": ""}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["RandomSampler", "0.5"]
