"""Payload preprocessors, one per payload kind of the repository's preprocessing.json."""

from __future__ import annotations

from service.preprocess.base import Preprocessor
from service.preprocess.image import ImagePreprocessor
from service.preprocess.sequence import SequencePreprocessor
from service.preprocess.text import TextPreprocessor
from service.repository import ModelSpec

__all__ = [
    "ImagePreprocessor",
    "Preprocessor",
    "SequencePreprocessor",
    "TextPreprocessor",
    "for_model",
]


def for_model(spec: ModelSpec, *, max_image_pixels: int) -> Preprocessor:
    """The preprocessor the model's `kind` names."""
    if spec.image is not None:
        return ImagePreprocessor(spec.image, max_pixels=max_image_pixels)
    if spec.text is not None:
        return TextPreprocessor(spec.text, spec.artifact(spec.text.tokenizer_file))
    if spec.sequence is not None:
        return SequencePreprocessor(spec.sequence)
    raise ValueError(f"model {spec.name} has no preprocessing block")
