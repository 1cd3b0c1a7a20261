"""Datasets: the embedded digits default and torchvision datasets by name.

Every dataset yields ``(image, label)`` with ``image`` a float tensor ``(C, H, W)`` in
``[0, 1]`` and ``label`` an int. Models normalise inside themselves with the
per-channel statistics in :class:`DatasetInfo`, so attacks work in pixel units.
"""

from __future__ import annotations

from automoe.data._datasets import (
    DATASET_NAMES,
    SPLITS,
    DatasetInfo,
    ImageDataset,
    dataset_info,
    load_dataset,
    split_description,
)

__all__ = [
    "DATASET_NAMES",
    "SPLITS",
    "DatasetInfo",
    "ImageDataset",
    "dataset_info",
    "load_dataset",
    "split_description",
]
