"""An upcycling run's two phases: the dense twin's epochs, then the MoE's."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from automoe.layers import to_channels_last
from automoe.models.upcycle import check_upcyclable, dense_twin, upcycle
from automoe.training.config import TrainConfig
from automoe.training.optim import cosine_schedule


@dataclass
class Phase:
    """Epochs ``[first_epoch, end_epoch)`` of a run, trained on ``net``."""

    net: nn.Module  # the model, or its dense twin in an upcycling run's dense phase
    first_epoch: int
    end_epoch: int
    config: TrainConfig  # the phase's recipe (the dense phase of advmoe runs trades)


def training_phases(model: nn.Module, config: TrainConfig, device: torch.device) -> list[Phase]:
    """One phase, or the dense twin's and then the MoE's when the run upcycles."""
    model_config = getattr(model, "config", None)
    dense_epochs = config.dense_epochs(model_config)
    if dense_epochs == 0 or model_config is None or not model_config.is_moe:
        return [Phase(model, 0, config.epochs, config)]
    check_upcyclable(model_config)
    twin = dense_twin(model).to(device)
    if config.channels_last:
        to_channels_last(twin)
    # AdvMoE's expert step is TRADES; the twin has no router for its router step
    twin_config = replace(config, scheme="trades") if config.scheme == "advmoe" else config
    return [Phase(twin, 0, dense_epochs, twin_config),
            Phase(model, dense_epochs, config.epochs, config)]


def upcycle_into(model: nn.Module, twin: nn.Module, config: TrainConfig) -> None:
    """Copy the dense twin into ``model``'s experts; the noise is drawn from the run's seed
    alone, so the copy is the same however often it is made (every dense epoch, resume)."""
    generator = torch.Generator().manual_seed(config.seed)
    upcycle(model, twin, config.upcycle_noise, generator=generator)


def phase_schedule(optimizer: torch.optim.Optimizer, phase: Phase, steps_per_epoch: int,
                   config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """The phase's lr schedule: the run's cosine, or after a dense phase either its
    continuation (``upcycle_schedule="continue"``) or a fresh cosine (``"restart"``)."""
    total = config.epochs * steps_per_epoch
    if phase.first_epoch == 0:
        return cosine_schedule(optimizer, phase.end_epoch * steps_per_epoch
                               if phase.end_epoch < config.epochs
                               and config.upcycle_schedule == "restart" else total)
    if config.upcycle_schedule == "restart":
        return cosine_schedule(optimizer, (phase.end_epoch - phase.first_epoch) * steps_per_epoch)
    offset = phase.first_epoch * steps_per_epoch

    def factor(step: int) -> float:  # the closed form of CosineAnnealingLR, `offset` steps on
        return 0.5 * (1 + math.cos(math.pi * min(offset + step, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
