"""Data fingerprints: the same examples hash the same, any change to them hashes differently."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np
import pytest
import sklearn.datasets

from training import data, fingerprint
from training.data import ImageSplit, SequenceSplit, TextSplit


def _images() -> ImageSplit:
    rng = np.random.default_rng(0)
    return ImageSplit(
        rng.integers(0, 256, size=(6, 8, 8), dtype=np.uint8), np.arange(6, dtype=np.int64)
    )


def test_equal_examples_hash_equal() -> None:
    first, second = _images(), _images()
    assert first is not second
    assert fingerprint.content_hash(first) == fingerprint.content_hash(second)


def _one_pixel(split: ImageSplit) -> ImageSplit:
    images = split.images.copy()
    images[3, 4, 4] ^= 1
    return ImageSplit(images, split.labels)


def _one_label(split: ImageSplit) -> ImageSplit:
    labels = split.labels.copy()
    labels[0] = 5
    return ImageSplit(split.images, labels)


def _reordered(split: ImageSplit) -> ImageSplit:
    order = np.array([1, 0, 2, 3, 4, 5])
    return ImageSplit(split.images[order], split.labels[order])


def _one_fewer(split: ImageSplit) -> ImageSplit:
    return ImageSplit(split.images[:-1], split.labels[:-1])


def _retyped(split: ImageSplit) -> ImageSplit:
    return ImageSplit(split.images.astype(np.int16), split.labels)


@pytest.mark.parametrize("change", [_one_pixel, _one_label, _reordered, _one_fewer, _retyped])
def test_any_change_to_the_examples_changes_the_hash(
    change: Callable[[ImageSplit], ImageSplit],
) -> None:
    split = _images()
    assert fingerprint.content_hash(change(split)) != fingerprint.content_hash(split)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (TextSplit(["ab", "c"], np.zeros(2)), TextSplit(["a", "bc"], np.zeros(2))),
        (
            SequenceSplit([np.zeros((2, 3), np.float32)], np.zeros(1)),
            SequenceSplit([np.zeros((3, 2), np.float32)], np.zeros(1)),
        ),
    ],
    ids=["word boundary", "sequence shape"],
)
def test_framing_keeps_neighbours_apart(first: object, second: object) -> None:
    assert fingerprint.content_hash(first) != fingerprint.content_hash(second)


def test_loaders_are_fingerprinted_only_while_collecting() -> None:
    with fingerprint.collect() as seen:
        train, test = data.load_digits_split()
    assert list(seen) == ["digits train", "digits held-out"]
    held_out = seen["digits held-out"]
    assert held_out.size == len(test.labels)
    assert held_out.sha256 == fingerprint.content_hash(test)
    assert held_out.package == "scikit-learn"
    assert held_out.package_version == metadata.version("scikit-learn")
    assert "random_state=0" in held_out.split
    assert seen["digits train"].size == len(train.labels)
    with fingerprint.collect() as again:
        data.load_digits_split()
    assert again == seen  # unchanged data, unchanged fingerprints
    with fingerprint.collect() as outer:
        pass
    assert outer == {}


def test_changed_source_data_changes_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    with fingerprint.collect() as original:
        data.load_digits_split()
    real = sklearn.datasets.load_digits

    def one_pixel_changed() -> Any:
        digits = real()
        digits.data[100, 10] = (digits.data[100, 10] + 1) % 17  # ink levels are 0..16
        return digits

    monkeypatch.setattr(sklearn.datasets, "load_digits", one_pixel_changed)
    with fingerprint.collect() as changed:
        data.load_digits_split()
    # The changed image lands in exactly one of the two parts; that part's hash changes.
    differing = [name for name in original if original[name] != changed[name]]
    assert len(differing) == 1
    assert original[differing[0]].size == changed[differing[0]].size


def test_one_build_cannot_see_two_versions_of_a_dataset() -> None:
    with fingerprint.collect(), pytest.raises(ValueError, match="changed within one build"):
        fingerprint.record("tiny", "numpy", "all", np.zeros(3))
        fingerprint.record("tiny", "numpy", "all", np.ones(3))
