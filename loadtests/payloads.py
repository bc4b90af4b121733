"""Real request payloads from the models' held-out splits, built once before the load starts.

Images are the held-out scikit-learn digits encoded as PNG/JPEG, texts the
held-out language-id phrases, sequences the JapaneseVowels test split: the
very splits `training.data` keeps out of training, so the load exercises the
models on data they were evaluated on, not on noise. Every request body is
encoded up front (JSON serialised, images compressed, multipart assembled)
so the load generator spends its CPU on sending, not on building.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from loadtests.sla import PayloadKind, Shift, Target

POOL_REQUESTS = 256  # distinct request bodies per target; users cycle through them
POOL_SEED = 7

Item = bytes | str | np.ndarray  # encoded image, phrase, or (T, C) float32 sequence


@dataclass(frozen=True)
class HttpBody:
    """One ready-to-send HTTP request body."""

    body: bytes
    content_type: str
    items: int


@dataclass(frozen=True)
class TensorRequest:
    """One ready-to-send OIP request: named input tensors with the batch dimension first."""

    tensors: tuple[tuple[str, np.ndarray], ...]
    items: int


# --- the held-out splits -------------------------------------------------------------


@cache
def held_out_images(image_format: str = "png") -> tuple[bytes, ...]:
    """The held-out digits (8x8 grayscale renders), each encoded as a PNG or JPEG file."""
    from training.data import load_digits_split

    _train, test = load_digits_split()
    encoded = []
    for pixels in test.images:
        buffer = io.BytesIO()
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="L")
        if image_format == "jpeg":
            image.save(buffer, format="JPEG", quality=95)
        else:
            image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return tuple(encoded)


@cache
def held_out_texts() -> tuple[str, ...]:
    """The held-out language-id phrases (words the model never saw in training)."""
    from training.data import load_langid_split

    _train, test = load_langid_split()
    return tuple(test.texts)


@cache
def held_out_sequences() -> tuple[np.ndarray, ...]:
    """The JapaneseVowels test split: (T, 12) float32 frames of LPC cepstrum coefficients."""
    from training.data import load_vowels_split

    _train, test = load_vowels_split()
    return tuple(np.asarray(s, dtype=np.float32) for s in test.sequences)


def held_out_items(
    kind: PayloadKind, image_format: str = "png", shift: Shift = "none"
) -> Sequence[Item]:
    """The held-out items of a payload kind, or their shifted variant (drift scenarios)."""
    if shift != "none":
        return shifted_items(kind, shift, image_format)
    if kind == "image":
        return held_out_images(image_format)
    if kind == "text":
        return held_out_texts()
    return held_out_sequences()


# --- shifted traffic (drift scenarios) -------------------------------------------------

SHIFT_SEED = 13
# Grey-level standard deviation of the noise added to "noisy" images.
IMAGE_NOISE_SIGMA = 48.0
# "scaled" sequences: every coefficient times this (a gain or front-end change).
SEQUENCE_SCALE = 1.5
# "noisy" sequences: Gaussian noise of this many of each channel's held-out standard deviations.
SEQUENCE_NOISE_SIGMAS = 0.5
# "foreign" texts: frequent words of languages the language-id model was not trained on, in
# Latin (Polish, Finnish, Turkish, Czech, Hungarian) and other scripts (Russian, Greek).
FOREIGN_LANGUAGES = ("pl", "fi", "tr", "cs", "hu", "ru", "el")
FOREIGN_PHRASES_PER_LANGUAGE = 100
FOREIGN_TOP_WORDS = 2000


def _encode_image(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="L")
    if image_format == "jpeg":
        image.save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


@cache
def shifted_items(kind: PayloadKind, shift: Shift, image_format: str = "png") -> tuple[Item, ...]:
    """Held-out items moved away from what the models were trained and profiled on.

    images: `inverted` (dark ink on light paper; the held-out digits are light on dark) or
    `noisy` (Gaussian grey-level noise); texts: `foreign` (1-4 frequent words of a language
    outside the model's eight, from wordfreq); sequences: `scaled` (every coefficient x1.5) or
    `noisy` (Gaussian noise). Seeded, so every run sends the same items.
    """
    rng = np.random.default_rng(SHIFT_SEED)
    if kind == "image" and shift in ("inverted", "noisy"):
        from training.data import load_digits_split

        _train, test = load_digits_split()
        images = []
        for pixels in test.images.astype(np.float64):
            if shift == "inverted":
                moved = 255.0 - pixels
            else:
                moved = pixels + rng.normal(0.0, IMAGE_NOISE_SIGMA, pixels.shape)
            images.append(_encode_image(np.clip(np.round(moved), 0, 255), image_format))
        return tuple(images)
    if kind == "text" and shift == "foreign":
        import wordfreq

        phrases: list[str] = []
        for language in FOREIGN_LANGUAGES:
            words = wordfreq.top_n_list(language, FOREIGN_TOP_WORDS)
            for _ in range(FOREIGN_PHRASES_PER_LANGUAGE):
                count = int(rng.integers(1, 5))
                phrases.append(" ".join(rng.choice(words, size=count)))
        # A phrase the held-out texts also hold (a name such as "peter") is no shift.
        in_distribution = set(held_out_items("text"))
        return tuple(p for p in phrases if p not in in_distribution)
    if kind == "sequence" and shift in ("scaled", "noisy"):
        sequences = held_out_sequences()
        spread = np.concatenate(sequences).std(axis=0)
        moved_sequences: list[Item] = []
        for seq in sequences:
            if shift == "scaled":
                moved_sequences.append((seq * SEQUENCE_SCALE).astype(np.float32))
            else:
                noise = rng.normal(0.0, 1.0, seq.shape) * spread * SEQUENCE_NOISE_SIGMAS
                moved_sequences.append((seq + noise).astype(np.float32))
        return tuple(moved_sequences)
    raise ValueError(f"shift {shift!r} does not apply to {kind} payloads")


def _batches(items: Sequence[Item], batch: int, count: int) -> list[list[Item]]:
    """`count` batches of `batch` items, walking a seeded shuffle of `items` cyclically."""
    order = np.random.default_rng(POOL_SEED).permutation(len(items))
    needed = batch * count
    picks = [order[i % len(order)] for i in range(needed)]
    return [[items[j] for j in picks[k : k + batch]] for k in range(0, needed, batch)]


# --- REST bodies ---------------------------------------------------------------------


def _json_input(kind: PayloadKind, item: Item) -> Any:
    if kind == "image":
        assert isinstance(item, bytes)
        return base64.b64encode(item).decode("ascii")
    if kind == "sequence":
        assert isinstance(item, np.ndarray)
        return item.tolist()
    return item


def rest_bodies(target: Target, count: int = POOL_REQUESTS) -> list[HttpBody]:
    """Bodies for `POST /v1/models/{model}/predict` (JSON, or multipart `files` for images)."""
    items = held_out_items(target.kind, target.image_format, target.shift)
    bodies = []
    for batch in _batches(items, target.batch, count):
        if target.encoding == "multipart":
            from urllib3 import encode_multipart_formdata

            mime = f"image/{target.image_format}"
            suffix = "png" if target.image_format == "png" else "jpg"
            fields: list[tuple[str, tuple[str, bytes, str]]] = []
            for i, blob in enumerate(batch):
                assert isinstance(blob, bytes)
                fields.append(("files", (f"digit{i}.{suffix}", blob, mime)))
            body, content_type = encode_multipart_formdata(fields)
            bodies.append(HttpBody(body, content_type, len(batch)))
        else:
            document = {
                "inputs": [_json_input(target.kind, item) for item in batch],
                "top_k": target.top_k,
            }
            bodies.append(HttpBody(json.dumps(document).encode(), "application/json", len(batch)))
    return bodies


# --- Open Inference Protocol tensors -------------------------------------------------


def tensor_requests(
    target: Target, model_repository: Path, count: int = POOL_REQUESTS
) -> list[TensorRequest]:
    """Model-ready tensors for OIP requests, preprocessed by the gateway's own preprocessors.

    Reusing the gateway's code (driven by the model's `preprocessing.json`) means an OIP
    request carries exactly the tensors a REST request for the same item would produce.
    """
    from service.preprocess import for_model
    from service.repository import RepositoryError, load_model
    from service.tensors import Collator

    try:
        spec = load_model(model_repository / target.model)
    except (RepositoryError, OSError) as exc:
        raise FileNotFoundError(
            f"OIP targets send model-ready tensors and need {target.model}'s files in "
            f"{model_repository} (set model_repository in the SLA file): {exc}"
        ) from exc
    preprocessor = for_model(spec, max_image_pixels=64 * 64)
    collate = Collator(spec)
    requests = []
    items = held_out_items(target.kind, target.image_format, target.shift)
    for batch in _batches(items, target.batch, count):
        rows = []
        for item in batch:
            raw = item.tolist() if isinstance(item, np.ndarray) else item
            tensors = preprocessor.preprocess(preprocessor.decode(raw))
            rows.append({name: array[None] for name, array in tensors.items()})
        batched = collate(rows)
        requests.append(TensorRequest(tuple(batched.items()), len(batch)))
    return requests


_V2_DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def v2_datatype(array: np.ndarray) -> str:
    return _V2_DATATYPES[array.dtype]


def v2_json_bodies(
    target: Target, model_repository: Path, count: int = POOL_REQUESTS
) -> list[HttpBody]:
    """Bodies for `POST /v2/models/{model}/infer` (OIP JSON, tensors as flat data lists)."""
    bodies = []
    for request in tensor_requests(target, model_repository, count):
        document = {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": v2_datatype(array),
                    "data": array.reshape(-1).tolist(),
                }
                for name, array in request.tensors
            ]
        }
        bodies.append(HttpBody(json.dumps(document).encode(), "application/json", request.items))
    return bodies
