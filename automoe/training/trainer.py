"""Supervised training: SGD with Nesterov momentum and a per-step cosine schedule."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from automoe.errors import ConfigError, TrainingDivergedError


@dataclass
class TrainConfig:
    """Training recipe."""

    epochs: int = 10  # passes over the training split
    batch_size: int = 64  # samples per SGD step
    lr: float = 0.05  # peak learning rate, cosine-annealed to 0 over all steps
    momentum: float = 0.9  # SGD momentum (Nesterov)
    weight_decay: float = 5e-4  # L2 on every parameter
    seed: int = 0  # seeds batch order and gate noise
    num_workers: int = 0  # DataLoader workers; 0 loads in the main process

    def __post_init__(self):
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """Learning curve and cost of one training run."""

    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    seconds: float = 0.0  # wall time of the training loop


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=False)


def train(
    model: nn.Module,
    train_set: Dataset,
    config: TrainConfig,
    device: torch.device | str = "cpu",
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on cross-entropy plus its balancing losses.

    Args:
        model: a classifier; if it has ``aux_loss(targets)`` that term is added to the loss.
        on_step: called as ``on_step(step, total_steps)`` after each optimiser step.

    Raises:
        TrainingDivergedError: the loss became NaN or infinite.
    """
    device = torch.device(device)
    model.to(device)
    torch.manual_seed(config.seed)  # gate noise
    loader = make_loader(train_set, config.batch_size, shuffle=True, seed=config.seed,
                         num_workers=config.num_workers)
    total_steps = config.epochs * len(loader)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.momentum > 0, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    aux_loss_fn = getattr(model, "aux_loss", None)
    result = TrainResult()
    start = time.perf_counter()
    step = 0
    for epoch in range(config.epochs):
        model.train()
        sums = torch.zeros(3, dtype=torch.float64)  # task loss, aux loss, correct
        seen = 0
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            logits = model(images)
            task_loss = F.cross_entropy(logits, labels)
            aux = aux_loss_fn(labels) if aux_loss_fn is not None else task_loss.new_zeros(())
            loss = task_loss + aux
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(lr={config.lr:g}); lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            n = labels.shape[0]
            sums += torch.tensor([task_loss.item() * n, float(aux.detach()) * n,
                                  (logits.argmax(1) == labels).sum().item()], dtype=torch.float64)
            seen += n
            if on_step is not None:
                on_step(step, total_steps)
        loss_sum, aux_sum, correct = (sums / max(seen, 1)).tolist()
        result.history.append({"epoch": epoch + 1, "loss": loss_sum, "aux_loss": aux_sum,
                               "train_accuracy": correct})
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, dataset: Dataset, batch_size: int = 256,
                      device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy in ``[0, 1]`` with the model in eval mode."""
    device = torch.device(device)
    model.to(device).eval()
    correct = total = 0
    for images, labels in make_loader(dataset, batch_size):
        logits = model(images.to(device))
        correct += (logits.argmax(1).cpu() == labels).sum().item()
        total += labels.shape[0]
    return correct / max(total, 1)
