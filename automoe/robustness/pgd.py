"""Projected gradient descent under an L-infinity budget (Madry et al. 2018).

Models take ``[0, 1]`` pixels, so ``eps`` and ``step_size`` are in pixel units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from automoe.errors import ConfigError


@dataclass
class PGDConfig:
    """An L-inf PGD attack."""

    eps: float = 8 / 255  # radius of the L-inf ball, [0, 1] pixel units
    step_size: float = 2 / 255  # signed-gradient step, pixel units
    steps: int = 10  # gradient steps
    random_start: bool = True  # start from a uniform point in the ball
    max_samples: int | None = None  # attack only the first N samples of a dataset
    seed: int = 0  # seeds the random start

    def __post_init__(self):
        if self.eps < 0 or self.step_size < 0:
            raise ConfigError(f"eps and step_size must be >= 0, got {self.eps}, {self.step_size}")
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {self.max_samples}")

    def to_dict(self) -> dict:
        return {"norm": "linf", **asdict(self)}


def pgd_attack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: PGDConfig,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial images in ``[0, 1]`` within ``eps`` of ``images`` that maximise CE."""
    images = images.detach()
    adv = images.clone()
    if config.random_start and config.eps > 0:
        noise = torch.rand(images.shape, generator=generator, device=images.device)
        adv = (adv + (2 * noise - 1) * config.eps).clamp_(0.0, 1.0)
    for _ in range(config.steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(adv), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + config.step_size * grad.sign()
        adv = torch.min(torch.max(adv, images - config.eps), images + config.eps).clamp_(0.0, 1.0)
    return adv.detach()


def robust_accuracy(model: nn.Module, dataset: Dataset, config: PGDConfig, batch_size: int = 256,
                    device: torch.device | str = "cpu") -> float:
    """Accuracy in ``[0, 1]`` on PGD examples (eval mode; only ``max_samples`` if set)."""
    device = torch.device(device)
    model.to(device).eval()
    if config.max_samples is not None and config.max_samples < len(dataset):
        dataset = Subset(dataset, range(config.max_samples))
    generator = torch.Generator(device=device).manual_seed(config.seed)
    correct = total = 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        adv = pgd_attack(model, images, labels, config, generator)
        with torch.no_grad():
            correct += (model(adv).argmax(1) == labels).sum().item()
        total += labels.shape[0]
    return correct / max(total, 1)
