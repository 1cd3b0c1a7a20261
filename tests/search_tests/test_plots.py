"""Plots of a constrained study (Optuna 5 stores constraints as a dict)."""

import optuna
import pytest

from automoe.search.pareto import is_feasible, pareto_trials
from automoe.search.plots import hypervolume_history, write_plot


@pytest.fixture()
def constrained_study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "mmacs"])
    for i in range(8):
        trial = study.ask()
        experts = trial.suggest_int("experts", 2, 8)
        # every odd trial breaks its constraint, and would otherwise dominate
        trial.set_constraint("mmacs_max", 1.0 if i % 2 else -1.0)
        study.tell(trial, (50.0 + i * 5 + experts, 1.0 + i))
    return study


def test_feasibility_and_the_front_follow_the_constraints(constrained_study):
    feasible = [t.number for t in constrained_study.trials if is_feasible(t)]
    assert feasible == [0, 2, 4, 6]
    assert {t.number for t in pareto_trials(constrained_study)} <= set(feasible)


def test_the_hypervolume_history_counts_feasible_trials_only(constrained_study):
    history = dict(hypervolume_history(constrained_study, reference=(0.0, 100.0)))
    assert history[0] > 0
    for number in (1, 3, 5, 7):  # an infeasible trial adds nothing
        assert history[number] == history[number - 1]
    assert history[2] > history[1]


@pytest.mark.parametrize("kind,suffix", [("pareto", "png"), ("history", "png"),
                                         ("history", "html"), ("importance", "svg")])
def test_plots_of_a_constrained_study(constrained_study, tmp_path, kind, suffix):
    out = tmp_path / f"{kind}.{suffix}"
    write_plot(constrained_study, kind, out)
    assert out.stat().st_size > 1000
