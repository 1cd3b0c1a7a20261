"""evaluation.repeats: each candidate trained with several seeds, objectives are means."""

import statistics

import optuna
import pytest

from automoe.errors import ConfigError
from automoe.results import trial_row
from automoe.search import TrialRunner
from automoe.search._resume import repeat_seeds
from automoe.space import SearchSpace
from automoe.storage import AtomicFileSystemArtifactStore

SPACE = {
    "name": "rep",
    "dataset": {"name": "digits"},
    "params": {"placement": {"choices": ["last_stage", "none"]}, "experts": 2,
               "width_multiplier": 0.25, "epochs": 1, "batch_size": 256},
    "evaluation": {"attack": {"steps": 1, "max_samples": 32}, "repeats": 3},
}


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "2"])
def test_repeats_must_be_a_positive_integer(value):
    with pytest.raises(ConfigError, match="evaluation.repeats: must be a positive integer"):
        SearchSpace.from_dict({**SPACE, "evaluation": {"repeats": value}})


def test_repeats_are_part_of_the_study_identity():
    one = SearchSpace.from_dict({**SPACE, "evaluation": {}})
    assert one.repeats == 1
    assert one.with_repeats(1).fingerprint() == one.fingerprint()
    three = one.with_repeats(3)
    assert three.repeats == 3 and three.fingerprint() != one.fingerprint()
    # what workers rebuild the space from carries it too
    assert SearchSpace.from_dict(three.raw).repeats == 3


def test_objectives_are_means_over_seeds_with_their_spread(tmp_path):
    space = SearchSpace.from_dict(SPACE)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path), seed=5),
                   n_trials=2)
    for trial in study.trials:
        assert trial.state.name == "COMPLETE"
        runs = trial.user_attrs["repeats"]
        assert [r["seed"] for r in runs] == repeat_seeds(5 + trial.number, 3)
        assert len(set(r["seed"] for r in runs)) == 3
        for i, name in enumerate(("val_accuracy", "mmacs", "robust_accuracy")):
            per_seed = [r[name] for r in runs]
            assert trial.values[i] == pytest.approx(statistics.fmean(per_seed))
            assert trial.user_attrs["objective_std"][name] == pytest.approx(
                statistics.stdev(per_seed))
        # different seeds train different nets: the accuracies are not all equal
        assert len({r["val_accuracy"] for r in runs}) > 1
        assert "checkpoint" in trial.user_attrs
        row = trial_row(trial, ("val_accuracy", "mmacs", "robust_accuracy"))
        assert row["std"] == trial.user_attrs["objective_std"]
    # the front table shows mean ± std
    from rich.console import Console

    from automoe.cli._output import pareto_table

    names = ("val_accuracy", "mmacs", "robust_accuracy")
    console = Console(width=250, record=True)
    console.print(pareto_table([trial_row(t, names) for t in study.trials], names, "front"))
    text = console.export_text()
    std = study.trials[0].user_attrs["objective_std"]["val_accuracy"]
    assert f"{study.trials[0].values[0]:.2f} ± {std:.2f}" in text


def test_successive_halving_judges_the_first_seed_and_completes_the_rest(tmp_path):
    space = SearchSpace.from_dict({
        **SPACE, "params": {**SPACE["params"], "epochs": 2,
                            "lr": {"low": 1e-3, "high": 0.2, "log": True}},
        "objectives": ["val_accuracy", "mmacs"], "evaluation": {"repeats": 2},
        "fidelity": {"min_epochs": 1, "reduction_factor": 2}})
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(TrialRunner(space, AtomicFileSystemArtifactStore(tmp_path)), n_trials=6)
    states = {t.state.name for t in study.trials}
    assert states == {"PRUNED", "COMPLETE"}
    for t in study.trials:
        if t.state.name == "COMPLETE":
            assert len(t.user_attrs["repeats"]) == 2
        else:
            assert "repeats" not in t.user_attrs
