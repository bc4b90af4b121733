"""Real payloads for end-to-end tests: held-out digits as PNG, sample JPEGs, phrases, vowels.

Digits and vowels come from the held-out splits the models were evaluated on
(`training.data`, encoded as the load tests send them), so an accuracy floor here
measures the model on data it never trained on.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import sklearn.datasets

from loadtests.payloads import held_out_images, held_out_sequences
from service.model_contract import LABELS_FILE
from tests.conftest import served_repository
from training.data import load_digits_split, load_vowels_split

SAMPLE_JPEGS = Path(sklearn.datasets.__file__).parent / "images"

PHRASES = {
    "the weather is nice today": "en",
    "guten morgen meine freunde": "de",
    "je voudrais un café s'il vous plaît": "fr",
    "dónde está la biblioteca": "es",
    "buongiorno come stai oggi": "it",
    "het is een mooie dag": "nl",
    "obrigado pela ajuda": "pt",
    "jag talar svenska": "sv",
}


def _labels(model: str) -> list[str]:
    return (served_repository() / model / LABELS_FILE).read_text(encoding="utf-8").split()


def _spread(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over `total` items (every class shows up)."""
    return [int(i) for i in np.linspace(0, total - 1, count).round()]


@cache
def digit_pngs(count: int = 24) -> tuple[list[bytes], list[str]]:
    """Held-out handwritten digits (8-bit grayscale PNG files) and their true labels."""
    _train, test = load_digits_split()
    labels = _labels("digits_cnn")
    picks = _spread(len(test.labels), count)
    images = held_out_images("png")
    return [images[i] for i in picks], [labels[test.labels[i]] for i in picks]


@cache
def vowel_sequences(count: int = 16) -> tuple[list[list[list[float]]], list[str]]:
    """Held-out JapaneseVowels utterances (lists of 12-float frames) and their speakers."""
    _train, test = load_vowels_split()
    labels = _labels("vowels_gru")
    picks = _spread(len(test.labels), count)
    sequences = held_out_sequences()
    return [sequences[i].tolist() for i in picks], [labels[test.labels[i]] for i in picks]
