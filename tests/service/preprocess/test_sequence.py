"""Sequence preprocessing: validation, normalisation with training statistics, mask."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import BadInput
from service.preprocess.sequence import SequencePreprocessor
from service.repository import SequenceSpec

SPEC = SequenceSpec(
    input="SEQUENCE", mask="MASK", channels=3, min_length=2, max_length=10,
    mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 4.0),
)  # fmt: skip


@pytest.fixture
def pre() -> SequencePreprocessor:
    return SequencePreprocessor(SPEC)


def test_normalises_per_channel_and_masks(pre: SequencePreprocessor) -> None:
    steps = [[1.0, 2.0, 3.0], [3.0, 0.0, 11.0], [5.0, 4.0, -1.0]]
    out = pre.preprocess(pre.decode(steps))
    np.testing.assert_allclose(out["SEQUENCE"], [[0, 0, 0], [1, -1, 2], [2, 1, -1]])
    np.testing.assert_array_equal(out["MASK"], [1, 1, 1])
    assert out["SEQUENCE"].dtype == np.float32 and out["MASK"].dtype == np.float32


def test_json_one_or_several(pre: SequencePreprocessor) -> None:
    one = [[1, 2, 3], [4, 5, 6]]
    assert pre.from_json(one) == [one]
    assert pre.from_json([one, one]) == [one, one]
    for bad in ("text", [], [1, 2, 3], [[]]):
        with pytest.raises(BadInput):
            pre.from_json(bad)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([[1, 2], [3, 4]], "3 channels"),
        ([[1, 2, 3]], "outside"),
        ([[1, 2, 3]] * 11, "outside"),
        ([[1, 2, 3], [1, 2]], "rectangular"),
        ([[1, 2, "x"], [1, 2, 3]], "rectangular"),
        ([[1, 2, float("nan")], [1, 2, 3]], "NaN"),
        ([1, 2, 3], "2-D"),
    ],
)
def test_invalid_sequences(pre: SequencePreprocessor, payload: object, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        pre.decode(payload)
