"""The routing rules, in one table: which settings an MoE layer accepts, alone and together.

The layers check their arguments against it, the model configs their fields, and the
search spaces every candidate they can sample (through the configs), so a rule such as
"1 <= k <= E" or "the straight-through gate routes to one expert" is written once. Settings
use the model config's names; a layer passes the ones it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from automoe.errors import ConfigError
from automoe.ops import DISPATCH_MODES

# ------------------------------------------------------------------ the choices
SCORER_TYPES = ("linear", "conv", "mlp", "cosine")
ROUTER_NORMS = ("batch", "none")
GATE_TYPES = ("noisy_topk", "topk", "vmoe", "st_top1")
GATE_SOFTMAX_MODES = ("topk", "topk_st", "all")
OVERFLOW_MODES = ("reassign", "drop")
BALANCE_LOSSES = ("none", "importance", "load", "importance_load", "switch", "entropy",
                  "supervised")
# Losses that need the learned noise of noisy top-k gating.
NEEDS_NOISE = ("load",)
# How a layer's experts start: "shared" copies one initialisation into every expert (as
# sparse upcycling starts every expert from the same dense layer), so each output channel
# means the same thing whichever expert computed it and the next layer sees one input
# distribution; routing different samples to each expert then makes them diverge.
# "independent" draws each expert on its own.
EXPERT_INITS = ("shared", "independent")
# Lower bound on the learned gate noise's std, so the load loss never divides by zero.
MIN_NOISE_STD = 1e-3


@dataclass(frozen=True)
class Rule:
    """One rule: ``holds`` and ``message`` take the ``settings`` in their order."""

    settings: tuple[str, ...]
    holds: Callable[..., bool]
    message: Callable[..., str]


def _one_of(name: str, choices: tuple) -> Rule:
    return Rule((name,), lambda value: value in choices,
                lambda value: f"{name} must be one of {choices}, got {value!r}")


def _at_least_zero(name: str) -> Rule:
    return Rule((name,), lambda value: value >= 0,
                lambda value: f"{name} must be >= 0, got {value}")


ROUTING_RULES: tuple[Rule, ...] = (
    Rule(("num_experts",), lambda num_experts: num_experts >= 1,
         lambda num_experts: f"num_experts must be >= 1, got {num_experts}"),
    Rule(("num_experts", "top_k"), lambda num_experts, top_k: 1 <= top_k <= num_experts,
         lambda num_experts, top_k: f"top_k must be between 1 and num_experts={num_experts}, "
                                    f"got {top_k}"),
    _one_of("gate", GATE_TYPES),
    Rule(("gate", "top_k"), lambda gate, top_k: gate != "st_top1" or top_k == 1,
         lambda gate, top_k: f"gate 'st_top1' routes to one expert; got top_k={top_k}"),
    Rule(("gate", "global_routing"),
         lambda gate, global_routing: not (global_routing and gate == "noisy_topk"),
         # noisy_topk learns its noise from the layer's features, which a global router lacks
         lambda gate, global_routing: "a global router takes gate 'topk', 'vmoe' or 'st_top1'"),
    Rule(("gate", "gate_noise_init"),
         lambda gate, gate_noise_init: gate != "noisy_topk" or gate_noise_init > MIN_NOISE_STD,
         lambda gate, gate_noise_init: f"gate_noise_init must be > {MIN_NOISE_STD}, got "
                                       f"{gate_noise_init}"),
    _one_of("gate_softmax", GATE_SOFTMAX_MODES),
    _one_of("overflow", OVERFLOW_MODES),
    Rule(("capacity_factor",), lambda capacity_factor: capacity_factor is None
         or capacity_factor > 0,
         lambda capacity_factor: f"capacity_factor must be > 0 or null, got {capacity_factor}"),
    _one_of("balance_loss", BALANCE_LOSSES),
    Rule(("balance_loss", "gate"),
         lambda balance_loss, gate: balance_loss not in NEEDS_NOISE or gate == "noisy_topk",
         lambda balance_loss, gate: f"balance_loss {balance_loss!r} needs gate 'noisy_topk', "
                                    f"got {gate!r}"),
    _at_least_zero("balance_weight"),
    _at_least_zero("router_z_loss"),
    _one_of("router_norm", ROUTER_NORMS),
    _one_of("expert_init", EXPERT_INITS),
    _one_of("dispatch", DISPATCH_MODES),
)


def check_routing(**settings) -> None:
    """Check ``settings`` against every rule whose settings are all given.

    Raises:
        ConfigError: (a ``ValueError``) the first rule broken, in its own words.
    """
    for rule in ROUTING_RULES:
        if all(name in settings for name in rule.settings):
            values = [settings[name] for name in rule.settings]
            if not rule.holds(*values):
                raise ConfigError(rule.message(*values))
