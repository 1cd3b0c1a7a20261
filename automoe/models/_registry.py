"""Model registry: ``@register_model``, ``list_models``, ``create_model``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from automoe.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name; a second builder of that name raises."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell-style pattern."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **config) -> nn.Module:
    """Build a registered model; ``config`` overrides the fields of its config dataclass.

    The built model carries ``model_name`` and ``config`` so that
    ``create_model(model.model_name, **dataclasses.asdict(model.config))`` rebuilds it.

    Raises:
        ConfigError: unknown name, unknown config field or invalid value.
    """
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    try:
        model = _MODELS[name](**config)
    except TypeError as exc:  # unknown keyword
        raise ConfigError(f"invalid config for model {name!r}: {exc}") from exc
    model.model_name = name
    return model
