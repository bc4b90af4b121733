"""Text preprocessing with a real `tokenizers` tokenizer file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import BadInput
from service.preprocess.text import TextPreprocessor
from service.repository import load_model


@pytest.fixture
def pre(tiny_repository: Path) -> TextPreprocessor:
    spec = load_model(tiny_repository / "txt")
    assert spec.text is not None
    return TextPreprocessor(spec.text, spec.path / spec.text.tokenizer_file)


def run(pre: TextPreprocessor, text: object) -> dict[str, np.ndarray]:
    return pre.preprocess(pre.decode(text))


def test_ids_and_mask_from_the_models_tokenizer(pre: TextPreprocessor) -> None:
    out = run(pre, "Hello World")  # lowercase is on in this model's preprocessing.json
    np.testing.assert_array_equal(out["INPUT_IDS"], [2, 3])
    np.testing.assert_array_equal(out["ATTENTION_MASK"], [1, 1])
    assert out["INPUT_IDS"].dtype == np.int64 and out["ATTENTION_MASK"].dtype == np.int64
    np.testing.assert_array_equal(run(pre, "bonjour zzz")["INPUT_IDS"], [4, 1])  # unknown word


def test_truncates_to_max_length(pre: TextPreprocessor) -> None:
    out = run(pre, "hello world bonjour le monde hello")
    np.testing.assert_array_equal(out["INPUT_IDS"], [2, 3, 4, 5])  # max_length is 4


def test_utf8_bytes_are_accepted(pre: TextPreprocessor) -> None:
    np.testing.assert_array_equal(run(pre, b"le monde")["INPUT_IDS"], [5, 6])


@pytest.mark.parametrize("bad", ["", "   ", 42, None, b"\xff\xfe"])
def test_bad_text_is_rejected(pre: TextPreprocessor, bad: object) -> None:
    with pytest.raises(BadInput):
        pre.decode(bad)


def test_json_inputs(pre: TextPreprocessor) -> None:
    assert pre.from_json("hi") == ["hi"]
    assert pre.from_json(["a", "b"]) == ["a", "b"]
