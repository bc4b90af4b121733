"""Text: the model's own `tokenizers` tokenizer, truncation and attention mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from service.errors import BadInput
from service.preprocess.base import Preprocessor
from service.repository import TextSpec


class TextPreprocessor(Preprocessor):
    """Tokenises a string into INT64 ids and mask (unpadded; batches pad to a length bucket)."""

    def __init__(self, spec: TextSpec, tokenizer_path: Path, max_chars: int = 10_000) -> None:
        self.spec = spec
        self.max_chars = max_chars
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # The gateway pads and truncates itself (length buckets): switch the artifact's own off.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

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
        return payload.lower() if self.spec.lowercase else payload

    def preprocess(self, decoded: str) -> dict[str, np.ndarray]:
        ids = self.tokenizer.encode(decoded).ids[: self.spec.max_length]
        if not ids:
            raise BadInput("text input produced no tokens")
        input_ids = np.asarray(ids, dtype=np.int64)
        return {
            self.spec.input_ids: input_ids,
            self.spec.attention_mask: np.ones_like(input_ids),
        }
