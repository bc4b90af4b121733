"""Cheap per-payload input features and per-row output features, one definition for both sides.

The reference profile (training/profile.py) and the gateway's live drift windows
(service/monitoring/drift.py) call these same functions on the same objects the preprocessors
already hold (the decoded payload and its model tensors), so a live window and its reference
are measured identically. Each input function returns one float per name of its kind's
`*_FEATURES` tuple, computed on arrays already in memory (image and sequence statistics in one
compiled call each, service/monitoring/kernels.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from service.monitoring import kernels
from service.repository import ModelSpec

# Output features, shared by every kind: the predicted class and its softmax probability.
PREDICTED_CLASS = "prediction_class"
CONFIDENCE = "prediction_confidence"
OUTPUT_FEATURES = (PREDICTED_CLASS, CONFIDENCE)

IMAGE_FEATURES = (
    "intensity_mean",  # grey level 0..255 of the whole decoded image
    "intensity_std",
    "ink_fraction",  # share of pixels far (INK_LEVEL grey levels) from the background
    "dark_on_light",  # 1 when the border (the paper) is light, 0 when dark
    "size",  # sqrt(width * height) in pixels, before any resize
    "aspect",  # width / height
)
TEXT_FEATURES = (
    "tokens",  # token ids the model sees (after truncation, with [EOS])
    "rare_token_share",  # tokens that are unmerged single bytes or the unknown token
    "non_latin_share",  # characters beyond Latin Extended-B among the non-space characters
)
SEQUENCE_LENGTH = "length"

# Images are measured on a strided sample of at most about SAMPLE_SIDE x SAMPLE_SIDE pixels:
# a 4000-pixel photo costs what a 64-pixel image does, and statistics of a grid sample differ
# from the full image's by sampling noise far below what drift thresholds react to.
SAMPLE_SIDE = 64
# A pixel is ink when it differs from the background level by a quarter of the grey range.
INK_LEVEL = 64.0

_NON_LATIN = re.compile(r"[^\s\x00-\u024f]")
_SPACE = re.compile(r"\s")

InputFeatures = Callable[[Any, Mapping[str, np.ndarray]], list[float]]


def sequence_feature_names(channels: int) -> tuple[str, ...]:
    """length, then each channel's mean over time, then each channel's standard deviation."""
    return (
        SEQUENCE_LENGTH,
        *(f"mean_{c}" for c in range(channels)),
        *(f"spread_{c}" for c in range(channels)),
    )


def input_feature_names(spec: ModelSpec) -> tuple[str, ...]:
    """The input feature names of the model's payload kind."""
    if spec.kind == "image":
        return IMAGE_FEATURES
    if spec.kind == "text":
        return TEXT_FEATURES
    assert spec.sequence is not None
    return sequence_feature_names(spec.sequence.channels)


def image_features(image: Image.Image) -> list[float]:
    """IMAGE_FEATURES of one decoded image (any mode; colour is averaged to grey).

    Written for the request path: the pixels are read once (`tobytes` is cheaper than
    `np.asarray` on a PIL image) and measured in one compiled call (kernels.py: the border's
    median, mean, spread and ink share in one pass).
    """
    width, height = image.size
    step = max(1, math.ceil(max(width, height) / SAMPLE_SIDE))
    sample = image
    if step > 1:  # Pillow picks the grid in C without reading the other pixels
        sample = image.resize(
            (math.ceil(width / step), math.ceil(height / step)), Image.Resampling.NEAREST
        )
    if sample.mode == "L":
        pixels = np.frombuffer(sample.tobytes(), dtype=np.uint8).reshape(
            sample.size[1], sample.size[0]
        )
        mean, spread, ink, background = kernels.grey_features_u8(pixels, INK_LEVEL)
    else:  # other layouts (colour, 16-bit, float): numpy's own view, averaged to grey
        grey = np.asarray(sample).astype(np.float32)
        if grey.ndim == 3:
            grey = grey.mean(axis=2) if grey.shape[2] > 1 else grey[:, :, 0]
        measured = kernels.grey_features_f32(np.ascontiguousarray(grey), INK_LEVEL)
        mean, spread, ink, background = measured
    return [
        float(mean),
        float(spread),
        float(ink),
        1.0 if background > 127.5 else 0.0,
        math.sqrt(width * height),
        width / height,
    ]


def rare_token_table(tokenizer: Tokenizer) -> np.ndarray:
    """Per token id: True for the tokens a text falls back to when the vocabulary has no better
    one: single characters of a byte-level vocabulary (unmerged bytes) and the unknown token."""
    vocabulary = tokenizer.get_vocab(with_added_tokens=True)
    table = np.zeros(max(vocabulary.values()) + 1, dtype=bool)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
    for token, index in vocabulary.items():
        if len(token) == 1 and token not in special:
            table[index] = True
    for unknown in ("[UNK]", "<unk>", "<UNK>"):
        if unknown in vocabulary:
            table[vocabulary[unknown]] = True
    return table


def text_features(text: str, input_ids: np.ndarray, rare: np.ndarray) -> list[float]:
    """TEXT_FEATURES of one decoded string and its token ids."""
    visible = len(text) - _SPACE.subn("", text)[1] if text else 0
    non_latin = _NON_LATIN.subn("", text)[1]
    tokens = len(input_ids)
    return [
        float(tokens),
        np.count_nonzero(rare[input_ids]) / tokens if tokens else 0.0,  # (mean: 6x the cost)
        non_latin / visible if visible else 0.0,
    ]


def sequence_features(values: np.ndarray) -> list[float]:
    """Length, per-channel mean and per-channel standard deviation of one (T, C) sequence."""
    moments: list[float] = kernels.sequence_moments(
        np.ascontiguousarray(values, dtype=np.float32)
    ).tolist()
    return moments


def extractor(spec: ModelSpec, tokenizer: Tokenizer | None = None) -> InputFeatures:
    """(decoded payload, its model tensors) -> input features, for the model's payload kind.

    Text models need their tokenizer (the preprocessor's) to know which ids are rare.
    """
    if spec.kind == "image":
        return lambda decoded, _tensors: image_features(decoded)
    if spec.kind == "text":
        assert spec.text is not None and tokenizer is not None
        rare = rare_token_table(tokenizer)
        ids_name = spec.text.input_ids
        return lambda decoded, tensors: text_features(decoded, tensors[ids_name], rare)
    return lambda decoded, _tensors: sequence_features(decoded)


def output_features(logits: np.ndarray) -> np.ndarray:
    """(rows, classes) logits -> (rows, 2): predicted class index and its softmax probability."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    confidence = 1.0 / np.exp(logits - top).sum(axis=1)
    return np.stack([logits.argmax(axis=1).astype(np.float64), confidence], axis=1)
