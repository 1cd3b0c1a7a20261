"""The metrics a study can optimise, their directions, and Pareto bookkeeping over them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from automoe.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """A measured quantity of a trained candidate."""

    name: str
    direction: str  # "maximize" or "minimize": the only direction that makes sense for it
    label: str  # table column header
    decimals: int  # digits shown in tables
    description: str  # one line for docs and `automoe spaces show`

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    def format(self, value: float | None) -> str:
        return "-" if value is None else f"{value:.{self.decimals}f}"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("val_accuracy", "maximize", "val %", 2, "top-1 % on the validation split"),
    Metric("robust_accuracy", "maximize", "robust %", 2,
           "top-1 % under the space's attack on the validation split"),
    Metric("mmacs", "minimize", "MMACs", 3,
           "multiply-accumulates per sample of the active path (router included), millions"),
    Metric("mparams", "minimize", "Mparams", 3, "parameters of the model, millions"),
    Metric("latency_ms", "minimize", "ms/img", 3,
           "measured eval-forward time per sample on the trial's device (median)"),
    Metric("expert_use", "maximize", "expert use", 2,
           "router health: the fewest effective experts of any MoE layer on the val split, "
           "as a fraction of its E (1/E = collapsed, 1 = even); none for dense models"),
    Metric("specialisation", "maximize", "special.", 2,
           "normalised mutual information between expert choice and class on the val "
           "split, mean over the routed MoE layers, in [0, 1]; 0 for dense models (one "
           "path for every class)"),
)}
# Expert use below which `status` and the pareto table call a trial's routing collapsed:
# some layer uses fewer than half of its experts' worth.
COLLAPSED_BELOW = 0.5
# Measured but not an objective: a dense candidate has no routers, so no value to rank.
NOT_OBJECTIVES = ("expert_use",)
DEFAULT_OBJECTIVES = ("val_accuracy", "mmacs", "robust_accuracy")


def parse_objectives(raw, fail) -> tuple[str, ...]:
    """Objectives from a space file: a list of metric names, or ``{name: direction}``.

    Directions are fixed by the metric (accuracy is maximised, cost minimised); a mapping
    that states the other direction is refused rather than silently flipped.
    """
    if raw is None:
        return DEFAULT_OBJECTIVES
    if isinstance(raw, dict):
        names = list(raw)
        for name, direction in raw.items():
            if name in METRICS and direction != METRICS[name].direction:
                fail(f"objectives.{name}", f"{name} can only be {METRICS[name].direction}d, "
                     f"got {direction!r}")
    elif isinstance(raw, list):
        names = raw
    else:
        fail("objectives", "must be a list of metric names or a mapping name: direction")
    if not names:
        fail("objectives", "needs at least one metric")
    for name in names:
        if name not in METRICS or name in NOT_OBJECTIVES:
            allowed = ", ".join(m for m in METRICS if m not in NOT_OBJECTIVES)
            fail("objectives", f"unknown metric {name!r}; expected one of {allowed} "
                 "(expert_use is a constraint, min_expert_use)" if name in NOT_OBJECTIVES
                 else f"unknown metric {name!r}; expected one of {allowed}")
    if len(set(names)) != len(names):
        fail("objectives", f"repeats a metric: {names}")
    return tuple(names)


def directions(names) -> list[str]:
    return [METRICS[n].direction for n in names]


def minimised(values, names) -> tuple[float, ...]:
    """Values with every maximised metric negated, so that smaller is better in each."""
    return tuple(-v if METRICS[n].maximize else v for v, n in zip(values, names, strict=True))


def default_reference(names, all_values) -> tuple[float, ...]:
    """A hypervolume reference point: 0 for accuracies (a useless model), 1.1 x the worst
    observed value for costs."""
    ref = []
    for i, name in enumerate(names):
        if METRICS[name].maximize:
            ref.append(0.0)
        else:
            observed = [v[i] for v in all_values if math.isfinite(v[i])]
            ref.append(1.1 * max(observed, default=1.0))
    return tuple(ref)


def parse_reference(text: str, names) -> tuple[float, ...]:
    """``--reference`` as comma-separated values in objective order."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != len(names):
        raise ConfigError(f"--reference must be {len(names)} comma-separated numbers "
                          f"({','.join(names)}), got {text!r}")
    return values
