"""Model registry: ``register_model``, ``register_variant``, ``list_models``, ``create_model``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

from automoe.errors import ConfigError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name; a second builder of that name raises.

    A builder takes config fields as keyword arguments. If it has ``config_class`` and
    ``defaults`` attributes, :func:`default_config` can describe it without building it.
    """
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def register_variant(name: str, doc: str, model_cls: type, config_cls: type,
                     defaults: dict) -> None:
    """Register ``name`` as ``model_cls(config_cls(**defaults, **overrides))``."""
    def build(**config) -> nn.Module:
        return model_cls(config_cls(**{**defaults, **config}))

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    build.config_class = config_cls
    build.defaults = dict(defaults)
    register_model(build)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell-style pattern."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def _builder(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name]


def default_config(name: str, **overrides):
    """The config a model would be built with, without building it."""
    builder = _builder(name)
    if not hasattr(builder, "config_class"):
        return create_model(name, **overrides).config
    try:
        return builder.config_class(**{**builder.defaults, **overrides})
    except TypeError as exc:
        raise ConfigError(f"invalid config for model {name!r}: {exc}") from exc


def create_model(name: str, **config) -> nn.Module:
    """Build a registered model; ``config`` overrides the fields of its config dataclass.

    The built model carries ``model_name`` and ``config`` so that
    ``create_model(model.model_name, **model.config.to_dict())`` rebuilds it.

    Raises:
        ConfigError: unknown name, unknown config field or invalid value.
    """
    builder = _builder(name)
    try:
        model = builder(**config)
    except TypeError as exc:  # unknown keyword
        raise ConfigError(f"invalid config for model {name!r}: {exc}") from exc
    model.model_name = name
    return model
