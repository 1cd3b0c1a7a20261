"""Splits held in memory as one tensor, batched and augmented where the model runs.

A decoded split is one ``(N, C, H, W)`` tensor (uint8 for image files, so CIFAR-10's
training split is 138 MB) and its labels. :class:`DeviceLoader` moves it to the trial's
device once, then cuts each batch by indexing and does the random crop and flip as one
batched gather there, so a GPU never waits on per-image Python work. The random draws of an
epoch (order, crop offsets, flips) come from a CPU generator seeded by the trial, so a run is
the same on every device and resumes exactly from the generator's saved state.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from automoe.data._info import DatasetInfo


def augmentation(info: DatasetInfo) -> tuple[int, bool]:
    """(crop padding, horizontal flips) of a dataset's training augmentation: a random
    crop of the native size after zero padding by 1/8 of the side, and flips for natural
    images only (a flipped digit is another symbol)."""
    return max(1, info.image_size // 8), info.name in ("cifar10", "cifar100", "imagefolder")


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
              padding: int) -> torch.Tensor:
    """Random crops and flips of a batch in one gather, on the batch's device.

    Args:
        images: ``(B, C, H, W)``, any dtype.
        offsets: ``(B, 2)`` top-left corner of each crop in the zero-padded image, in
            ``[0, 2 * padding]``.
        flips: ``(B,)`` bool, mirror the crop left to right.
        padding: zeros added on each side before cropping.
    """
    batch, channels, height, width = images.shape
    device = images.device
    # source row / column of each output pixel; outside the image is the zero padding
    rows = offsets[:, :1] - padding + torch.arange(height, device=device)  # (B, H)
    cols = torch.arange(width, device=device).expand(batch, width)
    cols = torch.where(flips[:, None], width - 1 - cols, cols) + offsets[:, 1:] - padding
    inside = (((rows >= 0) & (rows < height))[:, :, None]
              & ((cols >= 0) & (cols < width))[:, None, :])  # (B, H, W)
    source = rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]
    # one gather over the flattened maps, its index shared by the channels
    out = images.reshape(batch, channels, height * width).gather(
        2, source.view(batch, 1, -1).expand(batch, channels, -1))  # (B, C, H*W)
    return (out * inside.view(batch, 1, -1).to(out.dtype)).view(batch, channels, height, width)


class TensorImages(Dataset):
    """One split in memory: ``(image, label)`` pairs with float images in ``[0, 1]``.

    Args:
        images: ``(N, C, H, W)``; uint8 pixels (divided by 255 when read) or floats in
            ``[0, 1]``.
        labels: ``(N,)`` int64.
        info: shapes, classes and normalisation statistics.
        split: ``"train"``, ``"val"`` or ``"test"``.
        indices: positions of these images in the dataset's official split.
        augment: random crop and flip when batched for training.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, info: DatasetInfo,
                 split: str, indices: np.ndarray, augment: bool = False):
        if images.dim() != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(f"images must be (N, C, H, W) with one label each, got "
                             f"{tuple(images.shape)} and {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.info = info
        self.split = split
        self.indices = np.asarray(indices, dtype=np.int64)
        self.augment = augment
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i:i + 1]
        if self.augment:  # per-sample reads (a plain DataLoader) draw from torch's RNG
            padding, flip = augmentation(self.info)
            image = crop_flip(image, torch.randint(0, 2 * padding + 1, (1, 2)),
                              (torch.rand(1) < 0.5) & flip, padding)
        return to_float(image)[0], int(self.labels[i])

    def __repr__(self) -> str:
        return (f"TensorImages({self.info.name!r}, split={self.split!r}, n={len(self)}, "
                f"{self.images.dtype}, augment={self.augment})")

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels on ``device``, copied there once."""
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = (self.images.to(device), self.labels.to(device))
        return self._on_device[key]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; float images unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


class DeviceLoader:
    """Batches of a :class:`TensorImages` on ``device``, shuffled and augmented there.

    Iterating gives ``(images (B, C, H, W) float32, labels (B,))`` on the device. With the
    same seed the batch order is a ``DataLoader``'s with ``shuffle=True``: the generator is
    drawn from in the same way, so switching loaders does not change a run.
    """

    def __init__(self, dataset: TensorImages, batch_size: int, *, shuffle: bool = False,
                 seed: int = 0, device: torch.device | str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.device = torch.device(device)
        # a DataLoader's generator: the saved training state stores and restores it
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        images, labels = self.dataset.on(self.device)
        count = len(self.dataset)
        # A DataLoader iterator draws a base seed for its workers before the sampler's
        # permutation; drawing it too keeps the permutation the same.
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = (torch.randperm(count, generator=self.generator) if self.shuffle
                 else torch.arange(count))
        augment = self.shuffle and self.dataset.augment
        if augment:
            padding, flip = augmentation(self.dataset.info)
            offsets = torch.randint(0, 2 * padding + 1, (count, 2), generator=self.generator)
            flips = (torch.rand(count, generator=self.generator) < 0.5) & flip
            offsets, flips = offsets.to(self.device), flips.to(self.device)
        order = order.to(self.device)
        for start in range(0, count, self.batch_size):
            batch = order[start:start + self.batch_size]
            images_batch = images.index_select(0, batch)  # (B, C, H, W)
            if augment:
                images_batch = crop_flip(images_batch, offsets[start:start + len(batch)],
                                         flips[start:start + len(batch)], padding)
            yield to_float(images_batch), labels.index_select(0, batch)
        if self.shuffle:  # a RandomSampler draws one more permutation when it runs out
            torch.randperm(count, generator=self.generator)


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, device: torch.device | str = "cpu"):
    """Batches of ``dataset``: a :class:`DeviceLoader` on ``device`` for an in-memory split,
    else a ``DataLoader`` (with ``num_workers`` processes) whose batches are on the CPU."""
    if isinstance(dataset, TensorImages):
        return DeviceLoader(dataset, batch_size, shuffle=shuffle, seed=seed, device=device)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      num_workers=num_workers, drop_last=False,
                      pin_memory=torch.device(device).type == "cuda")
