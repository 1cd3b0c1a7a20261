"""Declarative search spaces (YAML) and the candidates they describe.

A space file::

    name: default                 # also the default study name
    trials: 12                    # trials per `automoe search` run
    dataset: {name: digits, image_size: 16, augment: false}
    model: {name: resnet8}        # registry name + fixed fields of its config
    params:                       # searched (mapping) or fixed (plain value) parameters
      placement: {choices: [none, last_stage, all]}
      experts: {low: 2, high: 8, step: 2}
      top_k: {low: 1, high: 2}    # built as min(top_k, experts): k <= E by construction
      balance_weight: {low: 1.0e-3, high: 1.0, log: true}
      lr: {low: 0.01, high: 0.2, log: true}
      epochs: 6
      width_multiplier: {choices: [0.5, 1.0]}
    objectives: [val_accuracy, mmacs, robust_accuracy]  # or {val_accuracy: maximize, ...}
    evaluation:
      batch_size: 256
      attack: {eps: 8/255, step_size: 2/255, steps: 10, max_samples: 360}
      latency: {batch_size: 1, repeats: 20}  # only used when latency_ms is measured
      repeats: 1                  # seeds per candidate; objectives are the means over them
    constraints: {mmacs_max: 2.5}  # feasible trials only on the front (also params_max, ...)
    sampler: {name: nsga2, population_size: 8}
    fidelity: {min_epochs: 2, reduction_factor: 3}  # successive halving on epochs (optional)

A searched parameter is ``{choices: [...]}`` (categorical) or ``{low, high[, step][, log]}``
(int when the parameter is an integer, else float). Values may be written as fractions
(``8/255``). Every searched parameter is sampled in every trial from the one distribution
declared here (so evolutionary samplers can evolve it); when the sampled placement puts no
block in MoE form, the MoE parameters are recorded as unused, and a ``top_k`` above the
sampled ``experts`` builds ``top_k = experts``.

Objectives are any of :data:`automoe.search.metrics.METRICS` (val_accuracy,
robust_accuracy, mmacs, mparams, latency_ms); each has its one sensible direction.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from automoe.errors import ConfigError
from automoe.models import MoENetConfig, default_config, list_models, resolve_placement
from automoe.robustness import AttackConfig
from automoe.search.metrics import DEFAULT_OBJECTIVES, parse_objectives
from automoe.training import TrainConfig

# name -> (which config it sets, field in that config, value type)
PARAMS: dict[str, tuple[str, str, type]] = {
    "placement": ("model", "placement", str),
    "experts": ("model", "num_experts", int),
    "top_k": ("model", "top_k", int),
    "balance_weight": ("model", "balance_weight", float),
    "balance_loss": ("model", "balance_loss", str),
    "router": ("model", "router", str),
    "router_norm": ("model", "router_norm", str),
    "router_init": ("model", "router_init", float),
    "router_z_loss": ("model", "router_z_loss", float),
    "expert_init": ("model", "expert_init", str),
    "condconv_temperature": ("model", "condconv_temperature", float),
    "condconv_anneal": ("model", "condconv_anneal", float),
    "gate": ("model", "gate", str),
    "gate_softmax": ("model", "gate_softmax", str),
    "gate_noise_init": ("model", "gate_noise_init", float),
    "capacity_factor": ("model", "capacity_factor", float),
    "overflow": ("model", "overflow", str),
    "batch_priority": ("model", "batch_priority", bool),
    "width_multiplier": ("model", "width_multiplier", float),
    "granularity": ("model", "granularity", str),
    "expert_ratio": ("model", "expert_ratio", float),
    "gate_l1": ("model", "gate_l1", float),
    "embedding_ce": ("model", "embedding_ce", float),
    "scheme": ("train", "scheme", str),
    "adv_eps": ("train", "adv_eps", float),
    "adv_step_size": ("train", "adv_step_size", float),
    "adv_steps": ("train", "adv_steps", int),
    "trades_beta": ("train", "trades_beta", float),
    "advmoe_alpha": ("train", "advmoe_alpha", float),
    "grad_clip": ("train", "grad_clip", float),
    "lr": ("train", "lr", float),
    "epochs": ("train", "epochs", int),
    "batch_size": ("train", "batch_size", int),
    "weight_decay": ("train", "weight_decay", float),
    "momentum": ("train", "momentum", float),
    "precision": ("train", "precision", str),
    "channels_last": ("train", "channels_last", bool),
    "compile": ("train", "compile", bool),
}
# Parameters that only matter when at least one block is MoE.
MOE_PARAMS = ("experts", "top_k", "balance_weight", "balance_loss", "router", "router_norm",
              "router_init", "router_z_loss", "expert_init", "condconv_temperature",
              "condconv_anneal", "gate",
              "gate_softmax", "gate_noise_init", "capacity_factor", "overflow", "batch_priority",
              "granularity", "expert_ratio", "gate_l1", "embedding_ce")
# Optuna samplers, then NNI tuners (through automoe.search.nni_adapter)
SAMPLERS = ("nsga2", "nsga3", "tpe", "random", "gp", "grid", "nni-tpe", "nni-evolution",
            "nni-random")
# Model-config fields that come from the dataset, not from the space.
_DATA_FIELDS = ("in_channels", "num_classes", "image_size", "input_mean", "input_std")
_TOP_KEYS = ("name", "description", "trials", "dataset", "model", "params", "objectives",
             "evaluation", "constraints", "sampler", "fidelity")
# Constraint name -> (measured value it bounds, "max" or "min")
CONSTRAINTS = {"mmacs_max": ("mmacs", "max"), "params_max": ("params", "max"),
               "val_accuracy_min": ("val_accuracy", "min"),
               "robust_accuracy_min": ("robust_accuracy", "min"),
               "latency_ms_max": ("latency_ms", "max"),
               # the fewest effective experts of any MoE layer / E: rejects collapsed routers
               "min_expert_use": ("expert_use", "min")}
# Latency measurement: samples per timed forward, timed runs (median), untimed warm-up runs.
_LATENCY_DEFAULTS = {"batch_size": 1, "repeats": 20, "warmup": 3}
# Enough to cover every realistic space; larger products are checked on their first part.
_MAX_COMBINATIONS = 4096
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


@dataclass
class Candidate:
    """One point of the space: everything needed to build and train a model."""

    model_name: str
    model: dict  # model-config fields (dataset fields are filled in later)
    train: TrainConfig
    params: dict = field(default_factory=dict)  # the sampled values, by space name
    # sampled parameters the built model does not use (MoE parameters of a dense placement)
    unused: tuple[str, ...] = ()

    def architecture(self) -> dict:
        """What the built model is, read from its resolved config (so a field the space
        leaves out shows the config's default): ``{model, moe, placement, granularity,
        experts, top_k, width_multiplier}``; a dense model has 1 expert, top-1."""
        config = default_config(self.model_name, **self.model)
        return {"model": self.model_name, "moe": config.is_moe, "placement": config.placement,
                "granularity": config.granularity, "experts": config.num_experts,
                "top_k": config.top_k, "width_multiplier": config.width_multiplier}

    def to_dict(self) -> dict:
        return {"model_name": self.model_name, "model": self.model,
                "train": self.train.to_dict(), "params": self.params,
                "unused": list(self.unused)}


@dataclass
class SearchSpace:
    """A validated search space."""

    name: str
    trials: int
    dataset: dict  # {"name", "image_size", "augment", "cache"}
    model_name: str
    model_fixed: dict  # fixed model-config fields
    dimensions: dict[str, Dimension]  # searched parameters, in file order
    fixed: dict[str, Any]  # fixed parameters by space name
    eval_batch_size: int
    attack: AttackConfig
    sampler: dict  # {"name", "population_size"}
    constraints: dict = field(default_factory=dict)  # name in CONSTRAINTS -> bound
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES  # metric names, in the study's order
    latency: dict = field(default_factory=lambda: dict(_LATENCY_DEFAULTS))  # how it is timed
    fidelity: dict | None = None  # {"min_epochs", "reduction_factor"}: successive halving
    # seeds each candidate is trained with; its objective values are the means over them
    repeats: int = 1
    raw: dict = field(default_factory=dict)  # the mapping it was read from (workers rebuild it)
    description: str = ""  # one line for `automoe spaces`
    source: str = "<dict>"  # file the space came from, for messages

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SearchSpace:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read search space {str(path)!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError(f"{path}:{where}: {problem}") from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<dict>") -> SearchSpace:
        def fail(key: str, message: str):
            raise ConfigError(f"{source}: {key}: {message}")

        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: a search space must be a YAML mapping")
        for key in raw:
            if key not in _TOP_KEYS:
                fail(key, f"unknown key; expected one of {', '.join(_TOP_KEYS)}")
        name = raw.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
            fail("name", f"must be a word of letters, digits, '_', '.' or '-', got {name!r}")
        trials = raw.get("trials", 12)
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            fail("trials", f"must be a positive integer, got {trials!r}")

        dataset = _mapping(raw.get("dataset", {}), "dataset", fail)
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

        model = dict(_mapping(raw.get("model", {}), "model", fail))
        model_name = model.pop("name", "resnet8")
        if model_name not in list_models():
            fail("model.name", f"unknown model {model_name!r}; registered: "
                 f"{', '.join(list_models())}")
        config_fields = default_config(model_name).__dataclass_fields__
        allowed = {name for name, f in config_fields.items() if f.init}
        for key in model:
            if key in _DATA_FIELDS:
                fail(f"model.{key}", "is set from the dataset, not the space")
            if key not in allowed:
                fail(f"model.{key}", f"unknown model field; expected one of "
                     f"{', '.join(sorted(allowed - set(_DATA_FIELDS)))}")
            if any(p[1] == key for p in PARAMS.values()):
                fail(f"model.{key}", "is a search parameter: set it under params")

        params = _mapping(raw.get("params", {}), "params", fail)
        dimensions: dict[str, Dimension] = {}
        fixed: dict[str, Any] = {}
        for key, spec in params.items():
            if key not in PARAMS:
                fail(f"params.{key}", f"unknown parameter; expected one of {', '.join(PARAMS)}")
            value_type = PARAMS[key][2]
            if isinstance(spec, dict):
                dimensions[key] = _dimension(key, spec, value_type, lambda m, k=key: fail(
                    f"params.{k}", m))
            else:
                fixed[key] = _value(spec, value_type, lambda m, k=key: fail(f"params.{k}", m))

        evaluation = _mapping(raw.get("evaluation", {}), "evaluation", fail)
        for key in evaluation:
            if key not in ("batch_size", "attack", "latency", "repeats"):
                fail(f"evaluation.{key}", "unknown key; expected batch_size, attack, latency, "
                     "repeats")
        repeats = evaluation.get("repeats", 1)
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            fail("evaluation.repeats", f"must be a positive integer, got {repeats!r}")
        eval_batch_size = evaluation.get("batch_size", 256)
        if not isinstance(eval_batch_size, int) or eval_batch_size < 1:
            fail("evaluation.batch_size", f"must be a positive integer, got {eval_batch_size!r}")
        attack_raw = _mapping(evaluation.get("attack", {}), "evaluation.attack", fail)
        attack_types = {"attack": str, "norm": str, "eps": float, "step_size": float,
                        "steps": int, "restarts": int, "random_start": bool,
                        "router_weight": float, "router_target": str, "max_samples": int,
                        "seed": int}
        attack_kwargs = {}
        for key, value in attack_raw.items():
            if key not in attack_types:
                fail(f"evaluation.attack.{key}", f"unknown key; expected "
                     f"{', '.join(attack_types)}")
            attack_kwargs[key] = _value(value, attack_types[key],
                                        lambda m, k=key: fail(f"evaluation.attack.{k}", m))
        try:
            attack = AttackConfig(**attack_kwargs)
        except ConfigError as exc:
            fail("evaluation.attack", str(exc))

        latency = dict(_LATENCY_DEFAULTS)
        for key, value in _mapping(evaluation.get("latency", {}), "evaluation.latency",
                                   fail).items():
            if key not in _LATENCY_DEFAULTS:
                fail(f"evaluation.latency.{key}", f"unknown key; expected "
                     f"{', '.join(_LATENCY_DEFAULTS)}")
            latency[key] = _value(value, int, lambda m, k=key: fail(f"evaluation.latency.{k}", m))
            if latency[key] < (0 if key == "warmup" else 1):
                fail(f"evaluation.latency.{key}", f"must be a positive integer, got {value!r}")
        objectives = parse_objectives(raw.get("objectives"), fail)
        fidelity = None
        if raw.get("fidelity") is not None:
            fidelity = dict(_mapping(raw["fidelity"], "fidelity", fail))
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

        sampler = dict(_mapping(raw.get("sampler", {}), "sampler", fail))
        for key in sampler:
            if key not in ("name", "population_size"):
                fail(f"sampler.{key}", "unknown key; expected name, population_size")
        sampler.setdefault("name", "nsga2")
        sampler.setdefault("population_size", 8)
        if sampler["name"] not in SAMPLERS:
            fail("sampler.name", f"unknown sampler {sampler['name']!r}; expected one of "
                 f"{', '.join(SAMPLERS)}")
        if not isinstance(sampler["population_size"], int) or sampler["population_size"] < 2:
            fail("sampler.population_size", "must be an integer >= 2")

        constraints = {}
        for key, bound in _mapping(raw.get("constraints", {}), "constraints", fail).items():
            if key not in CONSTRAINTS:
                fail(f"constraints.{key}", f"unknown constraint; expected one of "
                     f"{', '.join(CONSTRAINTS)}")
            constraints[key] = _value(bound, float, lambda m, k=key: fail(f"constraints.{k}", m))
        description = raw.get("description", "")
        if not isinstance(description, str):
            fail("description", "must be a string")
        space = cls(name=name, trials=trials, dataset=dataset, model_name=model_name,
                    model_fixed=model, dimensions=dimensions, fixed=fixed,
                    eval_batch_size=eval_batch_size, attack=attack, sampler=sampler,
                    constraints=constraints, objectives=objectives, latency=latency,
                    fidelity=fidelity, repeats=repeats,
                    description=description, source=source,
                    raw=copy.deepcopy(raw))
        space._check_consistency(fail)
        if sampler["name"] == "grid":
            space.grid()
        return space

    def _check_consistency(self, fail) -> None:
        """Checks that span several parameters, so no trial is ever invalid."""
        def bounds(name: str, default):
            if name in self.dimensions:
                return self.dimensions[name].values_bounds()
            value = self.fixed.get(name, default)
            return value, value

        e_min, e_max = bounds("experts", MoENetConfig.num_experts)
        k_min, _ = bounds("top_k", MoENetConfig.top_k)
        if e_min < 1:
            fail("params.experts", f"must be >= 1, got {e_min}")
        if k_min < 1:
            fail("params.top_k", f"must be >= 1, got {k_min}")
        if k_min > e_min:
            fail("params.top_k", f"top-k {k_min} exceeds {e_min} experts: every experts value "
                 f"must admit at least top_k={k_min} (k <= experts)")
        # Every placement must be valid for the backbone.
        blocks = self.units_per_stage()
        placements = (self.dimensions["placement"].choices if "placement" in self.dimensions
                      else [self.fixed.get("placement", MoENetConfig.placement)])
        for placement in placements:
            try:
                resolve_placement(placement, blocks)
            except ConfigError as exc:
                fail("params.placement", str(exc))
        # Build candidates at the ends of every range, for every combination of the
        # categorical choices (router, gate, loss, ...), so no sampled trial is invalid.
        categorical = [d for d in self.dimensions.values() if d.kind == "categorical"]
        ranges = [d for d in self.dimensions.values() if d.kind != "categorical"]
        for combo in itertools.islice(itertools.product(*(d.choices for d in categorical)),
                                      _MAX_COMBINATIONS):
            for end in ("low", "high"):
                values = {**self.fixed, **{d.name: v for d, v in zip(categorical, combo,
                                                                     strict=True)}}
                values.update({d.name: getattr(d, end) for d in ranges})
                if "top_k" in values:
                    values["top_k"] = min(values["top_k"],
                                          values.get("experts", MoENetConfig.num_experts))
                try:
                    self._candidate(values)
                except ConfigError as exc:
                    picked = ", ".join(f"{d.name}={v}" for d, v in zip(categorical, combo,
                                                                      strict=True))
                    fail("params", f"{exc} (with {picked or 'the fixed values'}); "
                         "remove a choice so every combination is valid")

    def units_per_stage(self) -> tuple[int, ...]:
        """Placement units per stage of the space's backbone."""
        return default_config(self.model_name, **self.model_fixed).units_per_stage()

    # --------------------------------------------------------------- sampling

    def suggest(self, trial: optuna.Trial) -> Candidate:
        """Sample a candidate.

        Every searched parameter is drawn from its one declared distribution in every
        trial, whatever else was drawn: Optuna's evolutionary samplers (NSGA-II/III) cross
        over only the parameters whose distribution is the same in all trials, so a range
        that depended on another draw (top_k up to the sampled experts), or a parameter
        skipped for dense placements, would never evolve. The built model is valid anyway:
        ``top_k`` is capped at the sampled experts, and MoE parameters of a dense
        placement are recorded as unused (:attr:`Candidate.unused`).
        """
        values: dict[str, Any] = {}
        for name, dim in self.dimensions.items():
            if dim.kind == "categorical":
                values[name] = trial.suggest_categorical(name, list(dim.choices))
            elif dim.kind == "int":
                values[name] = trial.suggest_int(name, dim.low, dim.high, step=dim.step or 1,
                                                 log=dim.log)
            else:
                values[name] = trial.suggest_float(name, dim.low, dim.high, step=dim.step,
                                                   log=dim.log)
        return self._candidate({**self.fixed, **values}, sampled=values)

    def grid(self) -> dict[str, list]:
        """Every dimension's values, for the grid sampler (ranges need a ``step``)."""
        grid = {}
        for name, dim in self.dimensions.items():
            if dim.kind == "categorical":
                grid[name] = list(dim.choices)
            elif dim.step is None and dim.kind == "float":
                raise ConfigError(f"{self.source}: params.{name}: the grid sampler needs "
                                  "choices or a step for every searched float")
            else:
                step = dim.step or 1
                count = int(math.floor((dim.high - dim.low) / step + 1e-9)) + 1
                grid[name] = [dim.low + i * step for i in range(count)]
                if dim.kind == "float":
                    grid[name] = [round(v, 12) for v in grid[name]]
        return grid

    def _is_moe(self, values: dict) -> bool:
        placement = values.get("placement", self.fixed.get("placement",
                                                           MoENetConfig.placement))
        return any(resolve_placement(placement, self.units_per_stage()))

    def _candidate(self, values: dict, sampled: dict | None = None) -> Candidate:
        model = dict(self.model_fixed)
        train_kwargs: dict[str, Any] = {}
        is_moe = self._is_moe(values)
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
            # k <= E by construction: a k drawn above the drawn experts builds k = E
            experts = model.get("num_experts", MoENetConfig.num_experts)
            model["top_k"] = min(model["top_k"], experts)
        config = default_config(self.model_name, **model)  # validates every model field
        train = TrainConfig(**train_kwargs)
        if train.scheme == "advmoe" and (not is_moe or config.granularity == "channel"):
            raise ConfigError("the advmoe scheme needs routed experts: a placement with MoE "
                              "units and granularity conv, pathway or block")
        sampled = dict(sampled if sampled is not None else values)
        return Candidate(self.model_name, model, train, sampled,
                         unused=tuple(n for n in unused if n in sampled))

    # ------------------------------------------------------------- identity

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "model": {"name": self.model_name, **self.model_fixed},
            "params": {**{k: _jsonable(v) for k, v in self.fixed.items()},
                       **{k: _dim_dict(d) for k, d in self.dimensions.items()}},
            "evaluation": {"batch_size": self.eval_batch_size, "attack": self.attack.to_dict(),
                           # one seed leaves the fingerprint of older studies unchanged
                           **({"repeats": self.repeats} if self.repeats > 1 else {})},
            "constraints": self.constraints,
            "objectives": list(self.objectives),
            **({"latency": self.latency} if "latency_ms" in self.measured_metrics() else {}),
        }

    def rungs(self) -> list[int]:
        """Epochs at which successive halving compares trials (none without ``fidelity``)."""
        if self.fidelity is None:
            return []
        from automoe.search.fidelity import rung_epochs

        return rung_epochs(self.fidelity["min_epochs"], self.fidelity["reduction_factor"],
                           self.fixed.get("epochs", TrainConfig.epochs))

    def measured_metrics(self) -> set[str]:
        """Metrics each trial must measure: the objectives and the constrained ones
        (robust accuracy and latency cost time, so they are skipped when unused)."""
        needed = set(self.objectives) | {CONSTRAINTS[c][0] for c in self.constraints}
        return needed | {"val_accuracy", "mmacs"}

    def fingerprint(self) -> str:
        """Hash of everything that defines the study's candidates and objectives.

        ``trials`` and the sampler are left out: they change how a study is run, not what
        its trials mean, so they may differ between runs of one study.
        """
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_repeats(self, repeats: int | None) -> SearchSpace:
        """A copy training each candidate with ``repeats`` seeds (``--repeats``)."""
        if repeats is None:
            return self
        if repeats < 1:
            raise ConfigError(f"--repeats must be >= 1, got {repeats}")
        space = copy.deepcopy(self)
        space.repeats = repeats
        space.raw["evaluation"] = {**(space.raw.get("evaluation") or {}), "repeats": repeats}
        return space

    def with_dataset(self, name: str | None) -> SearchSpace:
        """A copy using another dataset (``--dataset``)."""
        space = copy.deepcopy(self)
        if name is not None:
            space.dataset["name"] = name
            space.raw.setdefault("dataset", {})
            space.raw["dataset"] = {**(space.raw["dataset"] or {}), "name": name}
        return space


def _mapping(value: Any, key: str, fail) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(key, f"must be a mapping, got {type(value).__name__}")
    return value


def _value(value: Any, value_type: type, fail):
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
        match = _FRACTION.match(value)
        if not match:
            fail(f"must be a number, got {value!r}")
        try:
            value = float(match.group(1)) / float(match.group(2))
        except (ValueError, ZeroDivisionError):
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


def _dimension(name: str, spec: dict, value_type: type, fail) -> Dimension:
    if "choices" in spec:
        extra = set(spec) - {"choices"}
        if extra:
            fail(f"a categorical parameter takes only 'choices', got {sorted(extra)}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            fail("choices must be a non-empty list")
        values = tuple(_value(c, value_type, fail) for c in choices)
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
    low = _value(spec["low"], value_type, fail)
    high = _value(spec["high"], value_type, fail)
    step = None if spec.get("step") is None else _value(spec["step"], value_type, fail)
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


def _dim_dict(dim: Dimension) -> dict:
    if dim.kind == "categorical":
        return {"choices": list(dim.choices)}
    return {"low": dim.low, "high": dim.high, "step": dim.step, "log": dim.log}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def resolve_space_path(space: str | os.PathLike[str]) -> Path:
    """A space given as a file path, or as a name in ``search_spaces/``.

    Names are looked up in ``./search_spaces`` and then in the ``search_spaces`` folder of
    the automoe source tree.
    """
    path = Path(space)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"search space file {str(path)!r} does not exist")
        return path
    here = Path.cwd() / "search_spaces"
    source_tree = Path(__file__).resolve().parents[2] / "search_spaces"
    for folder in (here, source_tree):
        for suffix in (".yaml", ".yml"):
            if (folder / f"{space}{suffix}").exists():
                return folder / f"{space}{suffix}"
    raise ConfigError(f"no search space named {str(space)!r} in ./search_spaces; pass a "
                      "YAML file path")
