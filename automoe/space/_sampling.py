"""From sampled values to a candidate: one resolved model config and train config.

Every searched parameter is drawn from its one declared distribution in every trial,
whatever else was drawn: Optuna's evolutionary samplers (NSGA-II/III) cross over only the
parameters whose distribution is the same in all trials, so a range that depended on
another draw (top_k up to the sampled experts), or a parameter skipped for dense
placements, would never evolve. The built model is valid anyway: ``top_k`` is capped at the
sampled experts, and MoE parameters of a dense placement are recorded as unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from automoe.errors import ConfigError
from automoe.models import MoENetConfig, create_model, default_config, resolve_placement
from automoe.space._schema import MOE_PARAMS, PARAMS, Dimension
from automoe.training import TrainConfig


@dataclass
class Candidate:
    """One point of the space: everything needed to build and train a model."""

    model_name: str
    model: dict  # model-config fields (dataset fields are filled in later)
    train: TrainConfig
    params: dict = field(default_factory=dict)  # the sampled values, by space name
    # sampled parameters the built model does not use (MoE parameters of a dense placement)
    unused: tuple[str, ...] = ()
    # the resolved model config (every field, defaults included; dataset fields not yet)
    config: MoENetConfig | None = field(default=None, repr=False, compare=False)

    def architecture(self) -> dict:
        """What the built model is, read from its resolved config (so a field the space
        leaves out shows the config's default): ``{model, moe, placement, granularity,
        experts, top_k, width_multiplier}``; a dense model has 1 expert, top-1."""
        config = self.config or default_config(self.model_name, **self.model)
        return {"model": self.model_name, "moe": config.is_moe, "placement": config.placement,
                "granularity": config.granularity, "experts": config.num_experts,
                "top_k": config.top_k, "width_multiplier": config.width_multiplier}

    def build_model(self, info):
        """The candidate's model for a dataset (its fields filled from ``info``)."""
        return create_model(self.model_name, **self.model, in_channels=info.in_channels,
                            num_classes=info.num_classes, image_size=info.image_size,
                            input_mean=info.mean, input_std=info.std)

    def to_dict(self) -> dict:
        return {"model_name": self.model_name, "model": self.model,
                "train": self.train.to_dict(), "params": self.params,
                "unused": list(self.unused)}


def suggest(dimensions: dict[str, Dimension], trial: optuna.Trial) -> dict[str, Any]:
    """Draw every dimension from its declared distribution (see the module docstring)."""
    values: dict[str, Any] = {}
    for name, dim in dimensions.items():
        if dim.kind == "categorical":
            values[name] = trial.suggest_categorical(name, list(dim.choices))
        elif dim.kind == "int":
            values[name] = trial.suggest_int(name, dim.low, dim.high, step=dim.step or 1,
                                             log=dim.log)
        else:
            values[name] = trial.suggest_float(name, dim.low, dim.high, step=dim.step,
                                               log=dim.log)
    return values


def distribution(dim: Dimension) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution :func:`suggest` draws ``dim`` from (a test holds them equal)."""
    if dim.kind == "categorical":
        return optuna.distributions.CategoricalDistribution(list(dim.choices))
    if dim.kind == "int":
        return optuna.distributions.IntDistribution(dim.low, dim.high, step=dim.step or 1,
                                                    log=dim.log)
    return optuna.distributions.FloatDistribution(dim.low, dim.high, step=dim.step, log=dim.log)


def grid(dimensions: dict[str, Dimension], source: str) -> dict[str, list]:
    """Every dimension's values, for the grid sampler (ranges need a ``step``)."""
    values = {}
    for name, dim in dimensions.items():
        if dim.kind == "categorical":
            values[name] = list(dim.choices)
        elif dim.step is None and dim.kind == "float":
            raise ConfigError(f"{source}: params.{name}: the grid sampler needs "
                              "choices or a step for every searched float")
        else:
            step = dim.step or 1
            count = int(math.floor((dim.high - dim.low) / step + 1e-9)) + 1
            values[name] = [dim.low + i * step for i in range(count)]
            if dim.kind == "float":
                values[name] = [round(v, 12) for v in values[name]]
    return values


def make_candidate(model_name: str, model_fixed: dict, units_per_stage: tuple[int, ...],
                   values: dict, sampled: dict | None = None) -> Candidate:
    """The candidate of ``values`` (fixed and sampled, by space name): the one place a
    sampled point becomes a model config and a train config.

    A dense placement builds one expert, top-1, and records the MoE parameters as unused;
    a ``top_k`` above the experts builds ``top_k = experts`` (k <= E by construction).

    Raises:
        ConfigError: the values make an invalid model or training config.
    """
    model = dict(model_fixed)
    train_kwargs: dict[str, Any] = {}
    # whether any unit is MoE: the rule of MoENetConfig.is_moe, before a config exists
    is_moe = any(resolve_placement(values.get("placement", MoENetConfig.placement),
                                   units_per_stage))
    unused = []
    for name, value in values.items():
        target, field_name, _ = PARAMS[name]
        if name in MOE_PARAMS and not is_moe:
            unused.append(name)
            continue
        (model if target == "model" else train_kwargs)[field_name] = value
    if not is_moe:  # a dense net: record it as one expert, top-1
        model.update(num_experts=1, top_k=1)
    elif "top_k" in values:
        model["top_k"] = min(model["top_k"], model.get("num_experts", MoENetConfig.num_experts))
    config = default_config(model_name, **model)  # validates every model field
    train = TrainConfig(**train_kwargs)
    if train.scheme == "advmoe" and (not config.is_moe or config.granularity == "channel"):
        raise ConfigError("the advmoe scheme needs routed experts: a placement with MoE "
                          "units and granularity conv, pathway or block")
    sampled = dict(sampled if sampled is not None else values)
    return Candidate(model_name, model, train, sampled,
                     unused=tuple(n for n in unused if n in sampled), config=config)
