"""Fixtures for the gateway unit tests: a small, self-made model repository on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

IMAGE_CONFIG = """
name: "img"
backend: "onnxruntime"
max_batch_size: 16
input [ { name: "IMAGE" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] } ]
output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { max_queue_delay_microseconds: 0 }
"""

TEXT_CONFIG = """
name: "txt"
backend: "onnxruntime"
max_batch_size: 8
input [
  { name: "INPUT_IDS" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "ATTENTION_MASK" data_type: TYPE_INT64 dims: [ -1 ] }
]
output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 2 ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
"""

SEQUENCE_CONFIG = """
name: "seq"
backend: "onnxruntime"
max_batch_size: 4
input [
  { name: "SEQUENCE" data_type: TYPE_FP32 dims: [ -1, 3 ] },
  { name: "MASK" data_type: TYPE_FP32 dims: [ -1 ] }
]
output [ { name: "LOGITS" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""

VOCAB = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3, "bonjour": 4, "le": 5, "monde": 6}


def write_tokenizer(path: Path) -> None:
    """A real word-level `tokenizers` tokenizer (built here, nothing downloaded)."""
    tokenizer = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def write_model(
    root: Path, name: str, config: str, pre: dict[str, object], labels: list[str]
) -> Path:
    """One model directory with config, version dir, preprocessing.json and labels."""
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(b"")
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "preprocessing.json").write_text(json.dumps(pre))
    (model_dir / "labels.txt").write_text("\n".join(labels) + "\n")
    return model_dir


@pytest.fixture
def tiny_repository(tmp_path: Path) -> Path:
    """A repository with an image, a text and a sequence model (no trained weights needed)."""
    root = tmp_path / "repo"
    write_model(
        root,
        "img",
        IMAGE_CONFIG,
        {
            "schema_version": 1,
            "kind": "image",
            "output": "LOGITS",
            "labels_file": "labels.txt",
            "image": {
                "input": "IMAGE", "height": 28, "width": 28, "channels": 1, "color_mode": "L",
                "resample": "bilinear", "scale": 1 / 255, "mean": [0.5], "std": [0.25],
                "invert": True,
            },
        },
        ["a", "b", "c"],
    )  # fmt: skip
    text_dir = write_model(
        root,
        "txt",
        TEXT_CONFIG,
        {
            "schema_version": 1,
            "kind": "text",
            "output": "LOGITS",
            "labels_file": "labels.txt",
            "text": {
                "input_ids": "INPUT_IDS", "attention_mask": "ATTENTION_MASK",
                "tokenizer_file": "tokenizer.json", "max_length": 4, "pad_id": 0, "lowercase": True,
            },
        },
        ["en", "fr"],
    )  # fmt: skip
    write_tokenizer(text_dir / "tokenizer.json")
    write_model(
        root,
        "seq",
        SEQUENCE_CONFIG,
        {
            "schema_version": 1,
            "kind": "sequence",
            "output": "LOGITS",
            "labels_file": "labels.txt",
            "sequence": {
                "input": "SEQUENCE", "mask": "MASK", "channels": 3, "min_length": 2,
                "max_length": 10, "mean": [1.0, 2.0, 3.0], "std": [2.0, 2.0, 4.0],
            },
        },
        ["x", "y"],
    )  # fmt: skip
    return root
