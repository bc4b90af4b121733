"""Real datasets shipped inside installed packages, with fixed held-out splits.

Nothing here downloads anything: scikit-learn ships the digits, aeon ships the
UCR/UEA JapaneseVowels files in its wheel; the language-id text comes from
wordfreq's lists and other packages' catalogs (training.langid_corpus).
This module needs numpy only (no torch), so the gateway's tests and the load
tests can rebuild the very same held-out split the models were evaluated on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from training.fingerprint import loads

SEED = 20261125

# --- digits (CNN) -----------------------------------------------------------------

DIGITS_SIZE = 28
DIGITS_TEST_FRACTION = 0.25


@dataclass(frozen=True)
class ImageSplit:
    """Grayscale 8-bit images (N, H, W) and integer labels."""

    images: np.ndarray
    labels: np.ndarray


def digit_to_image(pixels_0_16: np.ndarray) -> Image.Image:
    """Render one 8x8 scikit-learn digit (ink 0..16) as an 8-bit grayscale PIL image."""
    grid = np.asarray(pixels_0_16, dtype=np.float64).reshape(8, 8)
    return Image.fromarray(np.round(grid * (255.0 / 16.0)).astype(np.uint8), mode="L")


@loads(
    "digits",
    "scikit-learn",
    f"load_digits, stratified train_test_split test_size={DIGITS_TEST_FRACTION}, random_state=0",
)
def load_digits_split() -> tuple[ImageSplit, ImageSplit]:
    """scikit-learn's handwritten digits (1,797 images, 10 classes), stratified 75/25 split.

    Images stay 8x8 here; resizing to the model's input size is preprocessing,
    done the same way in training and in the gateway.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.stack([np.asarray(digit_to_image(row)) for row in digits.data])
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=0, stratify=labels
    )
    return ImageSplit(x_train, y_train), ImageSplit(x_test, y_test)


# --- JapaneseVowels (RNN) ---------------------------------------------------------

VOWELS_CHANNELS = 12


@dataclass(frozen=True)
class SequenceSplit:
    """Variable-length sequences, each (T, C) float32, and integer labels."""

    sequences: list[np.ndarray]
    labels: np.ndarray


@loads("JapaneseVowels", "aeon", "UCR/UEA JapaneseVowels, the archive's own train/test split")
def load_vowels_split() -> tuple[SequenceSplit, SequenceSplit]:
    """UCR/UEA JapaneseVowels: 12 LPC cepstrum coefficients per frame, 9 speakers.

    Uses the archive's own train (270) / test (370) split; lengths 7..29 frames.
    Labels are speaker numbers 1..9, mapped to class indices 0..8.
    """
    from aeon.datasets import load_classification

    def load(split: str) -> SequenceSplit:
        xs, ys = load_classification("JapaneseVowels", split=split, load_equal_length=False)
        seqs = [np.ascontiguousarray(np.asarray(x, dtype=np.float32).T) for x in xs]
        labels = np.asarray([int(v) - 1 for v in ys], dtype=np.int64)
        return SequenceSplit(seqs, labels)

    return load("train"), load("test")


# --- language identification (Transformer) ----------------------------------------

LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt", "sv")


@dataclass(frozen=True)
class TextSplit:
    """Phrases and integer language labels."""

    texts: list[str]
    labels: np.ndarray


@loads(
    "langid texts",
    "wordfreq",
    "training.langid_corpus: frequency-weighted wordfreq phrases plus cuts of Django/humanize "
    "catalogs, CLDR (Babel, unicode-rbnf), Faker and Open Voice OS skill texts, balanced per "
    "language, real-text "
    f"items split 80/20 by CRC32, seed {SEED}",
)
def load_langid_split() -> tuple[TextSplit, TextSplit]:
    """Short texts (mostly 1-4 words) in 8 languages from word-frequency lists and real text.

    The sources, their balance and the split are in training.langid_corpus.
    """
    from training.langid_corpus import LANGUAGES as CORPUS_LANGUAGES
    from training.langid_corpus import build_corpus

    assert CORPUS_LANGUAGES == LANGUAGES
    corpus = build_corpus()

    def split(examples: list[Any]) -> TextSplit:
        labels = [LANGUAGES.index(e.language) for e in examples]
        return TextSplit([e.text for e in examples], np.asarray(labels, dtype=np.int64))

    return split(corpus.train), split(corpus.test)
