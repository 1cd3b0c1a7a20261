"""NNI tuners proposing trials that land in a real Optuna study DB."""

import optuna
import pytest

from automoe.search import TrialRunner, create_or_resume_study, make_sampler
from automoe.search._nni_adapter import NNI_TUNERS, NNISampler, nni_search_space
from automoe.space import SearchSpace
from automoe.storage import AtomicFileSystemArtifactStore, open_storage

pytest.importorskip("nni", reason="the NNI adapter tests need `pip install 'automoe[nni]'`")

SPACE = {
    "name": "nni",
    "dataset": {"name": "digits"},
    "params": {"placement": {"choices": ["none", "last_stage"]},
               "experts": {"low": 2, "high": 4, "step": 2}, "top_k": {"low": 1, "high": 3},
               "width_multiplier": 0.25, "lr": {"low": 0.01, "high": 0.2, "log": True},
               "epochs": 1, "batch_size": 256},
    "objectives": ["val_accuracy", "mmacs"],
}


def test_search_space_translation():
    space = SearchSpace.from_dict(SPACE)
    assert nni_search_space(space) == {
        "placement": {"_type": "choice", "_value": ["none", "last_stage"]},
        "experts": {"_type": "quniform", "_value": [2, 4, 2]},
        "top_k": {"_type": "quniform", "_value": [1, 3, 1]},
        "lr": {"_type": "loguniform", "_value": [0.01, 0.2]},
    }


@pytest.mark.parametrize("tuner", NNI_TUNERS)
def test_nni_driven_study_lands_complete_trials(tmp_path, tuner):
    space = SearchSpace.from_dict(SPACE)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler = make_sampler({"name": tuner, "population_size": 3}, seed=0, space=space)
    assert isinstance(sampler, NNISampler)
    study, _ = create_or_resume_study(open_storage(url), "nni", space, sampler)
    runner = TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path / "artifacts"))
    study.optimize(runner, n_trials=4)

    stored = optuna.load_study(study_name="nni", storage=url)
    assert [t.state.name for t in stored.trials] == ["COMPLETE"] * 4
    for t in stored.trials:
        record = t.user_attrs["nni"]
        assert record["tuner"] == tuner
        assert sum(record["weights"]) == pytest.approx(1.0, abs=1e-5)
        assert record["score"] >= 0
        # the trial ran NNI's proposal (top_k capped at the sampled experts)
        assert t.params["placement"] == record["proposal"]["placement"]
        model = t.user_attrs["config"]["model"]
        if t.params["placement"] != "none":
            assert t.params["experts"] == record["proposal"]["experts"]
            assert model["top_k"] == min(round(record["proposal"]["top_k"]), model["num_experts"])
        assert "checkpoint" in t.user_attrs
    assert stored.best_trials


def test_scalarisation_is_augmented_chebyshev():
    space = SearchSpace.from_dict(SPACE)
    sampler = NNISampler("nni-random", space, ("val_accuracy", "mmacs"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in [(50.0, 1.0), (90.0, 3.0)]:
        study.add_trial(optuna.trial.create_trial(values=list(values)))
    # (70 %, 2 MMACs) normalised against acc in [50, 90], MMACs in [1, 3]: (0.5, 0.5)
    score = sampler.scalarise(study, (70.0, 2.0), (0.25, 0.75))
    assert score == pytest.approx(0.75 * 0.5 + 0.05 * (0.25 * 0.5 + 0.75 * 0.5))


def test_a_resumed_study_replays_its_nni_trials_into_the_tuner(tmp_path):
    space = SearchSpace.from_dict(SPACE)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.InMemoryStorage()
    study, _ = create_or_resume_study(storage, "nni", space, make_sampler("nni-tpe", 0,
                                                                          space=space))
    study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path)), n_trials=2)
    fresh = make_sampler("nni-tpe", 1, space=space)
    resumed, was_resumed = create_or_resume_study(storage, "nni", space, fresh)
    assert was_resumed
    trial = resumed.ask()
    history = fresh._tuner._history  # TPE keeps its records per parameter path
    assert len(history[("placement",)]) == 2
    assert "nni" in storage.get_trial(trial._trial_id).user_attrs
