"""Training data path: images per second of one epoch, file-backed against in-memory.

    python bench/data.py [--images 10000] [--batch 256] [--epochs 3] [--device cpu|cuda]

Writes a CIFAR-10 training set of random images in the real on-disk format (pickled
batches) to a temporary folder, then times one training epoch of each data path with
augmentation (random crop after 4-pixel zero padding, horizontal flip):

* file-backed (``cache=False``): torchvision's CIFAR10 with per-image PIL transforms
  through a ``DataLoader`` in the training process (``num_workers=0``), batches copied to
  the device;
* in-memory (the default): the split decoded once to uint8, moved to the device once,
  batches cut and cropped / flipped there in one gather.

Both paths run in the same process on the same files; the table gives the median epoch of
``--epochs`` and the ratio. The one-off decode of the in-memory path is reported apart.
"""

from __future__ import annotations

import argparse
import pickle
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table


def write_cifar10(root: Path, images: int, seed: int = 0) -> None:
    """A CIFAR-10 folder (5 training batches, a test batch, the meta file) of random images."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    per_file = images // 5
    for i in range(1, 6):
        batch = {"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_file).tolist()}
        (base / f"data_batch_{i}").write_bytes(pickle.dumps(batch))
    test = {"data": rng.integers(0, 256, (100, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, 100).tolist()}
    (base / "test_batch").write_bytes(pickle.dumps(test))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in
                                                                       range(10)]}))


def epoch_seconds(loader, device: torch.device) -> float:
    start = time.perf_counter()
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="training images written")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of each path")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torchvision.datasets.cifar

    from automoe.data import load_dataset, make_loader

    # the written files cannot match the checksums of the real archives
    torchvision.datasets.cifar.check_integrity = lambda path, md5=None: Path(path).is_file()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar10(Path(tmp), args.images)
        start = time.perf_counter()
        cached = load_dataset("cifar10", "train", tmp, augment=True)
        decode = time.perf_counter() - start
        files = load_dataset("cifar10", "train", tmp, augment=True, cache=False)
        rows = []
        for name, dataset in (("file-backed, PIL per image", files),
                              ("in-memory, batched on device", cached)):
            loader = make_loader(dataset, args.batch, shuffle=True, seed=0, device=device)
            epoch_seconds(loader, device)  # warm-up: the device copy, allocator, caches
            times = [epoch_seconds(loader, device) for _ in range(args.epochs)]
            rows.append((name, len(dataset) / statistics.median(times), times))
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"{platform.processor() or platform.machine()}, "
                  f"{torch.get_num_threads()} threads")
    table = Table(title=f"CIFAR-10 format, {len(cached)} training images, batch {args.batch}, "
                        f"crop + flip, median of {args.epochs} epochs ({where}, "
                        f"torch {torch.__version__})")
    for col in ("data path", "images/s", "epoch s (min-max)", "vs file-backed"):
        table.add_column(col, justify="right")
    base = rows[0][1]
    for name, rate, times in rows:
        table.add_row(name, f"{rate:,.0f}", f"{min(times):.3f}-{max(times):.3f}",
                      f"{rate / base:.1f}x")
    console = Console(width=120)
    console.print(table)
    console.print(f"one-off decode of the in-memory split: {decode:.2f} s")


if __name__ == "__main__":
    main()
