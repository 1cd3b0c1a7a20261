"""In-memory splits: batched crops and flips, and batches in a DataLoader's order."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import automoe.data._datasets as datasets_module
from automoe.data import (
    DatasetInfo,
    DeviceLoader,
    ImageDataset,
    TensorImages,
    crop_flip,
    load_dataset,
    make_loader,
)


def _split(n=11, channels=3, size=8, name="cifar10", augment=False, dtype=torch.uint8):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), generator=generator,
                           dtype=torch.uint8)
    if dtype != torch.uint8:
        images = images.to(dtype) / 255
    labels = torch.randint(0, 10, (n,), generator=generator)
    info = DatasetInfo(name, 10, channels, size, (0.5,) * channels, (0.5,) * channels)
    return TensorImages(images, labels, info, "train", np.arange(n), augment)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_crop_flip_equals_pad_slice_and_mirror_per_image(dtype):
    images = _split(n=5, channels=3, size=7, dtype=dtype).images  # odd side
    padding = 2
    offsets = torch.tensor([[0, 0], [4, 4], [1, 3], [2, 0], [3, 2]])
    flips = torch.tensor([False, True, True, False, True])
    out = crop_flip(images, offsets, flips, padding)
    assert out.dtype == dtype and out.shape == images.shape
    for i in range(5):
        y, x = offsets[i].tolist()
        crop = F.pad(images[i], (padding,) * 4)[:, y:y + 7, x:x + 7]
        assert torch.equal(out[i], crop.flip(-1) if flips[i] else crop)


def test_unshuffled_batches_are_the_split_in_order():
    split = _split()
    batches = list(DeviceLoader(split, 4))
    assert [len(labels) for _, labels in batches] == [4, 4, 3]
    images = torch.cat([b for b, _ in batches])
    assert torch.equal(images, split.images.float() / 255)
    assert torch.equal(torch.cat([labels for _, labels in batches]), split.labels)


def test_shuffled_order_is_a_dataloaders_for_the_same_seed():
    split = _split(n=23)
    ours = DeviceLoader(split, 5, shuffle=True, seed=3)
    theirs = DataLoader(split, batch_size=5, shuffle=True,
                        generator=torch.Generator().manual_seed(3))
    for _ in range(2):  # two epochs: the generator advances alike
        for (a, la), (b, lb) in zip(ours, theirs, strict=True):
            assert torch.equal(a, b) and torch.equal(la, lb)


def test_augmented_epochs_follow_the_seed_and_only_move_pixels():
    split = _split(n=9, augment=True)
    first = [b for b, _ in DeviceLoader(split, 4, shuffle=True, seed=1)]
    again = [b for b, _ in DeviceLoader(split, 4, shuffle=True, seed=1)]
    other = [b for b, _ in DeviceLoader(split, 4, shuffle=True, seed=2)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    # a crop of a zero-padded image: every value is one of the image's pixels or zero
    loader = DeviceLoader(split, 9, shuffle=True, seed=1)
    images, labels = next(iter(loader))
    for image, label in zip(images, labels, strict=True):
        source = split.images[(split.labels == label).nonzero()[:, 0]].float() / 255
        assert set(image.unique().tolist()) <= set(source.unique().tolist()) | {0.0}
    # unaugmented evaluation batches stay exact
    assert torch.equal(next(iter(DeviceLoader(split, 9)))[0], split.images.float() / 255)


def test_only_natural_images_are_flipped():
    from automoe.data._cached import augmentation

    assert augmentation(_split(name="mnist", channels=1, size=28).info) == (3, False)
    assert augmentation(_split(name="svhn").info) == (1, False)  # a mirrored 2 is no 2
    assert augmentation(_split(name="cifar10", size=32).info) == (4, True)
    for name, flipped in (("mnist", False), ("cifar10", True)):
        split = _split(n=16, name=name, channels=1, size=8, augment=True)
        images, _ = next(iter(DeviceLoader(split, 16, shuffle=True, seed=0)))
        kinds = [_crop_kind(image, split.images.float() / 255) for image in images]
        assert None not in kinds  # each is a crop of a padded source image
        assert ("mirrored" in kinds) == flipped


def _crop_kind(image, sources, padding=1):
    """'plain' or 'mirrored' for a crop of one of the sources, else None."""
    size = image.shape[-1]
    for source in sources:
        padded = F.pad(source, (padding,) * 4)
        for y in range(2 * padding + 1):
            for x in range(2 * padding + 1):
                crop = padded[:, y:y + size, x:x + size]
                if torch.equal(image, crop):
                    return "plain"
                if torch.equal(image, crop.flip(-1)):
                    return "mirrored"
    return None


def test_per_sample_reads_of_an_augmented_split_are_crops_too():
    split = _split(n=3, augment=True)
    torch.manual_seed(0)
    image, label = split[1]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32 and label == split.labels[1]


def test_make_loader_picks_the_device_loader_for_in_memory_splits():
    assert isinstance(make_loader(_split(), 4), DeviceLoader)
    assert isinstance(make_loader(torch.utils.data.TensorDataset(torch.zeros(3, 1)), 2),
                      DataLoader)


def test_device_copy_is_made_once():
    split = _split()
    first = split.on(torch.device("cpu"))
    assert split.on(torch.device("cpu"))[0] is first[0]


def test_large_splits_stay_file_backed(tmp_path, monkeypatch):
    from PIL import Image

    for i in range(4):
        folder = tmp_path / "train" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((9, 9, 3), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    assert isinstance(load_dataset("imagefolder", "train", tmp_path, image_size=8), TensorImages)
    monkeypatch.setattr(datasets_module, "AUTO_CACHE_BYTES", 8 * 8 * 3)  # under one split
    assert isinstance(load_dataset("imagefolder", "train", tmp_path, image_size=8),
                      ImageDataset)
    assert isinstance(load_dataset("imagefolder", "train", tmp_path, image_size=8,
                                   cache=True), TensorImages)
    assert isinstance(load_dataset("imagefolder", "train", tmp_path, image_size=8,
                                   cache=False), ImageDataset)
