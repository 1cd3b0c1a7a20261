"""Loaders, tested on tiny files written in each dataset's real on-disk format."""

import os
import pickle
import struct

import numpy as np
import pytest
import torch

from automoe.data import (
    DATASET_NAMES,
    EMBEDDED_DATASETS,
    ImageDataset,
    TensorImages,
    dataset_info,
    load_dataset,
)
from automoe.errors import DataError

N_TRAIN, N_TEST = 20, 6


def _check_split(ds, channels, size, classes):
    image, label = ds[0]
    assert image.dtype == torch.float32 and image.shape == (channels, size, size)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert isinstance(label, int) and 0 <= label < classes


def _check_all_splits(name, root, channels, size, classes, **kwargs):
    train = load_dataset(name, "train", root, **kwargs)
    val = load_dataset(name, "val", root, **kwargs)
    test = load_dataset(name, "test", root, **kwargs)
    assert len(train) + len(val) == N_TRAIN and len(val) >= 1 and len(test) == N_TEST
    assert not set(train.indices) & set(val.indices)  # disjoint
    for ds in (train, val, test):
        _check_split(ds, channels, size, classes)
    assert train.info == dataset_info(name, root, kwargs.get("image_size"))
    # the val split is fixed: loading again gives the same indices
    assert list(load_dataset(name, "val", root, **kwargs).indices) == list(val.indices)
    _check_cache_matches_files(name, root, **kwargs)


def _check_cache_matches_files(name, root, **kwargs):
    """The decoded in-memory split holds the images and labels read file by file."""
    for split in ("val", "test"):
        cached = load_dataset(name, split, root, **kwargs)  # small: cached by default
        plain = load_dataset(name, split, root, cache=False, **kwargs)
        assert isinstance(cached, TensorImages) and cached.images.dtype == torch.uint8
        assert isinstance(plain, ImageDataset)
        assert list(cached.indices) == list(plain.indices)
        images = torch.stack([cached[i][0] for i in range(len(cached))])
        expected = torch.stack([plain[i][0] for i in range(len(plain))])
        assert [cached[i][1] for i in range(len(cached))] == \
            [plain[i][1] for i in range(len(plain))]
        if kwargs.get("image_size") is None or name == "imagefolder":
            assert torch.equal(images, expected)  # the same decoder, no resampling
        else:  # tensor and PIL bilinear resizes round differently
            assert (images - expected).abs().mean() < 0.02


# ----------------------------------------------------------------------------- digits


def test_digits_is_embedded_and_split_60_20_20():
    sizes = {s: len(load_dataset("digits", s)) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == 360 and sizes["val"] == 360
    train = load_dataset("digits", "train")
    _check_split(train, 1, 8, 10)
    assert train.info.num_classes == 10 and 0 < train.info.std[0] < 1


def test_digits_resize():
    ds = load_dataset("digits", "test", image_size=16)
    _check_split(ds, 1, 16, 10)
    assert ds.info.image_size == 16


# ------------------------------------------------------------------------ CIFAR-10/100


def _write_cifar(root, folder, label_key, meta_name, meta_key, classes, train_files, test_file):
    base = root / folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        return {"data": data, label_key: rng.integers(0, classes, size=n).tolist()}

    per_file = N_TRAIN // len(train_files)
    for name in train_files:
        with open(base / name, "wb") as f:
            pickle.dump(batch(per_file), f)
    with open(base / test_file, "wb") as f:
        pickle.dump(batch(N_TEST), f)
    with open(base / meta_name, "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(classes)]}, f)


@pytest.fixture
def no_md5(monkeypatch):
    """The tiny files cannot match torchvision's checksums of the real archives."""
    import torchvision.datasets.cifar
    import torchvision.datasets.svhn

    def exists(path, md5=None):
        return os.path.isfile(path)

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", exists)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", exists)


def test_cifar10_pickles(tmp_path, no_md5):
    _write_cifar(tmp_path, "cifar-10-batches-py", "labels", "batches.meta", "label_names", 10,
                 [f"data_batch_{i}" for i in range(1, 6)], "test_batch")
    _check_all_splits("cifar10", tmp_path, 3, 32, 10)
    _check_all_splits("cifar10", tmp_path, 3, 16, 10, image_size=16)
    aug = load_dataset("cifar10", "train", tmp_path, augment=True)
    _check_split(aug, 3, 32, 10)


def test_cifar100_pickles(tmp_path, no_md5):
    _write_cifar(tmp_path, "cifar-100-python", "fine_labels", "meta", "fine_label_names", 100,
                 ["train"], "test")
    _check_all_splits("cifar100", tmp_path, 3, 32, 100)


# ------------------------------------------------------------------ MNIST, Fashion-MNIST


def _write_idx(root, folder):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, n) + labels.tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_files(tmp_path, name, folder):
    _write_idx(tmp_path, folder)
    _check_all_splits(name, tmp_path, 1, 28, 10)


# ------------------------------------------------------------------------------- SVHN


def test_svhn_mat_files(tmp_path, no_md5):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)  # 10 stands for the digit 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    _check_all_splits("svhn", tmp_path, 3, 32, 10)


# ------------------------------------------------------------------------ ImageFolder


def test_imagefolder_png_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        for i in range(n):
            folder = tmp_path / split / ("cat" if i % 2 else "dog")
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    _check_all_splits("imagefolder", tmp_path, 3, 24, 2, image_size=24)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", [n for n in DATASET_NAMES if n not in EMBEDDED_DATASETS])
def test_missing_root_names_the_flag_and_the_argument(name):
    # the same message serves the CLI and the Python API: it names both
    with pytest.raises(DataError, match=r"--data-root DIR, or root= in Python"):
        load_dataset(name, "train")


def test_missing_files_and_bad_names(tmp_path):
    with pytest.raises(DataError, match="not found or unreadable.*--download"):
        load_dataset("cifar10", "train", tmp_path)
    with pytest.raises(DataError, match="is not a directory"):
        load_dataset("mnist", "train", tmp_path / "nope")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet-1k", "train", tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("digits", "holdout")
