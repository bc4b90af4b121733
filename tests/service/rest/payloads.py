"""Real payloads for end-to-end tests: digits rendered to PNG, sample JPEGs, phrases, vowels."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
import sklearn.datasets
from PIL import Image

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


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@cache
def digit_pngs(count: int = 24) -> tuple[list[bytes], list[str]]:
    """Held-out-ish handwritten digits (the end of scikit-learn's set) as 8-bit PNG files."""
    digits = sklearn.datasets.load_digits()
    images = digits.images[-count:]
    targets = digits.target[-count:]
    files = [png((img * 255.0 / 16.0).round().astype(np.uint8)) for img in images]
    return files, [str(t) for t in targets]


@cache
def vowel_sequences(count: int = 16) -> tuple[list[list[list[float]]], list[str]]:
    """JapaneseVowels test utterances (shipped in the aeon wheel) as lists of 12-float frames."""
    from aeon.datasets import load_classification

    x, y = load_classification("JapaneseVowels", split="test")
    picks = np.linspace(0, len(x) - 1, count).astype(int)
    sequences = []
    for i in picks:
        frames = np.asarray(x[i], dtype=np.float64).T  # [channels, T] -> [T, channels]
        frames = frames[~np.isnan(frames).any(axis=1)]
        sequences.append(frames.tolist())
    return sequences, [f"speaker_{y[i]}" for i in picks]
