"""OIP tests: the REST area's real gateway (it serves OIP HTTP and gRPC too), real payloads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from service.tensors import Collator
from tests.service.rest.conftest import (  # noqa: F401 - fixtures shared with the REST area
    OnnxReference,
    gateway,
    onnx_reference,
    start_gateway,
)
from tests.service.rest.payloads import PHRASES, digit_pngs, vowel_sequences

MODELS = ("digits_cnn", "langid_transformer", "vowels_gru")
RAW_INPUTS = {
    "digits_cnn": "IMAGE_BYTES",
    "langid_transformer": "TEXT",
    "vowels_gru": "SEQUENCE_JSON",
}


@dataclass
class Samples:
    """A few real items of one model: raw payloads, their BYTES encoding, their true labels."""

    model: str
    payloads: list[Any]  # what the model's preprocessor takes (bytes, str, list of timesteps)
    raw: np.ndarray  # the payloads as the raw BYTES input, shape [n, 1]
    truth: list[str]


def samples(model: str, count: int = 4) -> Samples:
    """Real payloads of `model` (digits from scikit-learn, phrases, JapaneseVowels)."""
    if model == "digits_cnn":
        files, truth = digit_pngs()
        payloads: list[Any] = files[:count]
        encoded: list[bytes] = payloads
        labels = truth[:count]
    elif model == "langid_transformer":
        phrases = list(PHRASES.items())[:count]
        payloads = [p for p, _ in phrases]
        encoded = [p.encode() for p in payloads]
        labels = [lang for _, lang in phrases]
    else:
        sequences, truth = vowel_sequences()
        payloads = sequences[:count]
        encoded = [json.dumps(s).encode() for s in payloads]
        labels = truth[:count]
    raw = np.empty((len(encoded), 1), dtype=object)
    raw[:, 0] = encoded
    return Samples(model, payloads, raw, labels)


def model_tensors(reference: OnnxReference, model: str, count: int = 4) -> dict[str, np.ndarray]:
    """The model's own input tensors for real items, batched (zero-padded at the end)."""
    items = [
        {name: array[None, ...] for name, array in reference.tensors(model, payload).items()}
        for payload in samples(model, count).payloads
    ]
    return Collator(reference.spec(model))(items)


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name
