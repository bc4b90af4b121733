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
