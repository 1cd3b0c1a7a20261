from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from automoe.data import _cluttered
from automoe.data._cached import TensorImages, augmentation
from automoe.data._info import DatasetInfo
from automoe.errors import DataError

SPLITS = ("train", "val", "test")
DATASET_NAMES = ("digits", "cluttered_digits", "cifar10", "cifar100", "mnist", "fashion_mnist",
                 "svhn", "imagefolder")
EMBEDDED_DATASETS = ("digits", "cluttered_digits")  # in the package: no files, no data root

# Errors name both ways of giving a data root: the CLI's flag and the Python argument.
_ROOT_HINT = "a data root, the folder that holds its files (--data-root DIR, or root= in Python)"
_DOWNLOAD_HINT = "--download (download=True in Python)"

# Validation images are held out of the official training set with this fixed seed, so
# the same split is used by every trial, every worker and every later evaluation.
_SPLIT_SEED = 0
_VAL_FRACTION = 0.1
# A split whose decoded uint8 pixels fit in this many bytes is held in memory (and on the
# trial's device) unless cache=False: CIFAR-10's training split takes 138 MB.
AUTO_CACHE_BYTES = 4 << 30
# digits has no official split: 60 % train, 20 % val, 20 % test, stratified.
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_VAL_FRACTION = 0.2


def split_description(name: str) -> str:
    """How a dataset's validation and test splits are made, for model cards and reports."""
    if name == _cluttered.NAME:
        return _cluttered.split_description()
    if name == "digits":
        return (f"the embedded digits have no official split: a fixed-seed stratified "
                f"{100 * (1 - _DIGITS_VAL_FRACTION - _DIGITS_TEST_FRACTION):.0f}/"
                f"{100 * _DIGITS_VAL_FRACTION:.0f}/{100 * _DIGITS_TEST_FRACTION:.0f} % "
                "train/val/test split")
    return (f"validation is a fixed-seed {100 * _VAL_FRACTION:.0f} % held out of the official "
            "training split; test is the official test split")


# (classes, channels, native side, mean, std) of the torchvision datasets, from their
# training sets in [0, 1] pixel units.
_TORCHVISION_STATS: dict[str, tuple[int, int, int, tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": (10, 1, 28, (0.1307,), (0.3081,)),
    "fashion_mnist": (10, 1, 28, (0.2860,), (0.3530,)),
    "svhn": (10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


class ImageDataset(Dataset):
    """One split of a dataset: ``(image, label)`` pairs with images in ``[0, 1]``.

    Args:
        base: the underlying dataset, indexed by ``indices``.
        indices: positions in ``base`` that belong to this split.
        info: shapes, classes and normalisation statistics.
        split: ``"train"``, ``"val"`` or ``"test"``.
    """

    def __init__(self, base: Dataset, indices: np.ndarray, info: DatasetInfo, split: str):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.info = info
        self.split = split

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[int(self.indices[i])]
        return image, int(label)

    def __repr__(self) -> str:
        return f"ImageDataset({self.info.name!r}, split={self.split!r}, n={len(self)})"


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None = None,
    *,
    image_size: int | None = None,
    download: bool = False,
    augment: bool = False,
    cache: bool | None = None,
) -> ImageDataset | TensorImages:
    """Load one split of a dataset as float images in ``[0, 1]`` and int labels.

    Args:
        name: one of :data:`DATASET_NAMES`. ``"digits"`` is embedded (scikit-learn's
            8x8 handwritten digits) and needs no files; so is ``"cluttered_digits"``, the
            digits at random places of a 16 px canvas under clutter and noise, where
            capacity decides accuracy.
        split: ``"train"``, ``"val"`` (held out of the training set with a fixed seed)
            or ``"test"``.
        root: folder holding the dataset's files (``--data-root``); not used by digits.
            ``imagefolder`` expects ``root/train/<class>/*`` and ``root/test/<class>/*``
            (or ``root/val``).
        image_size: resize images to this square side; ``None`` keeps the native size.
        download: let torchvision download missing files into ``root``.
        augment: random crops and flips (training split only; ignored elsewhere).
        cache: decode the split once into one uint8 tensor (a :class:`TensorImages`, which
            training batches and augments on its device); ``False`` reads and transforms
            image by image instead; ``None`` caches when the decoded split takes at most
            :data:`AUTO_CACHE_BYTES`. Digits are always in memory.

    Raises:
        DataError: unknown name or split, or files missing under ``root``.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if name == "digits":
        return _load_digits(split, image_size)
    if name == _cluttered.NAME:
        return _cluttered.load_cluttered_digits(split, image_size)
    if name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    root_path = _check_root(name, root, download)
    info = dataset_info(name, root_path, image_size)
    augment = augment and split == "train"
    native_size = _native_size(name, image_size)
    if name == "imagefolder":
        base = _open_imagefolder(root_path, split)
    else:
        base = _open_torchvision(name, root_path, train=split != "test", download=download)
    if split == "test":
        indices = np.arange(len(base))
    else:
        indices = _train_val_indices(len(base))[0 if split == "train" else 1]
    pixels = len(indices) * info.in_channels * info.image_size ** 2  # bytes as uint8
    if pixels <= AUTO_CACHE_BYTES if cache is None else cache:
        images, labels = _decode(name, base, indices, info, native_size)
        return TensorImages(images, labels, info, split, indices, augment)
    base.transform = _transform(info, native_size, augment)
    return ImageDataset(base, indices, info, split)


def dataset_info(
    name: str, root: str | os.PathLike[str] | None = None, image_size: int | None = None
) -> DatasetInfo:
    """Classes, channels, image size and normalisation statistics of a dataset."""
    if name == "digits":
        return _digits_arrays(image_size)[2]
    if name == _cluttered.NAME:
        return _cluttered.cluttered_info(image_size)
    if name == "imagefolder":
        if root is None:
            raise DataError(f"dataset 'imagefolder' needs {_ROOT_HINT}")
        classes = _imagefolder_classes(Path(root) / "train")
        return DatasetInfo(name, len(classes), 3, image_size or 32, (0.5,) * 3, (0.5,) * 3)
    if name not in _TORCHVISION_STATS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    classes, channels, size, mean, std = _TORCHVISION_STATS[name]
    return DatasetInfo(name, classes, channels, image_size or size, mean, std)


# --------------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=4)
def _digits_arrays(image_size: int | None):
    """Split, resize and describe the embedded digits once per image size."""
    # deferred: scikit-learn takes a second to import; only the digits need it
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    if image_size is not None and image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                               align_corners=False).clamp_(0.0, 1.0)
    all_idx = np.arange(len(labels))
    train_val, test = train_test_split(all_idx, test_size=_DIGITS_TEST_FRACTION,
                                       random_state=_SPLIT_SEED, stratify=digits.target)
    val_share = _DIGITS_VAL_FRACTION / (1.0 - _DIGITS_TEST_FRACTION)
    train, val = train_test_split(train_val, test_size=val_share, random_state=_SPLIT_SEED,
                                  stratify=digits.target[train_val])
    train_images = images[train]
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        in_channels=1,
        image_size=images.shape[-1],
        mean=(round(float(train_images.mean()), 6),),
        std=(round(float(train_images.std()), 6),),
    )
    splits = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    return images, labels, splits, info


def _load_digits(split: str, image_size: int | None) -> TensorImages:
    images, labels, splits, info = _digits_arrays(image_size)
    index = torch.from_numpy(splits[split])
    return TensorImages(images.index_select(0, index), labels.index_select(0, index), info,
                        split, splits[split])


# ---------------------------------------------------------------------- torchvision


def _check_root(name: str, root: str | os.PathLike[str] | None, download: bool) -> Path:
    if root is None:
        raise DataError(
            f"dataset {name!r} needs {_ROOT_HINT}"
            + ("" if name == "imagefolder" else f"; {_DOWNLOAD_HINT} fetches its files there")
        )
    path = Path(root).expanduser()
    if not path.is_dir():
        if download and name != "imagefolder":
            path.mkdir(parents=True, exist_ok=True)
        else:
            raise DataError(f"data root {str(path)!r} is not a directory")
    return path


def _native_size(name: str, image_size: int | None) -> int | None:
    """The size to resize to, or None when the native size is kept."""
    if name == "imagefolder":
        return image_size or 32
    native = _TORCHVISION_STATS[name][2]
    return None if image_size in (None, native) else image_size


def _transform(info: DatasetInfo, native_size: int | None, augment: bool) -> Callable:
    """Per-image transform of the uncached path (PIL image -> float tensor)."""
    # deferred: torchvision takes over a second to import; only files on disk need it
    from torchvision import transforms as T

    steps: list = _resize_steps(info, native_size)
    if augment:
        padding, flip = augmentation(info)
        steps.append(T.RandomCrop(info.image_size, padding=padding))
        if flip:
            steps.append(T.RandomHorizontalFlip())
    steps.append(T.ToTensor())
    return T.Compose(steps)


def _resize_steps(info: DatasetInfo, native_size: int | None) -> list:
    # deferred: torchvision takes over a second to import; only files on disk need it
    from torchvision import transforms as T

    if info.name == "imagefolder":
        return [T.Resize(native_size), T.CenterCrop(native_size)]
    if native_size is not None:
        return [T.Resize((native_size, native_size))]
    return []


def _decode(name: str, base, indices: np.ndarray, info: DatasetInfo,
            native_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images as one uint8 ``(N, C, H, W)`` tensor and its labels."""
    if name == "imagefolder":  # files: decode each image once
        # deferred: torchvision takes over a second to import; only files on disk need it
        from torchvision import transforms as T

        decode = T.Compose([*_resize_steps(info, native_size), T.PILToTensor()])
        images = torch.empty(len(indices), 3, info.image_size, info.image_size,
                             dtype=torch.uint8)
        labels = torch.empty(len(indices), dtype=torch.long)
        for row, i in enumerate(indices):
            path, label = base.samples[int(i)]
            images[row] = decode(base.loader(path).convert("RGB"))
            labels[row] = label
        return images, labels
    data = torch.as_tensor(np.asarray(base.data))
    if name in ("mnist", "fashion_mnist"):
        data = data.unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    elif name in ("cifar10", "cifar100"):
        data = data.permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32); SVHN is NCHW
    targets = base.labels if name == "svhn" else base.targets
    labels = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    index = torch.from_numpy(indices)
    images = data.index_select(0, index).contiguous()
    if native_size is not None:
        # deferred: torchvision takes over a second to import; only files on disk need it
        from torchvision.transforms.v2 import functional as TF

        images = TF.resize(images, [native_size, native_size], antialias=True)
    return images, labels.index_select(0, index)


def _open_torchvision(name: str, root: Path, train: bool, download: bool):
    # deferred: torchvision takes over a second to import; only files on disk need it
    from torchvision import datasets

    try:
        if name == "cifar10":
            return datasets.CIFAR10(str(root), train=train, download=download)
        if name == "cifar100":
            return datasets.CIFAR100(str(root), train=train, download=download)
        if name == "mnist":
            return datasets.MNIST(str(root), train=train, download=download)
        if name == "fashion_mnist":
            return datasets.FashionMNIST(str(root), train=train, download=download)
        if name == "svhn":
            return datasets.SVHN(str(root), split="train" if train else "test",
                                 download=download)
    except (RuntimeError, OSError) as exc:
        hint = "" if download else f" ({_DOWNLOAD_HINT} fetches it)"
        raise DataError(f"{name} not found or unreadable under data root {str(root)!r}"
                        f"{hint}: {exc}") from exc
    raise DataError(f"unknown dataset {name!r}")


def _train_val_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed split of the official training set into train and val indices."""
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    n_val = max(1, int(round(n * _VAL_FRACTION)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _imagefolder_classes(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataError(f"imagefolder expects class folders under {str(folder)!r}")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders under {str(folder)!r}")
    return classes


def _open_imagefolder(root: Path, split: str):
    # deferred: torchvision takes over a second to import; only files on disk need it
    from torchvision import datasets

    if split == "test":
        folder = root / "test" if (root / "test").is_dir() else root / "val"
    else:
        folder = root / "train"
    if not folder.is_dir():
        raise DataError(f"imagefolder expects {str(folder)!r} (class folders of images)")
    try:
        base = datasets.ImageFolder(str(folder))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"cannot read images under {str(folder)!r}: {exc}") from exc
    if base.classes != _imagefolder_classes(root / "train"):
        raise DataError(f"class folders of {str(folder)!r} differ from those of train/")
    return base
