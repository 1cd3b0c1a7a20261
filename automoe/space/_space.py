"""The search space: a validated space file, its identity, and its candidates."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml

from automoe.data import load_dataset
from automoe.errors import ConfigError
from automoe.layers import check_routing
from automoe.models import MoENetConfig, default_config, resolve_placement
from automoe.robustness import AttackConfig
from automoe.space._measure import Evaluation, Splits
from automoe.space._metrics import DEFAULT_OBJECTIVES, parse_objectives
from automoe.space._sampling import Candidate, distribution, grid, make_candidate, suggest
from automoe.space._schema import (
    CONSTRAINTS,
    LATENCY_DEFAULTS,
    TOP_KEYS,
    Dimension,
    parse_constraints,
    parse_dataset,
    parse_evaluation,
    parse_fidelity,
    parse_model,
    parse_params,
    parse_sampler,
    rung_epochs,
)
from automoe.training import TrainConfig

# Enough to cover every realistic space; larger products are checked on their first part.
_MAX_COMBINATIONS = 4096


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
    sampler: dict  # {"name", **options}: the sampler and its own keyword arguments
    constraints: dict = field(default_factory=dict)  # name in CONSTRAINTS -> bound
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES  # metric names, in the study's order
    latency: dict = field(default_factory=lambda: dict(LATENCY_DEFAULTS))  # how it is timed
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
        """A validated space from its mapping (see the package docstring for the format).

        Every section is parsed by its own parser in :mod:`._schema`; then the checks that
        span several parameters build candidates at the ends of every range, so that no
        sampled trial is ever invalid.

        Raises:
            ConfigError: ``{source}: {key}: {problem}`` for the first problem found.
        """
        def fail(key: str, message: str):
            raise ConfigError(f"{source}: {key}: {message}")

        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: a search space must be a YAML mapping")
        for key in raw:
            if key not in TOP_KEYS:
                fail(key, f"unknown key; expected one of {', '.join(TOP_KEYS)}")
        name = raw.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name or ""):
            fail("name", f"must be a word of letters, digits, '_', '.' or '-', got {name!r}")
        trials = raw.get("trials", 12)
        if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
            fail("trials", f"must be a positive integer, got {trials!r}")
        description = raw.get("description", "")
        if not isinstance(description, str):
            fail("description", "must be a string")
        model_name, model_fixed = parse_model(raw, fail)
        dimensions, fixed = parse_params(raw, fail)
        eval_batch_size, attack, latency, repeats = parse_evaluation(raw, fail)
        sampler = parse_sampler(raw, fail)
        space = cls(name=name, trials=trials, dataset=parse_dataset(raw, fail),
                    model_name=model_name, model_fixed=model_fixed, dimensions=dimensions,
                    fixed=fixed, eval_batch_size=eval_batch_size, attack=attack,
                    sampler=sampler, constraints=parse_constraints(raw, fail),
                    objectives=parse_objectives(raw.get("objectives"), fail),
                    latency=latency, fidelity=parse_fidelity(raw, dimensions, fixed, fail),
                    repeats=repeats, description=description, source=source,
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

        # k <= E at the ends of the ranges: the fewest experts must admit the lowest top-k
        # (a top-k drawn above the drawn experts builds k = E)
        e_min, _ = bounds("experts", MoENetConfig.num_experts)
        k_min, _ = bounds("top_k", MoENetConfig.top_k)
        try:
            check_routing(num_experts=e_min, top_k=k_min)
        except ConfigError as exc:
            if k_min > e_min >= 1:
                fail("params.top_k", f"top-k {k_min} exceeds {e_min} experts: every experts "
                     f"value must admit at least top_k={k_min} (k <= experts)")
            fail("params.experts" if e_min < 1 else "params.top_k", str(exc))
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
        """Sample a candidate: every searched parameter from its one declared distribution
        (see :mod:`._sampling`)."""
        values = suggest(self.dimensions, trial)
        return self._candidate({**self.fixed, **values}, sampled=values)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Each searched parameter's Optuna distribution, as :meth:`suggest` draws it."""
        return {name: distribution(dim) for name, dim in self.dimensions.items()}

    def grid(self) -> dict[str, list]:
        """Every dimension's values, for the grid sampler (ranges need a ``step``)."""
        return grid(self.dimensions, self.source)

    def _candidate(self, values: dict, sampled: dict | None = None) -> Candidate:
        return make_candidate(self.model_name, self.model_fixed, self.units_per_stage(),
                              values, sampled)

    # ------------------------------------------------------------- identity

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "model": {"name": self.model_name, **self.model_fixed},
            "params": {**{k: list(v) if isinstance(v, tuple) else v
                          for k, v in self.fixed.items()},
                       **{k: d.to_dict() for k, d in self.dimensions.items()}},
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
        return rung_epochs(self.fidelity["min_epochs"], self.fidelity["reduction_factor"],
                           self.fixed.get("epochs", TrainConfig.epochs))

    def measured_metrics(self) -> set[str]:
        """Metrics each trial must measure: the objectives and the constrained ones
        (robust accuracy and latency cost time, so they are skipped when unused)."""
        needed = set(self.objectives) | {CONSTRAINTS[c][0] for c in self.constraints}
        return needed | {"val_accuracy", "mmacs"}

    def load_data(self, root: str | None = None, download: bool = False):
        """``(train set, Splits of val and test)`` of the space's dataset section."""
        ds = self.dataset
        common = dict(root=root, image_size=ds["image_size"], download=download,
                      cache=ds.get("cache"))
        train_set = load_dataset(ds["name"], "train", augment=ds["augment"], **common)
        return train_set, Splits(load_dataset(ds["name"], "val", **common),
                                 load_dataset(ds["name"], "test", **common))

    def evaluation(self, device: str = "cpu", *, test: bool = True) -> Evaluation:
        """How its trials are measured (:func:`~automoe.space.measure`): the robust accuracy
        and latency only when measured (they cost time)."""
        measured = self.measured_metrics()
        return Evaluation(batch_size=self.eval_batch_size,
                          attack=self.attack if "robust_accuracy" in measured else None,
                          latency=self.latency if "latency_ms" in measured else None,
                          test=test, device=device)

    def violations(self, measured: dict) -> dict[str, float]:
        """Optuna 5 constraint values (feasible when <= 0) of the space's constraints on
        the ``measured`` values (metrics and ``params``)."""
        values = {}
        for key, bound in self.constraints.items():
            metric, kind = CONSTRAINTS[key]
            if measured.get(metric) is None:  # e.g. expert use of a dense trial: no router
                values[key] = 0.0
                continue
            values[key] = measured[metric] - bound if kind == "max" else bound - measured[metric]
        return values

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
