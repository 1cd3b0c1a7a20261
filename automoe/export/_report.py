"""A robustness report of an exported model: strong attacks on its own data split."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.utils.data import Subset

from automoe.data import load_dataset
from automoe.export._export import load, read_export_config
from automoe.robustness import AttackConfig, WorstCase, worst_case_accuracy


def attack_export(path: str | os.PathLike[str], attacks: list[AttackConfig], *,
                  split: str = "test", data_root: str | None = None, download: bool = False,
                  max_samples: int | None = None, device: str | torch.device = "cpu",
                  on_progress: Callable[[int, int, str], None] | None = None
                  ) -> tuple[WorstCase, str]:
    """Attack an exported model with each of ``attacks`` on the same samples of the split
    of the dataset it was trained on (the first ``max_samples``); returns the report and
    the dataset's name. ``on_progress`` as in :func:`~automoe.robustness.worst_case_accuracy`.
    """
    data = read_export_config(path).get("data") or {}
    name = data.get("name", "digits")
    model = load(path)
    dataset = load_dataset(name, split, data_root, image_size=data.get("image_size"),
                           download=download)
    if max_samples is not None:
        dataset = Subset(dataset, range(min(max_samples, len(dataset))))
    report = worst_case_accuracy(model, dataset, attacks, device=device,
                                 on_progress=on_progress)
    return report, name
