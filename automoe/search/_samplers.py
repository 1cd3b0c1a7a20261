"""The samplers a space may name: one table of ``{name: factory}``.

A factory takes ``(seed, population_size, space)`` and returns an Optuna sampler. Plug-ins
add their own with :func:`register_sampler` (as Optuna lets any ``BaseSampler`` subclass be
passed to a study); a space that names a sampler is checked against this table when its
study is created, so a registered name is accepted like a built-in one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from automoe.errors import ConfigError

SamplerFactory = Callable[[int, int, object], optuna.samplers.BaseSampler]


def _grid(seed: int, population_size: int, space) -> optuna.samplers.BaseSampler:
    if space is None:
        raise ConfigError("the grid sampler needs the search space")
    return optuna.samplers.GridSampler(space.grid(), seed=seed)


def _nni(tuner: str) -> SamplerFactory:
    def factory(seed: int, population_size: int, space) -> optuna.samplers.BaseSampler:
        if space is None:
            raise ConfigError(f"the {tuner} sampler needs the search space")
        # deferred: the NNI adapter is only loaded for the NNI samplers
        from automoe.search._nni_adapter import NNISampler

        return NNISampler(tuner, space, space.objectives, seed, population_size)
    return factory


# Optuna's samplers (Optuna 5's multi-objective default is TPE; ours NSGA-II), then NNI's
# tuners (through automoe.search._nni_adapter, the optional extra automoe[nni]).
SAMPLERS: dict[str, SamplerFactory] = {
    "nsga2": lambda seed, pop, space: optuna.samplers.NSGAIISampler(seed=seed,
                                                                    population_size=pop),
    "nsga3": lambda seed, pop, space: optuna.samplers.NSGAIIISampler(seed=seed,
                                                                     population_size=pop),
    "tpe": lambda seed, pop, space: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed, pop, space: optuna.samplers.RandomSampler(seed=seed),
    "gp": lambda seed, pop, space: optuna.samplers.GPSampler(seed=seed),
    "grid": _grid,
    **{name: _nni(name) for name in ("nni-tpe", "nni-evolution", "nni-random")},
}


def register_sampler(name: str, factory: SamplerFactory) -> None:
    """Make ``name`` usable as a space's ``sampler.name`` and as ``--sampler``."""
    if name in SAMPLERS:
        raise ConfigError(f"sampler {name!r} is already registered")
    SAMPLERS[name] = factory


def make_sampler(name: str, seed: int, population_size: int = 8,
                 space=None) -> optuna.samplers.BaseSampler:
    """A sampler of :data:`SAMPLERS` by name, always seeded.

    ``grid`` enumerates the space's grid (every dimension must be categorical or stepped);
    ``nni-*`` asks an NNI tuner (see :mod:`automoe.search._nni_adapter`).
    """
    if name not in SAMPLERS:
        raise ConfigError(f"sampler.name: unknown sampler {name!r}; expected one of "
                          f"{', '.join(SAMPLERS)}")
    with warnings.catch_warnings():  # "experimental since v3.2" (NSGA-III, GP): noise here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLERS[name](seed, population_size, space)
