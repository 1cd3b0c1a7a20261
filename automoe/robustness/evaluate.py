"""Robust evaluation: accuracy under an attack, the worst case over several, and transfer.

A sample counts as robust only if the model classifies it right and no attack (and no
restart) fools it, so misclassified samples are never attacked, and each restart attacks
only what the earlier ones left (AutoAttack's order of work).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from automoe.data import make_loader
from automoe.errors import ConfigError
from automoe.robustness.attacks import attack_batch, routing_passes_gradient
from automoe.robustness.config import BLACK_BOX_ATTACKS, AttackConfig


def robust_accuracy(model: nn.Module, dataset: Dataset, config: AttackConfig,
                    batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Accuracy in ``[0, 1]`` under the attack: a sample counts only if the model gets it
    right and every restart fails. Misclassified samples are not attacked.

    The model runs in eval mode; only the first ``max_samples`` samples when set.
    """
    device = torch.device(device)
    model.to(device).eval()
    if config.max_samples is not None and config.max_samples < len(dataset):
        dataset = Subset(dataset, range(config.max_samples))
    generator = torch.Generator(device=device).manual_seed(config.seed)
    correct = total = 0
    for images, labels in make_loader(dataset, batch_size, device=device):
        images, labels = images.to(device), labels.to(device)
        with torch.no_grad():
            index = (model(images).argmax(1) == labels).nonzero().squeeze(1)
        if index.numel():  # a misclassified sample counts as fooled, unattacked
            correct += int(_unfooled(model, images[index], labels[index], config,
                                     generator).sum())
        total += labels.shape[0]
    return correct / max(total, 1)


def _unfooled(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
              config: AttackConfig, generator: torch.Generator | None) -> torch.Tensor:
    """``(B,)`` bool: the samples that no restart of the attack fooled.

    Each restart attacks only the samples every earlier restart failed on (a fooled sample
    stays fooled), as AutoAttack does, and none are left once all are fooled."""
    unfooled = torch.ones_like(labels, dtype=torch.bool)
    for _ in range(config.restarts if config.random_start else 1):
        index = unfooled.nonzero().squeeze(1)  # (n,) one device sync per restart
        if index.numel() == 0:
            break
        adv = attack_batch(model, images[index], labels[index], config, generator)
        with torch.no_grad():
            unfooled[index] = model(adv).argmax(1) == labels[index]
    return unfooled


@dataclass
class WorstCase:
    """Accuracy under each of several attacks on the same samples, and the worst case."""

    samples: int  # samples attacked
    clean: float  # clean accuracy, [0, 1]
    per_attack: dict[str, float]  # AttackConfig.describe() -> accuracy, [0, 1]
    worst: float  # a sample counts only if no attack (and no restart) fooled it
    # the worst case over the white-box attacks alone (gradient-based, on the model itself)
    white_box: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def transfer_examples(surrogate: nn.Module, dataset: Dataset, config: AttackConfig,
                      batch_size: int = 256, device: torch.device | str = "cpu",
                      seed: int = 0) -> torch.Tensor:
    """``(N, C, H, W)`` adversarial images crafted on ``surrogate`` for every sample of
    ``dataset``, in order: a transfer attack's input, computed once and scored on any number
    of target models (see ``worst_case_accuracy(transfer=...)``)."""
    device = torch.device(device)
    surrogate.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    batches = [attack_batch(surrogate, images.to(device), labels.to(device), config, generator)
               for images, labels in make_loader(dataset, batch_size, device=device)]
    return torch.cat(batches)


def worst_case_accuracy(model: nn.Module, dataset: Dataset, configs: list[AttackConfig],
                        batch_size: int = 256, device: torch.device | str = "cpu",
                        seed: int = 0,
                        on_progress: Callable[[int, int, str], None] | None = None,
                        transfer: dict[str, torch.Tensor] | None = None,
                        ) -> WorstCase:
    """Attack every sample of ``dataset`` with each config (its restarts included) and
    report each attack's accuracy and the worst case over all of them.

    Only the samples the model classifies correctly are attacked; the others count as
    fooled by every attack. ``transfer`` maps a name to ``(N, C, H, W)`` adversarial images
    of the whole dataset crafted on another model (:func:`transfer_examples`), scored on
    ``model``: a transfer attack, which needs no gradient of ``model``.
    ``on_progress(done, total, attack)`` is called after each attack of each batch, with
    samples x attacks done and in all.

    On a model whose routing passes no gradient (dense, or top-1 gates under the top-k
    softmax), ``apgd-fixed-routing`` is APGD-CE itself; when APGD-CE with the same budget
    is among ``configs``, its row repeats APGD-CE's instead of running it again.
    """
    device = torch.device(device)
    model.to(device).eval()
    transfer = transfer or {}
    for name, images in transfer.items():
        if images.shape[0] != len(dataset):
            raise ConfigError(f"transfer {name!r} has {images.shape[0]} images for a dataset "
                              f"of {len(dataset)}")
    generator = torch.Generator(device=device).manual_seed(seed)
    names = [c.describe() for c in configs]
    repeats = _repeated_attacks(model, configs)
    clean, robust = [], {name: [] for name in [*names, *transfer]}
    total, done, start = len(dataset) * len(robust), 0, 0
    for images, labels in make_loader(dataset, batch_size, device=device):
        images, labels = images.to(device), labels.to(device)
        with torch.no_grad():
            correct = model(images).argmax(1) == labels
        clean.append(correct)
        index = correct.nonzero().squeeze(1)  # (n,) the samples worth attacking
        for i, (name, cfg) in enumerate(zip(names, configs, strict=True)):
            held = torch.zeros_like(correct)
            if i in repeats:  # the same attack as an earlier one on this model
                held = robust[names[repeats[i]]][-1]
            elif index.numel():
                held[index] = _unfooled(model, images[index], labels[index], cfg, generator)
            robust[name].append(held)
            done += len(labels)
            if on_progress is not None:
                on_progress(done, total, name)
        for name, adversarial in transfer.items():
            adv = adversarial[start:start + len(labels)].to(device)
            with torch.no_grad():
                robust[name].append(correct & (model(adv).argmax(1) == labels))
            done += len(labels)
            if on_progress is not None:
                on_progress(done, total, name)
        start += len(labels)
    clean_ok = torch.cat(clean)
    per_attack = {name: torch.cat(v) for name, v in robust.items()}
    worst, white_box = clean_ok.clone(), clean_ok.clone()
    for ok in per_attack.values():
        worst &= ok
    for name, cfg in zip(names, configs, strict=True):
        if cfg.attack not in BLACK_BOX_ATTACKS:
            white_box &= per_attack[name]
    return WorstCase(samples=int(clean_ok.numel()), clean=clean_ok.float().mean().item(),
                     per_attack={k: v.float().mean().item() for k, v in per_attack.items()},
                     worst=worst.float().mean().item(),
                     white_box=white_box.float().mean().item())


def _repeated_attacks(model: nn.Module, configs: list[AttackConfig]) -> dict[int, int]:
    """``{i: j}``: on this model, attack ``i`` is attack ``j < i`` (same budget), so its
    outcome is ``j``'s. Only ``apgd-fixed-routing`` when no routing passes a gradient."""
    if routing_passes_gradient(model):
        return {}
    repeats = {}
    for i, cfg in enumerate(configs):
        if cfg.attack == "apgd-fixed-routing":
            twin = replace(cfg, attack="apgd-ce")
            j = next((j for j, other in enumerate(configs[:i]) if other == twin), None)
            if j is not None:
                repeats[i] = j
    return repeats
