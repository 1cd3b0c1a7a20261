"""Training loops and their pieces."""

from __future__ import annotations

from automoe.training.batchnorm import recalibrate_batchnorm
from automoe.training.trainer import (
    TrainConfig,
    TrainResult,
    check_finite,
    cosine_schedule,
    evaluate_accuracy,
    make_loader,
    make_optimizer,
    train,
)

__all__ = ["TrainConfig", "TrainResult", "check_finite", "cosine_schedule",
           "evaluate_accuracy", "make_loader", "make_optimizer", "recalibrate_batchnorm",
           "train"]
