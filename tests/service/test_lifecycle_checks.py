"""What a load checks before anything serves: the ONNX file against the config, and which file
changes the repository watch sees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.errors import ModelLoadFailed
from service.lifecycle import fingerprint, validate_onnx
from service.model_contract import CONFIG_FILE, MODEL_FILE
from service.repository import load_model
from tests.service.versioned_repository import MODEL, copy_model


@pytest.fixture
def model_dir(tmp_path: Path, model_repository: Path) -> Path:
    return copy_model(model_repository, tmp_path / "repository")


def test_the_committed_model_validates(model_dir: Path) -> None:
    validate_onnx(load_model(model_dir))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.replace("dims: 28\n  dims: 28\n}", "dims: 28\n  dims: 27\n}", 1), "shape"),
        (lambda c: c.replace("dims: 1\n  dims: 28", "dims: 28", 1), "shape"),
    ],
)
def test_an_onnx_file_that_does_not_match_its_config_is_refused(
    model_dir: Path, edit: object, message: str
) -> None:
    config = model_dir / CONFIG_FILE
    text = config.read_text()
    changed = edit(text)  # type: ignore[operator]
    assert changed != text
    config.write_text(changed)
    with pytest.raises(ModelLoadFailed, match=message):
        validate_onnx(load_model(model_dir))


def test_another_models_onnx_file_is_refused(model_dir: Path, model_repository: Path) -> None:
    other = model_repository / "vowels_gru" / "1" / MODEL_FILE
    (model_dir / "1" / MODEL_FILE).write_bytes(other.read_bytes())
    with pytest.raises(ModelLoadFailed, match="config input IMAGE is not in the ONNX file"):
        validate_onnx(load_model(model_dir))


def test_a_truncated_onnx_file_is_refused(model_dir: Path) -> None:
    onnx_path = model_dir / "1" / MODEL_FILE
    onnx_path.write_bytes(onnx_path.read_bytes()[:1000])
    with pytest.raises(ModelLoadFailed, match="does not load"):
        validate_onnx(load_model(model_dir))


def test_fingerprint_sees_writes_renames_and_deletions(model_dir: Path) -> None:
    before = fingerprint(model_dir)
    assert ("config.pbtxt" in {entry[0] for entry in before}) and before == fingerprint(model_dir)
    (model_dir / "2").mkdir()
    (model_dir / "2" / "labels.txt").write_text("x\n")
    added = fingerprint(model_dir)
    assert added != before and os.path.join("2", "labels.txt") in {e[0] for e in added}
    (model_dir / "2" / "labels.txt").rename(model_dir / "2" / "other.txt")
    assert fingerprint(model_dir) not in (before, added)
    (model_dir / "2" / "other.txt").unlink()
    assert fingerprint(model_dir) == before
    assert model_dir.name == MODEL
