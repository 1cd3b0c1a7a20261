"""Training loops."""

from __future__ import annotations

from automoe.training.trainer import (
    TrainConfig,
    TrainResult,
    check_finite,
    evaluate_accuracy,
    make_loader,
    train,
)

__all__ = ["TrainConfig", "TrainResult", "check_finite", "evaluate_accuracy", "make_loader",
           "train"]
