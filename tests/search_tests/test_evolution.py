"""NSGA-II evolves the MoE dimensions of a space (synthetic objectives, no training)."""

import importlib.util
import statistics
from pathlib import Path

import optuna
import pytest

from automoe.space import SearchSpace, resolve_space_path

# the rewarded-design objective is the benchmark's own: one definition
_SPEC = importlib.util.spec_from_file_location(
    "bench_evolution", Path(__file__).resolve().parents[2] / "bench" / "evolution.py")
_BENCH = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_BENCH)

POPULATION = 12
TRIALS = 120  # ten generations


def _rewarded_share(sampler_name: str, seed: int) -> float:
    """Share of the second half of a study that built E = 8, k = 1, on the default space,
    when the first objective rewards exactly that design (the second one is lr, so the
    front is not a single point): the objective of ``bench/evolution.py``, at this size."""
    return _BENCH.rewarded_share(sampler_name, seed, TRIALS, POPULATION)


def test_nsga2_concentrates_on_the_rewarded_experts_and_top_k():
    # With experts / top_k sampled only for MoE placements, or top_k's range depending on
    # experts, NSGA-II redraws them at random in every generation: ~10 % of trials hit the
    # design, the same as random search.
    evolved = statistics.mean(_rewarded_share("nsga2", seed) for seed in range(3))
    random = statistics.mean(_rewarded_share("random", seed) for seed in range(3))
    assert random < 0.2
    assert evolved > 0.4 and evolved > 2 * random


def test_children_inherit_the_moe_parameters_of_their_parents():
    # Generation 0 is enqueued with experts = 6 and balance_weight = 0.1 only (dense and MoE
    # placements mixed); without mutation, a child can only carry its parents' values.
    space = SearchSpace.from_file(resolve_space_path("default"))
    sampler = optuna.samplers.NSGAIISampler(seed=0, population_size=6, mutation_prob=0.0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for i, placement in enumerate(["none", "last_stage", "none", "all", "010", "last_two"]):
        study.enqueue_trial({"placement": placement, "experts": 6, "top_k": 1 + i % 2,
                             "balance_weight": 0.1})

    def objective(trial):
        candidate = space.suggest(trial)
        return trial.params["lr"], candidate.model["width_multiplier"]

    study.optimize(objective, n_trials=30)
    children = study.trials[6:]
    assert {t.params["experts"] for t in children} == {6}
    assert all(t.params["balance_weight"] == pytest.approx(0.1) for t in children)
    assert {t.params["top_k"] for t in children} <= {1, 2}
    # the crossover space holds every MoE dimension, dense trials included
    assert {"experts", "top_k", "balance_weight"} <= set(
        optuna.search_space.intersection_search_space(study.trials))
