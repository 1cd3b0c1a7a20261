"""Training loops and their pieces."""

from __future__ import annotations

from automoe.training.batchnorm import recalibrate_batchnorm
from automoe.training.config import PRECISIONS, UPCYCLE_SCHEDULES, TrainConfig
from automoe.training.optim import cosine_schedule, make_optimizer, param_groups
from automoe.training.trainer import (
    TrainResult,
    check_finite,
    evaluate_accuracy,
    make_loader,
    train,
)

__all__ = ["PRECISIONS", "UPCYCLE_SCHEDULES", "TrainConfig", "TrainResult", "check_finite", "cosine_schedule",
           "evaluate_accuracy", "make_loader", "make_optimizer", "param_groups", "recalibrate_batchnorm",
           "train"]
