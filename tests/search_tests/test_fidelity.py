"""Successive halving with Pareto promotion: the ranking helpers and a real study."""

import math

import optuna
import pytest

from automoe.search import TrialRunner, create_or_resume_study, make_sampler
from automoe.search._fidelity import (
    crowding_distances,
    is_promoted,
    nondominated_ranks,
    promotion_order,
)
from automoe.space import SearchSpace, rung_epochs
from automoe.storage import AtomicFileSystemArtifactStore


def test_rungs_grow_by_the_reduction_factor_below_the_full_epochs():
    assert rung_epochs(1, 3, 9) == [1, 3]
    assert rung_epochs(1, 2, 8) == [1, 2, 4]
    assert rung_epochs(2, 3, 5) == [2]
    assert rung_epochs(4, 2, 4) == []


def test_nondominated_ranks_by_hand():
    # minimise both: (1,4) (2,2) (4,1) are the first front; (3,3) is dominated by (2,2);
    # (5,5) by everything
    points = [(1, 4), (3, 3), (2, 2), (4, 1), (5, 5)]
    assert nondominated_ranks(points) == [0, 1, 0, 0, 2]
    assert nondominated_ranks([(1, 1), (1, 1)]) == [0, 0]  # equal points do not dominate


def test_crowding_distance_by_hand():
    d = crowding_distances([(0, 4), (1, 2), (4, 0)])
    assert d[0] == d[2] == math.inf
    # span 4 in each objective: (4 - 0) / 4 + (4 - 0) / 4 = 2
    assert d[1] == pytest.approx(2.0)


def test_promotion_keeps_the_best_fraction_feasible_first():
    entries = {0: ((1.0, 4.0), 0.0), 1: ((3.0, 3.0), 0.0), 2: ((2.0, 2.0), 0.0),
               3: ((0.0, 0.0), 5.0), 4: ((5.0, 5.0), 0.0), 5: ((4.0, 1.0), 0.0)}
    order = promotion_order(entries)
    assert order[-1] == 3  # infeasible last, however good its values
    assert set(order[:3]) == {0, 2, 5}  # the first front
    # 6 entries, factor 3: the best 2 go on; of the first front, the boundary points
    # (infinite crowding) rank before the middle one
    assert is_promoted(0, entries, 3) and is_promoted(5, entries, 3)
    assert not is_promoted(2, entries, 3) and not is_promoted(4, entries, 3)
    assert is_promoted(7, {7: ((9.0, 9.0), 0.0)}, 3)  # the first trial at a rung goes on


def test_fidelity_needs_fixed_epochs():
    from automoe.errors import ConfigError

    base = {"name": "s", "params": {"epochs": {"low": 2, "high": 4}}}
    with pytest.raises(ConfigError, match="fidelity: successive halving"):
        SearchSpace.from_dict({**base, "fidelity": {"min_epochs": 1}})
    with pytest.raises(ConfigError, match="fidelity.min_epochs: must be below"):
        SearchSpace.from_dict({"name": "s", "params": {"epochs": 2},
                               "fidelity": {"min_epochs": 2}})


def test_study_prunes_dominated_trials_at_rungs(tmp_path):
    space = SearchSpace.from_dict({
        "name": "sh", "dataset": {"name": "digits"},
        "params": {"placement": {"choices": ["none", "last_stage"]}, "experts": 2,
                   "width_multiplier": {"choices": [0.25, 0.5]},
                   "lr": {"low": 1e-3, "high": 0.2, "log": True},
                   "epochs": 4, "batch_size": 128},
        "objectives": ["val_accuracy", "mmacs"],
        "fidelity": {"min_epochs": 1, "reduction_factor": 2},
    })
    assert space.rungs() == [1, 2]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = optuna.storages.InMemoryStorage()
    study, _ = create_or_resume_study(storage, "sh", space, make_sampler("random", 0))
    runner = TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path / "a"),
                         resume_dir=tmp_path / "resume")
    study.optimize(runner, n_trials=8)
    states = [t.state.name for t in study.trials]
    assert "PRUNED" in states and "COMPLETE" in states
    for t in study.trials:
        rungs = t.user_attrs["rungs"]
        epochs_run = len(t.user_attrs["history"])
        if t.state.name == "PRUNED":
            assert epochs_run in (1, 2) and str(epochs_run) in rungs
            assert "checkpoint" not in t.user_attrs
        else:
            assert epochs_run == 4 and set(rungs) == {"1", "2"}
            assert len(t.values) == 2
    # the resume states are removed once a trial ends, however it ends
    assert not list((tmp_path / "resume").rglob("*.pt"))


def test_rungs_in_an_upcycling_dense_phase_judge_the_upcycled_model(tmp_path):
    """At a rung inside the dense phase the MoE model holds the twin's current weights, so
    it is judged on what has trained, not on its untrained initialisation."""
    space = SearchSpace.from_dict({
        "name": "shu", "dataset": {"name": "digits"},
        "params": {"placement": "last_stage", "experts": 2, "width_multiplier": 0.5,
                   "lr": 0.1, "epochs": 4, "batch_size": 64, "upcycle": 0.5},
        "objectives": ["val_accuracy", "mmacs"],
        "fidelity": {"min_epochs": 1, "reduction_factor": 2},
    })
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study, _ = create_or_resume_study(optuna.storages.InMemoryStorage(), "shu", space,
                                      make_sampler("random", 0))
    study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path)), n_trials=1)
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE"
    rungs = trial.user_attrs["rungs"]
    # epoch 1 is dense-phase training; an untrained 10-class model scores about 10 %
    assert rungs["1"]["val_accuracy"] > 40
    assert rungs["2"]["val_accuracy"] > 60
    assert [row.get("dense_phase", 0) for row in trial.user_attrs["history"]] == [1, 1, 0, 0]
