"""Datasets: the embedded digits default and torchvision datasets by name.

Every dataset yields ``(image, label)`` with ``image`` a float tensor ``(C, H, W)`` in
``[0, 1]`` and ``label`` an int. Models normalise inside themselves with the
per-channel statistics in :class:`DatasetInfo`, so attacks work in pixel units.

Splits that fit in memory are decoded once into a :class:`TensorImages`;
:func:`make_loader` batches them on the trial's device with on-device crops and flips.
"""

from __future__ import annotations

from automoe.data._cached import DeviceLoader, TensorImages, crop_flip, make_loader, to_float
from automoe.data._datasets import (
    AUTO_CACHE_BYTES,
    DATASET_NAMES,
    SPLITS,
    ImageDataset,
    dataset_info,
    load_dataset,
    split_description,
)
from automoe.data._info import DatasetInfo

__all__ = [
    "AUTO_CACHE_BYTES",
    "DATASET_NAMES",
    "SPLITS",
    "DatasetInfo",
    "DeviceLoader",
    "ImageDataset",
    "TensorImages",
    "crop_flip",
    "dataset_info",
    "load_dataset",
    "make_loader",
    "split_description",
    "to_float",
]
