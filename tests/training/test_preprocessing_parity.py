"""Training-time and serving-time preprocessing give identical tensors on real held-out inputs.

Training side: `training.features` on the raw held-out arrays, exactly as the build and the
evaluation call it. Serving side: what a client sends (a PNG file, a JSON list of frames, a
string) through the gateway's preprocessor for the committed model, batched by the gateway's
collator. Equal means bit-for-bit over each row's real length, and the padding value beyond it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer

from service import preprocess
from service.repository import ModelSpec, load_model
from service.tensors import Collator
from training import data, digit_fonts, features
from training.evaluate import read_preprocessing

REPO = Path(__file__).resolve().parents[2] / "model_repository"


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def served_batch(spec: ModelSpec, payloads: list[Any]) -> dict[str, np.ndarray]:
    """Each payload decoded and preprocessed alone, then batched, as the gateway does."""
    pre = preprocess.for_model(spec, max_image_pixels=10**8)
    parts = []
    for payload in payloads:
        tensors = pre.preprocess(pre.decode(payload))
        parts.append({name: value[None, ...] for name, value in tensors.items()})
    return Collator(spec)(parts)


def digits_cases() -> dict[str, list[np.ndarray]]:
    _, test = data.load_digits_split()
    fonts = digit_fonts.held_out_font_digits("dark_on_light")
    return {
        "held_out": list(test.images),
        "held_out_inverted": list(255 - test.images),
        "held_out_fonts": fonts.images[::3],  # every font, size and digit; one offset in three
    }


@pytest.mark.parametrize("case", ["held_out", "held_out_inverted", "held_out_fonts"])
def test_digits_served_as_trained(case: str) -> None:
    model_dir = REPO / "digits_cnn"
    images = digits_cases()[case]
    block = read_preprocessing(model_dir)["image"]
    trained = features.image_tensor(images, block)
    served = served_batch(load_model(model_dir), [png(i) for i in images])
    assert served[block["input"]].dtype == trained.dtype == np.float32
    np.testing.assert_array_equal(served[block["input"]], trained)


def assert_padded_equal(
    served: np.ndarray, trained: np.ndarray, lengths: list[int], pad_value: float
) -> None:
    """Equal on every row's real length; both padded with `pad_value` beyond it."""
    assert served.dtype == trained.dtype
    for row, length in enumerate(lengths):
        np.testing.assert_array_equal(served[row, :length], trained[row, :length])
        assert np.all(served[row, length:] == pad_value)
        assert np.all(trained[row, length:] == pad_value)


def test_vowels_served_as_trained() -> None:
    model_dir = REPO / "vowels_gru"
    block = read_preprocessing(model_dir)["sequence"]
    _, test = data.load_vowels_split()
    values, mask = features.sequence_tensors(test.sequences, block)
    # Clients send JSON numbers; float32 values survive the round trip through Python floats.
    served = served_batch(load_model(model_dir), [s.tolist() for s in test.sequences])
    lengths = [len(s) for s in test.sequences]
    assert_padded_equal(served[block["input"]], values, lengths, 0.0)
    assert_padded_equal(served[block["mask"]], mask, lengths, 0.0)
    assert mask.sum(axis=1).tolist() == lengths


def test_langid_served_as_trained() -> None:
    model_dir = REPO / "langid_transformer"
    block = read_preprocessing(model_dir)["text"]
    _, test = data.load_langid_split()
    tokenizer = Tokenizer.from_file(str(model_dir / block["tokenizer_file"]))
    ids, attention = features.text_tensors(test.texts, tokenizer, block)
    served = served_batch(load_model(model_dir), list(test.texts))
    lengths = [int(n) for n in attention.sum(axis=1)]
    assert min(lengths) >= 1 and max(lengths) <= block["max_length"]
    assert_padded_equal(served[block["input_ids"]], ids, lengths, block["pad_id"])
    assert_padded_equal(served[block["attention_mask"]], attention, lengths, 0)


PARITY_TESTS: dict[str, Callable[..., None]] = {
    "digits_cnn": test_digits_served_as_trained,
    "vowels_gru": test_vowels_served_as_trained,
    "langid_transformer": test_langid_served_as_trained,
}


def test_every_model_in_the_repository_has_a_parity_test() -> None:
    served = sorted(p.name for p in REPO.iterdir() if (p / "config.pbtxt").is_file())
    assert served == sorted(PARITY_TESTS)
