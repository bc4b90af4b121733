"""Raw training examples to model tensors, as described by each model's preprocessing.json.

The parameters live in the preprocessing blocks written next to the model; the
gateway reads the same blocks, so training and serving transform inputs alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}


def image_tensor(images: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """(N, H0, W0) uint8 grayscale images -> (N, C, H, W) float32 normalised tensors."""
    size = (int(spec["width"]), int(spec["height"]))
    resample = _RESAMPLE[spec["resample"]]
    out = []
    for pixels in images:
        img = Image.fromarray(pixels, mode="L").convert(spec["color_mode"]).resize(size, resample)
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if spec["invert"]:
            arr = 255.0 - arr
        out.append(arr.transpose(2, 0, 1))
    x = np.stack(out) * np.float32(spec["scale"])
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


def sequence_tensors(
    sequences: list[np.ndarray], spec: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length (T, C) sequences -> zero-padded normalised (N, T, C) and mask (N, T)."""
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    longest = max(len(s) for s in sequences)
    values = np.zeros((len(sequences), longest, int(spec["channels"])), dtype=np.float32)
    mask = np.zeros((len(sequences), longest), dtype=np.float32)
    for i, seq in enumerate(sequences):
        values[i, : len(seq)] = (seq - mean) / std
        mask[i, : len(seq)] = 1.0
    return values, mask


def text_tensors(
    texts: list[str], tokenizer: Any, spec: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> zero-padded token ids (N, T) int64 and attention mask (N, T) int64."""
    max_length = int(spec["max_length"])
    encoded = [tokenizer.encode(t).ids[:max_length] for t in texts]
    longest = max(1, max(len(ids) for ids in encoded))
    ids = np.full((len(texts), longest), int(spec["pad_id"]), dtype=np.int64)
    mask = np.zeros((len(texts), longest), dtype=np.int64)
    for i, row in enumerate(encoded):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask
