"""What a space file may say: its parameters (derived from the config dataclasses), its
constraints and samplers, and the parsers of its scalar values and searched ranges."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from automoe.errors import ConfigError
from automoe.models import MoENetConfig, default_config, list_models
from automoe.robustness import AttackConfig
from automoe.training import TrainConfig

# Model-config fields that come from the dataset, not from the space.
DATA_FIELDS = ("in_channels", "num_classes", "image_size", "input_mean", "input_std")
# Model-config fields set once under `model:` (structure and execution), never searched.
_MODEL_ONLY = ("global_router_blocks", "embedding_width", "channel_group", "dispatch")
# Train-config fields that are not the candidate's: its seed is the trial's, and loader
# workers are the machine's.
_TRAIN_ONLY = ("seed", "num_workers")
# A parameter's name in a space, where it differs from its config field.
_SPACE_NAME = {"num_experts": "experts"}
# Parameters that shape the model whether or not it has MoE units; the other model
# parameters matter only when at least one unit is MoE.
_DENSE_PARAMS = ("placement", "width_multiplier")


def field_types(config_class: type) -> dict[str, type]:
    """``field -> scalar type`` of a config dataclass's init fields (``float | None`` is
    float), from its annotations: the one statement of each field's type."""
    hints = typing.get_type_hints(config_class)
    types_ = {}
    for f in dataclasses.fields(config_class):
        if not f.init:
            continue
        hint = hints[f.name]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        types_[f.name] = typing.get_origin(hint) or hint
    return types_


def _params() -> dict[str, tuple[str, str, type]]:
    params = {}
    for target, config_class, skipped in (("model", MoENetConfig, (*DATA_FIELDS, *_MODEL_ONLY)),
                                          ("train", TrainConfig, _TRAIN_ONLY)):
        for name, value_type in field_types(config_class).items():
            if name not in skipped:
                params[_SPACE_NAME.get(name, name)] = (target, name, value_type)
    return params


# space name -> (which config it sets, field in that config, value type)
PARAMS: dict[str, tuple[str, str, type]] = _params()
# Parameters that only matter when at least one unit is MoE.
MOE_PARAMS = tuple(name for name, (target, _, _) in PARAMS.items()
                   if target == "model" and name not in _DENSE_PARAMS)
# evaluation.attack keys -> value type
ATTACK_FIELDS = field_types(AttackConfig)
# Constraint name -> (measured value it bounds, "max" or "min")
CONSTRAINTS = {"mmacs_max": ("mmacs", "max"), "params_max": ("params", "max"),
               "val_accuracy_min": ("val_accuracy", "min"),
               "robust_accuracy_min": ("robust_accuracy", "min"),
               "latency_ms_max": ("latency_ms", "max"),
               # the fewest effective experts of any MoE layer / E: rejects collapsed routers
               "min_expert_use": ("expert_use", "min"),
               # how much the expert choice tells about the class (NMI, 0..1)
               "min_specialisation": ("specialisation", "min")}
TOP_KEYS = ("name", "description", "trials", "dataset", "model", "params", "objectives",
            "evaluation", "constraints", "sampler", "fidelity")
# Latency measurement: samples per timed forward, timed runs (median), untimed warm-up runs.
LATENCY_DEFAULTS = {"batch_size": 1, "repeats": 20, "warmup": 3}
_FRACTION = re.compile(r"^\s*([0-9.eE+-]+)\s*/\s*([0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class Dimension:
    """One searched parameter."""

    name: str
    kind: str  # "int", "float" or "categorical"
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def values_bounds(self) -> tuple[Any, Any]:
        """Smallest and largest value this dimension can take."""
        if self.kind == "categorical":
            return min(self.choices), max(self.choices)
        return self.low, self.high

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "step": self.step, "log": self.log}


def parse_number(text: str | float) -> float:
    """A number, or a fraction written ``8/255``.

    Raises:
        ValueError: neither.
    """
    if not isinstance(text, str):
        return float(text)
    match = _FRACTION.match(text)
    if match:
        try:
            return float(match.group(1)) / float(match.group(2))
        except ZeroDivisionError:
            raise ValueError(f"{text!r} divides by zero") from None
    return float(text)


def mapping(value: Any, key: str, fail) -> dict:
    """A section that must be a mapping (absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(key, f"must be a mapping, got {type(value).__name__}")
    return value


def value_of(value: Any, value_type: type, fail):
    """Coerce a YAML scalar to ``value_type``; fractions like ``8/255`` become floats."""
    if value_type is bool:
        if not isinstance(value, bool):
            fail(f"must be true or false, got {value!r}")
        return value
    if value_type is str:
        if not isinstance(value, str):
            fail(f"must be a string, got {value!r}")
        return value
    if isinstance(value, str):
        if not _FRACTION.match(value):
            fail(f"must be a number, got {value!r}")
        try:
            value = parse_number(value)
        except ValueError:
            fail(f"must be a number, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(f"must be a number, got {value!r}")
    if value_type is int:
        if isinstance(value, float) and not value.is_integer():
            fail(f"must be an integer, got {value!r}")
        return int(value)
    if not math.isfinite(value):
        fail(f"must be finite, got {value!r}")
    return float(value)


def dimension(name: str, spec: dict, value_type: type, fail) -> Dimension:
    """A searched parameter from ``{choices: [...]}`` or ``{low, high[, step][, log]}``."""
    if "choices" in spec:
        extra = set(spec) - {"choices"}
        if extra:
            fail(f"a categorical parameter takes only 'choices', got {sorted(extra)}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            fail("choices must be a non-empty list")
        values = tuple(value_of(c, value_type, fail) for c in choices)
        if len(set(values)) != len(values):
            fail(f"choices repeat a value: {list(values)}")
        return Dimension(name, "categorical", choices=values)
    extra = set(spec) - {"low", "high", "step", "log"}
    if extra:
        fail(f"unknown keys {sorted(extra)}; a range takes low, high, step, log")
    if "low" not in spec or "high" not in spec:
        fail("a searched parameter needs 'choices' or both 'low' and 'high'")
    if value_type in (bool, str):
        fail("a boolean or string parameter is searched with 'choices'")
    low = value_of(spec["low"], value_type, fail)
    high = value_of(spec["high"], value_type, fail)
    step = None if spec.get("step") is None else value_of(spec["step"], value_type, fail)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        fail(f"log must be true or false, got {log!r}")
    if low > high:
        fail(f"low {low} is greater than high {high}")
    if log and low <= 0:
        fail(f"log scale needs low > 0, got {low}")
    if log and step is not None:
        fail("log scale and step cannot be combined")
    if step is not None and step <= 0:
        fail(f"step must be positive, got {step}")
    kind = "int" if value_type is int else "float"
    return Dimension(name, kind, low=low, high=high, step=step, log=log)


# ------------------------------------------------------------------ sections of a file
# Each parser takes the whole raw mapping and ``fail(key, message)``, which raises.


def parse_dataset(raw: dict, fail) -> dict:
    """``{"name", "image_size", "augment", "cache"}``."""
    dataset = mapping(raw.get("dataset", {}), "dataset", fail)
    for key in dataset:
        if key not in ("name", "image_size", "augment", "cache"):
            fail(f"dataset.{key}", "unknown key; expected name, image_size, augment, cache")
    dataset = {"name": dataset.get("name", "digits"),
               "image_size": dataset.get("image_size"),
               "augment": bool(dataset.get("augment", False)),
               # true / false, or unset: in memory when it fits (load_dataset's cache)
               "cache": dataset.get("cache")}
    if dataset["cache"] not in (None, True, False):
        fail("dataset.cache", f"must be true or false, got {dataset['cache']!r}")
    size = dataset["image_size"]
    if size is not None and (not isinstance(size, int) or size < 4):
        fail("dataset.image_size", f"must be an integer >= 4, got {size!r}")
    return dataset


def parse_model(raw: dict, fail) -> tuple[str, dict]:
    """``(registry name, fixed model-config fields)``."""
    model = dict(mapping(raw.get("model", {}), "model", fail))
    model_name = model.pop("name", "resnet8")
    if model_name not in list_models():
        fail("model.name", f"unknown model {model_name!r}; registered: "
             f"{', '.join(list_models())}")
    allowed = set(field_types(type(default_config(model_name))))
    for key in model:
        if key in DATA_FIELDS:
            fail(f"model.{key}", "is set from the dataset, not the space")
        if key not in allowed:
            fail(f"model.{key}", f"unknown model field; expected one of "
                 f"{', '.join(sorted(allowed - set(DATA_FIELDS)))}")
        if any(p[1] == key for p in PARAMS.values()):
            fail(f"model.{key}", "is a search parameter: set it under params")
    return model_name, model


def parse_params(raw: dict, fail) -> tuple[dict[str, Dimension], dict[str, Any]]:
    """``(searched dimensions, fixed values)``, both by space name, in file order."""
    params = mapping(raw.get("params", {}), "params", fail)
    dimensions: dict[str, Dimension] = {}
    fixed: dict[str, Any] = {}
    for key, spec in params.items():
        if key not in PARAMS:
            fail(f"params.{key}", f"unknown parameter; expected one of {', '.join(PARAMS)}")
        value_type = PARAMS[key][2]

        def fail_here(message, k=key):
            fail(f"params.{k}", message)

        if isinstance(spec, dict):
            dimensions[key] = dimension(key, spec, value_type, fail_here)
        else:
            fixed[key] = value_of(spec, value_type, fail_here)
    return dimensions, fixed


def parse_evaluation(raw: dict, fail) -> tuple[int, AttackConfig, dict, int]:
    """``(eval batch size, proxy attack, latency settings, repeats)``."""
    evaluation = mapping(raw.get("evaluation", {}), "evaluation", fail)
    for key in evaluation:
        if key not in ("batch_size", "attack", "latency", "repeats"):
            fail(f"evaluation.{key}", "unknown key; expected batch_size, attack, latency, "
                 "repeats")
    repeats = evaluation.get("repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        fail("evaluation.repeats", f"must be a positive integer, got {repeats!r}")
    batch_size = evaluation.get("batch_size", 256)
    if not isinstance(batch_size, int) or batch_size < 1:
        fail("evaluation.batch_size", f"must be a positive integer, got {batch_size!r}")
    attack_kwargs = {}
    for key, value in mapping(evaluation.get("attack", {}), "evaluation.attack", fail).items():
        if key not in ATTACK_FIELDS:
            fail(f"evaluation.attack.{key}", f"unknown key; expected {', '.join(ATTACK_FIELDS)}")
        attack_kwargs[key] = value_of(value, ATTACK_FIELDS[key],
                                      lambda m, k=key: fail(f"evaluation.attack.{k}", m))
    try:
        attack = AttackConfig(**attack_kwargs)
    except ConfigError as exc:
        fail("evaluation.attack", str(exc))
    latency = dict(LATENCY_DEFAULTS)
    for key, value in mapping(evaluation.get("latency", {}), "evaluation.latency",
                              fail).items():
        if key not in LATENCY_DEFAULTS:
            fail(f"evaluation.latency.{key}", f"unknown key; expected "
                 f"{', '.join(LATENCY_DEFAULTS)}")
        latency[key] = value_of(value, int, lambda m, k=key: fail(f"evaluation.latency.{k}", m))
        if latency[key] < (0 if key == "warmup" else 1):
            fail(f"evaluation.latency.{key}", f"must be a positive integer, got {value!r}")
    return batch_size, attack, latency, repeats


def parse_fidelity(raw: dict, dimensions: dict, fixed: dict, fail) -> dict | None:
    """``{"min_epochs", "reduction_factor"}`` of successive halving, or None."""
    if raw.get("fidelity") is None:
        return None
    fidelity = dict(mapping(raw["fidelity"], "fidelity", fail))
    for key in fidelity:
        if key not in ("min_epochs", "reduction_factor"):
            fail(f"fidelity.{key}", "unknown key; expected min_epochs, reduction_factor")
    fidelity.setdefault("min_epochs", 1)
    fidelity.setdefault("reduction_factor", 3)
    for key, low in (("min_epochs", 1), ("reduction_factor", 2)):
        value = fidelity[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            fail(f"fidelity.{key}", f"must be an integer >= {low}, got {value!r}")
    if "epochs" in dimensions:
        fail("fidelity", "successive halving runs every trial to the same epochs: set "
             "params.epochs to one value, not a range")
    max_epochs = fixed.get("epochs", TrainConfig.epochs)
    if fidelity["min_epochs"] >= max_epochs:
        fail("fidelity.min_epochs", f"must be below params.epochs ({max_epochs}), got "
             f"{fidelity['min_epochs']}")
    return fidelity


# The sampler of a space that names none: multivariate TPE after 5 random trials. On the
# tabular benchmark of the default space and on 7 public tables it reached random search's
# front sooner than the other Optuna samplers, and NSGA-II (the earlier default) did not
# beat random at 24-50 trials (bench/results/search_table.md and search_public.md).
DEFAULT_SAMPLER = {"name": "tpe", "multivariate": True, "n_startup_trials": 5}


def parse_sampler(raw: dict, fail) -> dict:
    """``{"name", **options}``: the sampler's name and its own keyword arguments (e.g.
    ``population_size`` of nsga2, ``multivariate`` of tpe); no section is
    :data:`DEFAULT_SAMPLER`. The name and the options are checked against automoe.search's
    sampler table (which plug-ins extend) when the study is created; here their form."""
    sampler = dict(mapping(raw.get("sampler", {}), "sampler", fail))
    if not sampler:
        sampler = dict(DEFAULT_SAMPLER)
    if "name" not in sampler:
        fail("sampler.name", "name the sampler these options are for")
    if not isinstance(sampler["name"], str) or not sampler["name"]:
        fail("sampler.name", "must be a sampler's name")
    for key, value in sampler.items():
        if not isinstance(key, str) or not key.isidentifier():
            fail(f"sampler.{key}", "an option's name must be an identifier")
        if not isinstance(value, str | int | float | bool | list | dict | None):
            fail(f"sampler.{key}", f"must be a YAML scalar, list or mapping, got {value!r}")
    population = sampler.get("population_size")
    if population is not None and (not isinstance(population, int)
                                   or isinstance(population, bool) or population < 2):
        fail("sampler.population_size", "must be an integer >= 2")
    return sampler


def parse_constraints(raw: dict, fail) -> dict[str, float]:
    """Constraint name (in :data:`CONSTRAINTS`) -> bound."""
    constraints = {}
    for key, bound in mapping(raw.get("constraints", {}), "constraints", fail).items():
        if key not in CONSTRAINTS:
            fail(f"constraints.{key}", f"unknown constraint; expected one of "
                 f"{', '.join(CONSTRAINTS)}")
        constraints[key] = value_of(bound, float, lambda m, k=key: fail(f"constraints.{k}", m))
    return constraints


def rung_epochs(min_epochs: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """Epochs at which trials are compared, below ``max_epochs`` (the final evaluation)."""
    rungs, epochs = [], min_epochs
    while epochs < max_epochs:
        rungs.append(epochs)
        epochs *= reduction_factor
    return rungs
