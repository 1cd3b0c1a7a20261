"""One real study in memory: constraints, user attrs, checkpoints."""

import optuna
import pytest

from automoe.search import SearchSpace, TrialRunner
from automoe.storage import AtomicFileSystemArtifactStore

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "params": {"placement": {"choices": ["last_stage", "none"]}, "experts": 2,
               "width_multiplier": 0.5, "epochs": 1, "batch_size": 256},
    "evaluation": {"attack": {"steps": 1, "max_samples": 32}},
}


@pytest.mark.parametrize("bound,feasible", [(1000.0, True), (0.001, False)])
def test_constraints_mark_trials_feasible_or_not(tmp_path, bound, feasible):
    space = SearchSpace.from_dict({**TINY, "constraints": {"mmacs_max": bound,
                                                           "val_accuracy_min": 0.0}})
    runner = TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path))
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(runner, n_trials=2)
    for trial in study.trials:
        assert trial.state.name == "COMPLETE"
        assert set(trial.constraints) == {"mmacs_max", "val_accuracy_min"}
        assert trial.user_attrs["feasible"] is feasible
        mmacs = trial.user_attrs["macs"]["active"] / 1e6
        assert trial.user_attrs["constraints"]["mmacs_max"] == pytest.approx(mmacs - bound)
    # Optuna 5: the front holds feasible trials only
    assert bool(study.best_trials) is feasible


def test_unknown_constraint_is_rejected():
    from automoe.errors import ConfigError

    with pytest.raises(ConfigError, match="constraints.latency_max: unknown constraint"):
        SearchSpace.from_dict({**TINY, "constraints": {"latency_max": 3}})
