"""Text: the model's own `tokenizers` tokenizer, truncation and attention mask.

`text_inputs` is the one definition of the arithmetic: training (training/features.py) calls it on
every phrase, the gateway on every decoded payload. Batches are padded later, with the model's
`pad_id` (service/tensors.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from service.errors import BadInput
from service.preprocess.base import Preprocessor
from service.repository import TextSpec


def without_padding(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer with its own padding and truncation switched off (in place).

    Padding and truncation belong to the caller: `text_inputs` truncates to the spec's
    max_length and batches are padded with `pad_id` when assembled.
    """
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def text_inputs(text: str, tokenizer: Tokenizer, spec: TextSpec) -> dict[str, np.ndarray]:
    """Token ids [T] and attention mask [T] (INT64, unpadded) of one string."""
    encoded = tokenizer.encode(text.lower() if spec.lowercase else text)
    input_ids = np.asarray(encoded.ids[: spec.max_length], dtype=np.int64)
    return {spec.input_ids: input_ids, spec.attention_mask: np.ones_like(input_ids)}


class TextPreprocessor(Preprocessor):
    """Tokenises a string into INT64 ids and mask (unpadded; batches pad to a length bucket)."""

    def __init__(self, spec: TextSpec, tokenizer_path: Path, max_chars: int = 10_000) -> None:
        self.spec = spec
        self.max_chars = max_chars
        # The gateway pads and truncates itself (length buckets): switch the artifact's own off.
        self.tokenizer = without_padding(Tokenizer.from_file(str(tokenizer_path)))

    def from_json(self, value: Any) -> list[Any]:
        return list(value) if isinstance(value, list) else [value]

    def decode(self, payload: Any) -> str:
        if isinstance(payload, bytes):
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(f"text is not valid UTF-8: {exc}") from exc
        if not isinstance(payload, str):
            raise BadInput(f"text inputs must be strings, got {type(payload).__name__}")
        if not payload.strip():
            raise BadInput("text input is empty")
        if len(payload) > self.max_chars:
            raise BadInput(f"text input longer than {self.max_chars} characters")
        return payload

    def preprocess(self, decoded: str) -> dict[str, np.ndarray]:
        tensors = text_inputs(decoded, self.tokenizer, self.spec)
        if not len(tensors[self.spec.input_ids]):
            raise BadInput("text input produced no tokens")
        return tensors
