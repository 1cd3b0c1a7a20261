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
    sampler: {name: nsga2, population_size: 8}   # name, then the sampler's own options
    fidelity: {min_epochs: 2, reduction_factor: 3}  # successive halving on epochs (optional)

A searched parameter is ``{choices: [...]}`` (categorical) or ``{low, high[, step][, log]}``
(int when the parameter is an integer, else float). Values may be written as fractions
(``8/255``). Every searched parameter is sampled in every trial from the one distribution
declared here (so evolutionary samplers can evolve it); when the sampled placement puts no
block in MoE form, the MoE parameters are recorded as unused, and a ``top_k`` above the
sampled ``experts`` builds ``top_k = experts``.

Objectives are any of :data:`automoe.space.METRICS` (val_accuracy,
robust_accuracy, mmacs, mparams, latency_ms); each has its one sensible direction.

The package's parts: ``_schema`` (what a file may say: parameters derived from the config
dataclasses, constraints, samplers, value and section parsers), ``_space``
(:class:`SearchSpace`: validation across parameters, identity), ``_sampling`` (from sampled
values to a :class:`Candidate`), ``_catalogue`` (spaces found by name) and ``_metrics``
(the metrics table: what each objective is, its direction and unit). The front is lazy:
the catalogue and the metrics table load without torch.
"""

from __future__ import annotations

from automoe._lazy import lazy_front

_EXPORTS = {
    "list_spaces": "._catalogue", "resolve_space_path": "._catalogue",
    "space_folders": "._catalogue",
    "COLLAPSED_BELOW": "._metrics", "DEFAULT_OBJECTIVES": "._metrics", "METRICS": "._metrics",
    "Metric": "._metrics", "default_reference": "._metrics", "directions": "._metrics",
    "minimised": "._metrics", "parse_objectives": "._metrics", "parse_reference": "._metrics",
    "Evaluation": "._measure", "Measurement": "._measure", "Splits": "._measure",
    "measure": "._measure",
    "Candidate": "._sampling",
    "CONSTRAINTS": "._schema", "DEFAULT_SAMPLER": "._schema", "MOE_PARAMS": "._schema",
    "PARAMS": "._schema",
    "Dimension": "._schema", "parse_number": "._schema", "rung_epochs": "._schema",
    "SearchSpace": "._space",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
