"""Softmax, top-k and label names."""

from __future__ import annotations

import numpy as np
import pytest

from service.postprocess import softmax, top_k


def test_softmax_is_stable_and_normalised() -> None:
    probs = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    np.testing.assert_allclose(probs, [[0.5, 0.5], [0.25, 0.75]])


def test_top_k_orders_labels_by_probability() -> None:
    logits = np.log(np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]], np.float32))
    out = top_k(logits, ["a", "b", "c"], k=2)
    assert [p["label"] for p in out] == ["b", "a"]
    assert [s["label"] for s in out[0]["top_k"]] == ["b", "c"]
    assert out[0]["probability"] == pytest.approx(0.6, abs=1e-6)
    assert len(top_k(logits, ["a", "b", "c"], k=99)[0]["top_k"]) == 3


def test_top_k_ties_keep_class_order() -> None:
    logits = np.array([[0.0, 2.0, 2.0, 1.0, 2.0]], np.float32)
    out = top_k(logits, ["a", "b", "c", "d", "e"], k=4)
    assert [s["label"] for s in out[0]["top_k"]] == ["b", "c", "e", "d"]


def test_top_k_agrees_with_numpy_softmax_and_a_stable_sort() -> None:
    """The compiled kernel against the numpy definition, on random logits of every scale and
    dtype, with and without ties, and labels missing for some classes."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        rows, classes = int(rng.integers(1, 5)), int(rng.integers(1, 40))
        k = int(rng.integers(1, classes + 2))
        dtype = np.float32 if trial % 2 else np.float64
        logits = (rng.normal(size=(rows, classes)) * [1, 10, 100][trial % 3]).astype(dtype)
        if trial % 5 == 0:
            logits[:, : classes // 2] = logits[:, :1]  # ties
        labels = [f"c{i}" for i in range(classes - 1)]  # the last class has no label
        out = top_k(logits, labels, k)
        probs = softmax(logits)
        for row, prediction in enumerate(out):
            order = np.argsort(-probs[row], kind="stable")[: min(k, classes)]
            names = [labels[i] if i < len(labels) else str(i) for i in order]
            assert [s["label"] for s in prediction["top_k"]] == names
            np.testing.assert_allclose(
                [s["probability"] for s in prediction["top_k"]], probs[row][order], rtol=1e-12
            )
            assert prediction["label"] == names[0]
