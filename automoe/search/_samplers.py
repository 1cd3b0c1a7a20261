"""The samplers a space may name: one table of ``{name: factory}``.

A sampler is named by a *spec*: ``{"name": ..., **options}``, as a space's ``sampler:``
section writes it (``sampler: {name: tpe, multivariate: true, n_startup_trials: 5}``). A
factory takes ``(seed, space, **options)`` and returns a seeded Optuna sampler; the options
are the sampler's own keyword arguments (Optuna's names), so an unknown one is refused when
the study is created, before anything is written.

Plug-ins add samplers with :func:`register_sampler` in the process that runs them, or, so
that worker processes and Ray tasks elsewhere find them too, through the entry-point group
``automoe.samplers`` of their package (``name = "package.module:factory"``), which is read
the first time a name is not in the table.

The spec a search runs with is stored with its study (``StudyRecord.sampler``), and every
worker builds its sampler from there, so ``--sampler`` and the space's options reach all of
them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points

import optuna

from automoe.errors import ConfigError

SamplerFactory = Callable[..., optuna.samplers.BaseSampler]  # (seed, space, **options)
ENTRY_POINT_GROUP = "automoe.samplers"


def _nsga(kind: type) -> SamplerFactory:
    def factory(seed: int, space, *, population_size: int = 8, **options):
        return kind(seed=seed, population_size=population_size, **options)
    return factory


def _optuna(kind: type) -> SamplerFactory:
    def factory(seed: int, space, **options):
        return kind(seed=seed, **options)
    return factory


def _grid(seed: int, space) -> optuna.samplers.BaseSampler:
    if space is None:
        raise ConfigError("the grid sampler needs the search space")
    return optuna.samplers.GridSampler(space.grid(), seed=seed)


def _nni(tuner: str) -> SamplerFactory:
    def factory(seed: int, space, *, population_size: int = 8) -> optuna.samplers.BaseSampler:
        if space is None:
            raise ConfigError(f"the {tuner} sampler needs the search space")
        # deferred: the NNI adapter is only loaded for the NNI samplers
        from automoe.search._nni_adapter import NNISampler

        return NNISampler(tuner, space, space.objectives, seed, population_size)
    return factory


# Optuna's samplers (Optuna 5's multi-objective default is TPE; ours NSGA-II), then NNI's
# tuners (through automoe.search._nni_adapter, the optional extra automoe[nni]).
SAMPLERS: dict[str, SamplerFactory] = {
    "nsga2": _nsga(optuna.samplers.NSGAIISampler),
    "nsga3": _nsga(optuna.samplers.NSGAIIISampler),
    "tpe": _optuna(optuna.samplers.TPESampler),
    "random": _optuna(optuna.samplers.RandomSampler),
    "gp": _optuna(optuna.samplers.GPSampler),
    "grid": _grid,
    **{name: _nni(name) for name in ("nni-tpe", "nni-evolution", "nni-random")},
}


def register_sampler(name: str, factory: SamplerFactory) -> None:
    """Make ``name`` usable as a space's ``sampler.name`` and as ``--sampler``; ``factory``
    is called as ``factory(seed, space, **options)``."""
    if name in SAMPLERS:
        raise ConfigError(f"sampler {name!r} is already registered")
    SAMPLERS[name] = factory


def _load_entry_points() -> None:
    """Register the samplers that installed packages declare (see the module)."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in SAMPLERS:
            continue
        try:
            SAMPLERS[entry.name] = entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is one clear error
            raise ConfigError(f"sampler {entry.name!r} of package entry point "
                              f"{entry.value!r} does not load: {type(exc).__name__}: "
                              f"{exc}") from None


def available_samplers() -> list[str]:
    """Every sampler name a space may use: the built-in ones, registered and installed."""
    _load_entry_points()
    return list(SAMPLERS)


def sampler_spec(sampler: str | Mapping | None, space=None) -> dict:
    """The ``{"name", **options}`` spec of ``sampler``: a spec as given; a name alone takes
    the space's options when the space names the same sampler (``--sampler`` repeating
    the space's choice), none otherwise; None is the space's own spec (a space without a
    ``sampler`` section has the default, ``automoe.space.DEFAULT_SAMPLER``)."""
    own = dict(space.sampler) if space is not None else {}
    if sampler is None:
        if not own:
            raise ConfigError("no sampler named, and no space to take one from")
        return own
    if isinstance(sampler, str):
        return own if own.get("name") == sampler else {"name": sampler}
    spec = dict(sampler)
    if not isinstance(spec.get("name"), str):
        raise ConfigError(f"a sampler spec needs a name, got {spec!r}")
    return spec


def make_sampler(sampler: str | Mapping, seed: int, space=None) -> optuna.samplers.BaseSampler:
    """The sampler of a spec (or a bare name: no options), always seeded.

    ``grid`` enumerates the space's grid (every dimension must be categorical or stepped);
    ``nni-*`` asks an NNI tuner (see :mod:`automoe.search._nni_adapter`).

    Raises:
        ConfigError: an unknown name, or options the sampler does not take.
    """
    spec = sampler_spec(sampler)
    name = spec.pop("name")
    if name not in SAMPLERS:
        _load_entry_points()
    if name not in SAMPLERS:
        raise ConfigError(f"sampler.name: unknown sampler {name!r}; expected one of "
                          f"{', '.join(SAMPLERS)}")
    with warnings.catch_warnings():  # "experimental since v3.2" (NSGA-III, GP): noise here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return SAMPLERS[name](seed, space, **spec)
        except (TypeError, ValueError) as exc:
            if spec:
                raise ConfigError(f"sampler {name!r} does not take these options "
                                  f"({', '.join(sorted(spec))}): {exc}") from None
            raise
