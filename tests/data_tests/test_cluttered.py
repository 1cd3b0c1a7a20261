"""Cluttered digits: embedded, deterministic, and harder than the digits it is made of."""

import torch

from automoe.data import _cluttered, dataset_info, load_dataset, split_description


def test_splits_are_rendered_three_times_from_the_digits_splits():
    digits = {split: load_dataset("digits", split) for split in ("train", "val", "test")}
    for split, plain in digits.items():
        cluttered = load_dataset("cluttered_digits", split)
        assert len(cluttered) == 3 * len(plain)
        assert torch.equal(cluttered.labels, plain.labels.repeat(3))
        assert cluttered.images.shape[1:] == (1, 16, 16)
        assert 0.0 <= cluttered.images.min() and cluttered.images.max() <= 1.0
    info = dataset_info("cluttered_digits")
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == (
        "cluttered_digits", 10, 1, 16)
    assert "fixed seeds" in split_description("cluttered_digits")


def test_same_pixels_on_every_load_and_different_pixels_per_split():
    first = load_dataset("cluttered_digits", "val").images.clone()
    _cluttered._rendered.cache_clear()  # render again from scratch
    again = load_dataset("cluttered_digits", "val").images
    assert torch.equal(first, again)
    # val and test hold different digits, and each copy puts a digit at another place
    val = load_dataset("cluttered_digits", "val").images
    test = load_dataset("cluttered_digits", "test").images
    assert not torch.equal(val, test)
    n = len(val) // 3
    assert not torch.equal(val[:n], val[n:2 * n])


def test_other_canvas_sides():
    data = load_dataset("cluttered_digits", "train", image_size=24)
    assert data.images.shape[1:] == (1, 24, 24) and data.info.image_size == 24
