"""What a model needs to know about a dataset's inputs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about its inputs."""

    name: str  # registry name, e.g. "cifar10"
    num_classes: int  # number of labels
    in_channels: int  # image channels
    image_size: int  # side of the square images the loader yields
    mean: tuple[float, ...]  # per-channel mean of the [0, 1] training images
    std: tuple[float, ...]  # per-channel std of the [0, 1] training images
