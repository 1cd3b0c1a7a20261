"""NNI 3.0 tuners as an Optuna sampler: NNI proposes, the Optuna study records.

:class:`NNISampler` asks an in-process NNI HPO tuner (TPE, evolution, random) for each
trial's configuration and reports the trial's result back to it, so trials proposed by NNI
land in the same study DB as any other (dashboard, Pareto front and export work the same),
and ``study.optimize`` keeps its heartbeats, retries and workers.

NNI tuners optimise a single number, so each trial's objectives are scalarised ParEGO-style
(Knowles 2006): a weight vector ``w`` is drawn uniformly from the simplex for each trial,
objectives are turned into minimisation and normalised to [0, 1] by the best and worst
values of the study's complete trials so far, and the tuner receives the augmented
Chebyshev value ``max_i(w_i f_i) + 0.05 * sum_i(w_i f_i)``. Because the normalisation
moves as the study grows and each trial has its own weights, the tuner sees a noisy
single-objective problem that rewards every part of the front. Failed and pruned trials
are reported to the tuner as unsuccessful.

NNI is an optional dependency (``pip install 'automoe[nni]'``): it pins ``filelock<3.12``
and ``typeguard<4.1.3``, which we do not impose on every user.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import warnings
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from automoe.errors import ConfigError
from automoe.results import TrialRecord
from automoe.results._record import write_nni
from automoe.space import SearchSpace, minimised

NNI_TUNERS = ("nni-tpe", "nni-evolution", "nni-random")
_RHO = 0.05  # augmentation of the Chebyshev scalarisation (ParEGO's value)


def nni_search_space(space: SearchSpace) -> dict:
    """The space's searched dimensions in NNI's search-space format."""
    result = {}
    for name, dim in space.dimensions.items():
        if dim.kind == "categorical":
            result[name] = {"_type": "choice", "_value": list(dim.choices)}
        elif dim.step is not None or dim.kind == "int":
            step = dim.step or 1
            kind = "qloguniform" if dim.log else "quniform"
            result[name] = {"_type": kind, "_value": [dim.low, dim.high, step]}
        else:
            kind = "loguniform" if dim.log else "uniform"
            result[name] = {"_type": kind, "_value": [dim.low, dim.high]}
    return result


def _make_tuner(name: str, seed: int, population_size: int):
    try:
        with warnings.catch_warnings():  # NNI warns about torch's Buffer class at import
            warnings.simplefilter("ignore")
            if name == "nni-tpe":
                # optional extra: automoe[nni]
                from nni.algorithms.hpo.tpe_tuner import TpeTuner

                tuner = TpeTuner(optimize_mode="minimize", seed=seed)
            elif name == "nni-evolution":
                # optional extra: automoe[nni]
                from nni.algorithms.hpo.evolution_tuner import EvolutionTuner

                tuner = EvolutionTuner(optimize_mode="minimize",
                                       population_size=population_size)
            elif name == "nni-random":
                # optional extra: automoe[nni]
                from nni.algorithms.hpo.random_tuner import RandomTuner

                tuner = RandomTuner(seed=seed, optimize_mode="minimize")
            else:
                raise ConfigError(f"unknown NNI tuner {name!r}; expected one of "
                                  f"{', '.join(NNI_TUNERS)}")
    except ImportError:
        raise ConfigError(f"the {name} sampler needs NNI: pip install 'automoe[nni]'") from None
    logging.getLogger("nni").setLevel(logging.WARNING)  # it logs every trial at INFO
    return tuner


def _plain(value):
    """NNI returns numpy scalars; the study stores JSON."""
    return value.item() if isinstance(value, np.generic) else value


class NNISampler(BaseSampler):
    """An Optuna sampler whose proposals come from an NNI tuner.

    Args:
        tuner: one of :data:`NNI_TUNERS`.
        space: the study's search space.
        objectives: the study's metric names, for the scalarisation's directions.
        seed: seeds the tuner and the scalarisation weights.
        population_size: population of the evolution tuner.
    """

    def __init__(self, tuner: str, space: SearchSpace, objectives: Sequence[str],
                 seed: int = 0, population_size: int = 8):
        self.name = tuner
        self.objectives = tuple(objectives)
        # NNI's tuners draw from Python's global `random` too: they get a seeded state of
        # their own, swapped in around each call, so that a seed repeats its proposals
        # whatever else uses `random` in this process
        self._random_state = random.Random(seed).getstate()
        with self._own_random():
            self._tuner = _make_tuner(tuner, seed, population_size)
            self._tuner.update_search_space(nni_search_space(space))
            if tuner == "nni-evolution":
                # its update_search_space draws the first population from a RandomState
                # it creates unseeded: seed that state and draw the population again
                self._tuner.random_state = np.random.RandomState(seed)
                self._tuner.population = []
                for _ in range(population_size):
                    self._tuner._random_generate_individual()
        self._rng = np.random.default_rng(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._proposals: dict[int, dict] = {}  # trial number -> NNI's configuration
        self._imported = False

    @contextlib.contextmanager
    def _own_random(self):
        outside = random.getstate()
        random.setstate(self._random_state)
        try:
            yield
        finally:
            self._random_state = random.getstate()
            random.setstate(outside)

    # -- proposals

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self._imported:
            self._import_history(study)
        if "fixed_params" in trial.system_attrs:  # a retry or an enqueued trial: not NNI's
            return
        with self._own_random():
            drawn = self._tuner.generate_parameters(trial.number)
        proposal = {k: _plain(v) for k, v in drawn.items()}
        weights = self._rng.dirichlet(np.ones(len(self.objectives))).round(6).tolist()
        self._proposals[trial.number] = proposal
        write_nni(study._storage, trial._trial_id,
                  {"tuner": self.name, "proposal": proposal, "weights": weights})

    def sample_independent(self, study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution):
        proposal = self._proposals.get(trial.number, {})
        if param_name not in proposal:  # not a dimension NNI knows: nothing to follow
            return self._fallback.sample_independent(study, trial, param_name,
                                                     param_distribution)
        return _fit(proposal[param_name], param_distribution)

    # -- results

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        proposal = self._proposals.pop(trial.number, None)
        if proposal is None:
            return
        ok = state == TrialState.COMPLETE and values is not None and all(
            math.isfinite(v) for v in values)
        if ok:
            weights = TrialRecord(study._storage.get_trial(trial._trial_id)).nni["weights"]
            score = self.scalarise(study, values, weights)
            write_nni(study._storage, trial._trial_id, {
                "tuner": self.name, "proposal": proposal, "weights": weights, "score": score})
            with self._own_random():
                self._tuner.receive_trial_result(trial.number, proposal, score)
        with self._own_random():
            self._tuner.trial_end(trial.number, ok)

    def scalarise(self, study: optuna.Study, values: Sequence[float],
                  weights: Sequence[float]) -> float:
        """Augmented Chebyshev value of ``values``, normalised by the study's complete
        trials (lower is better)."""
        points = [minimised(t.values, self.objectives) for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if t.values is not None]
        mine = minimised(values, self.objectives)
        points = np.array([*points, mine], dtype=float)
        points = points[np.isfinite(points).all(axis=1)]
        low, high = points.min(axis=0), points.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        f = (np.asarray(mine) - low) / span
        w = np.asarray(weights)
        return float((w * f).max() + _RHO * (w * f).sum())

    def _import_history(self, study: optuna.Study) -> None:
        """Feed the tuner the NNI-proposed trials already in the study (a resumed study,
        or other workers' trials), where the tuner can import results."""
        self._imported = True
        data = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            record = TrialRecord(t).nni
            if record and "score" in record and record.get("tuner") == self.name:
                data.append({"parameter": record["proposal"], "value": record["score"]})
        if data and hasattr(self._tuner, "import_data"):
            with self._own_random():
                self._tuner.import_data(data)


def _fit(value, distribution: BaseDistribution):
    """NNI's value as the distribution Optuna asks for: rounded, snapped to the step and
    clipped into the range."""
    if isinstance(distribution, CategoricalDistribution):
        if value not in distribution.choices:
            raise ConfigError(f"NNI proposed {value!r}, not one of {distribution.choices}")
        return value
    if isinstance(distribution, IntDistribution):
        step = distribution.step
        value = distribution.low + round((float(value) - distribution.low) / step) * step
        return int(min(max(value, distribution.low), distribution.high))
    if isinstance(distribution, FloatDistribution):
        value = float(value)
        if distribution.step is not None:
            step = distribution.step
            value = distribution.low + round((value - distribution.low) / step) * step
        return min(max(value, distribution.low), distribution.high)
    raise ConfigError(f"unsupported distribution {distribution!r}")
