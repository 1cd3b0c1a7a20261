"""NSGA-II evolves the MoE dimensions of a space (synthetic objectives, no training)."""

import statistics

import optuna
import pytest

from automoe.search import SearchSpace, resolve_space_path
from automoe.search.study import make_sampler

POPULATION = 12
TRIALS = 120  # ten generations


def _rewarded_share(sampler_name: str, seed: int) -> float:
    """Share of the second half of a study that built E = 8, k = 1, on the default space,
    when the first objective rewards exactly that design (the second one is lr, so the
    front is not a single point)."""
    space = SearchSpace.from_file(resolve_space_path("default"))
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=make_sampler(sampler_name, seed, POPULATION, space))

    def objective(trial):
        model = space.suggest(trial).model
        return -abs(model["num_experts"] - 8) / 2 - 3 * (model["top_k"] - 1), trial.params["lr"]

    study.optimize(objective, n_trials=TRIALS)
    late = [t for t in study.trials if t.number >= TRIALS // 2]
    return sum(t.values[0] == 0 for t in late) / len(late)


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
