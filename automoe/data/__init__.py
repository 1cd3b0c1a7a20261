"""Datasets: the embedded digits default and torchvision datasets by name.

Every dataset yields ``(image, label)`` with ``image`` a float tensor ``(C, H, W)`` in
``[0, 1]`` and ``label`` an int. Models normalise inside themselves with the
per-channel statistics in :class:`DatasetInfo`, so attacks work in pixel units.

Splits that fit in memory are decoded once into a :class:`TensorImages`;
:func:`make_loader` batches them on the trial's device with on-device crops and flips.
"""

from __future__ import annotations

from automoe._lazy import lazy_front

_EXPORTS = {
    "DeviceLoader": "._cached", "TensorImages": "._cached", "crop_flip": "._cached",
    "make_loader": "._cached", "to_float": "._cached",
    "AUTO_CACHE_BYTES": "._datasets", "DATASET_NAMES": "._datasets", "SPLITS": "._datasets",
    "EMBEDDED_DATASETS": "._datasets",
    "ImageDataset": "._datasets", "dataset_info": "._datasets", "load_dataset": "._datasets",
    "split_description": "._datasets",
    "DatasetInfo": "._info",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_front(__name__, globals(), _EXPORTS)
