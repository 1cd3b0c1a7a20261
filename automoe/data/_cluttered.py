"""Cluttered digits: the embedded digits made into a task where capacity decides accuracy.

On the plain digits a ResNet-8 of any width scores about the same, so a search there says
little about how many experts a model needs. Here each image is one digit at a random
place of a larger canvas, under fragments of other digits and Gaussian noise: a wider or
sparser network scores measurably more. The images are rendered from fixed seeds, so every
trial, worker and later evaluation sees the same pixels, and nothing is downloaded.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from automoe.data._cached import TensorImages
from automoe.data._info import DatasetInfo

NAME = "cluttered_digits"
SIDE = 16  # canvas side when the space names no image_size
_DIGIT_SHARE = 11 / 16  # side of the labelled digit / canvas side
_FRAGMENT_SHARE = 8 / 16  # side of each clutter fragment / canvas side
_FRAGMENTS = 2  # clutter fragments under each digit
_FRAGMENT_INTENSITY = 0.6  # fragments are dimmer than the labelled digit
_NOISE = 0.2  # std of the Gaussian pixel noise, [0, 1] pixel units
_COPIES = 3  # renderings of every digit of a split, each at other places
_SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}  # one generator per split


def split_description() -> str:
    return (f"each split renders the embedded digits' split {_COPIES} times with fixed seeds "
            f"(train {_SPLIT_SEEDS['train']}, val {_SPLIT_SEEDS['val']}, test "
            f"{_SPLIT_SEEDS['test']}): one digit at a random place under {_FRAGMENTS} "
            f"fragments of training digits and noise of std {_NOISE}")


def _place(canvas: torch.Tensor, patches: torch.Tensor, generator: torch.Generator) -> None:
    """Paste ``patches`` (N, 1, p, p) at one random place of each canvas (N, 1, S, S),
    keeping the brighter pixel where they overlap."""
    n, side, patch = canvas.shape[0], canvas.shape[-1], patches.shape[-1]
    xs = torch.randint(0, side - patch + 1, (n,), generator=generator).tolist()
    ys = torch.randint(0, side - patch + 1, (n,), generator=generator).tolist()
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        region = canvas[i, :, y:y + patch, x:x + patch]
        torch.maximum(region, patches[i], out=region)


@functools.lru_cache(maxsize=2)
def _rendered(side: int) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], DatasetInfo]:
    """Every split rendered once per canvas side: split -> (images (N, 1, S, S), labels)."""
    # deferred: _datasets imports this module to serve the name
    from automoe.data._datasets import load_dataset

    fragment_side = max(1, round(_FRAGMENT_SHARE * side))
    digit_side = max(1, round(_DIGIT_SHARE * side))
    pool = load_dataset("digits", "train", image_size=fragment_side).images  # (P, 1, f, f)
    splits = {}
    for split, seed in _SPLIT_SEEDS.items():
        digits = load_dataset("digits", split, image_size=digit_side)
        images = digits.images  # (N, 1, d, d)
        generator = torch.Generator().manual_seed(seed)
        rendered = []
        for _ in range(_COPIES):
            canvas = torch.zeros(len(images), 1, side, side)
            for _ in range(_FRAGMENTS):
                pick = torch.randint(0, len(pool), (len(images),), generator=generator)
                _place(canvas, _FRAGMENT_INTENSITY * pool[pick], generator)
            _place(canvas, images, generator)
            canvas += _NOISE * torch.randn(canvas.shape, generator=generator)
            rendered.append(canvas.clamp_(0.0, 1.0))
        splits[split] = (torch.cat(rendered), digits.labels.repeat(_COPIES))
    train_images = splits["train"][0]
    info = DatasetInfo(NAME, 10, 1, side, (round(float(train_images.mean()), 6),),
                       (round(float(train_images.std()), 6),))
    return splits, info


def cluttered_info(image_size: int | None) -> DatasetInfo:
    return _rendered(image_size or SIDE)[1]


def load_cluttered_digits(split: str, image_size: int | None) -> TensorImages:
    """One split of cluttered digits, in memory, at ``image_size`` (default 16) px."""
    splits, info = _rendered(image_size or SIDE)
    images, labels = splits[split]
    return TensorImages(images, labels, info, split, np.arange(len(labels)))
