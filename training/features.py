"""Raw training examples to model tensors, by the very functions the gateway serves with.

Each example goes through the gateway's per-payload preprocessing (`service.preprocess`) with the
parameters of the model's preprocessing.json block; variable-length rows are then padded with
`service.tensors.stack_padded` (token ids with the model's `pad_id`). There is no second copy of
the arithmetic here, so a model is served exactly as it was trained (tests/training/
test_preprocessing_parity.py checks it on the held-out data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from service.preprocess import image as image_preprocess
from service.preprocess.sequence import sequence_inputs
from service.preprocess.text import text_inputs, without_padding
from service.repository import ImageSpec, SequenceSpec, TextSpec, spec_from_block
from service.tensors import stack_padded


def image_tensor(images: Sequence[np.ndarray] | np.ndarray, block: dict[str, Any]) -> np.ndarray:
    """Grayscale 8-bit images (each (H, W), sizes may differ) -> (N, C, H, W) float32 tensors."""
    spec = spec_from_block(ImageSpec, block)
    image_preprocess.check_spec(spec)
    return np.stack(
        [
            image_preprocess.image_tensor(
                Image.fromarray(np.asarray(pixels, np.uint8)).convert(spec.color_mode), spec
            )
            for pixels in images
        ]
    )


def sequence_tensors(
    sequences: list[np.ndarray], block: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length (T, C) sequences -> zero-padded normalised (N, T, C) and mask (N, T)."""
    spec = spec_from_block(SequenceSpec, block)
    rows = [sequence_inputs(seq, spec) for seq in sequences]
    return (
        stack_padded([r[spec.input] for r in rows]),
        stack_padded([r[spec.mask] for r in rows]),
    )


def text_tensors(
    texts: list[str], tokenizer: Any, block: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> token ids (N, T) int64 padded with `pad_id`, attention mask (N, T) int64."""
    spec = spec_from_block(TextSpec, block)
    without_padding(tokenizer)
    rows = [text_inputs(text, tokenizer, spec) for text in texts]
    return (
        stack_padded([r[spec.input_ids] for r in rows], spec.pad_id),
        stack_padded([r[spec.attention_mask] for r in rows]),
    )
