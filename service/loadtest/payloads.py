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

from service.loadtest.sla import PayloadKind, Target

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


def held_out_items(kind: PayloadKind, image_format: str = "png") -> Sequence[Item]:
    if kind == "image":
        return held_out_images(image_format)
    if kind == "text":
        return held_out_texts()
    return held_out_sequences()


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
    items = held_out_items(target.kind, target.image_format)
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


def _read_preprocessing(model_repository: Path, model: str) -> dict[str, Any]:
    path = model_repository / model / "preprocessing.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise FileNotFoundError(
            f"OIP targets send model-ready tensors and need {path} "
            "(set model_repository in the SLA file)"
        ) from exc


_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _image_tensor(spec: dict[str, Any], blobs: list[Item]) -> np.ndarray:
    arrays = []
    for blob in blobs:
        assert isinstance(blob, bytes)
        image = Image.open(io.BytesIO(blob)).convert(spec["color_mode"])
        image = image.resize((spec["width"], spec["height"]), _RESAMPLE[spec["resample"]])
        pixels = np.asarray(image, dtype=np.float32).reshape(
            spec["height"], spec["width"], spec["channels"]
        )
        if spec.get("invert"):
            pixels = 255.0 - pixels
        pixels = pixels * spec["scale"]
        pixels = (pixels - np.asarray(spec["mean"], np.float32)) / np.asarray(
            spec["std"], np.float32
        )
        arrays.append(pixels.transpose(2, 0, 1))
    return np.stack(arrays).astype(np.float32)


def _text_tensors(spec: dict[str, Any], folder: Path, texts: list[Item]) -> tuple[Any, Any]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / spec["tokenizer_file"]))
    encoded = []
    for text in texts:
        assert isinstance(text, str)
        ids = tokenizer.encode(text.lower() if spec.get("lowercase") else text).ids
        encoded.append(ids[: spec["max_length"]] or [spec["pad_id"]])
    width = max(len(ids) for ids in encoded)
    input_ids = np.full((len(encoded), width), spec["pad_id"], dtype=np.int64)
    mask = np.zeros((len(encoded), width), dtype=np.int64)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask


def _sequence_tensors(spec: dict[str, Any], sequences: list[Item]) -> tuple[Any, Any]:
    mean = np.asarray(spec["mean"], np.float32)
    std = np.asarray(spec["std"], np.float32)
    clipped = [np.asarray(s, np.float32)[: spec["max_length"]] for s in sequences]
    width = max(len(s) for s in clipped)
    values = np.zeros((len(clipped), width, spec["channels"]), dtype=np.float32)
    mask = np.zeros((len(clipped), width), dtype=np.float32)
    for row, seq in enumerate(clipped):
        values[row, : len(seq)] = (seq - mean) / std
        mask[row, : len(seq)] = 1.0
    return values, mask


def tensor_requests(
    target: Target, model_repository: Path, count: int = POOL_REQUESTS
) -> list[TensorRequest]:
    """Model-ready tensors for OIP requests, preprocessed as `preprocessing.json` says."""
    config = _read_preprocessing(model_repository, target.model)
    spec = config[target.kind]
    items = held_out_items(target.kind, target.image_format)
    requests = []
    for batch in _batches(items, target.batch, count):
        tensors: tuple[tuple[str, np.ndarray], ...]
        if target.kind == "image":
            tensors = ((spec["input"], _image_tensor(spec, batch)),)
        elif target.kind == "text":
            ids, mask = _text_tensors(spec, model_repository / target.model, batch)
            tensors = ((spec["input_ids"], ids), (spec["attention_mask"], mask))
        else:
            values, mask = _sequence_tensors(spec, batch)
            tensors = ((spec["input"], values), (spec["mask"], mask))
        requests.append(TensorRequest(tensors, len(batch)))
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
