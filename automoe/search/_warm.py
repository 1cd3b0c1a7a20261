"""Warm start: a new study's first trials are the Pareto front of an earlier study.

A front found on one data set is a strong first guess on another of the same space: the
MACs of a configuration do not depend on the data, and the placements and widths that
trade accuracy for them well tend to carry over. On seven public tables (each warm-started
from a study of another data set of its benchmark) it reached random search's front 4-8x
sooner, against 1.3-2.6x for the same sampler from a cold start (bench/results/
search_public.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import optuna

from automoe.errors import ConfigError
from automoe.results import enqueue_warm_trial, pareto_trials

if TYPE_CHECKING:  # automoe.space loads torch; search's run module must not (the CLI reads it)
    from automoe.space import SearchSpace


def warm_start_configs(source: optuna.Study, space: SearchSpace) -> list[tuple[int, dict]]:
    """``(trial number, params)`` of ``source``'s Pareto-optimal feasible trials, with the
    searched parameters ``space`` can propose: a parameter the space does not search, or a
    value outside its distribution, is left out (the sampler draws it); configurations left
    empty, or the same as an earlier one, are dropped.

    Raises:
        ConfigError: ``source`` has no complete trial.
    """
    front = pareto_trials(source)
    if not front:
        raise ConfigError(f"study {source.study_name!r} has no complete trial to warm-start "
                          "from")
    distributions = space.distributions()
    configs: list[tuple[int, dict]] = []
    for trial in front:
        params = {name: value for name, value in trial.params.items()
                  if name in distributions and _contains(distributions[name], value)}
        if params and all(params != seen for _, seen in configs):
            configs.append((trial.number, params))
    return configs


def enqueue_warm_start(study: optuna.Study, source_name: str,
                       configs: list[tuple[int, dict]]) -> int:
    """Enqueue ``configs`` (:func:`warm_start_configs` of the study ``source_name``) as
    ``study``'s next trials; the number enqueued. A configuration already enqueued or run
    is not enqueued again, so resuming a warm-started search adds nothing."""
    before = len(study.get_trials(deepcopy=False))
    for number, params in configs:
        enqueue_warm_trial(study, params, source_name, number)
    return len(study.get_trials(deepcopy=False)) - before


def _contains(dist: optuna.distributions.BaseDistribution, value) -> bool:
    """Whether ``dist`` can propose ``value``."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not dist.low <= value <= dist.high:
        return False
    if dist.step:
        steps = (value - dist.low) / dist.step
        return abs(steps - round(steps)) < 1e-9
    return not isinstance(dist, optuna.distributions.IntDistribution) or float(value).is_integer()
