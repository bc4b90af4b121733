"""Real datasets shipped inside installed packages, with fixed held-out splits.

Nothing here downloads anything: scikit-learn ships the digits, aeon ships the
UCR/UEA JapaneseVowels files in its wheel, wordfreq ships its word lists.
This module needs numpy only (no torch), so the gateway's tests and the load
tests can rebuild the very same held-out split the models were evaluated on.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

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
LANGID_WORDS_PER_LANGUAGE = 8000
LANGID_TEST_FRACTION = 0.2
LANGID_TRAIN_PHRASES_PER_LANGUAGE = 3000
LANGID_TEST_PHRASES_PER_LANGUAGE = 250
LANGID_MAX_WORDS_PER_PHRASE = 4


@dataclass(frozen=True)
class TextSplit:
    """Phrases and integer language labels."""

    texts: list[str]
    labels: np.ndarray


def _is_held_out(word: str) -> bool:
    # A stable hash (not Python's salted hash()) so the split is the same on every machine.
    return (zlib.crc32(word.encode("utf-8")) % 1000) < LANGID_TEST_FRACTION * 1000


def _langid_vocabularies() -> dict[str, list[str]]:
    """Each language's most frequent alphabetic words, minus words shared between languages.

    Words such as "a" or "de" belong to several languages; dropping them keeps
    every label well defined.
    """
    import wordfreq

    lists = {
        lang: [w for w in wordfreq.top_n_list(lang, LANGID_WORDS_PER_LANGUAGE) if w.isalpha()]
        for lang in LANGUAGES
    }
    seen: dict[str, int] = {}
    for words in lists.values():
        for w in set(words):
            seen[w] = seen.get(w, 0) + 1
    return {lang: [w for w in words if seen[w] == 1] for lang, words in lists.items()}


def _phrases(words: list[str], count: int, rng: np.random.Generator) -> list[str]:
    vocabulary = np.asarray(words)  # once: rng.choice on a list converts it on every call
    lengths = rng.integers(1, LANGID_MAX_WORDS_PER_PHRASE + 1, size=count)
    return [" ".join(rng.choice(vocabulary, size=n)) for n in lengths]


@loads(
    "langid phrases",
    "wordfreq",
    f"top {LANGID_WORDS_PER_LANGUAGE} alphabetic words of {len(LANGUAGES)} languages, shared "
    f"words dropped, words split {1 - LANGID_TEST_FRACTION:.0%}/{LANGID_TEST_FRACTION:.0%} by "
    f"CRC32, {LANGID_TRAIN_PHRASES_PER_LANGUAGE}/{LANGID_TEST_PHRASES_PER_LANGUAGE} phrases of "
    f"1-{LANGID_MAX_WORDS_PER_PHRASE} words per language, seed {SEED}",
)
def load_langid_split() -> tuple[TextSplit, TextSplit]:
    """Language identification of short phrases (1-4 words) in 8 languages, from wordfreq lists.

    Words are split 80/20 by a stable hash, so held-out phrases consist only of
    words the model never saw in training.
    """
    rng = np.random.default_rng(SEED)
    train_texts: list[str] = []
    train_labels: list[int] = []
    test_texts: list[str] = []
    test_labels: list[int] = []
    for index, (_lang, words) in enumerate(_langid_vocabularies().items()):
        train_words = [w for w in words if not _is_held_out(w)]
        test_words = [w for w in words if _is_held_out(w)]
        train_texts += _phrases(train_words, LANGID_TRAIN_PHRASES_PER_LANGUAGE, rng)
        train_labels += [index] * LANGID_TRAIN_PHRASES_PER_LANGUAGE
        test_texts += _phrases(test_words, LANGID_TEST_PHRASES_PER_LANGUAGE, rng)
        test_labels += [index] * LANGID_TEST_PHRASES_PER_LANGUAGE
    return (
        TextSplit(train_texts, np.asarray(train_labels, dtype=np.int64)),
        TextSplit(test_texts, np.asarray(test_labels, dtype=np.int64)),
    )
