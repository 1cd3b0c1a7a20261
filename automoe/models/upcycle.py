"""Sparse upcycling (Komatsuzaki et al. 2023): MoE experts start as copies of a trained
dense layer.

A model's *dense twin* is the same backbone at the same widths with no MoE unit. After the
twin has trained, :func:`upcycle` copies every dense weight into the MoE model: layers that
are dense in both are copied as they are, and each MoE conv or block gets the dense conv
or block in every one of its E experts. Only the routers keep their own initialisation.
With gates that sum to 1 per sample (``gate_softmax`` "topk" or "topk_st", the
straight-through top-1 gate) every sample's output is then exactly the twin's, whichever
experts the router picks, so the MoE starts from the dense net's function.
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch import nn

from automoe.errors import ConfigError

# Granularities whose experts have the dense layer's shape, so a copy is exact: conv and
# block experts, and CondConv's kernels (a softmax mixture of equal kernels is that kernel).
# Pathway experts are narrower than the dense conv and channel gates have no expert copy.
UPCYCLABLE = ("conv", "block", "condconv")
# Granularities that upcycle when a training config leaves `upcycle` unset: the routed
# experts the MoE recipe measured (bench/results/moe_quality.md, "Clean accuracy"). CondConv trains
# every kernel from the first step and reached its figures from scratch.
UPCYCLED_BY_DEFAULT = ("conv", "block")
# A block expert's parameter: "<unit>.experts.<e>.<name in the dense block>".
_BLOCK_EXPERT = re.compile(r"^(?P<unit>.+)\.experts\.(?P<expert>\d+)\.(?P<rest>.+)$")


def check_upcyclable(config) -> None:
    """Refuse, in one line, a model config whose MoE units cannot start from its dense twin."""
    if config.is_moe and config.granularity not in UPCYCLABLE:
        raise ConfigError(f"upcycling copies a dense layer into experts of its own shape; "
                          f"granularity {config.granularity!r} has none (use one of "
                          f"{', '.join(UPCYCLABLE)})")


def dense_twin(model: nn.Module) -> nn.Module:
    """A new model of ``model``'s class and config with ``placement="none"``: the same
    stem, widths and head, every unit dense (freshly initialised)."""
    config = replace(model.config, placement="none")
    return type(model)(config)


def _is_router(name: str) -> bool:
    return ".router." in f".{name}" or name.startswith("global_router.") or ".mixer." in name


@torch.no_grad()
def upcycle(moe: nn.Module, dense: nn.Module, noise: float = 0.0, *,
            generator: torch.Generator | None = None) -> None:
    """Copy the trained dense twin ``dense`` into ``moe`` in place (routers excepted).

    Args:
        noise: std of Gaussian noise added to each expert's copied weights, relative to the
            std of that dense weight (0: exact copies). It breaks the experts' symmetry at
            the cost of the exact start.
        generator: draws the noise (a seeded one makes the copy repeatable).

    Raises:
        ConfigError: a parameter of ``moe`` has no counterpart in ``dense`` (pathway or
            channel experts, or a twin of another architecture).
    """
    check_upcyclable(moe.config)
    source = dense.state_dict()
    target = moe.state_dict()
    learned = {name for name, _ in moe.named_parameters()}  # noise on weights, not BN stats
    for name, tensor in target.items():
        if _is_router(name) or name.endswith(".temperature"):
            continue  # new: the router is the only part the dense net does not have
        if name in source and source[name].shape == tensor.shape:
            tensor.copy_(source[name])  # dense in both
            continue
        match = _BLOCK_EXPERT.match(name)
        origin = f"{match['unit']}.{match['rest']}" if match else name
        weight = source.get(origin)
        if weight is None or tensor.shape[-weight.dim():] != weight.shape or (
                not match and tensor.dim() != weight.dim() + 1):
            raise ConfigError(f"cannot upcycle {name!r} {tuple(tensor.shape)}: the dense twin "
                              f"has no parameter of that shape")
        tensor.copy_(weight.expand_as(tensor))  # (E, O, C, kh, kw) <- (O, C, kh, kw)
        if noise > 0 and name in learned:
            spread = weight.float().std().item() if weight.numel() > 1 else 0.0
            tensor.add_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
                        .to(tensor.device) * (noise * spread))

