"""Reading the model repository: configs via Triton's protobuf schema, preprocessing, labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from service.repository import (
    RepositoryError,
    load_model,
    load_model_versions,
    load_repository,
)
from tests.service.conftest import IMAGE_CONFIG, TEXT_CONFIG, write_tokenizer


def test_reads_every_model_with_its_contract(tiny_repository: Path) -> None:
    models = load_repository(tiny_repository)
    assert sorted(models) == ["img", "seq", "txt"]

    img = models["img"]
    assert img.kind == "image" and img.version == "1" and img.max_batch_size == 16
    assert img.inputs[0].name == "IMAGE" and img.inputs[0].datatype == "FP32"
    assert img.inputs[0].dims == (1, 28, 28)
    assert img.inputs[0].np_dtype == np.float32
    assert img.labels == ("a", "b", "c")
    assert img.image is not None and img.image.invert is True
    assert img.onnx_path == tiny_repository / "img" / "1" / "model.onnx"

    txt = models["txt"]
    assert [t.datatype for t in txt.inputs] == ["INT64", "INT64"]
    assert txt.max_queue_delay_us == 500
    assert txt.text is not None and txt.text.max_length == 4

    seq = models["seq"]
    assert seq.sequence is not None and seq.sequence.mean == (1.0, 2.0, 3.0)
    assert seq.max_queue_delay_us == 0  # no dynamic_batching block
    contract = seq.contract()
    assert contract["payload"]["channels"] == 3
    assert contract["inputs"][0] == {"name": "SEQUENCE", "datatype": "FP32", "shape": [-1, -1, 3]}


def test_highest_version_is_served(tiny_repository: Path) -> None:
    (tiny_repository / "img" / "3").mkdir()
    (tiny_repository / "img" / "10").mkdir()
    spec = load_model(tiny_repository / "img")  # no version_policy: Triton's latest 1
    assert spec.version == "10" and spec.versions == ("10",)


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ("", ["10"]),
        ("version_policy { latest { num_versions: 2 } }", ["3", "10"]),
        ("version_policy { latest { num_versions: 9 } }", ["1", "3", "10"]),
        ("version_policy { all { } }", ["1", "3", "10"]),
        ("version_policy { specific { versions: [1, 3, 7] } }", ["1", "3"]),
    ],
)
def test_version_policy_decides_the_served_versions(
    tiny_repository: Path, policy: str, served: list[str]
) -> None:
    model_dir = tiny_repository / "img"
    (model_dir / "3").mkdir()
    (model_dir / "10").mkdir()
    (model_dir / "config.pbtxt").write_text(IMAGE_CONFIG + policy)
    specs = load_model_versions(model_dir)
    assert list(specs) == served
    assert all(spec.versions == tuple(served) and spec.version == v for v, spec in specs.items())
    assert specs[served[-1]].onnx_path == model_dir / served[-1] / "model.onnx"


def test_policy_keeping_no_version_on_disk_is_an_error(tiny_repository: Path) -> None:
    model_dir = tiny_repository / "img"
    (model_dir / "config.pbtxt").write_text(
        IMAGE_CONFIG + "version_policy { specific { versions: [4] } }"
    )
    with pytest.raises(RepositoryError, match="keeps none of the versions on disk"):
        load_model_versions(model_dir)


def test_a_version_may_carry_its_own_labels_preprocessing_and_tokenizer(
    tiny_repository: Path,
) -> None:
    model_dir = tiny_repository / "txt"
    (model_dir / "config.pbtxt").write_text(
        TEXT_CONFIG + "version_policy { latest { num_versions: 2 } }"
    )
    (model_dir / "2").mkdir()
    pre = json.loads((model_dir / "preprocessing.json").read_text())
    pre["text"]["max_length"] = 3
    pre["text"]["tokenizer_file"] = "tokens-v2.json"
    (model_dir / "2" / "preprocessing.json").write_text(json.dumps(pre))
    (model_dir / "2" / "labels.txt").write_text("english\nfrench\n")
    write_tokenizer(model_dir / "2" / "tokens-v2.json")
    old, new = load_model_versions(model_dir).values()
    # version 1 reads the model-level files (the layout of older repositories)
    assert old.labels == ("en", "fr") and old.text is not None and old.text.max_length == 4
    assert old.artifact(old.text.tokenizer_file) == model_dir / "tokenizer.json"
    assert new.labels == ("english", "french") and new.text is not None
    assert new.text.max_length == 3
    assert new.artifact(new.text.tokenizer_file) == model_dir / "2" / "tokens-v2.json"
    (model_dir / "2" / "tokens-v2.json").unlink()
    with pytest.raises(RepositoryError, match=r"tokens-v2\.json is missing"):
        load_model_versions(model_dir)


def test_label_count_must_match_the_output(tiny_repository: Path) -> None:
    (tiny_repository / "img" / "labels.txt").write_text("a\nb\n")
    with pytest.raises(RepositoryError, match="2 labels for 3 outputs"):
        load_model(tiny_repository / "img")


def test_inputs_must_match_the_config(tiny_repository: Path) -> None:
    path = tiny_repository / "seq" / "preprocessing.json"
    pre = json.loads(path.read_text())
    pre["sequence"]["mask"] = "LENGTHS"
    path.write_text(json.dumps(pre))
    with pytest.raises(RepositoryError, match="do not match config"):
        load_model(tiny_repository / "seq")


def test_broken_config_names_the_file(tiny_repository: Path) -> None:
    (tiny_repository / "txt" / "config.pbtxt").write_text("name: 'txt' max_batch_size: [")
    with pytest.raises(RepositoryError, match=r"config\.pbtxt"):
        load_model(tiny_repository / "txt")


def test_unknown_kind_and_missing_tokenizer(tiny_repository: Path) -> None:
    (tiny_repository / "txt" / "tokenizer.json").unlink()
    with pytest.raises(RepositoryError, match="tokenizer"):
        load_model(tiny_repository / "txt")
    path = tiny_repository / "img" / "preprocessing.json"
    path.write_text(json.dumps({"kind": "audio"}))
    with pytest.raises(RepositoryError, match="kind must be"):
        load_model(tiny_repository / "img")


def test_empty_repository_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="holds no model"):
        load_repository(tmp_path)
