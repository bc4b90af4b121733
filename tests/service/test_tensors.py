"""Batch assembly: zero padding at the end to a length bucket, concatenation on the batch dim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.repository import load_model
from service.tensors import Collator, bucket_length, stack_padded


def test_bucket_lengths() -> None:
    assert [bucket_length(n, 32) for n in (1, 8, 9, 16, 17, 25, 32)] == [8, 8, 16, 16, 24, 32, 32]
    assert bucket_length(20, 20) == 20  # never beyond the model's max length
    assert bucket_length(30, 20) == 30  # ...unless the input itself is longer
    assert bucket_length(100, None) == 104


def test_pads_variable_dims_and_keeps_rows_in_order(tiny_repository: Path) -> None:
    collate = Collator(load_model(tiny_repository / "seq"))
    a = {"SEQUENCE": np.ones((1, 3, 3), np.float32), "MASK": np.ones((1, 3), np.float32)}
    b = {"SEQUENCE": np.full((2, 9, 3), 2, np.float32), "MASK": np.ones((2, 9), np.float32)}
    batch = collate([a, b])
    assert batch["SEQUENCE"].shape == (3, 10, 3)  # 9 -> bucket 16, capped at max_length 10
    assert batch["MASK"].tolist()[0] == [1, 1, 1] + [0] * 7
    assert np.all(batch["SEQUENCE"][0, 3:] == 0) and np.all(batch["SEQUENCE"][1:, :9] == 2)
    assert batch["SEQUENCE"].dtype == np.float32


def test_without_buckets_a_batch_is_padded_to_its_longest_row_only(tiny_repository: Path) -> None:
    """What the embedded backend gets: no server-side batcher to share shapes with."""
    collate = Collator(load_model(tiny_repository / "seq"), buckets=False)
    a = {"SEQUENCE": np.ones((1, 3, 3), np.float32), "MASK": np.ones((1, 3), np.float32)}
    b = {"SEQUENCE": np.full((1, 5, 3), 2, np.float32), "MASK": np.ones((1, 5), np.float32)}
    batch = collate([a, b])
    assert batch["SEQUENCE"].shape == (2, 5, 3)
    assert batch["MASK"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert collate([a])["SEQUENCE"] is a["SEQUENCE"]  # one row: passed through as it is


def test_fixed_shape_inputs_are_only_concatenated(tiny_repository: Path) -> None:
    collate = Collator(load_model(tiny_repository / "img"))
    parts = [{"IMAGE": np.full((1, 1, 28, 28), i, np.float32)} for i in range(3)]
    batch = collate(parts)
    assert batch["IMAGE"].shape == (3, 1, 28, 28)
    assert batch["IMAGE"][:, 0, 0, 0].tolist() == [0, 1, 2]


def test_token_ids_are_padded_with_the_models_pad_id(tiny_repository: Path) -> None:
    pre_path = tiny_repository / "txt" / "preprocessing.json"
    pre = json.loads(pre_path.read_text())
    pre["text"]["pad_id"] = 3
    pre_path.write_text(json.dumps(pre))
    collate = Collator(load_model(tiny_repository / "txt"))
    short = {"INPUT_IDS": np.array([[5, 6]]), "ATTENTION_MASK": np.array([[1, 1]])}
    longer = {"INPUT_IDS": np.array([[2, 4, 4]]), "ATTENTION_MASK": np.array([[1, 1, 1]])}
    batch = collate([short, longer])
    assert batch["INPUT_IDS"].tolist() == [[5, 6, 3, 3], [2, 4, 4, 3]]  # bucket capped at 4
    assert batch["ATTENTION_MASK"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]


def test_stack_padded_pads_rows_at_the_end() -> None:
    rows = [np.array([7, 8], np.int64), np.array([9], np.int64)]
    assert stack_padded(rows, 3).tolist() == [[7, 8], [9, 3]]
    assert stack_padded([np.ones((2, 3), np.float32)]).shape == (1, 2, 3)
