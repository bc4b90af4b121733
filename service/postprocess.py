"""Logits to answers: softmax, top-k, label names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=-1, keepdims=True)


def top_k(logits: np.ndarray, labels: Sequence[str], k: int) -> list[dict[str, Any]]:
    """One prediction per row: best label, its probability and the `k` best labels."""
    if logits.ndim != 2:
        raise ValueError(f"expected [batch, classes] logits, got shape {logits.shape}")
    probs = softmax(logits)
    k = max(1, min(k, probs.shape[1]))
    predictions = []
    for row in probs:
        order = np.argsort(-row, kind="stable")[:k]
        best = [
            {"label": labels[i] if i < len(labels) else str(i), "probability": float(row[i])}
            for i in order
        ]
        predictions.append(
            {"label": best[0]["label"], "probability": best[0]["probability"], "top_k": best}
        )
    return predictions
